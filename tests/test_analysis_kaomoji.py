"""Kaomoji analyses on synthetic run folders with planted signals: found when planted, absent when not."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from affectlens.analysis.kaomoji import KaomojiAnalysis, analyze_runs
from affectlens.analysis.kaomoji.geometry import explained_ratios
from affectlens.api.kaomoji import analyze_kaomoji
from affectlens.cells import Cell, CellSet, default_cells, register_cell_set
from affectlens.conventions import headline_layer
from affectlens.errors import AffectlensError
from affectlens.reporting.build import build_report
from affectlens.reporting.document import Figure, Section, Table
from affectlens.reporting.render import embedded_images, format_number, numbers_in
from affectlens.reporting.sections.kaomoji import sections
from affectlens.stages.elicit import summarize
from affectlens.store.atomic import write_parquet, write_tensors
from affectlens.store.manifest import RunStore

CODES = default_cells().codes
EYES = dict(zip(CODES, ["^", "T", ";", "•", "≧", "・", "´", "ಠ", "◕"], strict=True))  # well-formed faces
N_PERM = 49
N_BOOT = 100


def make_run(
    root: Path, spec: str, hidden: np.ndarray, prompts: pd.DataFrame, faces: list, cells: str | None = None
) -> str:
    """A finished elicitation run folder: manifest, prompts, generations (one row per face), h_first."""
    store = RunStore(root)
    n_layers = hidden.shape[1]
    identity = {
        "model": {"spec": spec, "fingerprint": "synthetic"},
        "stimuli": {"hash": "synthetic", "n": len(prompts)},
        "config": {"seed": 0},
    }
    entry = {"model": {"spec": spec, "n_layers": n_layers}, "layers": list(range(n_layers))}
    store.begin("elicit", identity, entry | ({"cells": cells} if cells else {}))
    rows = []
    per_prompt = len(faces) // len(prompts)
    for i, (pid, cell) in enumerate(zip(prompts["id"], prompts["cell"], strict=True)):
        for s in range(per_prompt):
            face = faces[i * per_prompt + s]
            rows.append(
                {"prompt_id": pid, "cell": cell, "sample": s, "reply": f"{face or ''} hi", "face": face,
                 "face_kind": "kaomoji" if face else None, "n_new_tokens": 3, "stop": "face"}
            )  # fmt: skip
    generations = pd.DataFrame(rows)
    write_parquet(root / "generations.parquet", generations)
    write_parquet(root / "prompts.parquet", prompts)
    write_tensors(root / "h_first.safetensors", {"h_first": torch.from_numpy(hidden.astype(np.float32))})
    store.finish("elicit", summary=summarize(generations))
    return str(root)


def planted(n_per_cell: int = 8, n_layers: int = 3, d: int = 16, samples: int = 3, seed: int = 0):
    """Prompts whose h_first sits near a cell-specific mean; faces tied to cells (two per cell)."""
    rng = np.random.default_rng(seed)
    cells = np.repeat(CODES, n_per_cell)
    prompts = pd.DataFrame(
        {"id": [f"{c.lower()}-{i:02d}" for c in CODES for i in range(n_per_cell)], "cell": cells}
    )
    means = rng.normal(size=(len(CODES), d)) * 3.0
    index = {c: i for i, c in enumerate(CODES)}
    hidden = np.stack(
        [
            [means[index[c]] * (layer + 1) / n_layers + rng.normal(size=d) for layer in range(n_layers)]
            for c in cells
        ]
    )
    faces = []
    for c in cells:
        for _ in range(samples):
            faces.append(None if rng.random() < 0.25 else f"({EYES[c]}{'_ω'[rng.integers(2)]}{EYES[c]})")
    return prompts, hidden, faces


@pytest.fixture(scope="module")
def planted_analysis(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    prompts, hidden, faces = planted()
    base = make_run(root / "base", "synthetic", hidden, prompts, faces)
    # The same geometry in another basis and a wider space: a rotation of the first run.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(24, 24)))
    rotated = make_run(root / "rotated", "synthetic", hidden @ q[:16], prompts, [None] * len(faces))
    out = root / "analysis"
    result = analyze_kaomoji(
        [base, rotated], str(out), n_permutations=N_PERM, n_boot=N_BOOT, seed=0, quiet=True
    )
    return result, out


def test_headline_layer_rule():
    assert headline_layer(30) == 19
    assert headline_layer(24) == 15
    assert headline_layer(1) == 0
    assert headline_layer(3) == 1


def test_planted_hidden_to_cell(planted_analysis):
    result, _ = planted_analysis
    h2c = result["runs"]["synthetic"]["hidden_to_cell"]
    head = h2c["headline"]
    assert head["layer"] == 1 and result["runs"]["synthetic"]["headline_layer"] == 1
    assert head["accuracy"] > 0.9
    assert head["accuracy_ci"][0] > 0.5
    assert head["p_value"] == pytest.approx(1 / (N_PERM + 1))  # the smallest p the test can give
    assert head["n"] == 72 and head["n_groups"] == 72
    assert [row["layer"] for row in h2c["by_layer"]] == [0, 1, 2]
    assert all(row["p_value"] is None for row in h2c["by_layer"])
    assert h2c["all_layers"]["accuracy"] > 0.9
    # The headline is the curve's point at that layer: same folds, same seed, same estimator.
    assert h2c["by_layer"][1]["accuracy"] == head["accuracy"]


def test_planted_face_to_cell(planted_analysis):
    result, _ = planted_analysis
    f2c = result["runs"]["synthetic"]["face_to_cell"]
    assert not f2c["thin"]
    assert f2c["accuracy"] > 0.95
    assert f2c["p_value"] == pytest.approx(1 / (N_PERM + 1))
    assert 0.6 < f2c["coverage"] < 0.9 and f2c["coverage_ci"][0] < f2c["coverage"] < f2c["coverage_ci"][1]
    confusion = np.asarray(f2c["confusion"])
    assert np.trace(confusion) / confusion.sum() == pytest.approx(f2c["accuracy"])
    assert f2c["n"] == f2c["n_with_face"]
    chars = f2c["by_characters"]  # each cell has its own eyes, so the characters carry the cell too
    assert (
        not chars["thin"] and chars["accuracy"] > 0.95 and chars["p_value"] == pytest.approx(1 / (N_PERM + 1))
    )


def test_planted_hidden_to_face_and_geometry(planted_analysis):
    result, _ = planted_analysis
    run = result["runs"]["synthetic"]
    h2f = run["hidden_to_face"]
    assert not h2f["thin"] and h2f["n_faces"] == 18
    # Within a cell the two faces are coin flips, so about half is the ceiling; 1/18 is the majority level.
    assert h2f["accuracy"] > h2f["majority_baseline"] + 0.2
    assert h2f["gain_over_majority_ci"][0] > 0
    assert h2f["p_value"] == pytest.approx(1 / (N_PERM + 1))
    # The planted faces follow the cell only: nothing is left for the state beyond the cell.
    assert h2f["within_cell"]["p_value"] > 0.05
    assert h2f["within_cell"]["null_mean"] > h2f["null_mean"] + 0.2
    geo = run["geometry"]
    assert not geo["thin"] and len(geo["explained_variance"]) == 3
    assert len(geo["correlations"]) == 4
    # Valence and arousal are fixed per cell: the 9 cells are the units, not the 72 prompts.
    assert all(c["n"] == 9 and c["n_prompts"] == 72 and c["unit"] == "cell" for c in geo["correlations"])
    assert all(c["lo"] <= c["r"] <= c["hi"] for c in geo["correlations"])
    assert geo["pairing_test"]["n_cells"] == 9 and geo["pairing"]["correction"]
    paired = [c for c in geo["correlations"] if c["paired"]]
    assert len(paired) == 2 and all(c["r"] >= 0 for c in paired)
    assert not geo["faces"]["thin"] and geo["faces"]["n_faces"] == 18
    sim = run["face_similarity"]
    assert not sim["thin"] and len(sim["matrix"]) == 18
    assert np.allclose(np.diag(sim["matrix"]), 1.0)


def test_rotation_aligns_perfectly(planted_analysis):
    result, _ = planted_analysis
    assert list(result["runs"]) == ["synthetic", "synthetic#2"]
    (al,) = result["alignment"]
    assert al["reference"] == "synthetic" and al["other"] == "synthetic#2"
    assert al["disparity"] == pytest.approx(0.0, abs=1e-8)
    assert al["rsa"] == pytest.approx(1.0)
    assert al["rsa_p_value"] == pytest.approx(1 / (N_PERM + 1))
    assert al["n_cells"] == 9 and al["k"] == 8 and al["n_prompts"] == 72
    # The rotated run has no faces: its face analyses are thin, with counts, and carry no numbers.
    f2c = result["runs"]["synthetic#2"]["face_to_cell"]
    assert f2c["thin"] and f2c["n_with_face"] == 0 and "accuracy" not in f2c


def figure_paths(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("png", "svg") and isinstance(value, str):
                yield value
            else:
                yield from figure_paths(value)
    elif isinstance(node, list):
        for value in node:
            yield from figure_paths(value)


def test_json_round_trip_figures_and_sections(planted_analysis):
    result, out = planted_analysis
    assert json.loads((out / "analysis.json").read_text(encoding="utf-8")) == result

    paths = list(figure_paths(result))
    assert len(paths) >= 14  # depth, confusion, pca (x2 runs), faces pca, heat map, alignment; png + svg
    assert all((out / p).is_file() and (out / p).stat().st_size > 0 for p in paths)
    built = sections(result, str(out))
    assert [s.title for s in built] == [
        "Hidden state → cell",
        "Face → cell",
        "Geometry and alignment",
        "Face similarity heat maps",
    ]
    assert all(isinstance(s, Section) for s in built)
    figures = [b for s in built for b in s.blocks if isinstance(b, Figure)]
    assert len(figures) == len(paths) // 2
    assert all(f.path.is_file() and "not" in f.caption for f in figures)
    assert any(isinstance(b, Table) for s in built for b in s.blocks)


def test_report_shows_both_estimators_both_nulls_and_both_preprocessings(planted_analysis):
    result, out = planted_analysis
    built = {s.title: s for s in sections(result, str(out))}
    text = " ".join(b for s in built.values() for b in s.blocks if isinstance(b, str))
    assert "does the state predict the face?" in text.lower()
    assert "beyond the prompt's cell?" in text
    tables = {b.caption: b.frame for s in built.values() for b in s.blocks if isinstance(b, Table)}
    f2c = tables["Cell from face alone, out-of-fold."]
    assert list(f2c.loc[f2c["run"] == "synthetic", "estimator"]) == ["face identity", "face characters"]
    h2f = tables["Face from hidden state, out-of-fold."]
    assert {"p: state → face?", "p: beyond the cell?"} <= set(h2f.columns)
    assert "null mean" in h2f["p: beyond the cell?"].iloc[0]
    align = tables["Cross-model alignment of cell centroids."]
    assert list(align["features"]) == ["raw", "z-scored"]
    correlations = next(frame for caption, frame in tables.items() if caption.startswith("Pearson r"))
    assert (correlations["PC"] == "PC1 + PC2").sum() == 2  # one pairing test per run
    assert set(correlations["n cells / prompts"]) == {"9 / 72"}


def numeric_leaves(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "figures":
                yield from numeric_leaves(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from numeric_leaves(value, f"{path}[{i}]")
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield path, node


def visible_text(page: str) -> str:
    """The report's text: no style sheet, no tags, no base64 payloads (whose digits would count as numbers)."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.DOTALL)
    page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", " ", page)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_report_embeds_every_figure_and_shows_every_number(planted_analysis, tmp_path):
    result, out = planted_analysis
    runs = [entry["path"] for entry in result["runs"].values()]
    page_path = build_report(*runs, out, out=tmp_path / "report")
    page = page_path.read_text(encoding="utf-8")
    assert not re.findall(r'<img src="(?!data:image/png;base64,)', page)  # nothing fetched from elsewhere
    embedded = embedded_images(page)
    pngs = [(out / p).read_bytes() for p in figure_paths(result) if p.endswith(".png")]
    assert len(pngs) >= 7 and all(png in embedded for png in pngs)
    leaves = list(numeric_leaves(result))
    assert len(leaves) > 500
    for text in (visible_text(page), (tmp_path / "report" / "report.md").read_text(encoding="utf-8")):
        found = numbers_in(text)
        missing = [(path, value) for path, value in leaves if format_number(value) not in found]
        assert not missing, missing[:5]


def test_random_faces_give_chance(tmp_path):
    prompts, hidden, _ = planted(n_per_cell=6)
    rng = np.random.default_rng(5)
    faces = [
        None if rng.random() < 0.25 else f"(•{'_-ω~∀ᴥ'[rng.integers(6)]}•)" for _ in range(len(prompts) * 3)
    ]
    run = make_run(tmp_path / "random", "random-faces", hidden, prompts, faces)
    # floor 1000 leaves no face frequent enough for the per-face analyses; they come back thin.
    result = analyze_kaomoji(
        [run], str(tmp_path / "out"), n_permutations=N_PERM, n_boot=N_BOOT, floor=1000, quiet=True
    )
    f2c = result["runs"]["random-faces"]["face_to_cell"]
    assert not f2c["thin"]
    assert f2c["accuracy"] < 0.25
    assert f2c["p_value"] > 0.05
    assert result["runs"]["random-faces"]["hidden_to_face"]["thin"]
    assert result["runs"]["random-faces"]["face_similarity"]["thin"]


def test_thin_data_is_flagged_not_reported(tmp_path):
    rng = np.random.default_rng(2)
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(6)], "cell": ["LP", "LP", "LP", "LN", "LN", "LN"]})
    hidden = rng.normal(size=(6, 2, 4))
    faces = ["(^_^)", None, "(T_T)", None, "(;_;)", None, None, None, None, "(•_•)", None, None]  # 4 faces
    run = make_run(tmp_path / "thin", "thin", hidden, prompts, faces)
    result = analyze_kaomoji([run], str(tmp_path / "out"), n_permutations=N_PERM, n_boot=N_BOOT, quiet=True)
    entry = result["runs"]["thin"]
    for key in ("hidden_to_cell", "face_to_cell", "hidden_to_face", "geometry", "face_similarity"):
        assert entry[key]["thin"] is True, key
        assert entry[key]["reason"]
        assert "accuracy" not in entry[key] and "p_value" not in entry[key]
    assert entry["face_to_cell"]["n_with_face"] == 4
    assert entry["face_to_cell"]["coverage"] == pytest.approx(4 / 12)  # coverage itself is not thin
    assert entry["figures"] == {}
    built = sections(result, str(tmp_path / "out"))
    text = " ".join(b for s in built for b in s.blocks if isinstance(b, str))
    assert "thin data" in text


def test_layer_override_and_bad_layer(tmp_path):
    rng = np.random.default_rng(3)
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(4)], "cell": ["LP", "LP", "LN", "LN"]})
    run = make_run(tmp_path / "run", "tiny", rng.normal(size=(4, 5, 4)), prompts, [None] * 4)
    result = analyze_kaomoji([run], str(tmp_path / "out"), n_permutations=0, n_boot=10, layer=0, quiet=True)
    assert result["runs"]["tiny"]["headline_layer"] == 0
    assert "set by the caller" in result["runs"]["tiny"]["layer_rule"]
    with pytest.raises(AffectlensError, match="layer 7 is not stored"):
        analyze_kaomoji([run], str(tmp_path / "out2"), layer=7, quiet=True)


def test_explained_ratios_match_sklearn_and_ignore_repeats():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(30, 50)) * rng.uniform(0.5, 3.0, size=50)
    expected = PCA(n_components=3).fit(StandardScaler().fit_transform(X)).explained_variance_ratio_
    assert np.allclose(explained_ratios(X, np.arange(30), 3), expected)
    idx = rng.integers(0, 30, size=30)
    repeated = PCA(n_components=3).fit(StandardScaler().fit_transform(X[idx])).explained_variance_ratio_
    assert np.allclose(explained_ratios(X, idx, 3), repeated)


def test_analysis_imports_no_figures_report_or_stages():
    # analysis sits below report and stages: importing every kaomoji analysis module pulls in none of them.
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import affectlens.analysis.kaomoji as pkg\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        "banned = ('matplotlib', 'affectlens.reporting', 'affectlens.stages')\n"
        "print(json.dumps(sorted(n for n in sys.modules if any(n == b or n.startswith(b + '.') for b in banned))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_analyze_runs_writes_nothing_and_to_json_places_figures(tmp_path):
    rng = np.random.default_rng(6)
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(6)], "cell": ["LP"] * 3 + ["LN"] * 3})
    runs = [
        make_run(tmp_path / name, "tiny", rng.normal(size=(6, 2, 4)), prompts, [None] * 6) for name in "ab"
    ]
    before = sorted(tmp_path.rglob("*"))
    analysis = analyze_runs(runs, n_permutations=0, n_boot=10, quiet=True)
    assert sorted(tmp_path.rglob("*")) == before
    assert isinstance(analysis, KaomojiAnalysis) and list(analysis.runs) == ["tiny", "tiny#2"]
    assert analysis.runs["tiny"].scores is None  # geometry is thin: nothing to draw
    paths = {"pca": {"png": "figures/x.png", "svg": "figures/x.svg"}}
    data = analysis.to_json({"tiny#2": paths}, [{"alignment": paths["pca"]}])
    assert data["runs"]["tiny"]["figures"] == {} and data["runs"]["tiny#2"]["figures"] == paths
    assert list(data["runs"]["tiny"])[-1] == "figures"
    assert data["alignment"][0]["figures"] == {"alignment": paths["pca"]}
    assert "figures" not in analysis.to_json({}, [None])["alignment"][0]
    with pytest.raises(ValueError, match="alignment figure"):
        analysis.to_json({}, [])


def test_cells_come_from_the_manifest(tmp_path):
    duo = register_cell_set(
        CellSet(
            "test-duo",
            (
                Cell("UP", "up", "up", 1.0, 0.0, 0.0, "#c87f55"),
                Cell("DN", "down", "down", -1.0, 0.0, 0.0, "#5194da"),
            ),
        )
    )
    rng = np.random.default_rng(7)
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(4)], "cell": ["UP", "UP", "DN", "DN"]})
    hidden = rng.normal(size=(4, 2, 4))
    run = make_run(tmp_path / "duo", "duo", hidden, prompts, [None] * 4, cells=duo.name)
    analysis = analyze_runs([run], n_permutations=0, n_boot=10, quiet=True)
    assert analysis.cells is duo and analysis.settings["cells"] == "test-duo"
    plain = make_run(tmp_path / "plain", "plain", hidden, prompts, [None] * 4)  # records no cell set: pad9
    with pytest.raises(AffectlensError, match="outside the pad9 set"):
        analyze_runs([plain], n_permutations=0, n_boot=10, quiet=True)
    assert analyze_runs([plain], cells=duo, n_permutations=0, n_boot=10, quiet=True).cells is duo
