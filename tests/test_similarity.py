"""Face encoders and their agreement: JS similarity against hand computations, tables, ensembles, figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import jensenshannon

from affectlens.analysis.ensembles import average_encoders, lookup_table, subset_search
from affectlens.analysis.similarity import (
    check_encoder,
    compare_to_truth,
    emission_encoder,
    js_similarity,
    pairwise_similarity,
)
from affectlens.cells import default_cells
from affectlens.errors import AffectlensError
from affectlens.reporting.figures.similarity import similarity_figure
from affectlens.reporting.sections.comparison import markdown_table

CODES = default_cells().codes
K = len(CODES)


def encoder(rows: dict[str, dict[str, float]], n: dict[str, int] | None = None) -> pd.DataFrame:
    """An encoder table from {face: {cell: mass}}; cells left out get 0."""
    frame = pd.DataFrame([[row.get(c, 0.0) for c in CODES] for row in rows.values()], columns=CODES)
    frame.index = pd.Index(list(rows), name="face")
    frame["n"] = [int((n or {}).get(face, 1)) for face in rows]
    return frame


def from_matrix(faces: list[str], matrix: np.ndarray, n: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame(matrix, index=pd.Index(faces, name="face"), columns=CODES)
    frame["n"] = np.asarray(n, dtype=np.int64)
    return frame


# --- js_similarity --------------------------------------------------------------------------------------


def test_identical_distributions_give_exactly_one():
    p = [0.2, 0.3, 0.5, 0.0]
    assert js_similarity(p, p) == 1.0
    assert js_similarity([1, 0], [1, 0]) == 1.0


def test_disjoint_supports_give_zero():
    assert js_similarity([1, 0], [0, 1]) == pytest.approx(0.0, abs=1e-9)
    p, q = np.zeros(K), np.zeros(K)
    p[:4], q[4:] = 0.25, 0.2
    assert js_similarity(p, q) == pytest.approx(0.0, abs=1e-9)


def test_hand_computed_case():
    # p = [1, 0], q = [0.5, 0.5], so m = [0.75, 0.25].
    kl_p = 1.0 * math.log2(1.0 / 0.75)
    kl_q = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    expected = 1.0 - (0.5 * kl_p + 0.5 * kl_q)  # 0.688721...
    assert js_similarity([1, 0], [0.5, 0.5]) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.6887218755, abs=1e-9)
    # scipy's Jensen-Shannon distance is sqrt(JSD), an independent reference.
    assert js_similarity([1, 0], [0.5, 0.5]) == pytest.approx(
        1 - jensenshannon([1, 0], [0.5, 0.5], base=2) ** 2
    )


def test_symmetric():
    p, q = [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]
    assert js_similarity(p, q) == pytest.approx(js_similarity(q, p), abs=1e-15)
    assert js_similarity(p, q) < 1.0


def test_row_wise_matches_one_dimensional():
    rng = np.random.default_rng(3)
    p, q = rng.dirichlet(np.ones(K), size=6), rng.dirichlet(np.ones(K), size=6)
    p[2, :5] = 0.0  # a row with zeros exercises the clipping
    p[2] /= p[2].sum()
    rows = js_similarity(p, q)
    assert rows.shape == (6,)
    for i in range(6):
        assert rows[i] == pytest.approx(js_similarity(p[i], q[i]), abs=1e-15)
    # A 1-D side broadcasts against every row.
    assert np.allclose(js_similarity(p, q[0]), [js_similarity(row, q[0]) for row in p])


def test_js_rejects_bad_input():
    with pytest.raises(AffectlensError):
        js_similarity([0.5, -0.5], [0.5, 0.5])
    with pytest.raises(AffectlensError):
        js_similarity([0, 0], [0.5, 0.5])
    with pytest.raises(AffectlensError):
        js_similarity([0.5, 0.5], [0.2, 0.3, 0.5])


distributions = arrays(np.float64, K, elements=st.floats(0.0, 1.0)).filter(lambda x: x.sum() > 1e-3)


@settings(max_examples=200, deadline=None)
@given(distributions, distributions)
def test_property_bounded_and_symmetric(p, q):
    s = js_similarity(p, q)
    assert 0.0 <= s <= 1.0
    assert s == pytest.approx(js_similarity(q, p), abs=1e-12)


# --- emission_encoder -----------------------------------------------------------------------------------


def test_emission_encoder_counts_and_distributions():
    generations = pd.DataFrame(
        [
            ("p1", "HP-D", 0, "(^_^)"),
            ("p1", "HP-D", 1, "(^_^)"),
            ("p2", "LN", 0, "(^_^)"),
            ("p2", "LN", 1, "(;_;)"),
            ("p3", "LN", 0, None),
            ("p4", "NB", 0, np.nan),
        ],
        columns=["prompt_id", "cell", "sample", "face"],
    )
    enc = emission_encoder(generations)
    check_encoder(enc)
    assert list(enc.columns) == [*CODES, "n"]
    assert enc.index.name == "face"
    assert list(enc.index) == ["(^_^)", "(;_;)"]  # most emitted first
    assert enc.loc["(^_^)", "n"] == 3 and enc.loc["(;_;)", "n"] == 1
    assert enc.loc["(^_^)", "HP-D"] == pytest.approx(2 / 3)
    assert enc.loc["(^_^)", "LN"] == pytest.approx(1 / 3)
    assert enc.loc["(;_;)", "LN"] == 1.0
    assert enc.loc["(^_^)", [c for c in CODES if c not in ("HP-D", "LN")]].sum() == 0.0
    assert enc["NB"].sum() == 0.0  # the NB row emitted no face


def test_emission_encoder_rejects_unknown_cells_and_missing_columns():
    bad = pd.DataFrame([("p1", "XX", 0, ":)")], columns=["prompt_id", "cell", "sample", "face"])
    with pytest.raises(AffectlensError, match="XX"):
        emission_encoder(bad)
    with pytest.raises(AffectlensError, match="face"):
        emission_encoder(bad.drop(columns="face"))


# --- compare_to_truth -----------------------------------------------------------------------------------


def one_hot(cell: str) -> dict[str, float]:
    return {cell: 1.0}


def test_identical_encoder_scores_one():
    truth = encoder(
        {
            "a": {"HP-D": 0.5, "LP": 0.5},
            "b": one_hot("LN"),
            "c": {"NB": 0.9, "HB": 0.1},
            "d": one_hot("HN-S"),
        },
        n={"a": 4, "b": 2, "c": 9, "d": 1},
    )
    result = compare_to_truth(truth.copy(), truth)
    assert result["face_uniform"] == 1.0 and result["emit_weighted"] == 1.0
    assert result["face_uniform_lo"] == 1.0 and result["emit_weighted_hi"] == 1.0
    assert result["n_faces"] == 4 and result["n_emits"] == 16
    assert result["thin"] is False and result["seed"] == 0 and result["n_boot"] == 1000


def test_emit_weighting_weights():
    # Faces a, b, c agree exactly (similarity 1); d is disjoint (similarity 0) and carries most emits.
    truth = encoder(
        {"a": one_hot("HP-D"), "b": one_hot("LP"), "c": one_hot("NB"), "d": one_hot("HP-S")},
        n={"a": 1, "b": 1, "c": 1, "d": 7},
    )
    enc = encoder({"a": one_hot("HP-D"), "b": one_hot("LP"), "c": one_hot("NB"), "d": one_hot("LN")})
    result = compare_to_truth(enc, truth)
    assert result["face_uniform"] == pytest.approx(3 / 4, abs=1e-9)
    assert result["emit_weighted"] == pytest.approx(3 / 10, abs=1e-9)
    assert result["n_emits"] == 10
    assert result["emit_weighted_lo"] <= result["emit_weighted"] <= result["emit_weighted_hi"]


def test_floor_drops_faces():
    truth = encoder(
        {"rare": one_hot("HP-D"), "x": one_hot("LP"), "y": one_hot("NB"), "z": one_hot("LN")},
        n={"rare": 1, "x": 5, "y": 5, "z": 5},
    )
    enc = encoder({"rare": one_hot("HB"), "x": one_hot("LP"), "y": one_hot("NB"), "z": one_hot("LN")})
    loose = compare_to_truth(enc, truth, floor=1)
    strict = compare_to_truth(enc, truth, floor=2)
    assert loose["n_faces"] == 4 and loose["face_uniform"] == pytest.approx(0.75, abs=1e-9)
    assert strict["n_faces"] == 3 and strict["n_emits"] == 15 and strict["face_uniform"] == 1.0
    assert strict["floor"] == 2


def test_thin_overlap_is_flagged_not_raised():
    truth = encoder({"a": one_hot("LP"), "b": one_hot("NB"), "c": one_hot("LN")}, n={"a": 2, "b": 3, "c": 4})
    enc = encoder({"a": one_hot("LP"), "b": one_hot("HB"), "q": one_hot("LN")})
    result = compare_to_truth(enc, truth)
    assert result["thin"] is True and "2 face" in result["reason"]
    assert result["n_faces"] == 2
    assert result["face_uniform"] == pytest.approx(0.5, abs=1e-9)
    assert result["emit_weighted"] == pytest.approx(2 / 5, abs=1e-9)
    assert result["face_uniform_lo"] is None
    empty = compare_to_truth(encoder({"zz": one_hot("LP")}), truth)
    assert empty["thin"] is True and empty["n_faces"] == 0 and empty["face_uniform"] is None


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    faces = [f"f{i}" for i in range(30)]
    truth = from_matrix(faces, rng.dirichlet(np.ones(K), 30), rng.integers(1, 20, 30))
    enc = from_matrix(faces, rng.dirichlet(np.ones(K), 30), [0] * 30)
    a, b = compare_to_truth(enc, truth, seed=7), compare_to_truth(enc, truth, seed=7)
    c = compare_to_truth(enc, truth, seed=8)
    assert a == b
    assert a["face_uniform_lo"] != c["face_uniform_lo"]
    assert a["face_uniform_lo"] < a["face_uniform"] < a["face_uniform_hi"]


# --- ensembles ------------------------------------------------------------------------------------------


def synthetic_panel(n_faces: int = 20, seed: int = 0) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Truth lives on the four positive cells; all noise lives on the five others, so noise and truth are
    disjoint and every subset's similarity is known in closed form:
      A alone, B alone: half the faces at 1, half at 0  -> 0.5
      C alone: 0
      {A, B}: every face is (T + N) / 2                 -> 1 - JSD = 0.6887...
      {A, B, C}: every face is (T + N + N') / 3         -> 1 - JSD = 0.5408...
      {A, C}, {B, C}: half the faces (T + N) / 2, half pure noise -> 0.3443...
    """
    rng = np.random.default_rng(seed)
    faces = [f"face{i}" for i in range(n_faces)]
    truth_m = np.zeros((n_faces, K))
    truth_m[:, :4] = rng.dirichlet(np.ones(4), n_faces)

    def noise() -> np.ndarray:
        m = np.zeros((n_faces, K))
        m[:, 4:] = rng.dirichlet(np.ones(K - 4), n_faces)
        return m

    half = n_faces // 2
    a, b = noise(), noise()
    a[:half], b[half:] = truth_m[:half], truth_m[half:]
    n = [5] * n_faces
    truth = from_matrix(faces, truth_m, n)
    return truth, {
        "A": from_matrix(faces, a, n),
        "B": from_matrix(faces, b, n),
        "C": from_matrix(faces, noise(), n),
    }


def test_subset_search_finds_the_constructed_best():
    truth, encoders = synthetic_panel()
    table = subset_search(encoders, truth, n_boot=200, seed=1)
    assert len(table) == 7
    assert table.loc[0, "members"] == "A,B" and table.loc[0, "size"] == 2
    ab = 1 - (0.5 * math.log2(4 / 3) + 0.25 * math.log2(2 / 3) + 0.25)
    abc = 1 - 0.5 * (math.log2(3 / 2) + 1 / 3)
    assert table.loc[0, "emit_weighted"] == pytest.approx(ab, abs=1e-8)
    assert table.loc[0, "face_uniform"] == pytest.approx(ab, abs=1e-8)
    assert table.loc[1, "members"] == "A,B,C"
    assert table.loc[1, "emit_weighted"] == pytest.approx(abc, abs=1e-8)
    assert set(table.loc[2:3, "members"]) == {"A", "B"}
    assert table.loc[2, "emit_weighted"] == pytest.approx(0.5, abs=1e-8)
    assert table.loc[6, "members"] == "C" and table.loc[6, "emit_weighted"] == pytest.approx(0.0, abs=1e-8)
    assert (table["n_faces"] == 20).all()
    # Only the best row carries an interval.
    assert (
        table.loc[0, "emit_weighted_lo"] <= table.loc[0, "emit_weighted"] <= table.loc[0, "emit_weighted_hi"]
    )
    assert table.loc[1:, "emit_weighted_lo"].isna().all()
    assert table.attrs["seed"] == 1 and table.attrs["n_boot"] == 200
    # The best row's numbers agree with scoring the averaged ensemble directly.
    direct = compare_to_truth(average_encoders([encoders["A"], encoders["B"]]), truth, n_boot=200, seed=1)
    assert direct["emit_weighted"] == pytest.approx(table.loc[0, "emit_weighted"], abs=1e-12)
    assert direct["emit_weighted_lo"] == pytest.approx(table.loc[0, "emit_weighted_lo"], abs=1e-12)


def test_subset_search_uses_only_faces_common_to_all():
    truth, encoders = synthetic_panel()
    encoders["C"] = encoders["C"].iloc[:12]
    table = subset_search(encoders, truth, n_boot=50)
    assert (table["n_faces"] == 12).all()


def test_subset_search_refuses_too_many_encoders():
    truth, encoders = synthetic_panel()
    many = {f"e{i}": encoders["A"] for i in range(13)}
    with pytest.raises(AffectlensError, match="13 encoders"):
        subset_search(many, truth)


def test_average_encoders_uses_common_faces():
    a = encoder({"x": one_hot("LP"), "y": one_hot("NB")}, n={"x": 2, "y": 3})
    b = encoder({"y": one_hot("LN"), "z": one_hot("HB")}, n={"y": 4, "z": 1})
    avg = average_encoders([a, b])
    check_encoder(avg)
    assert list(avg.index) == ["y"]
    assert avg.loc["y", "NB"] == 0.5 and avg.loc["y", "LN"] == 0.5 and avg.loc["y", "n"] == 7


def test_lookup_table_covers_union_and_averages_scorers_only():
    a = encoder({"x": one_hot("LP"), "y": one_hot("NB")}, n={"x": 2, "y": 3})
    b = encoder({"y": one_hot("LN"), "z": {"HB": 0.25, "HP-D": 0.75}}, n={"y": 4, "z": 1})
    table = lookup_table({"A": a, "B": b})
    check_encoder(table)
    assert list(table.index) == ["x", "y", "z"]
    assert table.loc["x", "LP"] == 1.0 and table.loc["x", "members"] == "A"
    assert table.loc["y", "NB"] == 0.5 and table.loc["y", "LN"] == 0.5 and table.loc["y", "members"] == "A,B"
    assert (
        table.loc["z", "HP-D"] == 0.75 and table.loc["z", "HB"] == 0.25 and table.loc["z", "members"] == "B"
    )
    assert list(table["n"]) == [2, 7, 1]


def test_pairwise_similarity_matrix():
    a = encoder({"x": one_hot("LP"), "y": one_hot("NB")})
    b = encoder({"x": {"LP": 0.5, "HP-D": 0.5}, "y": one_hot("NB"), "z": one_hot("HB")})
    c = encoder({"q": one_hot("LP")})
    matrix = pairwise_similarity({"A": a, "B": b, "C": c})
    assert list(matrix.index) == ["A", "B", "C"]
    assert np.allclose(np.diag(matrix), 1.0)
    expected = (js_similarity([1, 0], [0.5, 0.5]) + 1.0) / 2  # x is the hand-computed case, y agrees
    assert matrix.loc["A", "B"] == pytest.approx(expected) and matrix.loc["B", "A"] == matrix.loc["A", "B"]
    assert math.isnan(matrix.loc["A", "C"])
    assert matrix.attrs["n_faces"]["A"]["B"] == 2 and matrix.attrs["n_faces"]["B"]["C"] == 0


# --- check_encoder --------------------------------------------------------------------------------------


def test_check_encoder_accepts_good_and_rejects_bad_tables():
    good = encoder({"x": one_hot("LP"), "y": {"NB": 0.5, "HB": 0.5}})
    check_encoder(good)
    with pytest.raises(AffectlensError, match="missing cell columns: LN"):
        check_encoder(good.drop(columns="LN"))
    negative = good.copy()
    negative.loc["y", ["NB", "HB", "LP"]] = [1.0, 0.5, -0.5]
    with pytest.raises(AffectlensError, match="negative"):
        check_encoder(negative)
    unnormalised = good.copy()
    unnormalised.loc["x", "LP"] = 0.9
    with pytest.raises(AffectlensError, match=r"sums to 0\.9"):
        check_encoder(unnormalised)
    with pytest.raises(AffectlensError, match="more than once"):
        check_encoder(pd.concat([good, good.iloc[:1]]))
    with pytest.raises(AffectlensError, match="'n'"):
        check_encoder(good.drop(columns="n"))
    with pytest.raises(AffectlensError, match="non-finite"):
        check_encoder(good.assign(LP=np.nan))


# --- report pieces --------------------------------------------------------------------------------------


def test_similarity_figure_writes_png_and_svg(tmp_path):
    truth, encoders = synthetic_panel()
    rows = [{"encoder": name, **compare_to_truth(enc, truth, n_boot=100)} for name, enc in encoders.items()]
    rows.append({"encoder": "thin", **compare_to_truth(encoders["A"].iloc[:2], truth)})
    paths = similarity_figure(pairwise_similarity(encoders), rows, tmp_path / "figs" / "similarity")
    assert [p.name for p in paths] == ["similarity.png", "similarity.svg"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[0].stat().st_size > 1000
    assert "<svg" in paths[1].read_text() and paths[1].stat().st_size > 1000


def test_markdown_table():
    truth, encoders = synthetic_panel()
    row = {"encoder": "A", **compare_to_truth(encoders["A"], truth, n_boot=100)}
    thin = {"encoder": "thin|one", **compare_to_truth(encoders["A"].iloc[:1], truth)}
    text = markdown_table([row, thin])
    lines = text.strip().splitlines()
    assert lines[0] == (
        "| encoder | face_uniform [95% CI] | emit_weighted [95% CI] | n_faces | faces "
        "| uniform baseline (fu / ew) | marginal baseline (fu / ew) |"
    )
    lo, hi = row["emit_weighted_lo"], row["emit_weighted_hi"]
    base = " | ".join(
        f"{row[f'{b}_face_uniform']:.3f} / {row[f'{b}_emit_weighted']:.3f}" for b in ("uniform", "marginal")
    )
    assert (
        lines[2]
        == f"| A | 0.500 [{row['face_uniform_lo']:.3f}, {row['face_uniform_hi']:.3f}] | 0.500 [{lo:.3f}, {hi:.3f}] | 20 | own | {base} |"
    )
    assert lines[3].startswith("| thin\\|one | 1.000 [n/a] | 1.000 [n/a] | 1 | own | ")
