"""persona train and measure on tiny random models: the adapter is trained, resumed, loaded as a model spec,
and measured; emoji mass, sentence ends and MLP capture against direct computations."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_handle, tiny_model
from safetensors.torch import load_file
from typer.testing import CliRunner

from affectlens.analysis.persona import compare_persona
from affectlens.api.persona import persona_compare, persona_measure, persona_train
from affectlens.cli import app
from affectlens.config import PersonaMeasureConfig, PersonaTrainConfig
from affectlens.errors import AffectlensError
from affectlens.runtime.loading import load_model
from affectlens.runtime.persona import (
    emoji_mass,
    emoji_start_ids,
    end_positions,
    mlp_inputs,
    reply_tokens,
    teacher_forced_pass,
)
from affectlens.runtime.render import Renderer
from affectlens.sentences import sentence_spans
from affectlens.stages.persona_train import PersonaTrain
from affectlens.stimuli.traits import load_traits

FAST = dict(trait="extraversion", epochs=2, learning_rate=5e-3, batch_size=4)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """12 train and 4 test questions of the shipped extraversion corpus."""
    items = load_traits("extraversion").items
    rows = [vars(i) for i in items if i.split == "train"][:12] + [
        vars(i) for i in items if i.split == "test"
    ][:4]
    path = tmp_path_factory.mktemp("corpus") / "extraversion.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base_folder(tokenizer, tmp_path_factory):
    """A tiny random llama saved as a model folder: a spec that load_model reads (no GGUF, no download)."""
    folder = tmp_path_factory.mktemp("tiny-base")
    tiny_model("llama", 0, vocab_size=len(tokenizer), max_position_embeddings=1024).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained(base_folder, small_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    runs = {}
    for name, extra in (("high", {}), ("low", {"pole": "low"}), ("control", {"control": True})):
        runs[name] = root / name
        persona_train(
            str(base_folder), runs[name], PersonaTrainConfig(**FAST, **extra), corpus=small_corpus, quiet=True
        )
    return runs


def _logits(handle, text="What do you think about parties?"):
    ids = torch.tensor([Renderer(handle.tokenizer).encode(text)])
    with torch.no_grad():
        return handle.model(input_ids=ids).logits[0, -1]


def test_an_adapter_and_its_control_both_change_the_model(trained, base_folder):
    base = _logits(load_model(str(base_folder)))
    high, control = (_logits(load_model(str(trained[k]))) for k in ("high", "control"))
    assert not torch.allclose(base, high, atol=1e-4) and not torch.allclose(base, control, atol=1e-4)
    assert not torch.allclose(high, control, atol=1e-4)
    summary = json.loads((trained["high"] / "manifest.json").read_text())["stages"]["persona_train"][
        "summary"
    ]
    assert summary["heldout_loss_after"] < summary["heldout_loss_before"]  # it learned the voice
    assert summary["n_train"] == 12 and summary["voice"] == "high"


def test_a_run_folder_is_a_model_spec(trained, base_folder):
    from peft import PeftModel

    handle = load_model(str(trained["high"]))
    assert handle.spec == str(trained["high"]) and "+lora:" in handle.fingerprint
    # The merged model gives what base + unmerged adapter gives.
    unmerged = PeftModel.from_pretrained(load_model(str(base_folder)).model, str(trained["high"] / "adapter"))
    ids = torch.tensor([Renderer(handle.tokenizer).encode("Hello there?")])
    with torch.no_grad():
        assert torch.allclose(handle.model(input_ids=ids).logits, unmerged(input_ids=ids).logits, atol=1e-5)


def test_train_resumes_per_epoch_and_ends_where_an_uninterrupted_run_ends(base_folder, small_corpus, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    config = PersonaTrainConfig(**FAST)
    persona_train(str(base_folder), tmp_path / "whole", config, corpus=small_corpus, quiet=True)
    real = PersonaTrain.compute

    def dies_in_epoch_2(self, group):
        if group == ["epoch-2"]:
            raise KeyboardInterrupt
        return real(self, group)

    monkeypatch.setattr(PersonaTrain, "compute", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        persona_train(str(base_folder), tmp_path / "cut", config, corpus=small_corpus, quiet=True)
    assert not (tmp_path / "cut" / "adapter").exists()
    monkeypatch.setattr(PersonaTrain, "compute", real)
    persona_train(str(base_folder), tmp_path / "cut", config, corpus=small_corpus, quiet=True)
    whole = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    cut = load_file(tmp_path / "cut" / "adapter" / "adapter_model.safetensors")
    assert whole.keys() == cut.keys()
    for key in whole:
        torch.testing.assert_close(whole[key], cut[key], rtol=1e-5, atol=1e-6)


def test_an_unfinished_train_run_is_no_model_spec(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(
        json.dumps({"stages": {"persona_train": {"finished": None}}})
    )
    with pytest.raises(AffectlensError, match="unfinished persona train run"):
        load_model(str(tmp_path / "run"))


def test_quantized_loading_is_refused_without_cuda_before_anything_loads():
    with pytest.raises(AffectlensError, match="--quantize 4bit needs a CUDA GPU") as info:
        load_model("no/such-model", quantize="4bit", device="cpu")
    assert "\n" not in str(info.value)
    result = CliRunner().invoke(
        app, ["likelihood", "--model", "no/such-model", "--out", "x", "--quantize", "8bit"]
    )
    assert result.exit_code == 2 and "--quantize 8bit needs a CUDA GPU" in result.output
    with pytest.raises(AffectlensError, match="use 4bit or 8bit"):
        load_model("x", quantize="2bit", device="cpu")


def test_emoji_mass_on_a_planted_model(tokenizer):
    handle = tiny_handle(tokenizer)
    ids = emoji_start_ids(tokenizer)
    assert len(ids) > 0
    with torch.no_grad():
        handle.model.lm_head.weight.zero_()  # every logit 0: the mass is the emoji tokens' share of the vocabulary
    prompt = Renderer(tokenizer).encode("Hi?")
    mass, _ = teacher_forced_pass(
        handle,
        [prompt],
        emoji_ids=ids,
    )
    assert mass[0, -1].item() == pytest.approx(len(ids) / len(tokenizer), rel=1e-5)
    boost = handle.model.lm_head.register_forward_hook(lambda m, i, out: out.index_add(
        -1, ids, torch.full((*out.shape[:-1], len(ids)), 30.0)))  # fmt: skip
    try:
        mass, _ = teacher_forced_pass(
            handle,
            [prompt],
            emoji_ids=ids,
        )
    finally:
        boost.remove()
    assert mass[0, -1].item() > 0.999
    logits = torch.randn(2, len(tokenizer))
    direct = torch.softmax(logits, -1)[:, ids].sum(-1)
    torch.testing.assert_close(emoji_mass(logits, ids), direct)


def test_sentence_end_positions_are_the_tokens_that_end_each_sentence(tokenizer):
    handle = tiny_handle(tokenizer)
    reply = "I love parties. They are fun! Do you agree?"
    tokens, spans = reply_tokens(handle, [], reply)
    ends = [b for _, b in sentence_spans(reply)]
    picked = end_positions(spans, ends)
    assert [tokenizer.decode(tokens[: i + 1]) for i in picked] == ["I love parties.", "I love parties. They are fun!",
                                                                  reply]  # fmt: skip


def test_mlp_capture_is_the_down_projections_input(tokenizer):
    handle = tiny_handle(tokenizer)
    seen = []
    hooks = [b.mlp.down_proj.register_forward_hook(lambda m, i, o: seen.append((i[0].clone(), o.clone())))
             for b in handle.arch.blocks]  # fmt: skip
    ids = torch.tensor([Renderer(tokenizer).encode("Hello?")])
    with mlp_inputs(handle) as store, torch.no_grad():
        handle.model(input_ids=ids)
    for h in hooks:
        h.remove()
    assert sorted(store) == list(range(handle.n_layers))
    for layer, (inputs, output) in enumerate(seen):
        torch.testing.assert_close(store[layer], inputs)
        torch.testing.assert_close(handle.arch.blocks[layer].mlp.down_proj(store[layer]), output)


@pytest.fixture(scope="module")
def measured(trained, base_folder, small_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("measured")
    config = PersonaMeasureConfig(trait="extraversion", samples=2, max_new_tokens=16, in_context_samples=6)
    runs = {"base": root / "base"}
    persona_measure(str(base_folder), runs["base"], config, label="base", corpus=small_corpus, quiet=True)
    for name in ("high", "control"):
        runs[name] = root / name
        persona_measure(str(trained[name]), runs[name], config, baseline=str(runs["base"]), corpus=small_corpus,
                        quiet=True)  # fmt: skip
    return runs


def test_measure_writes_every_table_and_compares_with_its_baseline(measured):
    from affectlens.store.persona import read_measure

    run = read_measure(measured["high"])
    assert run.label == "extraversion-high" and len(run.replies) == 4 * 2 and len(run.incontext) == 6
    assert set(run.mass.context) == {"first_token", "end:high", "end:low", "end:neutral"}
    assert (
        run.neurons["trait"].shape[:2] == (4, 3) and run.neurons["emoji"].shape == run.neurons["plain"].shape
    )
    comparison = json.loads((measured["high"] / "comparison" / "persona.json").read_text())
    assert [m["label"] for m in comparison["models"]] == ["base", "extraversion-high"]
    pair = comparison["pairs"][0]
    assert all(0 < pair[k]["p"] <= 1 for k in ("esr", "first_token_mass", "sentence_end_mass", "in_context"))


def test_compare_three_runs_and_report_them(measured, tmp_path):
    from affectlens.reporting.build import build_report

    result = persona_compare([measured[k] for k in ("base", "high", "control")], tmp_path / "cmp", n_boot=200,
                             n_permutations=200)  # fmt: skip
    assert len(result["pairs"]) == 3 and len(result["neurons"]) == 2
    deepest = result["neurons"][0]["deepest"]
    assert deepest["layer"] == 2 and 0 <= deepest["overlap_before"] <= 20
    html = build_report(tmp_path / "cmp", *measured.values(), out=tmp_path / "report").read_text()
    assert "Persona fine-tuning and emoji: extraversion" in html and "extraversion-control" in html
    with pytest.raises(AffectlensError, match="share a label"):
        compare_persona([measured["base"], measured["base"]])


def test_cli_train_measure_compare(base_folder, small_corpus, tmp_path):
    runner = CliRunner()
    run = tmp_path / "adapter"
    result = runner.invoke(app, ["persona", "train", "--model", str(base_folder), "--out", str(run), "--trait",
                                 "extraversion", "--epochs", "1", "--corpus", str(small_corpus), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"use it as --model {run}" in " ".join(result.output.split())
    result = runner.invoke(app, ["persona", "measure", "--model", str(run), "--out", str(tmp_path / "m"), "--trait",
                                 "extraversion", "--baseline", str(base_folder), "--samples", "1",
                                 "--max-new-tokens", "8", "--in-context-samples", "3", "--corpus",
                                 str(small_corpus), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ESR" in result.output and "neurons" in result.output
    # The adapter run works as --model in the other stages too.
    result = runner.invoke(app, ["elicit", "--model", str(run), "--out", str(tmp_path / "e"), "--per-cell", "1",
                                 "--samples", "1", "--max-new-tokens", "4", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["persona", "train", "--model", str(base_folder), "--out", str(tmp_path / "x"),
                                 "--trait", "humour"])  # fmt: skip
    assert result.exit_code == 2 and "unknown trait 'humour'" in result.output


def test_the_loss_falls_on_the_assistant_tokens_only(tokenizer):
    from affectlens.runtime.lora import IGNORE, build_example

    renderer = Renderer(tokenizer, "Answer briefly.")
    example = build_example(renderer, "Do you like parties?", "I love them. Truly!", 256)
    prompt = renderer.encode("Do you like parties?")
    assert example.input_ids[: len(prompt)] == prompt
    assert example.labels[: len(prompt)] == [IGNORE] * len(prompt)
    answer = [t for t in example.labels if t != IGNORE]
    assert tokenizer.decode(answer).startswith(
        "I love them. Truly!<|im_end|>"
    )  # the end of turn is learned too
    with pytest.raises(AffectlensError, match="leaves no answer tokens"):
        build_example(renderer, "Do you like parties?", "Yes.", len(prompt))


def test_control_trains_on_the_neutral_voice(base_folder, small_corpus, tmp_path):
    handle = load_model(str(base_folder))
    stage = PersonaTrain(handle, str(tmp_path / "c"), load_traits("extraversion", small_corpus),
                         PersonaTrainConfig(**FAST, control=True))  # fmt: skip
    stage.validate()
    first = load_traits("extraversion", small_corpus).split("train")[0]
    decoded = handle.tokenizer.decode([t for t in stage.train[0].labels if t >= 0])
    assert decoded.startswith(first.neutral) and stage.identity()["stimuli"]["voice"] == "neutral"


def test_neurons_and_mass_do_not_depend_on_the_padded_batch(tokenizer):
    from affectlens.runtime.generate import Sampling
    from affectlens.runtime.persona import sample_replies

    handle = tiny_handle(tokenizer)
    renderer, ids = Renderer(tokenizer), emoji_start_ids(tokenizer)
    prompts = [renderer.encode("Hi?"), renderer.encode("What do you think about a long weekend at the lake?")]
    options = dict(sampling=Sampling(), max_new_tokens=3, emoji_ids=ids)
    both = sample_replies(handle, prompts, [[1], [2]], **options)
    for p, prompt in enumerate(prompts):
        alone = sample_replies(handle, [prompt], [[p + 1]], **options)
        torch.testing.assert_close(both.neurons[p], alone.neurons[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(both.first_mass[p], alone.first_mass[0], rtol=1e-4, atol=1e-7)
    short, long = prompts
    mass, neurons = teacher_forced_pass(handle, [long, short], emoji_ids=ids, neuron_row=1)
    mass_alone, neurons_alone = teacher_forced_pass(handle, [short], emoji_ids=ids, neuron_row=0)
    torch.testing.assert_close(neurons[:, : len(short)], neurons_alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mass[1, : len(short)], mass_alone[0], rtol=1e-4, atol=1e-7)


def test_neurons_need_a_dense_mlp(tokenizer):
    from affectlens.runtime.persona import down_projections

    handle = tiny_handle(tokenizer, "gpt_oss")
    with pytest.raises(AffectlensError, match="no dense MLP down-projection"):
        down_projections(handle)
