"""The best ensemble scored on faces that did not choose it, the know-nothing baselines every row carries, and
which faces each row is scored on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from affectlens.analysis.ensembles import subset_search
from affectlens.analysis.similarity import BASELINE_KEYS, compare_to_truth, js_similarity
from affectlens.cells import default_cells

CODES = default_cells().codes
K = len(CODES)


def from_matrix(faces: list[str], matrix: np.ndarray, n) -> pd.DataFrame:
    frame = pd.DataFrame(matrix, index=pd.Index(faces, name="face"), columns=CODES)
    frame["n"] = np.asarray(n, dtype=np.int64)
    return frame


def emitted(rng: np.random.Generator, n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Truth rows as emissions are: each face emitted 1 + Poisson(3) times, its cells drawn from a
    Dirichlet(1) lean; (rows, emit counts)."""
    n = 1 + rng.poisson(3, n_faces)
    lean = rng.dirichlet(np.ones(K), n_faces)
    counts = np.array([rng.multinomial(k, p) for k, p in zip(n, lean, strict=True)])
    return counts / n[:, None], n


def random_panel(rng: np.random.Generator, n_faces: int, n_encoders: int):
    """Encoders that know nothing (every row an independent Dirichlet(1) draw) and an emitted truth. Every
    subset of size s then has the same true emit-weighted similarity on new faces."""
    faces = [f"f{i}" for i in range(n_faces)]
    truth = from_matrix(faces, *emitted(rng, n_faces))
    zeros = np.zeros(n_faces, dtype=np.int64)
    encoders = {
        f"e{j}": from_matrix(faces, rng.dirichlet(np.ones(K), n_faces), zeros) for j in range(n_encoders)
    }
    return truth, encoders


@pytest.fixture(scope="module")
def true_by_size() -> dict[int, float]:
    """E[n (1 - JSD)] / E[n] for the average of s know-nothing encoders, by Monte Carlo on 40,000 faces."""
    rng = np.random.default_rng(12345)
    draws = 40_000
    target, n = emitted(rng, draws)
    sims = {s: js_similarity(rng.dirichlet(np.ones(K), (s, draws)).mean(axis=0), target) for s in range(1, 7)}
    return {s: float(np.dot(n, sim) / n.sum()) for s, sim in sims.items()}


def test_heldout_best_is_not_biased_upward_unlike_in_sample(true_by_size):
    # Six know-nothing encoders, 63 subsets, 30 faces, 60 seeds. (In a longer run, 400 seeds: in-sample
    # +0.017 +- 0.001 above the winner's true score, held-out -0.002 +- 0.001, held-out interval coverage 0.96.)
    n_seeds, in_bias, out_bias, covered = 60, [], [], []
    for seed in range(n_seeds):
        truth, encoders = random_panel(np.random.default_rng(seed), n_faces=30, n_encoders=6)
        table = subset_search(encoders, truth, n_boot=60, seed=seed, n_splits=5)
        best = table.iloc[0]
        in_bias.append(best["emit_weighted"] - true_by_size[int(best["size"])])
        # What the held-out number estimates: the true score of the choices it was made from.
        choices = table.attrs["heldout_choices"]
        target = sum(true_by_size[m.count(",") + 1] * c for m, c in choices.items()) / sum(choices.values())
        out_bias.append(best["heldout_emit_weighted"] - target)
        covered.append(best["heldout_emit_weighted_lo"] <= target <= best["heldout_emit_weighted_hi"])
    in_bias, out_bias = np.array(in_bias), np.array(out_bias)
    se_in, se_out = (x.std(ddof=1) / np.sqrt(n_seeds) for x in (in_bias, out_bias))
    assert in_bias.mean() > 3 * se_in  # the winner's own score flatters it
    assert abs(out_bias.mean()) < 3 * se_out and out_bias.mean() < in_bias.mean() - 3 * se_in
    assert np.mean(covered) >= 0.85


def test_heldout_is_seeded_and_says_how_it_split():
    truth, encoders = random_panel(np.random.default_rng(0), n_faces=25, n_encoders=3)
    a = subset_search(encoders, truth, n_boot=50, seed=4, n_splits=3)
    b = subset_search(encoders, truth, n_boot=50, seed=4, n_splits=3)
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs["heldout_seed"] == 4 and a.attrs["heldout_splits"] == 3 and a.attrs["heldout_folds"] == 2
    assert a.attrs["heldout_n_select"] == 12 and a.attrs["heldout_n_score"] == 25
    assert sum(a.attrs["heldout_choices"].values()) == 6
    assert "cross-fitting" in a.attrs["heldout_method"] and a.attrs["heldout_thin"] is False
    assert 0.0 <= a.loc[0, "heldout_agree"] <= 1.0
    assert a.loc[1:, "heldout_emit_weighted"].isna().all()  # only the reported best row is held out
    lo, hi = a.loc[0, "heldout_face_uniform_lo"], a.loc[0, "heldout_face_uniform_hi"]
    assert lo <= a.loc[0, "heldout_face_uniform"] <= hi


def test_heldout_with_too_few_faces_is_thin_not_raised():
    truth, encoders = random_panel(np.random.default_rng(1), n_faces=5, n_encoders=2)
    table = subset_search(encoders, truth, n_boot=20)
    assert table.attrs["heldout_thin"] is True and "5 face" in table.attrs["heldout_reason"]
    assert np.isnan(table.loc[0, "heldout_emit_weighted"])


def hand_marginal(truth: pd.DataFrame, face: str) -> np.ndarray:
    others = truth.drop(index=face)
    counts = (others[CODES].to_numpy() * others["n"].to_numpy()[:, None]).sum(axis=0)
    return counts / counts.sum()


def test_every_row_carries_both_baselines_on_its_own_faces():
    rng = np.random.default_rng(3)
    faces = [f"f{i}" for i in range(12)]
    truth = from_matrix(faces, rng.dirichlet(np.full(K, 0.3), 12), rng.integers(1, 30, 12))
    enc = from_matrix(faces[:8], rng.dirichlet(np.ones(K), 8), [0] * 8)
    row = compare_to_truth(enc, truth, floor=1, n_boot=20)
    assert row["face_set"] == "own" and row["n_faces"] == 8
    uniform = from_matrix(faces[:8], np.full((8, K), 1 / K), [0] * 8)
    plain = compare_to_truth(uniform, truth, n_boot=20)
    assert row["uniform_face_uniform"] == pytest.approx(plain["face_uniform"], abs=1e-12)
    assert row["uniform_emit_weighted"] == pytest.approx(plain["emit_weighted"], abs=1e-12)
    # The marginal leaves each face's own emits out: built from the other eleven faces, all of them.
    sims = [js_similarity(hand_marginal(truth, f), truth.loc[f, CODES].to_numpy()) for f in faces[:8]]
    weights = truth.loc[faces[:8], "n"].to_numpy()
    assert row["marginal_face_uniform"] == pytest.approx(np.mean(sims), abs=1e-9)
    assert row["marginal_emit_weighted"] == pytest.approx(np.dot(weights, sims) / weights.sum(), abs=1e-9)


def test_leave_one_out_marginal_does_not_score_a_face_on_its_own_emits():
    # One face holds nearly every emit: the full marginal would be that face's own row and score ~1 on it.
    truth = from_matrix(["big", "a", "b"], np.eye(K)[[0, 1, 2]], [100, 1, 1])
    row = compare_to_truth(from_matrix(["big", "a", "b"], np.full((3, K), 1 / K), [0] * 3), truth, n_boot=20)
    assert row["marginal_emit_weighted"] < 0.1


def test_ensemble_table_scores_every_row_on_the_common_faces_with_its_baselines():
    truth, encoders = random_panel(np.random.default_rng(5), n_faces=20, n_encoders=3)
    encoders["e2"] = encoders["e2"].iloc[:14]
    table = subset_search(encoders, truth, n_boot=20)
    assert (table["face_set"] == "common").all() and (table["n_faces"] == 14).all()
    common = list(encoders["e2"].index)
    single = table.loc[table["members"] == "e0"].iloc[0]
    direct = compare_to_truth(encoders["e0"].loc[common], truth, n_boot=20)
    assert single["emit_weighted"] == pytest.approx(direct["emit_weighted"], abs=1e-12)
    for key in BASELINE_KEYS:
        assert (table[key] == direct[key]).all()
