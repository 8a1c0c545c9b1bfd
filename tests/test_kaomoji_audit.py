"""Audit findings on the kaomoji analyses, each pinned by planted data: the right unit of independence, the
right null, the right floor for a p-value, both preprocessings, and a face -> cell reading by characters."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from affectlens.analysis.kaomoji.alignment import align
from affectlens.analysis.kaomoji.face_cell import face_to_cell
from affectlens.analysis.kaomoji.geometry import geometry
from affectlens.analysis.kaomoji.hidden_face import hidden_to_face
from affectlens.analysis.kaomoji.loading import Run
from affectlens.cells import Cell, CellSet, default_cells

PAD9 = default_cells()
QUAD = CellSet(
    "test-quad",
    (
        Cell("PH", "up-high", "", 1.0, 1.0, 0.0, "#c87f55"),
        Cell("PL", "up-low", "", 1.0, -1.0, 0.0, "#739c56"),
        Cell("NH", "down-high", "", -1.0, 1.0, 0.0, "#d67473"),
        Cell("NL", "down-low", "", -1.0, -1.0, 0.0, "#5194da"),
    ),
)


def make(cells: list[str], hidden: np.ndarray, faces: list[list[str | None]], label: str = "planted") -> Run:
    """A Run in memory: prompt i is in ``cells[i]``, has h_first ``hidden[i]`` ([L, d] or [d]) and samples
    with the faces ``faces[i]``."""
    hidden = hidden if hidden.ndim == 3 else hidden[:, None, :]
    prompts = pd.DataFrame({"id": [f"p{i:03d}" for i in range(len(cells))], "cell": cells})
    rows = [(f"p{i:03d}", i, face, cells[i]) for i, fs in enumerate(faces) for face in fs]
    samples = pd.DataFrame(rows, columns=["prompt_id", "row", "face", "cell"])
    samples["face"] = samples["face"].astype(object)
    layers = list(range(hidden.shape[1]))
    return Run(label, label, label, prompts, samples, hidden.astype(np.float32), layers, 0, "fixed")


def cell_means_run(codes: list[str], n_per_cell: int, d: int, seed: int, means: np.ndarray | None = None):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(codes), d)) * 3.0 if means is None else means
    cells = [c for c in codes for _ in range(n_per_cell)]
    hidden = np.repeat(means, n_per_cell, axis=0) + rng.normal(size=(len(cells), d))
    return cells, hidden


# ------------------------------------------------------------------- 1. geometry: cells are the units


def test_geometry_without_valence_arousal_structure_is_not_significant():
    # Random cell directions: the PCs follow the cells, but nothing ties them to valence or arousal. With
    # prompts as units every correlation came out at the floor (p = 0.005 of 199 shuffles).
    cells, hidden = cell_means_run(PAD9.codes, 8, 16, seed=11)
    geo = geometry(
        make(cells, hidden, [[]] * len(cells)), PAD9, floor=3, n_boot=200, n_permutations=199, seed=0
    )
    summary = geo.summary
    rows = summary["correlations"]
    assert len(rows) == 4
    assert all(row["n"] == 9 and row["unit"] == "cell" for row in rows)
    assert all(row["p_value"] > 0.02 for row in rows), [row["p_value"] for row in rows]
    test = summary["pairing_test"]
    assert test["p_value"] > 0.05
    assert test["n_permutations"] == 199 and test["permutations"] == "monte carlo"
    assert summary["pairing"]["correction"]


def test_geometry_recovers_planted_valence_and_arousal():
    coords = PAD9.coordinates()
    rng = np.random.default_rng(3)
    u = np.linalg.qr(rng.normal(size=(16, 2)))[0].T
    means = np.array([4.0 * coords[c][0] * u[0] + 2.5 * coords[c][1] * u[1] for c in PAD9.codes])
    cells, hidden = cell_means_run(PAD9.codes, 8, 16, seed=4, means=means)
    summary = geometry(
        make(cells, hidden, [[]] * len(cells)), PAD9, floor=3, n_boot=200, n_permutations=199, seed=0
    ).summary
    assert summary["pairing"]["PC1"] == "valence" and summary["pairing"]["PC2"] == "arousal"
    paired = [row for row in summary["correlations"] if row["paired"]]
    # Arousal's labels repeat (5, 2, 2 cells), so a random relabelling can reproduce them: p near the floor.
    assert all(row["r"] > 0.9 and row["p_value"] <= 0.02 for row in paired)
    assert summary["pairing_test"]["p_value"] == pytest.approx(1 / 200)


def test_geometry_enumerates_small_cell_sets_and_states_the_true_floor():
    # Four cells at (+-1, +-1): 4! = 24 relabellings; valence (1, 1, -1, -1) maps onto itself or its mirror
    # under 8 of them, so no valence correlation can reach p < 1/3 however strong.
    cells, hidden = cell_means_run(QUAD.codes, 6, 8, seed=5)
    summary = geometry(
        make(cells, hidden, [[]] * len(cells)), QUAD, floor=3, n_boot=50, n_permutations=99, seed=0
    ).summary
    for row in summary["correlations"]:
        assert row["n_permutations"] == 24 and row["permutations"] == "exact"
        assert row["min_attainable_p"] == pytest.approx(1 / 3)
        assert row["p_value"] >= 1 / 3 - 1e-12
        assert (row["p_value"] * 24) == pytest.approx(round(row["p_value"] * 24))


@pytest.mark.parametrize("seed", range(6))
def test_label_floor_matches_brute_force(seed):
    from affectlens.analysis.kaomoji.permutations import label_floor

    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 7))
    columns = rng.integers(-1, 2, size=(k, int(rng.integers(1, 3)))).astype(float)
    columns = columns[:, columns.std(axis=0) > 0]
    if columns.shape[1] == 0:
        return
    # Brute force: a relabelling ties with the identity for every data set when it maps each label column
    # onto itself or onto its mirror image about the mean (|r| cannot tell them apart).
    centred = columns - columns.mean(axis=0)
    ties = 0
    for perm in itertools.permutations(range(k)):
        moved = centred[list(perm)]
        ties += all(
            np.allclose(moved[:, j], centred[:, j]) or np.allclose(moved[:, j], -centred[:, j])
            for j in range(columns.shape[1])
        )
    assert label_floor(columns) == pytest.approx(ties / math.factorial(k))


@pytest.mark.parametrize("seed", range(4))
def test_label_floor_with_swapped_axes_matches_brute_force(seed):
    from affectlens.analysis.kaomoji.permutations import label_floor

    # The pairing statistic (max over PC-axis pairings) also ties when a relabelling swaps the two axes.
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 7))
    columns = rng.integers(-1, 2, size=(k, 2)).astype(float)
    if seed == 0:
        columns = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [0, 0]], dtype=float)  # a swap exists
        k = 5
    if (columns.std(axis=0) == 0).any():
        return
    z = (columns - columns.mean(axis=0)) / columns.std(axis=0)

    def same(x, y):
        return np.allclose(x, y) or np.allclose(x, -y)

    ties = 0
    for perm in itertools.permutations(range(k)):
        m = z[list(perm)]
        ties += (same(m[:, 0], z[:, 0]) and same(m[:, 1], z[:, 1])) or (
            same(m[:, 0], z[:, 1]) and same(m[:, 1], z[:, 0])
        )
    assert label_floor(columns, swap=True) == pytest.approx(ties / math.factorial(k))


# ------------------------------------------------------------- 2. hidden -> face beyond the prompt's cell


def face_runs(signal: str, seed: int = 0) -> Run:
    """Four cells, 12 prompts each, 3 samples. "cell": each cell has two faces drawn by coin flip, whatever
    the state. "state": within a cell the face follows the sign of a state direction the cell does not fix."""
    rng = np.random.default_rng(seed)
    codes = PAD9.codes[:4]
    d = 6
    means = rng.normal(size=(4, d)) * 3.0
    u = np.zeros(d)
    u[0] = 1.0
    cells, hidden, faces = [], [], []
    for ci, code in enumerate(codes):
        for _ in range(12):
            z = rng.normal()
            h = means[ci] + rng.normal(size=d) * 0.5
            h[0] = 3.0 * z
            cells.append(code)
            hidden.append(h)
            if signal == "cell":
                faces.append([f"({code}{'ab'[rng.integers(2)]})" for _ in range(3)])
            else:
                side = "ab"[int(z > 0)]
                faces.append(
                    [f"({code}{side if rng.random() < 0.9 else 'ba'['ab'.index(side)]})" for _ in range(3)]
                )
    return make(cells, np.asarray(hidden), faces)


def test_hidden_to_face_conditional_null_separates_cell_from_state():
    cell_only = hidden_to_face(face_runs("cell"), floor=2, n_boot=50, n_permutations=39, seed=0)
    assert cell_only["p_value"] == pytest.approx(1 / 40)  # the state predicts the face (through the cell)
    within = cell_only["within_cell"]
    assert within["p_value"] > 0.05  # ... but not beyond the cell
    assert within["null_mean"] > cell_only["null_mean"]  # the within-cell null keeps the cell's information
    assert within["n_permutations"] == 39 and within["question"] and cell_only["question"]

    state = hidden_to_face(face_runs("state"), floor=2, n_boot=50, n_permutations=39, seed=0)
    assert state["p_value"] == pytest.approx(1 / 40)
    assert state["within_cell"]["p_value"] == pytest.approx(1 / 40)
    assert state["accuracy"] > state["within_cell"]["null_mean"] + 0.2


# -------------------------------------------------------------------------- 3. and 4. alignment


def pair_of_runs(codes: list[str], scale: np.ndarray | None = None, seed: int = 0) -> tuple[Run, Run]:
    cells, hidden = cell_means_run(codes, 6, 10, seed=seed)
    rng = np.random.default_rng(seed + 100)
    other = hidden @ np.linalg.qr(rng.normal(size=(10, 10)))[0] if scale is None else hidden * scale
    return make(cells, hidden, [[]] * len(cells), "a"), make(cells, other, [[]] * len(cells), "b")


def test_alignment_with_four_cells_enumerates_and_floors_at_one_over_24():
    a, b = pair_of_runs(QUAD.codes)
    al = align(a, b, QUAD, n_boot=20, n_permutations=49, seed=0)
    assert al["rsa"] == pytest.approx(1.0) and al["disparity"] == pytest.approx(0.0, abs=1e-8)
    assert al["n_permutations"] == 24 and al["permutations"] == "exact"
    assert al["min_attainable_p"] == pytest.approx(1 / 24)
    assert al["rsa_p_value"] == pytest.approx(1 / 24)
    assert al["disparity_p_value"] == pytest.approx(1 / 24)


def test_alignment_exact_p_counts_every_relabelling():
    a, _ = pair_of_runs(QUAD.codes, seed=1)
    _, b = pair_of_runs(QUAD.codes, seed=2)  # unrelated arrangement
    al = align(a, b, QUAD, n_boot=20, n_permutations=1000, seed=0)
    assert al["n_permutations"] == 24
    from affectlens.analysis.kaomoji.alignment import _configuration, _rsa

    codes = np.array([QUAD.codes.index(c) for c in a.prompts["cell"]])
    ref = _configuration(a.hidden[:, 0].astype(float), codes, 4, 3)
    other = _configuration(b.hidden[:, 0].astype(float), codes, 4, 3)
    null = [_rsa(ref, other[list(p)]) for p in itertools.permutations(range(4))]
    assert al["rsa_p_value"] == pytest.approx(np.mean(np.asarray(null) >= al["rsa"] - 1e-9))


def test_alignment_monte_carlo_floor_for_nine_cells():
    a, b = pair_of_runs(PAD9.codes)
    al = align(a, b, PAD9, n_boot=20, n_permutations=49, seed=0)
    assert al["permutations"] == "monte carlo" and al["n_permutations"] == 49
    assert al["min_attainable_p"] == pytest.approx(1 / 50) and al["rsa_p_value"] == pytest.approx(1 / 50)


def test_alignment_reports_raw_and_standardised():
    # The other run is the same h_first with each feature rescaled: z-scoring undoes it exactly, the raw
    # centroids do not.
    scale = np.geomspace(0.05, 20.0, 10)
    a, b = pair_of_runs(PAD9.codes, scale=scale, seed=3)
    al = align(a, b, PAD9, n_boot=20, n_permutations=19, seed=0)
    std = al["standardised"]
    assert std["disparity"] == pytest.approx(0.0, abs=1e-8) and std["rsa"] == pytest.approx(1.0)
    assert al["disparity"] > 0.05 and al["rsa"] < 0.99
    assert std["rsa_ci"][0] <= std["rsa_ci"][1] and std["rsa_p_value"] == pytest.approx(1 / 20)
    assert "z-scored" in std["preprocessing"] or "standardised" in std["preprocessing"]


# ----------------------------------------------------------------------- 5. face -> cell by characters

EYES = {"HP-D": "^", "LP": "u", "HN-D": "`", "LN": "T"}
ARMS = ["", "\\", "/", "~", "o", "ヽ", "ノ", "*"]
BRACKETS = [("(", ")"), ("[", "]"), ("{", "}"), ("༼", "༽")]
MOUTHS = list("_-.ωｰ▽∀дεo3")


def distinct_faces(n_prompts: int, eyes: dict | None, seed: int) -> tuple[list[str], list[list[str]]]:
    """Prompts in four cells, 3 samples each; every face distinct. With ``eyes`` a face's eyes are its cell's
    eye character; without, eyes are drawn from all of them whatever the cell (pure noise)."""
    rng = np.random.default_rng(seed)
    codes = list(EYES)
    cells = [codes[i % 4] for i in range(n_prompts)]
    seen: set[str] = set()
    faces = []
    for cell in cells:
        row = []
        while len(row) < 3:
            eye = eyes[cell] if eyes else EYES[codes[rng.integers(4)]]
            left, right = BRACKETS[rng.integers(len(BRACKETS))]
            arm_l, arm_r = ARMS[rng.integers(len(ARMS))], ARMS[rng.integers(len(ARMS))]
            mouth = MOUTHS[rng.integers(len(MOUTHS))]
            face = f"{arm_l}{left}{eye}{mouth}{eye}{right}{arm_r}"
            if face not in seen:
                seen.add(face)
                row.append(face)
        faces.append(row)
    return cells, faces


def test_face_to_cell_by_characters_recovers_cells_when_faces_never_repeat():
    cells, faces = distinct_faces(32, EYES, seed=0)
    run = make(cells, np.zeros((len(cells), 4)), faces)
    f2c = face_to_cell(run, PAD9, n_boot=50, n_permutations=39, seed=0)
    assert f2c["n_faces"] == f2c["n_with_face"] == 96
    assert f2c["thin"]  # identity: no face repeats, nothing to look up
    chars = f2c["by_characters"]
    assert not chars["thin"]
    assert chars["accuracy"] > 0.9 and chars["accuracy_ci"][0] > 0.5
    assert chars["p_value"] == pytest.approx(1 / 40)
    assert chars["n"] == 96 and chars["n_groups"] == 32


def test_face_to_cell_by_characters_is_at_chance_on_noise():
    cells, faces = distinct_faces(32, None, seed=1)
    run = make(cells, np.zeros((len(cells), 4)), faces)
    chars = face_to_cell(run, PAD9, n_boot=50, n_permutations=39, seed=0)["by_characters"]
    assert not chars["thin"]
    assert chars["accuracy"] < 0.4
    assert chars["p_value"] > 0.1


def test_face_to_cell_by_characters_thin_without_faces():
    cells, _ = distinct_faces(8, EYES, seed=0)
    run = make(cells, np.zeros((8, 4)), [[None] * 3] * 8)
    chars = face_to_cell(run, PAD9, n_boot=10, n_permutations=9, seed=0)["by_characters"]
    assert chars["thin"] and chars["reason"] and "accuracy" not in chars
