"""API-model runs in the analyses: an elicitation run without hidden states gets the face analyses and says
what it skipped; introspect and synthesize judge runs are encoders beside likelihood runs, in the comparison
and the ensemble search; an API elicitation run is the truth; the report renders all of it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import affectlens.store.runs as store_runs
from affectlens.analysis.encoders import compare_runs
from affectlens.api.analyze import analyze_runs
from affectlens.cells import default_cells
from affectlens.config import AnalysisConfig
from affectlens.errors import AffectlensError
from affectlens.faces import is_well_formed
from affectlens.reporting.build import build_report
from affectlens.stages.elicit import summarize
from affectlens.store.manifest import RunStore
from affectlens.store.runs import (
    ELICIT,
    GENERATION_COLUMNS,
    INTROSPECT,
    LIKELIHOOD,
    SYNTHESIZE,
    write_elicit,
    write_judged,
    write_likelihood,
)

CODES = default_cells().codes
EYES = dict(zip(CODES, ["^", "T", ";", "•", "≧", "・", "´", "ಠ", "◕"], strict=True))  # one per cell
HIDDEN_ANALYSES = {"hidden_to_cell", "hidden_to_face", "geometry", "face_similarity", "alignment"}
CONFIG = AnalysisConfig(n_permutations=19, n_boot=40, seed=0, floor=3)
API_ELICIT, LOCAL = "anthropic:claude-test", "local-lm"
INTROSPECT_SPEC, SYNTH_SPEC = "openai:smollm2", "openai:judge-b"


def _prompts(n_per_cell: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"{c.lower()}-{i:02d}" for c in CODES for i in range(n_per_cell)],
            "cell": np.repeat(CODES, n_per_cell),
            "text": "a prompt",
        }
    )


def _generations(prompts: pd.DataFrame, seed: int, samples: int = 3) -> pd.DataFrame:
    """Faces tied to cells: each cell has its own eyes (two mouths); a fifth of the replies carry none."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid, cell in zip(prompts["id"], prompts["cell"], strict=True):
        for s in range(samples):
            face = None if rng.random() < 0.2 else f"({EYES[cell]}{'_ω'[rng.integers(2)]}{EYES[cell]})"
            rows.append(
                {"prompt_id": pid, "cell": cell, "sample": s, "reply": f"{face or 'Hi'} there", "face": face,
                 "face_kind": "kaomoji" if face else None, "well_formed": bool(face and is_well_formed(face)),
                 "n_new_tokens": 4, "stop": "eos"}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=GENERATION_COLUMNS)


def _identity(spec: str) -> dict:
    return {
        "model": {"spec": spec, "fingerprint": f"fp-{spec}"},
        "stimuli": {"hash": "synthetic"},
        "config": {"seed": 0},
    }


def elicit_run(root: Path, spec: str, prompts: pd.DataFrame, seed: int, hidden: np.ndarray | None) -> str:
    """A finished elicitation run through the store API; ``hidden`` None is an API model's run."""
    store = RunStore(root)
    layers = [] if hidden is None else list(range(hidden.shape[1]))
    extra = {"model": {"spec": spec} | ({} if hidden is None else {"n_layers": len(layers)}), "layers": layers,
             "cells": "pad9", "hidden_states": hidden is not None}  # fmt: skip
    store.begin(ELICIT, _identity(spec), extra=extra)
    generations = _generations(prompts, seed)
    h_first = None if hidden is None else torch.from_numpy(hidden.astype(np.float32))
    write_elicit(store.root, generations, prompts, h_first, layers=layers)
    store.finish(ELICIT, summary=summarize(generations))
    return str(root)


def planted_hidden(prompts: pd.DataFrame, seed: int, n_layers: int = 3, d: int = 8) -> np.ndarray:
    """h_first near a cell-specific mean, the signal growing with depth."""
    rng = np.random.default_rng(seed)
    means = dict(zip(CODES, rng.normal(size=(len(CODES), d)) * 3.0, strict=True))
    return np.stack(
        [
            [means[c] * (layer + 1) / n_layers + rng.normal(size=d) for layer in range(n_layers)]
            for c in prompts["cell"]
        ]
    )


def face_table(seed: int, peak: float) -> pd.DataFrame:
    """Every planted face with ``peak`` on its own cell and the rest spread at random: the likelihood schema."""
    rng = np.random.default_rng(seed)
    faces = [f"({EYES[c]}{m}{EYES[c]})" for c in CODES for m in "_ω"]
    rest = rng.dirichlet(np.ones(len(CODES) - 1), len(faces)) * (1.0 - peak)
    values = np.zeros((len(faces), len(CODES)))
    for i in range(len(faces)):
        own = i // 2  # faces come two per cell, in cell order
        values[i, own] = peak
        values[i, [j for j in range(len(CODES)) if j != own]] = rest[i]
    table = pd.DataFrame(values, columns=CODES, index=pd.Index(faces, name="face"))
    table["entropy_bits"] = -(values * np.log2(values)).sum(axis=1)
    table["top_cell"] = [CODES[j] for j in values.argmax(axis=1)]
    return table


def judged_run(root: Path, kind: str, spec: str, seed: int, peak: float) -> str:
    """A finished API judge encoder run (introspect or synthesize): face_cells and its answers, no log-probs."""
    store = RunStore(root)
    store.begin(kind, _identity(spec), extra={"model": {"spec": spec}, "cells": "pad9"})
    table = face_table(seed, peak)
    answers = pd.DataFrame({"face": list(table.index), "sample": 0, "answer": "{}"})
    write_judged(store.root, table, {"answers": answers})
    store.finish(kind, summary={"n_faces": len(table)})
    return str(root)


def likelihood_run(root: Path, spec: str, seed: int, prompts: pd.DataFrame) -> str:
    store = RunStore(root)
    store.begin(LIKELIHOOD, _identity(spec), extra={"model": {"spec": spec}, "cells": "pad9"})
    table = face_table(seed, peak=0.3)
    logp = pd.DataFrame(
        [(f, p, -5.0) for f in table.index for p in prompts["id"]], columns=["face", "prompt_id", "logp"]
    )
    write_likelihood(store.root, logp, table, prompts)
    store.finish(LIKELIHOOD, summary={})
    return str(root)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("api-runs")
    prompts = _prompts()
    return {
        "api": elicit_run(root / "api", API_ELICIT, prompts, seed=1, hidden=None),
        "local": elicit_run(root / "local", LOCAL, prompts, seed=2, hidden=planted_hidden(prompts, 0)),
        "local_b": elicit_run(
            root / "local-b", "local-b", prompts, seed=3, hidden=planted_hidden(prompts, 5)
        ),
        "introspect": judged_run(root / "introspect", INTROSPECT, INTROSPECT_SPEC, seed=4, peak=0.7),
        "synthesize": judged_run(root / "synthesize", SYNTHESIZE, SYNTH_SPEC, seed=5, peak=0.5),
        "likelihood": likelihood_run(root / "likelihood", LOCAL, 6, prompts),
    }


@pytest.fixture(scope="module")
def api_alone(runs, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("api-alone")
    return analyze_runs([runs["api"]], out, CONFIG, quiet=True), out


@pytest.fixture(scope="module")
def mixed(runs, tmp_path_factory) -> tuple[dict, Path]:
    """A local run, the API run as the first elicitation run (the truth), another local run, three encoders."""
    out = tmp_path_factory.mktemp("mixed")
    order = ["api", "local", "local_b", "introspect", "likelihood", "synthesize"]
    return analyze_runs([runs[k] for k in order], out, CONFIG, quiet=True), out


def test_api_run_gets_face_to_cell_and_names_every_skipped_analysis(runs, api_alone) -> None:
    assert not (Path(runs["api"]) / "h_first.safetensors").exists()
    result, out = api_alone
    run = result["kaomoji"]["runs"][API_ELICIT]
    assert run["hidden_states"] is False
    assert set(run["skipped"]) == HIDDEN_ANALYSES
    assert all(reason.startswith("no hidden states (API model)") for reason in run["skipped"].values())
    for key in HIDDEN_ANALYSES - {"alignment"}:
        assert run[key] == {"thin": True, "skipped": True, "reason": "no hidden states (API model)"}
    assert run["layers"] == [] and run["headline_layer"] is None
    f2c = run["face_to_cell"]
    assert not f2c["thin"] and math.isfinite(f2c["accuracy"]) and f2c["accuracy"] > 0.95  # eyes give the cell
    assert f2c["p_value"] == pytest.approx(1 / (CONFIG.n_permutations + 1))
    assert 0.6 < f2c["coverage"] < 0.95 and run["n_samples"] == 162 and run["n_prompts"] == 54
    assert not f2c["by_characters"]["thin"] and f2c["by_characters"]["accuracy"] > 0.9
    assert result["kaomoji"]["alignment"] == []
    # Only the face confusion is drawn: nothing that needs h_first.
    assert set(run["figures"]) == {"confusion"}
    assert (out / run["figures"]["confusion"]["png"]).is_file()
    saved = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    assert saved["runs"][API_ELICIT]["skipped"] == run["skipped"]
    assert "API model" in saved["settings"]["skipped"]


def test_mixed_local_and_api_runs(mixed) -> None:
    result, _ = mixed
    runs = result["kaomoji"]["runs"]
    assert list(runs) == [API_ELICIT, LOCAL, "local-b"]
    local = runs[LOCAL]
    assert local["hidden_states"] is True and local["skipped"] == {}
    assert not local["hidden_to_cell"]["thin"] and local["hidden_to_cell"]["headline"]["accuracy"] > 0.9
    assert not local["geometry"]["thin"] and not local["hidden_to_face"]["thin"]
    assert {"depth", "confusion", "pca"} <= set(local["figures"])
    assert set(runs[API_ELICIT]["skipped"]) == HIDDEN_ANALYSES
    assert runs[API_ELICIT]["face_to_cell"]["accuracy"] > 0.95
    # Alignment pairs only the runs with hidden states.
    pairs = [(al["reference"], al["other"]) for al in result["kaomoji"]["alignment"]]
    assert pairs == [(LOCAL, "local-b")]
    assert not result["kaomoji"]["alignment"][0]["thin"]


def test_judge_and_likelihood_encoders_are_compared_and_ensembled(mixed) -> None:
    result, out = mixed
    comparison = result["comparison"]
    assert comparison["truth"] == f"{API_ELICIT} (emitted)"  # the API run is the first elicitation run
    names = [f"{INTROSPECT_SPEC} (introspect)", f"{LOCAL} (likelihood)", f"{SYNTH_SPEC} (synthesize)"]
    assert [row["encoder"] for row in comparison["rows"]] == names
    assert comparison["encoder_kinds"] == dict(
        zip(names, ["introspect", "likelihood", "synthesize"], strict=True)
    )
    for row in comparison["rows"]:
        assert (
            row["n_faces"] == 18 and 0.0 < row["face_uniform"] <= 1.0 and math.isfinite(row["emit_weighted"])
        )
        assert row["face_uniform"] > row["uniform_face_uniform"]  # every encoder leans to the right cell
    by_name = {row["encoder"]: row for row in comparison["rows"]}
    assert by_name[names[0]]["face_uniform"] > by_name[names[1]]["face_uniform"]  # peak 0.7 beats 0.3
    ensembles = pd.read_parquet(out / "comparison" / "ensembles.parquet")
    assert len(ensembles) == 7 and set(ensembles.loc[ensembles["size"] == 3, "members"]) == {",".join(names)}
    assert np.isfinite(ensembles["emit_weighted"]).all()
    best = comparison["best_ensemble"]
    assert set(best["members"].split(",")) <= set(names) and math.isfinite(best["heldout_emit_weighted"])
    assert sorted(row["encoder"] for row in comparison["common_rows"]) == sorted(names)  # ranked best first


def test_api_elicitation_run_is_the_truth_without_reading_tensors(runs, monkeypatch) -> None:
    def no_tensors(*args, **kwargs):
        raise AssertionError("the comparison read a tensor file")

    monkeypatch.setattr(store_runs, "read_tensors", no_tensors)
    found = compare_runs(runs["api"], [runs["introspect"]], n_boot=30, seed=1)
    truth = pd.read_parquet(Path(runs["api"]) / "generations.parquet")
    assert found.truth == f"{API_ELICIT} (emitted)"
    assert found.rows[0]["encoder"] == f"{INTROSPECT_SPEC} (introspect)"
    assert found.rows[0]["n_emits"] == int(truth["well_formed"].sum())
    assert 0.5 < found.rows[0]["face_uniform"] <= 1.0
    assert found.kinds == {f"{INTROSPECT_SPEC} (introspect)": INTROSPECT}


def test_judge_runs_need_an_elicitation_run(runs, tmp_path: Path) -> None:
    with pytest.raises(AffectlensError, match="compared with the faces of an elicitation run"):
        analyze_runs([runs["introspect"], runs["synthesize"]], tmp_path, CONFIG, quiet=True)


def test_report_renders_the_api_run_and_the_judges(runs, mixed, tmp_path: Path) -> None:
    _, out = mixed
    html = build_report(*runs.values(), out, out=tmp_path / "report")
    assert html.is_file()
    page = html.read_text(encoding="utf-8")
    assert (
        f"{API_ELICIT}: hidden → cell, hidden → face, geometry, face similarity, cross-run alignment skipped "
        "(no hidden states (API model)); face → cell is below." in page
    )
    assert "Encoders and similarity to the emitted faces" in page
    assert "Encoders by kind" in page and f"{INTROSPECT_SPEC} (introspect)" in page
    assert "thin data: no hidden states" not in page  # a skip is not reported as thin data
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "no hidden states (API model)" in markdown
