"""The steering analysis on synthetic steer runs with known effects: slopes, intervals, controls, the report.

Each run plants its effect in how often a reply opens with a face of the emotion's target cells; the
encoder maps each of nine faces mostly to one cell, so the target share follows the planted probability.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectlens.analysis.steering import analyze_steering
from affectlens.analysis.steering_dose import coherent_range, prompt_weights, target_cells
from affectlens.api.analyze import analyze_runs
from affectlens.api.steering import analyze_steer_run
from affectlens.cells import default_cells
from affectlens.config import AnalysisConfig
from affectlens.reporting.build import build_report
from affectlens.store.manifest import RunStore
from affectlens.store.runs import BASELINE, STEER, STEER_COLUMNS, STEERING_ANALYSIS, read_steer, write_steer

CELLS = default_cells()
FACES = {code: f"(^{'_' * (i + 1)}^)" for i, code in enumerate(CELLS.codes)}  # one face per cell
UNKNOWN_FACE = "(?_?)"  # well-formed, but not in the encoder
ALPHAS = (-0.5, -0.375, -0.25, -0.125, 0.125, 0.25, 0.375, 0.5)  # the baseline is alpha 0
EMOTIONS = {"happy": (0.8, 0.6, "HP-S"), "sad": (-0.7, -0.4, "LN")}
SPEC = "toy-model"
HAPPY_TARGETS = ["HP-D", "HP-S"]


def encoder_table() -> pd.DataFrame:
    """Face i puts 0.9 on cell i and spreads 0.1 over the others."""
    n = len(CELLS)
    values = np.full((n, n), 0.1 / (n - 1))
    np.fill_diagonal(values, 0.9)
    table = pd.DataFrame(values, columns=CELLS.codes, index=pd.Index(list(FACES.values()), name="face"))
    table["entropy_bits"], table["top_cell"] = 1.0, CELLS.codes
    return table


def likelihood_run(root: Path, spec: str = SPEC) -> Path:
    store = RunStore(root)
    store.begin("likelihood", {"model": {"spec": spec, "fingerprint": f"fp-{spec}"}})
    encoder_table().reset_index().to_parquet(root / "face_cells.parquet", index=False)
    store.finish("likelihood")
    return root


def steer_run(
    root: Path,
    *,
    effect: dict[str, float] | None = None,
    n_random: int = 8,
    n_prompts: int = 36,
    n_samples: int = 3,
    seed: int = 0,
    blowup: dict[float, float] | None = None,
    unknown_rate: float = 0.0,
    no_face_rate: float = 0.0,
    repeat: int = 1,
    spec: str = SPEC,
) -> Path:
    """A finished steer run. ``effect[emotion]``: how much P(target face) rises per unit alpha on that
    emotion's direction (other directions: none); ``blowup[alpha]``: reply NLL factor of the emotion
    directions there, where their faces also stop tracking the emotion (no target face at all);
    ``repeat``: every reply written that many times (as further samples)."""
    effect, blowup = effect or {}, blowup or {}
    rng = np.random.default_rng(seed)
    prompts = pd.DataFrame({"id": [f"p{i:02d}" for i in range(n_prompts)]})
    prompts["cell"] = [CELLS.codes[i % len(CELLS)] for i in range(n_prompts)]
    prompts["text"] = [f"prompt {i}" for i in range(n_prompts)]
    lean = dict(zip(prompts["id"], rng.uniform(-0.12, 0.12, n_prompts), strict=True))  # prompt effects
    directions = [{"direction": BASELINE, "kind": "none", "emotion": None, "valence": None, "arousal": None,
                   "cell": None}]  # fmt: skip
    for e, (v, a, c) in EMOTIONS.items():
        directions.append(
            {"direction": e, "kind": "emotion", "emotion": e, "valence": v, "arousal": a, "cell": c}
        )
        directions.append({"direction": f"{e}:orthogonal", "kind": "orthogonal", "emotion": e, "valence": v,
                           "arousal": a, "cell": c})  # fmt: skip
    directions += [{"direction": f"random-{i}", "kind": "random", "emotion": None, "valence": None,
                    "arousal": None, "cell": None} for i in range(n_random)]  # fmt: skip
    table = pd.DataFrame(directions).assign(layer=3, vector_norm=1.0, n_L=10.0, scale=10.0)
    gens, coherence, projections = [], [], []
    grid = [(BASELINE, 0.0)] + [(d["direction"], a) for d in directions[1:] for a in ALPHAS]
    for direction, alpha in grid:
        row = table.set_index("direction").loc[direction]
        planted = effect.get(row["emotion"], 0.0) if row["kind"] == "emotion" else 0.0
        broken = row["kind"] == "emotion" and alpha in blowup
        target = target_cells(*EMOTIONS[row["emotion"]][:2], CELLS) if planted else HAPPY_TARGETS
        for p, cell in zip(prompts["id"], prompts["cell"], strict=True):
            for s in range(n_samples):
                # Every prompt leans to or from the target faces by its own amount, at every alpha.
                q = 0.0 if broken else float(np.clip(len(target) / 9 + lean[p] + planted * alpha, 0, 1))
                pool = target if rng.random() < q else [c for c in CELLS.codes if c not in target]
                face = FACES[pool[rng.integers(len(pool))]]
                face = UNKNOWN_FACE if rng.random() < unknown_rate else face
                face = None if rng.random() < no_face_rate else face
                for r in range(repeat):
                    gens.append({"prompt_id": p, "cell": cell, "sample": s * repeat + r, "reply": f"{face} hi",
                                 "face": face, "face_kind": None if face is None else "kaomoji",
                                 "well_formed": face is not None, "n_new_tokens": 8, "stop": "eos",
                                 "direction": direction, "alpha": alpha})  # fmt: skip
            factor = blowup.get(alpha, 1.0) if broken else 1.0
            for measure, value in (("reply_nll", 2.0 * factor), ("neutral_nll", 3.0),
                                   ("first_token_kl", abs(alpha))):  # fmt: skip
                coherence.append({"direction": direction, "alpha": alpha, "measure": measure, "item": p,
                                  "value": value * (1 + 0.01 * rng.standard_normal()), "n_tokens": 8})  # fmt: skip
            if row["kind"] != "random":
                for e in EMOTIONS:
                    projections.append({"direction": direction, "alpha": alpha, "prompt_id": p, "cell": cell,
                                        "emotion": e, "projection": (alpha if e == row["emotion"] else 0.0)})  # fmt: skip
    store = RunStore(root)
    store.begin(STEER, {"model": {"spec": spec, "fingerprint": f"fp-{spec}"}, "config": {"seed": seed}})
    generations = pd.DataFrame(gens, columns=STEER_COLUMNS)
    write_steer(root, {"generations": generations, "directions": table, "projections": pd.DataFrame(projections),
                       "coherence": pd.DataFrame(coherence), "prompts": prompts})  # fmt: skip
    store.finish(STEER)
    return root


def _row(rows: list[dict], **match: object) -> dict:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, len(found))
    return found[0]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """happy's direction raises its target faces; every other direction has no effect."""
    return steer_run(tmp_path_factory.mktemp("planted") / "run", effect={"happy": 0.6})


@pytest.fixture(scope="module")
def planted_analysis(planted: Path):
    return analyze_steering(read_steer(planted), encoder_table(), n_boot=300, seed=1)


def test_target_cells_follow_the_rule() -> None:
    from affectlens.cells import Cell, CellSet

    assert target_cells(0.8, 0.6, CELLS) == HAPPY_TARGETS
    assert target_cells(-0.7, -0.4, CELLS) == ["HN-D", "HN-S", "LN"]  # |a| < 0.5: valence alone
    assert target_cells(0.1, 0.9, CELLS) == ["HP-D", "HP-S", "HN-D", "HN-S", "HB"]  # arousal alone
    assert target_cells(0.1, 0.1, CELLS) == [] and target_cells(None, None, CELLS) == []
    two = CellSet(
        "two", (Cell("UP", "up", "", 1, 1, 0, "#000000"), Cell("DN", "down", "", -1, -1, 0, "#ffffff"))
    )
    assert target_cells(0.8, -0.6, two) == ["UP"]  # no cell is positive and calm: the valence rule alone


def test_a_planted_dose_response_beats_every_random_direction(planted_analysis) -> None:
    row = _row(planted_analysis.summary, direction="happy")
    assert row["range"] == "coherent" and row["coherent_range"] == [-0.5, 0.5]  # nothing blew up
    assert row["slope"] > 0.3 and row["ci"][0] > 0
    assert row["n_random"] == 8 and row["k"] == 0
    assert row["p_value"] == pytest.approx(1 / 9) and row["min_attainable_p"] == pytest.approx(1 / 9)
    assert row["n_prompts"] == 36 and row["n_replies"] == 36 * 3 * 9  # every alpha, the baseline included
    # The secondary score moves the same way: happy's targets have positive valence.
    valence = _row(planted_analysis.slopes, direction="happy", score="valence", range="full")
    assert valence["ci"][0] > 0
    base = _row(planted_analysis.per_alpha, direction="happy", alpha=0.0)
    assert base["n"] == 36 * 3 and base["projection"] == 0.0 and base["reply_nll_ratio"] == 1.0


def test_no_effect_gives_an_interval_over_zero_and_an_unremarkable_p(
    planted_analysis, tmp_path: Path
) -> None:
    for direction in ("sad", "sad:orthogonal"):
        row = _row(planted_analysis.summary, direction=direction)
        assert row["ci"][0] < 0 < row["ci"][1]
        assert row["p_value"] > 0.2 and not row["significant"]
    null = analyze_steering(read_steer(steer_run(tmp_path / "null", seed=5)), encoder_table(), n_boot=300)
    happy = _row(null.summary, direction="happy")
    assert happy["ci"][0] < 0 < happy["ci"][1] and happy["p_value"] > 0.2
    assert not any(r["significant"] for r in null.summary)


def test_the_bootstrap_resamples_prompts_not_replies(tmp_path: Path) -> None:
    # Every reply written ten times: ten times the replies, the same prompts. Resampling replies would
    # shrink the interval about threefold; resampling prompts leaves it exactly where it was.
    options = dict(effect={"happy": 0.6}, n_random=3, n_prompts=18, n_samples=2)
    once = analyze_steering(read_steer(steer_run(tmp_path / "once", **options)), encoder_table(), n_boot=200)
    tenfold = steer_run(tmp_path / "ten", repeat=10, **options)
    ten = analyze_steering(read_steer(tenfold), encoder_table(), n_boot=200)
    for a, b in zip(once.slopes, ten.slopes, strict=True):
        assert b["n_replies"] == 10 * a["n_replies"] and b["n_prompts"] == a["n_prompts"] == 18
        assert b["slope"] == pytest.approx(a["slope"]) and b["ci"] == pytest.approx(a["ci"])
    assert once.summary[0]["ci"][1] - once.summary[0]["ci"][0] > 0.05


def test_prompt_resamples_keep_each_cell_whole() -> None:
    cells = ["a"] * 5 + ["b"] * 3
    weights = prompt_weights(cells, n_boot=50, seed=0)
    assert weights.shape == (50, 8)
    assert (weights[:, :5].sum(axis=1) == 5).all() and (weights[:, 5:].sum(axis=1) == 3).all()
    assert (weights != 1).any()  # they do resample
    assert (prompt_weights(cells, n_boot=50, seed=0) == weights).all()


def test_the_coherent_range_drops_alphas_where_reply_nll_blows_up(tmp_path: Path) -> None:
    run = steer_run(tmp_path / "run", effect={"happy": 0.6}, blowup={0.5: 3.0, -0.5: 1.5, 0.375: 1.08})
    result = analyze_steering(read_steer(run), encoder_table(), n_boot=300)
    span = result.emotions["happy"]["coherent_range"]
    assert (span["lo"], span["hi"], span["excluded"]) == (-0.375, 0.375, [-0.5, 0.5])  # 1.08 is within 0.10
    row = _row(result.summary, direction="happy")
    assert row["range"] == "coherent" and (row["alpha_lo"], row["alpha_hi"], row["n_alphas"]) == (
        -0.375,
        0.375,
        7,
    )
    full = _row(result.controls, direction="happy", range="full")
    assert full["slope"] < row["ci"][0]  # the incoherent ends, where faces stop tracking, flatten the slope
    for s in result.slopes:  # the comparators are read over the same range
        if s["kind"] == "random" and s["emotion"] == "happy" and s["range"] == "coherent":
            assert (s["alpha_lo"], s["alpha_hi"]) == (-0.375, 0.375)
    assert row["n_random"] == 8
    # Contiguous from 0: a coherent alpha beyond an incoherent one is not in the range.
    curves = {"reply_nll": {0.0: 2.0, 0.1: 2.1, 0.2: 9.0, 0.3: 2.0, -0.1: 1.7}}
    assert coherent_range(curves, [-0.1, 0.0, 0.1, 0.2, 0.3], 0.1)["alphas"] == [0.0, 0.1]  # 1.7: -15%


def test_unencoded_faces_are_counted_not_dropped(tmp_path: Path) -> None:
    run = steer_run(tmp_path / "run", unknown_rate=0.2, no_face_rate=0.1, n_random=2)
    result = analyze_steering(read_steer(run), encoder_table(), n_boot=50)
    g = pd.read_parquet(run / "generations.parquet")
    at = g[(g["direction"] == "happy") & (g["alpha"] == 0.25)]
    row = _row(result.per_alpha, direction="happy", alpha=0.25)
    n_unknown = int((at["face"] == UNKNOWN_FACE).sum())
    assert n_unknown > 0 and row["n"] == len(at)
    assert row["no_face_rate"] == pytest.approx(at["face"].isna().mean())
    assert row["n_well_formed"] == row["n_encoded"] + n_unknown
    assert row["unencoded_share"] == pytest.approx(n_unknown / row["n_well_formed"])
    assert math.isclose(sum(row["cells"].values()), 1.0)
    slope = _row(result.slopes, direction="happy", score="target_share", range="full")
    encoded = g[g["direction"].isin(["happy", BASELINE]) & g["face"].isin(FACES.values())]
    assert slope["n_replies"] == len(encoded)


def test_without_an_encoder_only_what_needs_none_is_computed(planted: Path, tmp_path: Path) -> None:
    result = analyze_steering(read_steer(planted), None, n_boot=50)
    assert result.slopes == [] and result.controls == [] and result.summary == []
    assert any("dose-response slopes" in s for s in result.skipped)
    row = _row(result.per_alpha, direction="happy", alpha=0.5)
    assert row["well_formed_rate"] == 1.0 and "target_share" not in row and row["projection"] == 0.5
    assert result.emotions["sad"]["coherent_range"]["lo"] == -0.5
    written = analyze_steer_run(planted, tmp_path / "out", config=AnalysisConfig(n_boot=50))
    assert list(written["figures"]) == ["steering_coherence"]  # no dose-response without an encoder
    page = build_report(planted, tmp_path / "out", out=tmp_path / "report").read_text(encoding="utf-8")
    assert "No slope was tested, so nothing here is significant." in page
    assert "Not computed: cell distributions: no encoder (likelihood run) given" in page


def test_analyze_dispatches_steer_runs_with_a_likelihood_run_of_the_same_model(
    planted: Path, tmp_path: Path
) -> None:
    other = likelihood_run(tmp_path / "lik-other", spec="other-model")
    first, second = likelihood_run(tmp_path / "lik-1"), likelihood_run(tmp_path / "lik-2")
    out = tmp_path / "out"
    config = AnalysisConfig(n_boot=50)
    result = analyze_runs([str(planted), str(other), str(first), str(second)], out, config)
    assert set(result) == {"steering"}  # no elicitation run: no comparison
    written = json.loads((out / "steering" / SPEC / STEERING_ANALYSIS).read_text(encoding="utf-8"))
    assert written["settings"]["encoder_run"] == {"run": str(first), "spec": SPEC}
    assert written == json.loads(json.dumps(result["steering"][SPEC]))
    alone = analyze_runs([str(planted), str(other)], tmp_path / "alone", config)
    assert alone["steering"][SPEC]["settings"]["encoder_run"] is None and alone["steering"][SPEC]["skipped"]


def test_the_report_shows_the_steering_section_and_its_slope_table(tmp_path: Path) -> None:
    encoder = likelihood_run(tmp_path / "lik")
    config = AnalysisConfig(n_boot=200)
    strong = steer_run(tmp_path / "strong", effect={"happy": 0.6}, n_random=19)
    result = analyze_steer_run(strong, tmp_path / "strong-out", encoder=encoder, config=config)
    figures = [f"steering_{name}.{ext}" for name in ("coherence", "dose") for ext in ("png", "svg")]
    assert sorted(p.name for p in (tmp_path / "strong-out").iterdir()) == [STEERING_ANALYSIS, *figures]
    page = build_report(strong, tmp_path / "strong-out", out=tmp_path / "r1").read_text(encoding="utf-8")
    start = page.index("<h2>Steering: toy-model</h2>")
    section = page[start : page.index("<h2>All numbers: strong-out", start)]
    assert "p vs random" in section and "full-range slope [95% CI]" in section
    happy = _row(result["summary"], direction="happy")
    assert happy["significant"] and happy["p_value"] == pytest.approx(1 / 20)
    from affectlens.reporting.format import estimate

    assert estimate(happy["slope"], happy["ci"]) in section and "0.050 (min 0.050, 19 random)" in section
    assert (
        "Significant (95% interval above 0" in section and "No steering slope is significant" not in section
    )
    assert section.count('<img src="data:image/png;base64,') == 2  # dose-response and coherence
    assert "Steering examples: toy-model" in section and "Steering along happy: first replies." in section

    null = steer_run(tmp_path / "null", seed=5)
    analyze_steer_run(null, tmp_path / "null-out", encoder=encoder, config=config)
    page = build_report(null, tmp_path / "null-out", out=tmp_path / "r2").read_text(encoding="utf-8")
    assert "No steering slope is significant" in page
    assert "the smallest attainable p is 0.111" in page  # 8 random directions cannot reach 0.05


def test_the_analysis_imports_neither_matplotlib_nor_the_report() -> None:
    import subprocess
    import sys

    code = (
        "import sys, affectlens.analysis.steering\n"
        "print([m for m in sys.modules if m.split('.')[0] == 'matplotlib' or m.startswith('affectlens.reporting')])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_prompt_dropping_out_is_not_a_dose_effect():
    """Flat prompts, one of which has no face at the top alpha: the pooled slope would be positive; the
    within-prompt slope is 0. A real within-prompt rise is still found."""
    from affectlens.analysis.steering_dose import ols_slopes

    grid = np.array([-0.5, 0.0, 0.5])
    flat = np.array([[0.9, 0.9, 0.9], [0.1, 0.1, np.nan]])
    assert ols_slopes(flat, grid, np.ones((1, 2)))[0] == pytest.approx(0.0, abs=1e-12)
    rising = np.array([[0.4, 0.5, 0.6], [0.0, 0.1, np.nan]])
    assert ols_slopes(rising, grid, np.ones((1, 2)))[0] == pytest.approx(0.2, abs=1e-9)
