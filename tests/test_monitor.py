"""Monitoring: readings equal a hand computation from output_hidden_states under left padding, one reading
pass per batch, bad inputs fail in one line before any forward pass, a killed run resumes to the same
readings, the CLI, and the figure."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import available_families, tiny_handle
from typer.testing import CliRunner

import affectlens.api as api_module
from affectlens.api.monitor import monitor as api_monitor
from affectlens.cli import app
from affectlens.config import MonitorConfig, VectorsConfig
from affectlens.errors import AffectlensError
from affectlens.reporting.figures.monitor import Y_LABEL, readings_figure
from affectlens.runtime.capture import position_ids, token_states
from affectlens.runtime.render import Renderer
from affectlens.runtime.tokens import left_pad
from affectlens.stages.monitor import Monitoring, monitor
from affectlens.stages.vectors import vectors
from affectlens.stimuli import PromptSet, load_prompts
from affectlens.stimuli.corpus import load_corpus
from affectlens.store.runs import MONITOR_COLUMNS, read_monitor, read_vectors

HEADLINE = 1  # of a 3-block model storing layers 0 and 1: round(2/3 * 2) = 1


@pytest.fixture(scope="module")
def handle(tokenizer):
    return tiny_handle(tokenizer, "llama")


@pytest.fixture(scope="module")
def vectors_run(handle, tmp_path_factory) -> str:
    corpus = load_corpus()
    small = dataclasses.replace(
        corpus,
        stories=tuple(s for s in corpus.stories if s.topic == "work"),
        neutral=corpus.neutral[:6],
        implicit=corpus.implicit[:3],
    )
    out = tmp_path_factory.mktemp("vectors") / "run"
    vectors(handle, str(out), small, VectorsConfig(layers=(0, 1)), quiet=True)
    return str(out)


def spread_prompts(n: int) -> PromptSet:
    """``n`` prompts of clearly different lengths (shortest to longest), so that a batch is left-padded."""
    ordered = sorted(load_prompts(), key=lambda p: len(p.text))
    picked = tuple(ordered[round(i * (len(ordered) - 1) / max(n - 1, 1))] for i in range(n))
    return PromptSet(picked, "spread-" + "-".join(p.id for p in picked), "test")


def count_calls(module: torch.nn.Module) -> tuple[list[int], object]:
    calls: list[int] = []
    return calls, module.register_forward_hook(lambda *_: calls.append(1))


def by_hand(handle, run, ids: list[int], layer: int, kind: str = "denoised") -> np.ndarray:
    """[tokens, emotions]: (hidden_states[layer + 1] - neutral mean) . unit(v), one unpadded sequence."""
    at = run.layers.index(layer)
    with torch.no_grad():
        out = handle.model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    hidden = out.hidden_states[layer + 1][0].double().numpy()
    mu = run.activations["neutral"][:, at].astype(np.float64).mean(axis=0)
    v = getattr(run, kind)[:, at].astype(np.float64)
    return (hidden - mu) @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T


def token_matrix(readings: pd.DataFrame, emotions: list[str]) -> tuple[list[int], np.ndarray]:
    """(token ids, [tokens, emotions] readings) of one (prompt, sample, part), in token and emotion order."""
    wide = readings.pivot(index="token_index", columns="emotion", values="reading").sort_index()
    ids = readings.drop_duplicates("token_index").sort_values("token_index")["token_id"].tolist()
    return ids, wide[emotions].to_numpy(np.float64)


# ------------------------------------------------------------------------------------ (1) parity by hand


@pytest.mark.parametrize("family", available_families())
def test_token_states_equal_output_hidden_states_and_padding_is_nan(tokenizer, family):
    handle = tiny_handle(tokenizer, family)
    seqs = [tokenizer(t)["input_ids"] for t in ("a calm morning", "the train was late again and the rain")]
    ids, mask = left_pad(seqs, tokenizer.pad_token_id)
    states = token_states(handle.model, handle.arch, ids, mask, [1, 0])
    assert states.shape == (2, 2, ids.shape[1], handle.d_model) and states.dtype == torch.float32
    for row, seq in enumerate(seqs):
        with torch.no_grad():
            alone = handle.model(input_ids=torch.tensor([seq]), output_hidden_states=True).hidden_states
        real = states[row, :, ids.shape[1] - len(seq) :]
        torch.testing.assert_close(real[0], alone[2][0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(real[1], alone[1][0], atol=1e-4, rtol=1e-4)
    assert torch.isnan(states[0, :, : ids.shape[1] - len(seqs[0])]).all()  # the short row's padding
    with torch.no_grad():  # the padded batch itself, through the model's own output: same numbers
        padded = handle.model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), output_hidden_states=True
        ).hidden_states
    torch.testing.assert_close(states[:, 0][mask.bool()], padded[2][mask.bool()], atol=1e-4, rtol=1e-4)


def test_readings_equal_a_hand_computation_under_left_padding(handle, vectors_run, tmp_path):
    prompts = spread_prompts(3)
    config = MonitorConfig(samples=2, max_new_tokens=6, batch_prompts=3)
    out = tmp_path / "monitor"
    summary = api_monitor(handle, out, vectors=vectors_run, prompts=prompts, config=config, quiet=True)
    assert (out / "readings.png").stat().st_size > 0 and (out / "readings.svg").stat().st_size > 0
    result, run = read_monitor(out), read_vectors(vectors_run)
    emotions = list(run.emotions["name"])
    assert result.entry["layer"] == HEADLINE and result.entry["emotions"] == emotions
    assert summary["n_replies"] == 6 == len(result.replies)
    assert summary["n_tokens"] == int(result.replies["n_new_tokens"].sum()) > 0
    renderer = Renderer(handle.tokenizer, config.instruction, config.primed)
    readings = result.readings
    lengths = set()
    for prompt in prompts:
        prompt_rows = readings[(readings["prompt_id"] == prompt.id) & (readings["part"] == "prompt")]
        assert set(prompt_rows["sample"]) == {0}  # the shared prompt is stored once
        prompt_ids, prompt_values = token_matrix(prompt_rows, emotions)
        assert prompt_ids == renderer.encode(prompt.text)
        for sample in range(2):
            rows = readings[
                (readings["prompt_id"] == prompt.id)
                & (readings["sample"] == sample)
                & (readings["part"] == "reply")
            ]
            reply_ids, reply_values = token_matrix(rows, emotions)
            reply = result.replies.set_index(["prompt_id", "sample"]).loc[(prompt.id, sample)]
            assert len(reply_ids) == reply["n_new_tokens"]
            assert handle.tokenizer.decode(reply_ids, skip_special_tokens=True) == reply["reply"]
            assert rows["token"].tolist()[:: len(emotions)] == [
                handle.tokenizer.decode([t]) for t in reply_ids
            ]
            expected = by_hand(handle, run, prompt_ids + reply_ids, HEADLINE)
            got = np.concatenate([prompt_values, reply_values])
            np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
            lengths.add(len(prompt_ids) + len(reply_ids))
    assert len(lengths) == 3  # the batch really was left-padded
    # The summary's means are the reply tokens' means.
    reply = readings[readings["part"] == "reply"].groupby("emotion")["reading"].mean()
    for name in emotions:
        assert summary["mean_reading"][name] == pytest.approx(reply[name], rel=1e-3, abs=1e-8)


def test_raw_vectors_at_another_layer(handle, vectors_run, tmp_path):
    prompts = spread_prompts(2)
    config = MonitorConfig(max_new_tokens=3, layer=0, vector="raw")
    monitor(handle, str(tmp_path / "m"), vectors_run, prompts, config, quiet=True)
    result, run = read_monitor(tmp_path / "m"), read_vectors(vectors_run)
    emotions = list(run.emotions["name"])
    assert result.entry["layer"] == 0 and result.entry["vector"] == "raw"
    prompt = prompts.prompts[0]
    rows = result.readings[(result.readings["prompt_id"] == prompt.id) & (result.readings["sample"] == 0)]
    ids_p, values_p = token_matrix(rows[rows["part"] == "prompt"], emotions)
    ids_r, values_r = token_matrix(rows[rows["part"] == "reply"], emotions)
    expected = by_hand(handle, run, ids_p + ids_r, 0, "raw")
    np.testing.assert_allclose(np.concatenate([values_p, values_r]), expected, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------- (2) one pass per batch


def test_one_reading_pass_per_batch_stopped_after_the_layer(handle, vectors_run, tmp_path):
    prompts = spread_prompts(4)
    config = MonitorConfig(samples=2, max_new_tokens=5, batch_prompts=2)
    first, first_hook = count_calls(handle.arch.blocks[0])
    last, last_hook = count_calls(handle.arch.blocks[-1])
    try:
        monitor(handle, str(tmp_path / "m"), vectors_run, prompts, config, quiet=True)
    finally:
        first_hook.remove()
        last_hook.remove()
    replies = read_monitor(tmp_path / "m").replies.set_index("prompt_id")
    groups = Monitoring(handle, str(tmp_path / "other"), vectors_run, prompts, config).groups(
        [p.id for p in prompts]
    )
    assert len(groups) == 2
    # decode() calls the model once per step after the first while a row is left: a row with n tokens kept
    # it going for n steps if it drew EOS, for n - 1 if it hit the cap.
    cap = config.max_new_tokens
    steps = [int(replies.loc[group, "n_new_tokens"].clip(upper=cap - 1).max()) for group in groups]
    assert len(first) == sum(1 + s + 1 for s in steps)  # prefill + decode steps + ONE reading pass
    assert len(last) == sum(1 + s for s in steps)  # the reading pass stops after block 1 of 3


# ---------------------------------------------------------------------------------- (3) bad inputs


def _unfinished(vectors_run: str, tmp_path: Path) -> str:
    copy = tmp_path / "unfinished"
    shutil.copytree(vectors_run, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["stages"]["vectors"]["finished"] = None
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return str(copy)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not_vectors", "is not a vectors run"),
        ("unfinished", "not finished"),
        ("other_model", "made with tiny-llama .* not tiny-other"),
        ("layer_out_of_range", "layer 7 out of range: tiny-llama has layers 0..2"),
        ("layer_not_stored", r"layer 2 is not stored in vectors run .*\[0, 1\]"),
        ("empty_prompts", "prompt set 'empty' is empty"),
    ],
)
def test_bad_inputs_fail_in_one_line_before_any_forward_pass(handle, vectors_run, tmp_path, case, message):
    source, model, prompts, config = vectors_run, handle, spread_prompts(2), MonitorConfig(max_new_tokens=2)
    if case == "not_vectors":
        (tmp_path / "plain").mkdir()
        source = str(tmp_path / "plain")
    elif case == "unfinished":
        source = _unfinished(vectors_run, tmp_path)
    elif case == "other_model":
        model = dataclasses.replace(handle, spec="tiny-other", fingerprint="tiny-other")
    elif case == "layer_out_of_range":
        config = MonitorConfig(layer=7)
    elif case == "layer_not_stored":
        config = MonitorConfig(layer=2)
    else:
        prompts = PromptSet((), "none", "empty")
    calls, hook = count_calls(handle.arch.blocks[0])
    out = tmp_path / "out"
    try:
        with pytest.raises(AffectlensError, match=message) as caught:
            monitor(model, str(out), source, prompts, config, quiet=True)
    finally:
        hook.remove()
    assert "\n" not in str(caught.value)
    assert calls == [] and not (out / "manifest.json").exists()


# ---------------------------------------------------------------------------------------- (4) resume


def test_an_interrupted_run_resumes_to_the_same_readings(handle, vectors_run, tmp_path, monkeypatch):
    prompts, config = spread_prompts(4), MonitorConfig(samples=2, max_new_tokens=4, batch_prompts=2)
    whole = monitor(handle, str(tmp_path / "whole"), vectors_run, prompts, config, quiet=True)

    real = Monitoring.compute
    computed: list[list[str]] = []

    def dies_after_one(self, group):
        if computed:
            raise KeyboardInterrupt
        computed.append(group)
        return real(self, group)

    monkeypatch.setattr(Monitoring, "compute", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        monitor(handle, str(tmp_path / "killed"), vectors_run, prompts, config, quiet=True)
    assert not (tmp_path / "killed" / "readings.parquet").exists()

    def counted(self, group):
        computed.append(group)
        return real(self, group)

    monkeypatch.setattr(Monitoring, "compute", counted)
    resumed = monitor(handle, str(tmp_path / "killed"), vectors_run, prompts, config, quiet=True)
    assert len(computed) == 2 and not set(computed[0]) & set(computed[1])  # only the missing batch
    a, b = read_monitor(tmp_path / "whole"), read_monitor(tmp_path / "killed")
    pd.testing.assert_frame_equal(a.replies, b.replies)
    pd.testing.assert_frame_equal(a.readings, b.readings, check_exact=False, atol=1e-6, rtol=0)
    timing = {"seconds", "tokens_per_second"}
    assert {k: v for k, v in whole.items() if k not in timing} == {
        k: v for k, v in resumed.items() if k not in timing
    }
    # A finished run does no work; another layer is another run.
    assert monitor(handle, str(tmp_path / "killed"), vectors_run, prompts, config, quiet=True) == resumed
    assert len(computed) == 2
    with pytest.raises(AffectlensError, match="different"):
        monitor(
            handle, str(tmp_path / "killed"), vectors_run, prompts, config.model_copy(update={"layer": 0})
        )


# ------------------------------------------------------------------------------------------- (5) CLI


def test_cli_monitor_runs_and_prints_a_summary(handle, vectors_run, tmp_path, monkeypatch):
    loads: list[str] = []
    monkeypatch.setattr(api_module, "load_model", lambda spec, **_: loads.append(spec) or handle)
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": p.id, "cell": p.cell, "text": p.text}) + "\n"
                            for p in spread_prompts(2)))  # fmt: skip
    runner = CliRunner()
    base = ["monitor", "--model", "tiny", "--prompts", str(path), "--out", str(tmp_path / "m"), "--quiet"]
    bad = runner.invoke(app, [*base, "--vectors", str(tmp_path)])
    assert bad.exit_code == 2 and "is not a vectors run" in bad.output and loads == []
    result = runner.invoke(app, [*base, "--vectors", vectors_run, "--max-new-tokens", "3", "--samples", "2"])
    assert result.exit_code == 0, result.output
    assert "4 replies" in result.output and "highest:" in result.output and loads == ["tiny"]
    assert len(read_monitor(tmp_path / "m").replies) == 4


# ---------------------------------------------------------------------------------------- (6) figure


def test_figure_has_one_line_per_emotion_with_the_mean_over_prompts():
    rows = []
    # prompt a: two samples of 3 and 2 reply tokens; prompt b: one sample of 4 tokens.
    lengths = {("a", 0): 3, ("a", 1): 2, ("b", 0): 4}
    for (prompt, sample), n in lengths.items():
        for k in range(n):
            for e, name in enumerate(["joy", "fear"]):
                value = (1 if prompt == "a" else 3) * (e + 1) + sample + k
                rows.append([prompt, "X", sample, "reply", k, 5, "t", name, float(value)])
        for name in ("joy", "fear"):
            rows.append([prompt, "X", 0, "prompt", 0, 5, "t", name, 10.0])
    readings = pd.DataFrame(rows, columns=MONITOR_COLUMNS)
    fig = readings_figure(readings, ["joy", "fear"], layer=1)
    lines = {
        line.get_label(): line
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_label() in ("joy", "fear")
    }
    assert list(lines) == ["joy", "fear"]
    x, y = lines["joy"].get_data()
    # Index 3 is reached by prompt b only: cut. At k, prompt a's samples average to 1 + k (+0.5 where both).
    assert list(x) == [0, 1, 2]
    np.testing.assert_allclose(y, [(1.5 + 3) / 2, (2.5 + 4) / 2, (3 + 5) / 2])
    assert fig.get_supylabel() == Y_LABEL and "layer 1" in fig.get_suptitle()
