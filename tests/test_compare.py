"""The encoder comparison from run folders: files written atomically, cells from the manifest, the report
sections it feeds and how build_report assembles them, and an analysis layer that neither draws nor imports
the report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest

import affectlens.cells as cells_module
from affectlens.analysis.encoders import compare_runs
from affectlens.analysis.similarity import js_similarity
from affectlens.api.compare import compare
from affectlens.cells import Cell, CellSet, default_cells
from affectlens.errors import AffectlensError
from affectlens.reporting.build import build_report
from affectlens.store.runs import emitted_faces

CODES = default_cells().codes
FILES = [
    "comparison.json",
    "ensembles.parquet",
    "lookup.parquet",
    "similarity.md",
    "similarity.parquet",
    "similarity.png",
    "similarity.svg",
]


def _manifest(root: Path, stage: str, spec: str, **extra: object) -> None:
    root.mkdir(parents=True, exist_ok=True)
    entry = {
        "identity": {"model": {"spec": spec, "fingerprint": f"fp-{spec}"}},
        "finished": "2026-01-01",
        **extra,
    }
    (root / "manifest.json").write_text(json.dumps({"stages": {stage: entry}}), encoding="utf-8")


def elicit_run(root: Path, spec: str, seed: int, codes: list[str] = CODES, cells: str = "pad9") -> Path:
    """An elicitation run folder: 20 faces, each leaning to some cells, over 120 prompts x 2 samples."""
    rng = np.random.default_rng(seed)
    faces = [f"(^{'_' * (i + 1)}^)" for i in range(20)]
    lean = rng.dirichlet(np.full(len(codes), 0.5), len(faces))
    rows = []
    for p in range(120):
        cell = codes[p % len(codes)]
        for s in range(2):
            w = lean[:, codes.index(cell)] + 1e-3
            face = None if rng.random() < 0.1 else faces[rng.choice(len(faces), p=w / w.sum())]
            rows.append({"prompt_id": f"p{p}", "cell": cell, "sample": s, "face": face})
    generations = pd.DataFrame(rows)
    per_cell = {
        c: {
            "n": len(g),
            "face_rate": 0.9,
            "top_faces": [[f, int(n)] for f, n in g["face"].value_counts().head(2).items()],
        }
        for c, g in generations.groupby("cell")
    }
    summary = {"n_samples": len(generations), "face_rate": 0.9, "n_distinct_faces": 20, "cells": per_cell}
    _manifest(root, "elicit", spec, cells=cells, summary=summary)
    generations.to_parquet(root / "generations.parquet", index=False)
    return root


def likelihood_run(root: Path, spec: str, seed: int, codes: list[str] = CODES, n_faces: int = 20) -> Path:
    """A likelihood run folder: an unnormalised face-by-cell table (the loader normalises rows)."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.dirichlet(np.ones(len(codes)), n_faces) * 3.0, columns=codes)
    table.insert(0, "face", [f"(^{'_' * (i + 1)}^)" for i in range(n_faces)])
    _manifest(root, "likelihood", spec)
    table.to_parquet(root / "face_cells.parquet", index=False)
    return root


@pytest.fixture
def runs(tmp_path: Path) -> tuple[str, list[str]]:
    truth = elicit_run(tmp_path / "truth", "model-a", 0)
    encoders = [
        likelihood_run(tmp_path / "lik-a", "model-a", 1),
        likelihood_run(tmp_path / "lik-b", "model-b", 2, n_faces=12),
    ]
    return str(truth), [str(e) for e in encoders]


def test_compare_writes_every_file_and_returns_what_it_wrote(tmp_path: Path, runs) -> None:
    truth, encoders = runs
    out = tmp_path / "cmp"
    result = compare(truth, encoders, str(out), n_boot=100, seed=3)
    assert sorted(p.name for p in out.iterdir()) == FILES
    saved = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert (out / "similarity.md").read_text(encoding="utf-8") == result["markdown"]
    assert result["figures"] == [str(out / "similarity.png"), str(out / "similarity.svg")]
    assert [r["encoder"] for r in result["rows"]] == ["model-a (likelihood)", "model-b (likelihood)"]
    # The table the CLI prints: value [lo, hi], three decimals.
    body = result["markdown"].splitlines()[2]
    assert re.fullmatch(
        r"\| model-a \(likelihood\) \| \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \| "
        r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \| 20 \| own \| \d\.\d{3} / \d\.\d{3} \| \d\.\d{3} / \d\.\d{3} \|",
        body,
    )
    assert result["best_ensemble"]["n_faces"] == 12


def test_every_table_carries_baselines_face_sets_and_the_held_out_best(tmp_path: Path, runs) -> None:
    truth, encoders = runs
    out = tmp_path / "cmp"
    compare(truth, encoders, str(out), n_boot=50, seed=2)
    saved = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    baseline_keys = [
        "uniform_face_uniform",
        "uniform_emit_weighted",
        "marginal_face_uniform",
        "marginal_emit_weighted",
    ]
    for row in saved["rows"]:
        assert row["face_set"] == "own" and all(0.0 < row[key] <= 1.0 for key in baseline_keys)
    assert set(saved["face_sets"]) == {"own", "common"}
    best = saved["best_ensemble"]
    assert best["face_set"] == "common" and all(0.0 < best[key] <= 1.0 for key in baseline_keys)
    assert (
        best["heldout_emit_weighted_lo"] <= best["heldout_emit_weighted"] <= best["heldout_emit_weighted_hi"]
    )
    assert best["heldout_seed"] == 2 and best["heldout_n_select"] == 6 and best["heldout_n_score"] == 12
    assert "cross-fitting" in best["heldout_method"] and sum(best["heldout_choices"].values()) == 20
    common = saved["common_rows"]
    assert [r["encoder"] for r in common] == ["model-a (likelihood)", "model-b (likelihood)"]
    assert all(r["n_faces"] == 12 and r["face_set"] == "common" for r in common)
    ensembles = pd.read_parquet(out / "ensembles.parquet")
    assert (ensembles["face_set"] == "common").all() and (
        ensembles["uniform_emit_weighted"] == best["uniform_emit_weighted"]
    ).all()
    assert ensembles.loc[0, "heldout_emit_weighted"] == pytest.approx(best["heldout_emit_weighted"])
    # The Markdown (what the CLI prints) has the same-face table: singles, in-sample, held out, baselines.
    lines = saved["markdown"].splitlines()
    start = lines.index(
        next(line for line in lines if line.startswith("| on the 12 faces every encoder shares"))
    )
    labels = [line.split(" | ")[0] for line in lines[start + 2 :]]
    assert len(labels) == 6 and "in-sample" in labels[2] and "held out" in labels[3]
    assert "uniform baseline" in labels[4] and "marginal baseline" in labels[5]
    page = build_report(tmp_path, out=tmp_path / "report").read_text(encoding="utf-8")
    assert "uniform baseline" in page and "Held out, chosen on half the faces (6)" in page


def test_cli_prints_the_held_out_best_and_its_baselines(tmp_path: Path, runs) -> None:
    from affectlens.cli.analyses import print_comparison
    from affectlens.cli.common import console

    result = compare(*runs, str(tmp_path / "cmp"), n_boot=50)
    with console.capture() as captured:
        print_comparison(result, 1)
    text = captured.get()
    best = result["best_ensemble"]
    assert "marginal baseline (fu / ew)" in text  # the per-encoder table
    held = f"held out {best['heldout_emit_weighted']:.3f} [{best['heldout_emit_weighted_lo']:.3f}, "
    assert held in text and f"in-sample {best['emit_weighted']:.3f}" in text
    assert f"baselines: uniform {best['uniform_emit_weighted']:.3f}, truth marginal" in text


def test_pairwise_heat_map_applies_the_floor(tmp_path: Path, runs) -> None:
    truth, encoders = runs
    counts = pd.read_parquet(Path(truth) / "generations.parquet")["face"].value_counts()
    floor = int(counts.median()) + 1
    kept = list(counts.index[counts >= floor])
    assert 3 <= len(kept) < 20
    found = compare_runs(truth, encoders, floor=floor, n_boot=20)
    names = list(found.pairwise.index)
    n_faces = found.pairwise.attrs["n_faces"]
    assert n_faces[names[0]][names[0]] == len(kept) == found.rows[0]["n_faces"]
    a, b = (found.encoders[name].loc[lambda f: f.index.isin(kept)] for name in names[1:])
    shared = [face for face in a.index if face in b.index]
    assert n_faces[names[1]][names[2]] == len(shared)
    expected = np.mean(js_similarity(a.loc[shared, CODES].to_numpy(), b.loc[shared, CODES].to_numpy()))
    assert found.pairwise.loc[names[1], names[2]] == pytest.approx(expected, abs=1e-12)
    saved = compare(truth, encoders, str(tmp_path / "cmp"), floor=floor, n_boot=20)
    assert saved["pairwise_floor"] == floor and saved["pairwise_n_faces"][names[0]][names[0]] == len(kept)


def test_analysis_writes_nothing(tmp_path: Path, runs) -> None:
    truth, encoders = runs
    before = sorted(tmp_path.rglob("*"))
    found = compare_runs(truth, encoders, n_boot=50)
    assert sorted(tmp_path.rglob("*")) == before
    assert found.ensembles is not None and found.lookup is not None and len(found.rows) == 2


def _fail_midway(target: str):
    """A writer that leaves a partial file at the path it was given, then fails."""

    def write(self, *args, **kwargs):
        # Path.write_text is called on the path itself; to_parquet and savefig take it as their first argument.
        Path(self if isinstance(self, Path) else args[0]).write_bytes(b"partial")
        raise OSError(f"disk full while writing {target}")

    return write


@pytest.mark.parametrize(
    ("owner", "method", "name"),
    [
        (pd.DataFrame, "to_parquet", "similarity.parquet"),
        (Path, "write_text", "similarity.md"),
        (matplotlib.figure.Figure, "savefig", "similarity.png"),
    ],
)
def test_failed_write_leaves_the_old_files(tmp_path: Path, runs, monkeypatch, owner, method, name) -> None:
    truth, encoders = runs
    out = tmp_path / "cmp"
    compare(truth, encoders, str(out), n_boot=50)
    (out / name).write_bytes(b"the old file")
    finished = (out / "comparison.json").read_bytes()
    monkeypatch.setattr(owner, method, _fail_midway(name))
    with pytest.raises(OSError, match="disk full"):
        compare(truth, encoders, str(out), n_boot=60, seed=9)
    assert (out / name).read_bytes() == b"the old file"
    assert sorted(p.name for p in out.iterdir()) == FILES  # no temporary file left behind
    assert (out / "comparison.json").read_bytes() == finished  # written last: the old run still reads whole


def test_cells_come_from_the_truth_manifest(tmp_path: Path, monkeypatch) -> None:
    marks = (("up", 1.0), ("mid", 0.0), ("down", -1.0))
    tri = CellSet("tri-test", tuple(Cell(c, c, c, v, 0.0, 0.0, "#777777") for c, v in marks))
    monkeypatch.setitem(cells_module._REGISTRY, tri.name, tri)  # registered for this test only
    truth = elicit_run(tmp_path / "truth", "m", 0, codes=tri.codes, cells=tri.name)
    enc = likelihood_run(tmp_path / "lik", "m", 1, codes=tri.codes)
    result = compare(str(truth), [str(enc)], str(tmp_path / "cmp"), n_boot=50)
    assert result["rows"][0]["n_faces"] == 20 and "best_ensemble" not in result
    with pytest.raises(AffectlensError, match="outside the pad9 set"):
        compare_runs(str(truth), [str(enc)], n_boot=50, cells=default_cells())
    page = build_report(truth, tmp_path / "cmp", out=tmp_path / "report").read_text(encoding="utf-8")
    usage = page[page.index("Face usage per cell") :]
    assert ">up<" in usage and ">HP-D<" not in usage  # the run's own cells, in its order


def test_report_shows_the_comparison(tmp_path: Path, runs) -> None:
    truth, encoders = runs
    result = compare(truth, encoders, str(tmp_path / "cmp"), n_boot=50)
    page = build_report(tmp_path, out=tmp_path / "report").read_text(encoding="utf-8")
    assert "Likelihood encoders and similarity to the emitted faces" in page
    assert "All numbers: cmp/comparison.json" in page
    assert "model-b (likelihood)" in page and result["rows"][1]["encoder"] == "model-b (likelihood)"
    assert page.count('<img src="data:image/png;base64,') == 1


def test_emitted_faces_most_frequent_first(runs) -> None:
    truth, _ = runs
    faces = emitted_faces(truth)
    counts = pd.read_parquet(Path(truth) / "generations.parquet")["face"].value_counts()
    assert faces == list(counts.index) and len(faces) == 20


def test_analysis_imports_neither_matplotlib_nor_the_report() -> None:
    code = (
        "import sys, affectlens.analysis.similarity, affectlens.analysis.encoders\n"
        "print([m for m in sys.modules if m.split('.')[0] == 'matplotlib' or m.startswith('affectlens.reporting')])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_report_adds_a_cross_model_table_for_two_emotion_analyses(tmp_path: Path, runs, monkeypatch) -> None:
    # The emotions sections are stubbed: this checks how build_report assembles them, not what they say.
    import types

    from affectlens.reporting.document import Section

    seen: dict[str, dict] = {}

    def cross_model_section(results: dict[str, dict]) -> Section:
        seen.update(results)
        return Section("Across models", ["cross"])

    stub = types.SimpleNamespace(
        sections=lambda result, out: [Section(f"Emotions of {result['model']['spec']}", ["x"])],
        cross_model_section=cross_model_section,
    )
    monkeypatch.setitem(sys.modules, "affectlens.reporting.sections.emotions", stub)
    monkeypatch.setattr("affectlens.reporting.sections.emotions", stub, raising=False)
    for name in ("a", "b"):
        (tmp_path / "emo" / name).mkdir(parents=True)
        data = {"model": {"spec": "same-spec"}, "layer": 2}
        (tmp_path / "emo" / name / "emotions.json").write_text(json.dumps(data), encoding="utf-8")
    page = build_report(runs[0], tmp_path / "emo", out=tmp_path / "report").read_text(encoding="utf-8")
    assert list(seen) == ["same-spec", "same-spec #2"]
    titles = re.findall(r"<h2>([^<]*)</h2>", page)
    assert titles[-3:] == ["Across models", "All numbers: a/emotions.json", "All numbers: b/emotions.json"]
