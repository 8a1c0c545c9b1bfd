"""Emotion vectors: planted directions are recovered, offsets are padding-safe, the corpus validates, the stage resumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_model

from affectlens.analysis.emotions import SpanProbe, affect_axes, probe, shuffle_within, similarity, unit
from affectlens.config import VectorsConfig
from affectlens.conventions import headline_layer
from affectlens.errors import AffectlensError
from affectlens.runtime.arch import resolve
from affectlens.runtime.capture import TokenMean, capture
from affectlens.runtime.tokens import left_pad, right_pad
from affectlens.stages.vectors import (
    _Item,
    buckets,
    denoise,
    emotion_vectors,
    run_bucket,
    story_start,
    vectors,
)
from affectlens.stats import default_estimator, grouped_cv_predict
from affectlens.stimuli.corpus import DEFAULT_CORPUS, FILES, banned_hits, load_corpus
from affectlens.store.runs import read_vectors

# ------------------------------------------------------------------------------------ (a) planted directions


def _planted(seed: int = 0, d: int = 64, n_emotions: int = 6, per_emotion: int = 12, n_neutral: int = 40):
    """Stories = grand offset + emotion direction + large nuisance (shared with neutral) + small noise."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    nuisance = q[:, :3].T  # [3, d]: a subspace that dominates neutral variance
    planted = q[:, 3 : 3 + n_emotions].T  # [E, d], orthonormal and orthogonal to the nuisance
    offset = rng.normal(size=d) * 5

    def nuisance_noise(n: int) -> np.ndarray:
        return (rng.normal(size=(n, 3)) * np.array([8.0, 6.0, 5.0])) @ nuisance

    labels = np.repeat(np.arange(n_emotions), per_emotion)
    stories = (
        offset + 2.0 * planted[labels] + nuisance_noise(len(labels)) + 0.1 * rng.normal(size=(len(labels), d))
    )
    neutral = offset + nuisance_noise(n_neutral) + 0.1 * rng.normal(size=(n_neutral, d))
    topics = np.tile(np.arange(per_emotion), n_emotions)
    return stories[:, None, :], neutral[:, None, :], labels, topics, planted, nuisance


def test_planted_directions_are_recovered_and_nuisance_removed():
    stories, neutral, labels, _, planted, nuisance = _planted()
    names = [f"e{i}" for i in range(len(planted))]
    raw = emotion_vectors(stories, [names[i] for i in labels], names)
    clean, counts, explained = denoise(raw, neutral, 0.9)
    assert raw.shape == clean.shape == (len(names), 1, stories.shape[-1])
    assert counts == [3] and explained[0] >= 0.9  # two components reach only ~80% of the neutral variance
    # The true vectors are the planted directions minus their mean (vectors are relative to the grand mean).
    target = unit(planted - planted.mean(axis=0))
    got = unit(clean[:, 0])
    assert np.min(np.sum(got * target, axis=1)) > 0.95
    # Raw vectors carry nuisance from sampling; the cleaned ones only what the PCA misestimates.
    assert np.abs(unit(raw[:, 0]) @ nuisance.T).max() > 0.3
    assert np.abs(got @ nuisance.T).max() < 0.02


def test_denoise_removes_fewest_components_reaching_the_variance():
    rng = np.random.default_rng(1)
    neutral = rng.normal(size=(30, 1, 10)) * np.array([10, 5, 1, 1, 1, 1, 1, 1, 1, 1.0])
    vecs = rng.normal(size=(4, 1, 10))
    _, counts, explained = denoise(vecs, neutral, 0.5)
    assert counts == [1] and explained[0] >= 0.5
    _, counts, _ = denoise(vecs, neutral, 0.0)
    assert counts == [0]


def test_probe_recovers_planted_emotions_topic_held_out():
    stories, _, labels, topics, _, _ = _planted(per_emotion=6, d=48)
    names = [f"e{i}" for i in range(6)]
    y = np.array([names[i] for i in labels])
    result = probe(stories[:, 0], y, topics, names, n_boot=50, n_permutations=9, seed=0)
    assert result["accuracy"] > 0.9
    assert result["p_value"] == pytest.approx(1 / 10)
    assert result["folds"].startswith("6")


def test_span_probe_matches_the_full_dimensional_fit():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(5), 8)
    X = rng.normal(size=(40, 120)) + rng.normal(size=(5, 120))[y] * 0.4  # d > n: the span matters
    groups = np.tile(np.arange(8), 5)
    full = grouped_cv_predict(X, y, groups, n_splits=8, make_estimator=lambda: default_estimator(tol=1e-8))
    span = SpanProbe(8, tol=1e-8)(X, y, groups, 0)
    assert np.mean(full == span) >= 0.95


def test_shuffle_within_keeps_each_groups_labels():
    y = np.array(list("abcabcabc"))
    g = np.repeat([0, 1, 2], 3)
    out = shuffle_within(y, g, np.random.default_rng(0))
    for group in range(3):
        assert sorted(out[g == group]) == sorted(y[g == group])


def test_affect_axes_finds_planted_valence_and_arousal():
    rng = np.random.default_rng(3)
    valence, arousal = rng.uniform(-1, 1, 20), rng.uniform(-1, 1, 20)
    basis, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    vecs = (
        3 * valence[:, None] * basis[:, 0]
        + 1.5 * arousal[:, None] * basis[:, 1]
        + 0.05 * rng.normal(size=(20, 32))
    )
    axes = affect_axes(vecs, valence, arousal, n_boot=100, n_permutations=99)
    assert axes["pc1_valence"]["r"] > 0.9 and axes["pc2_arousal"]["r"] > 0.8
    assert axes["pc1_valence"]["p_value"] == pytest.approx(0.01)
    sim, order = similarity(vecs)
    assert sorted(order) == list(range(20)) and np.allclose(np.diag(sim), 1)


def test_headline_layer_rule():
    assert headline_layer(30, range(30)) == 19
    assert headline_layer(28, range(28)) == 18
    assert headline_layer(48, [0, 4, 9, 30, 47]) == 30  # target 31: the nearest stored layer


# ------------------------------------------------------------------------------- (b) offsets under padding


def test_story_start_rule():
    assert story_start(120, 50) == 50
    assert story_start(50, 50) == 25
    assert story_start(9, 50) == 4
    assert story_start(1, 50) == 0
    assert story_start(7, 0) == 0


OFFSET = 12
LENGTHS = [30, 7, 19, 13, 12]  # 7 and 12 are not longer than the offset: start = n // 2


def _single_run_means(model, seqs: list[list[int]], starts: list[int]) -> list[torch.Tensor]:
    """The reference: each sequence alone, unpadded, block outputs from output_hidden_states."""
    model.config.tie_last_hidden_states = False
    out = []
    for seq, start in zip(seqs, starts, strict=True):
        with torch.no_grad():
            states = model(input_ids=torch.tensor([seq]), output_hidden_states=True).hidden_states[1:]
        out.append(torch.stack([h[0, start:].mean(dim=0) for h in states]))
    return out


@pytest.mark.parametrize("pad", [left_pad, right_pad, "stage"])
def test_offset_means_equal_unpadded_single_runs(pad):
    model = tiny_model("llama")
    arch = resolve(model)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist() for n in LENGTHS]
    starts = [story_start(n, OFFSET) for n in LENGTHS]
    assert starts == [12, 3, 12, 12, 6]
    if pad == "stage":  # the stage's own path: items, buckets, run_bucket
        handle = SimpleNamespace(
            model=model, arch=arch, tokenizer=SimpleNamespace(pad_token_id=0), device=torch.device("cpu")
        )
        items = [
            _Item(f"story:{i}", tuple(s), st) for i, (s, st) in enumerate(zip(seqs, starts, strict=True))
        ]
        got = {}
        for bucket in buckets(items, 64):
            hidden = run_bucket(handle, bucket, [0, 1, 2])
            got.update({item.key: hidden[j] for j, item in enumerate(bucket)})
        batch = torch.stack([got[i.key] for i in items])
    else:
        ids, mask = pad(seqs, 0)
        at = TokenMean(torch.tensor(starts), torch.tensor(LENGTHS))
        batch = capture(model, arch, ids, mask, [0, 1, 2], at).hidden
    for b, expected in enumerate(_single_run_means(model, seqs, starts)):
        torch.testing.assert_close(batch[b], expected, atol=1e-4, rtol=1e-4)


def test_buckets_sort_by_length_and_respect_the_token_budget():
    items = [_Item(f"story:{i}", tuple(range(n)), 0) for i, n in enumerate([5, 40, 7, 33, 6, 50])]
    out = buckets(items, 100)
    assert [len(i.ids) for b in out for i in b] == sorted(len(i.ids) for i in items)
    assert all(len(b) * max(len(i.ids) for i in b) <= 100 or len(b) == 1 for b in out)


# ------------------------------------------------------------------------------------ (c) corpus validation


def _copy_corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for kind in FILES:
        (folder / f"{kind}.jsonl").write_bytes((DEFAULT_CORPUS / f"{kind}.jsonl").read_bytes())
    return folder


def _append(path: Path, record: dict) -> int:
    lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    path.write_text("\n".join([*lines, json.dumps(record)]) + "\n", encoding="utf-8")
    return len(lines) + 1


@pytest.mark.parametrize(
    ("kind", "record", "message"),
    [
        ("stories", {"id": "x1", "emotion": "smug", "topic": "work", "text": "t"}, "unknown emotion 'smug'"),
        ("stories", {"id": "x1", "emotion": "sad", "topic": "space", "text": "t"}, "unknown topic 'space'"),
        ("stories", {"id": "playful-work", "emotion": "sad", "topic": "work", "text": "t"}, "duplicate id"),
        ("stories", {"id": "x1", "emotion": "sad", "topic": "work", "text": "  "}, "empty text"),
        ("neutral", {"id": "neutral-01", "text": "t"}, "duplicate id"),
        ("implicit", {"id": "i-x", "emotion": "smug", "text": "t"}, "unknown emotion"),
        ("emotions", {"name": "x", "cell": "ZZ", "valence": 0, "arousal": 0, "cluster": "c"}, "unknown cell"),
        ("emotions", {"name": "x", "cell": "LP", "valence": 3, "arousal": 0, "cluster": "c"}, "valence"),
    ],
)
def test_corpus_errors_name_file_and_line(tmp_path, kind, record, message):
    folder = _copy_corpus(tmp_path)
    line = _append(folder / f"{kind}.jsonl", record)
    with pytest.raises(AffectlensError, match=message) as info:
        load_corpus(folder)
    assert f"{kind}.jsonl:{line}:" in str(info.value)
    assert "\n" not in str(info.value)


def test_corpus_bad_utf8_names_the_line(tmp_path):
    folder = _copy_corpus(tmp_path)
    path = folder / "neutral.jsonl"
    path.write_bytes(path.read_bytes() + b'{"id": "n-x", "text": "caf\xe9"}\n')
    with pytest.raises(AffectlensError, match=r"neutral.jsonl:41: not valid UTF-8"):
        load_corpus(folder)


def test_shipped_corpus_loads_and_hashes_its_content():
    corpus = load_corpus()
    assert (len(corpus.emotions), len(corpus.topics), len(corpus.stories)) == (20, 12, 240)
    assert (len(corpus.neutral), len(corpus.implicit)) == (40, 12)
    subset = dataclasses.replace(corpus, stories=corpus.stories[:20])
    assert subset.hash != corpus.hash and load_corpus().hash == corpus.hash


# ------------------------------------------------------------------------------------------ (d) banned words


def test_banned_hits_whole_words_case_and_apostrophes():
    banned = ["fear", "fun", "sad"]
    assert banned_hits("Fear's grip was FUN-loving; saddle", banned) == ["fear", "fun"]
    assert banned_hits("It wasn\u2019t sad\u2019s fault", banned) == ["sad"]
    assert banned_hits("funny, fearless", banned) == []


def test_shipped_corpus_uses_no_banned_words():
    corpus = load_corpus()
    banned = {e.name: e.banned for e in corpus.emotions}
    hits = {
        s.id: h for s in corpus.stories + corpus.implicit if (h := banned_hits(s.text, banned[s.emotion]))
    }
    assert hits == {}


# --------------------------------------------------------------------------------------- (e) the stage, slow


@pytest.mark.slow
def test_vectors_stage_on_smollm2(smollm2, tmp_path):
    corpus = load_corpus()
    small = dataclasses.replace(
        corpus,
        stories=tuple(s for s in corpus.stories if s.topic == "work"),
        neutral=corpus.neutral[:6],
        implicit=corpus.implicit[:3],
    )
    out = tmp_path / "run"
    layers = [2, 9]  # the forward pass stops after block 9
    summary = vectors(smollm2, str(out), small, VectorsConfig(layers=layers), quiet=True)
    assert summary["headline_layer"] == 9 and summary["n_stories"] == 20  # stored layer nearest to 19
    run = read_vectors(str(out))
    d = smollm2.d_model
    assert run.activations["stories"].shape == (20, 2, d) and run.activations["neutral"].shape == (6, 2, d)
    assert run.activations["implicit"].shape == (3, 2, d)
    assert run.raw.shape == run.denoised.shape == (20, 2, d)
    assert run.entry["layers"] == layers and "block i" in run.layer_convention
    assert run.entry["identity"]["config"]["offset"] == 50
    assert (run.stories["start"] == 50).all() and list(run.stories["emotion"]) == corpus.emotion_names
    lens = run.logit_lens
    assert set(lens["vector"]) == {"raw", "denoised"} and (lens["layer"] == 9).all()
    assert len(lens) == 2 * 20 * 2 * 10

    # A finished run does no work; a run with one part missing redoes that part only.
    calls = []
    hook = smollm2.arch.blocks[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        assert vectors(smollm2, str(out), small, VectorsConfig(layers=layers), quiet=True) == summary
        assert calls == []
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["stages"]["vectors"]["finished"] = None
        (out / "manifest.json").write_text(json.dumps(manifest))
        markers = sorted((out / "parts" / "vectors").glob("*.json"))
        markers[0].unlink()
        vectors(smollm2, str(out), small, VectorsConfig(layers=layers), quiet=True)
        assert len(calls) == 1
    finally:
        hook.remove()
    again = read_vectors(str(out))
    np.testing.assert_allclose(again.denoised, run.denoised, atol=1e-5)
    with pytest.raises(AffectlensError, match="different"):
        vectors(smollm2, str(out), small, VectorsConfig(layers=layers, offset=10), quiet=True)


# -------------------------------------------------------------------------- the analysis, on a synthetic run


def _fake_runs(root: Path, fingerprint: str = "fake-1") -> tuple[str, str]:
    """A finished vectors run (6 emotions x 4 topics, 3 layers, d = 16) and an elicitation run of the same model."""
    from affectlens.store.atomic import write_parquet, write_tensors
    from affectlens.store.manifest import RunStore

    rng = np.random.default_rng(0)
    names, cells = [f"e{i}" for i in range(6)], ["HP-D", "LP", "HN-D", "HN-S", "LN", "NB"]
    d, layers = 16, [0, 1, 2]
    directions = rng.normal(size=(6, d)) * 3
    labels = np.repeat(np.arange(6), 4)
    stories = directions[labels][:, None, :] + rng.normal(size=(24, 3, d))
    neutral = rng.normal(size=(8, 3, d))
    implicit = directions[[0, 2, 4]][:, None, :] + rng.normal(size=(3, 3, d))
    raw = emotion_vectors(stories, [names[i] for i in labels], names)
    clean, counts, explained = denoise(raw, neutral, 0.5)
    store = RunStore(root / "vectors")
    model = {"spec": "fake", "fingerprint": fingerprint}
    store.begin(
        "vectors",
        {"model": model, "stimuli": {}, "config": {"layers": layers, "denoise_variance": 0.5}},
        {"model": {**model, "n_layers": 3}, "layers": layers, "positions": "test", "logit_lens": "test"},
    )
    r = store.root
    write_parquet(
        r / "stories.parquet",
        pd.DataFrame(
            {
                "id": [f"s{i}" for i in range(24)],
                "emotion": [names[i] for i in labels],
                "topic": [f"t{i % 4}" for i in range(24)],
            }
        ),
    )
    write_parquet(r / "neutral.parquet", pd.DataFrame({"id": [f"n{i}" for i in range(8)]}))
    write_parquet(
        r / "implicit.parquet", pd.DataFrame({"id": ["i0", "i1", "i2"], "emotion": ["e0", "e2", "e4"]})
    )
    write_parquet(
        r / "emotions.parquet",
        pd.DataFrame(
            {
                "name": names,
                "cell": cells,
                "valence": rng.uniform(-1, 1, 6),
                "arousal": rng.uniform(-1, 1, 6),
                "cluster": list("aabbcc"),
            }
        ),
    )
    as_t = lambda x: torch.from_numpy(np.asarray(x, dtype=np.float32))  # noqa: E731
    write_tensors(
        r / "activations.safetensors",
        {"stories": as_t(stories), "neutral": as_t(neutral), "implicit": as_t(implicit)},
    )
    write_tensors(r / "vectors.safetensors", {"raw": as_t(raw), "denoised": as_t(clean)})
    write_parquet(
        r / "denoise.parquet",
        pd.DataFrame({"layer": layers, "n_components": counts, "variance_removed": explained}),
    )
    lens = [
        {
            "vector": "denoised",
            "emotion": e,
            "layer": 1,
            "direction": way,
            "rank": k,
            "token_id": k,
            "token": f"tok{k}",
            "logit_delta": 1.0,
        }
        for e in names
        for way in ("top", "bottom")
        for k in range(2)
    ]
    write_parquet(r / "logit_lens.parquet", pd.DataFrame(lens))
    store.finish("vectors", summary={})

    elicit = RunStore(root / "elicit")
    elicit.begin("elicit", {"model": model}, {"layers": layers})
    prompt_cells = [cells[i % 6] for i in range(18)]
    h = np.stack([directions[i % 6] for i in range(18)])[:, None, :] + rng.normal(size=(18, 3, d))
    write_parquet(
        elicit.root / "prompts.parquet",
        pd.DataFrame({"id": [f"p{i}" for i in range(18)], "cell": prompt_cells}),
    )
    write_parquet(elicit.root / "generations.parquet", pd.DataFrame({"prompt_id": ["p0"], "face": [None]}))
    write_tensors(elicit.root / "h_first.safetensors", {"h_first": as_t(h)})
    elicit.finish("elicit", summary={})
    return str(store.root), str(elicit.root)


def test_analysis_runs_from_run_folders_and_writes_json_and_figures(tmp_path):
    from affectlens.api.emotions import analyze_emotions
    from affectlens.reporting.sections.emotions import sections

    run, elicit = _fake_runs(tmp_path)
    out = tmp_path / "analysis"
    result = analyze_emotions(run, str(out), n_permutations=9, n_boot=20, elicitation_run=elicit)
    assert result["layer"] == 1  # round(2/3 * (3 - 1))
    assert result["layer_rule"] == "round(2/3 * (n_layers - 1)), or the stored layer nearest to it"
    saved = json.loads((out / "emotions.json").read_text())
    assert saved == result
    assert saved["probe"]["headline"]["accuracy"] > 0.5
    assert len(saved["probe"]["by_layer"]) == 3 and len(saved["probe"]["stability"]) == 2
    assert saved["implicit"]["n"] == 3 and saved["bridge"]["n_prompts"] == 18
    assert saved["bridge"]["chance_uniform"] == pytest.approx(1 / 6)
    assert saved["bridge"]["cell_set"] == "pad9"  # the elicitation manifest names none: the default set
    assert np.asarray(saved["bridge"]["mean_projection"]).shape == (9, 6)
    for stem in ("vectors_similarity", "vectors_pca", "vectors_probe", "vectors_bridge", "vectors_umap"):
        assert (out / f"{stem}.png").exists() and (out / f"{stem}.svg").exists()
        assert saved["figures"][stem] == [str(out / f"{stem}.png"), str(out / f"{stem}.svg")]
    found = sections(result, out)
    assert found[0].title == "Emotion vectors: geometry" and found[-1].title == "Bridge to self-report"
    captions = [b.caption for s in found for b in s.blocks if hasattr(b, "path")]
    assert any("UMAP" in c and "no number in this report is read from it" in c for c in captions)
    # Elsewhere (figures not beside the result) the sections draw again, without the UMAP (not in the JSON).
    elsewhere = sections(result, tmp_path / "elsewhere")
    assert [s.title for s in elsewhere] == [s.title for s in found]
    assert (tmp_path / "elsewhere" / "vectors_pca.png").exists()
    assert not (tmp_path / "elsewhere" / "vectors_umap.png").exists()


def test_analysis_result_serialises_as_its_fields_and_reads_back(tmp_path):
    from affectlens.analysis.emotions import EmotionsAnalysis, analyze_run

    run, _ = _fake_runs(tmp_path)
    analysis = analyze_run(run, n_permutations=0, n_boot=10, layer=2)
    assert analysis.layer == 2 and analysis.layer_rule == "chosen by the caller" and analysis.bridge is None
    assert analysis.story_activations.shape == (24, 16) and len(analysis.story_emotions) == 24
    data = analysis.to_json({"vectors_pca": [tmp_path / "a.png"]})
    assert "story_activations" not in data and data["figures"] == {"vectors_pca": [str(tmp_path / "a.png")]}
    assert list(data)[:3] == ["run", "model", "layer"] and list(data)[-2:] == ["bridge", "figures"]
    json.dumps(data)  # plain JSON: no numpy left
    back = EmotionsAnalysis.from_json(data)
    assert back.story_activations is None and back.to_json({}) == {**data, "figures": {}}
    with pytest.raises(AffectlensError, match="not in the run"):
        analyze_run(run, n_permutations=0, n_boot=10, layer=7)


def test_bridge_refuses_another_models_elicitation(tmp_path):
    from affectlens.analysis.emotions import analyze_run

    run, _ = _fake_runs(tmp_path / "a")
    _, other = _fake_runs(tmp_path / "b", fingerprint="fake-2")
    with pytest.raises(AffectlensError, match="another model"):
        analyze_run(run, n_permutations=0, n_boot=10, elicitation_run=other)


def test_bridge_cells_come_from_the_caller_the_manifest_or_the_default(tmp_path):
    from affectlens.analysis.emotions import analyze_run, run_cells
    from affectlens.cells import Cell, CellSet, default_cells, register_cell_set

    assert run_cells({}) is default_cells()
    assert run_cells({"cells": "pad9"}) is default_cells()
    small = CellSet(
        "test-two", (Cell("P", "pos", "", 1, 0, 0, "#00aa00"), Cell("N", "neg", "", -1, 0, 0, "#aa0000"))
    )
    assert run_cells({"cells": "pad9"}, small) is small
    register_cell_set(small)
    assert run_cells({"cells": "test-two"}) is small
    with pytest.raises(AffectlensError, match="unknown cell set"):
        run_cells({"cells": "nope"})
    run, elicit = _fake_runs(tmp_path)
    # The fake run's cells are pad9 codes: a set without them would make every match impossible.
    with pytest.raises(AffectlensError, match="not in the cell set 'test-two'"):
        analyze_run(run, n_permutations=0, n_boot=10, elicitation_run=elicit, cells=small)


def test_stability_summary_resamples_emotions():
    from affectlens.analysis.emotions import layer_stability, stability_summary

    rng = np.random.default_rng(4)
    base = rng.normal(size=(8, 1, 12))
    vectors = np.concatenate([base, base + 0.3 * rng.normal(size=(8, 1, 12)), base], axis=1)  # [E, 3, d]
    rows = layer_stability(vectors, [0, 1, 2])
    summary = stability_summary(vectors, [0, 1, 2], n_boot=200, seed=0)
    assert summary["n"] == 8 and summary["n_layer_pairs"] == 2 and summary["bootstrap_unit"] == "emotion"
    # Averaging pairs then emotions equals averaging the per-pair means (each pair covers every emotion).
    assert summary["mean_cosine"] == pytest.approx(np.mean([r["mean_cosine"] for r in rows]))
    assert summary["lo"] <= summary["mean_cosine"] <= summary["hi"] < 1
    same = stability_summary(np.repeat(base, 3, axis=1), [0, 1, 2], n_boot=50)
    assert same["mean_cosine"] == pytest.approx(1) and same["hi"] - same["lo"] < 1e-12
    single = stability_summary(base, [5], n_boot=50)
    assert single["mean_cosine"] is None and single["lo"] is None and single["n_layer_pairs"] == 0


def _result(accuracy: float, with_summary: bool = True) -> dict:
    r = {"r": 0.8, "lo": 0.6, "hi": 0.9, "n": 20}
    probe = {
        "headline": {
            "accuracy": accuracy,
            "accuracy_ci": [accuracy - 0.1, accuracy + 0.05],
            "chance": 0.05,
            "n": 240,
        },
        "stability": [{"from": 0, "to": 1, "mean_cosine": 0.9, "min_cosine": 0.8}],
    }
    if with_summary:
        probe["stability_summary"] = {"mean_cosine": 0.875, "lo": 0.85, "hi": 0.9, "n": 20}
    return {
        "layer": 19,
        "layers": list(range(30)),
        "emotions": [f"e{i}" for i in range(20)],
        "probe": probe,
        "pca": {"pc1_valence": r, "pc2_arousal": {**r, "r": 0.4, "lo": 0.2, "hi": 0.6}},
        "implicit": {"n": 40, "top3": {"accuracy": 0.5, "lo": 0.35, "hi": 0.65}},
    }


def test_cross_model_table_has_a_row_per_model_with_intervals_and_n():
    from affectlens.reporting.document import Table
    from affectlens.reporting.sections.emotions import cross_model_section

    assert cross_model_section({}) is None and cross_model_section({"a": _result(0.7)}) is None
    section = cross_model_section({"model-a": _result(0.7), "model-b": _result(0.6, with_summary=False)})
    table = next(b for b in section.blocks if isinstance(b, Table))
    frame = table.frame
    assert list(frame["model"]) == ["model-a", "model-b"]
    a, b = frame.iloc[0], frame.iloc[1]
    assert a["probe accuracy [95% CI]"] == "0.700 [0.600, 0.750]" and a["n stories"] == 240
    assert a["layer"] == 19 and a["stored layers"] == 30
    assert a["PC1–valence r [95% CI]"] == "0.800 [0.600, 0.900]" and a["n emotions"] == 20
    assert a["PC2–arousal r [95% CI]"] == "0.400 [0.200, 0.600]"
    assert a["implicit top-3 [95% CI]"] == "0.500 [0.350, 0.650]" and a["n scenarios"] == 40
    assert a["cross-layer stability [95% CI]"] == "0.875 [0.850, 0.900]" and a["n (stability)"] == 20
    # A result written before the stability interval existed: the mean of the rows, said to have no interval.
    assert b["cross-layer stability [95% CI]"] == "0.900 [no interval]"
    assert "over emotions" in table.caption and "over topics" in table.caption


def test_importing_the_analysis_draws_nothing_and_needs_no_stage():
    import subprocess
    import sys

    code = (
        "import sys, affectlens.analysis.emotions\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'umap')\n"
        "       or m.startswith(('affectlens.reporting', 'affectlens.stages'))]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
