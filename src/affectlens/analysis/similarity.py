"""Face encoders and their agreement: how well does a source of per-face cell distributions match the truth?

An *encoder* is any source of per-face distributions over the affect cells (a model's emissions, a
likelihood stage, a human survey, an API model). Every encoder loads into one table shape, checked by
``check_encoder``: a DataFrame indexed by canonical face (index name ``"face"``), one float column per cell
code in registry order (each row sums to 1), and an integer column ``"n"`` (the face's emit count where
known, else 0). Agreement is the Jensen-Shannon similarity ``1 - JSD`` in bits, which lies in [0, 1].
Reported numbers carry n (faces and emits) and a seeded bootstrap 95% percentile interval over faces.

Ensembles (averages of encoders) and the search for the best one are in ``affectlens.analysis.ensembles``.
This module computes and returns; it draws and writes nothing (the figure and the Markdown table are in
``affectlens.reporting``, the files are written by ``affectlens.api.compare``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from affectlens.analysis import selection
from affectlens.cells import CellSet, default_cells
from affectlens.errors import AffectlensError
from affectlens.stats import bootstrap_ci
from affectlens.store.runs import well_formed_mask

ROW_SUM_TOLERANCE = 1e-6
MIN_FACES = 3  # below this a mean over faces, and a bootstrap over them, says little
REQUIRED_GENERATION_COLUMNS = ("prompt_id", "cell", "sample", "face")
N_SPLITS = 10  # seeded halvings of the faces behind the best ensemble's held-out score
# Which faces a row is scored on: "own" = the truth's faces (n >= floor) this encoder scores; "common" = those
# every encoder and the truth share, the one face set of the whole ensemble ranking.
OWN, COMMON = "own", "common"
BASELINE_KEYS = (
    "uniform_face_uniform",
    "uniform_emit_weighted",
    "marginal_face_uniform",
    "marginal_emit_weighted",
)
INTERVAL_KEYS = ("face_uniform_lo", "face_uniform_hi", "emit_weighted_lo", "emit_weighted_hi")


def js_similarity(p: Any, q: Any, eps: float = 1e-12) -> float | np.ndarray:
    """Jensen-Shannon similarity ``1 - JSD(p, q)``, JSD in bits, so the result lies in [0, 1].

    ``p`` and ``q`` are 1-D distributions of length k (a float comes back) or 2-D arrays of shape (n, k)
    compared row by row (an array of shape (n,) comes back); a 1-D side broadcasts against a 2-D one.
    Entries are clipped below at ``eps`` and each row renormalised before the logs: that gives every term
    of ``p * log(p / m)`` a finite value in place of the 0 * log 0 limit, and the error it adds is of
    order ``k * eps * log2(1 / eps)`` (about 1e-9 for nine cells at the default). Rows need not sum to 1
    beforehand, so counts work too. Identical rows give exactly 1.0, disjoint supports 0.0 to within 1e-9.
    """
    p_arr, q_arr = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p_arr.ndim not in (1, 2) or q_arr.ndim not in (1, 2):
        raise AffectlensError(
            f"js_similarity takes 1-D or 2-D arrays, got shapes {p_arr.shape} and {q_arr.shape}"
        )
    try:
        p2, q2 = np.broadcast_arrays(np.atleast_2d(p_arr), np.atleast_2d(q_arr))
    except ValueError:
        raise AffectlensError(f"js_similarity: shapes {p_arr.shape} and {q_arr.shape} do not match") from None
    for side in (p2, q2):
        if not np.isfinite(side).all() or (side < 0).any():
            raise AffectlensError("js_similarity: distributions must be finite and non-negative")
        if (side.sum(axis=1) <= 0).any():
            raise AffectlensError("js_similarity: a distribution has no mass (all zeros)")
    p2, q2 = _clip_normalise(p2, eps), _clip_normalise(q2, eps)
    # m = (p + q) / 2 is exact in floating point when p == q, so log2(p / m) is exactly 0 and JSD exactly 0.
    m = 0.5 * (p2 + q2)
    jsd = 0.5 * (np.sum(p2 * np.log2(p2 / m), axis=1) + np.sum(q2 * np.log2(q2 / m), axis=1))
    similarity = np.clip(1.0 - jsd, 0.0, 1.0)  # rounding can push JSD a hair outside [0, 1]
    if p_arr.ndim == 1 and q_arr.ndim == 1:
        return float(similarity[0])
    return similarity


def _clip_normalise(x: np.ndarray, eps: float) -> np.ndarray:
    x = np.maximum(x, eps)
    return x / x.sum(axis=1, keepdims=True)


def check_encoder(frame: pd.DataFrame, cells: CellSet | None = None) -> None:
    """Raise AffectlensError (one line naming the problem) unless ``frame`` has the encoder table shape.

    Checks: a column per cell code and an integer ``"n"`` column; finite, non-negative cell values; rows
    summing to 1 within 1e-6; no face twice in the index. Extra columns (such as ``"members"``) are allowed.
    """
    cells = cells or default_cells()
    if not isinstance(frame, pd.DataFrame):
        raise AffectlensError(f"an encoder must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [code for code in cells.codes if code not in frame.columns]
    if missing:
        raise AffectlensError(f"encoder table is missing cell columns: {', '.join(missing)}")
    if "n" not in frame.columns:
        raise AffectlensError("encoder table is missing the integer column 'n' (emit count, 0 where unknown)")
    if not pd.api.types.is_integer_dtype(frame["n"]) or (frame["n"] < 0).any():
        raise AffectlensError("encoder column 'n' must hold non-negative integers")
    values = frame[cells.codes].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise AffectlensError("encoder table has missing or non-finite cell values")
    if (values < 0).any():
        face = frame.index[(values < 0).any(axis=1)][0]
        raise AffectlensError(f"encoder table has negative cell values (face {face!r})")
    bad = np.abs(values.sum(axis=1) - 1.0) > ROW_SUM_TOLERANCE
    if bad.any():
        face = frame.index[bad][0]
        raise AffectlensError(f"encoder row for face {face!r} sums to {values[bad][0].sum():.6g}, not 1")
    if frame.index.has_duplicates:
        dupes = frame.index[frame.index.duplicated()].unique()
        raise AffectlensError(f"encoder table lists faces more than once: {', '.join(map(repr, dupes[:5]))}")


def _matrix(frame: pd.DataFrame, cells: CellSet) -> np.ndarray:
    return frame[cells.codes].to_numpy(dtype=np.float64)


def _encoder_frame(
    faces: Sequence[str], matrix: np.ndarray, n: Sequence[int], cells: CellSet
) -> pd.DataFrame:
    frame = pd.DataFrame(matrix, index=pd.Index(list(faces), name="face", dtype=object), columns=cells.codes)
    frame["n"] = np.asarray(n, dtype=np.int64)
    return frame


def _check_names(names: Sequence[str]) -> None:
    # Member lists are stored comma-joined, so a comma inside a name would make them ambiguous.
    for name in names:
        if not isinstance(name, str) or not name or "," in name:
            raise AffectlensError(f"encoder names must be non-empty strings without commas, got {name!r}")


def emission_encoder(
    generations: pd.DataFrame, cells: CellSet | None = None, faces: str = "well_formed"
) -> pd.DataFrame:
    """Each face's empirical distribution over the cells whose prompts it was emitted in; n = emit count.

    ``generations`` is an elicitation table with columns prompt_id, cell, face (None or NaN where a reply
    opened with no face) and, in runs that record it, well_formed. ``faces="well_formed"`` (the default)
    counts well-formed faces only, ``"all"`` whatever a reply opened with. Faces come out most emitted
    first, ties by face string.
    """
    cells = cells or default_cells()
    missing = [c for c in REQUIRED_GENERATION_COLUMNS if c not in generations.columns]
    if missing:
        raise AffectlensError(f"generations table is missing columns: {', '.join(missing)}")
    keep = generations["face"].notna()
    if faces == "well_formed":
        keep &= well_formed_mask(generations)
    emitted = generations.loc[keep, ["cell", "face"]]
    if emitted.empty:
        return _encoder_frame([], np.empty((0, len(cells))), [], cells)
    unknown = sorted(set(emitted["cell"]) - set(cells.codes))
    if unknown:
        raise AffectlensError(
            f"generations name cells outside the {cells.name} set: {', '.join(map(str, unknown))}"
        )
    counts = pd.crosstab(emitted["face"], emitted["cell"]).reindex(columns=cells.codes, fill_value=0)
    n = counts.sum(axis=1)
    order = sorted(counts.index, key=lambda face: (-n[face], face))
    counts, n = counts.loc[order], n.loc[order]
    matrix = counts.to_numpy(dtype=np.float64) / np.maximum(n.to_numpy(dtype=np.float64), 1.0)[:, None]
    return _encoder_frame(list(counts.index), matrix.reshape(len(order), len(cells)), n.to_numpy(), cells)


def _aligned(encoder: pd.DataFrame, truth: pd.DataFrame, floor: int) -> list[str]:
    """Faces in the truth with n >= floor that the encoder also scores, in the truth's order."""
    kept = truth.index[truth["n"].to_numpy() >= floor]
    return list(kept[kept.isin(encoder.index)])


def _bootstrap(sims: np.ndarray, weights: np.ndarray, n_boot: int, seed: int) -> dict[str, float | None]:
    """Percentile 95% intervals of the face-uniform and emit-weighted means, resampling faces."""
    faces = np.arange(len(sims))  # each face is its own group: the face is the unit being averaged

    def weighted(idx: np.ndarray) -> float:
        total = weights[idx].sum()
        # A resample of only zero-weight faces (possible with floor < 1) has no weighted mean; NaN skips it.
        return float((weights[idx] * sims[idx]).sum() / total) if total > 0 else math.nan

    # The same seed gives both statistics the same resamples, so their intervals are comparable.
    u_lo, u_hi = bootstrap_ci(lambda idx: float(sims[idx].mean()), faces, n_boot=n_boot, seed=seed)
    w_lo = w_hi = None
    if weights.sum() > 0:
        w_lo, w_hi = bootstrap_ci(weighted, faces, n_boot=n_boot, seed=seed)
    return {
        "face_uniform_lo": u_lo,
        "face_uniform_hi": u_hi,
        "emit_weighted_lo": w_lo,
        "emit_weighted_hi": w_hi,
    }


def _means(sims: np.ndarray, weights: np.ndarray) -> tuple[float | None, float | None]:
    """(face-uniform, emit-weighted) means; None where there is no face, or no emit to weight by."""
    total = weights.sum()
    return (
        float(sims.mean()) if len(sims) else None,
        float((weights * sims).sum() / total) if total > 0 else None,
    )


def baselines(truth: pd.DataFrame, faces: Sequence[str], cells: CellSet | None = None) -> dict[str, Any]:
    """What two know-nothing encoders score against the truth on ``faces`` (face-uniform and emit-weighted).

    ``uniform``: 1/k in every cell, for every face. ``marginal``: the cell distribution of all the truth's
    emits, the same guess for every face except that each face's own emits are left out of its guess
    (:func:`affectlens.analysis.selection.loo_marginal`), so the baseline is never scored on counts it was
    built from. Averaging many encoders pulls towards uniform, so an ensemble should beat both to mean much.
    """
    cells = cells or default_cells()
    faces = list(faces)
    target = _matrix(truth.loc[faces], cells)
    weights = truth.loc[faces, "n"].to_numpy(dtype=np.float64)
    marginal = selection.loo_marginal(_matrix(truth, cells), truth["n"].to_numpy())
    guesses = {
        "uniform": np.full((len(faces), len(cells)), 1.0 / len(cells)),
        "marginal": marginal[truth.index.get_indexer(faces)],
    }
    result: dict[str, Any] = {}
    for name, guess in guesses.items():
        sims = np.asarray(js_similarity(guess, target)) if faces else np.empty(0)
        result[f"{name}_face_uniform"], result[f"{name}_emit_weighted"] = _means(sims, weights)
    return result


def _summarise(
    sims: np.ndarray, weights: np.ndarray, *, n_boot: int, seed: int, floor: int
) -> dict[str, Any]:
    n_faces, n_emits = len(sims), int(weights.sum())
    face_uniform, emit_weighted = _means(sims, weights)
    result: dict[str, Any] = {
        "face_uniform": face_uniform,
        "emit_weighted": emit_weighted,
        "n_faces": n_faces,
        "n_emits": n_emits,
        "face_uniform_lo": None,
        "face_uniform_hi": None,
        "emit_weighted_lo": None,
        "emit_weighted_hi": None,
        "interval": "bootstrap 95% percentile over faces",
        "n_boot": n_boot,
        "seed": seed,
        "floor": floor,
        "thin": n_faces < MIN_FACES,
        "reason": None,
    }
    if result["thin"]:
        result["reason"] = f"only {n_faces} face(s) overlap with the truth at floor {floor}; need {MIN_FACES}"
    else:
        result.update(_bootstrap(sims, weights, n_boot, seed))
    return result


def compare_to_truth(
    encoder: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    floor: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    cells: CellSet | None = None,
) -> dict[str, Any]:
    """JS similarity of an encoder to the truth over the faces both score (truth n >= ``floor``).

    Returns face_uniform (plain mean over faces), emit_weighted (mean weighted by the truth's n), n_faces,
    n_emits, their bootstrap 95% percentile intervals (``*_lo``, ``*_hi``; faces resampled with
    replacement, seeded), n_boot, seed and floor; ``face_set`` ``"own"`` (these faces are this encoder's
    own overlap with the truth) and the :func:`baselines` on the same faces (``uniform_*``, ``marginal_*``).
    Fewer than 3 shared faces never raise: the numbers that exist come back with ``thin`` true, a
    ``reason``, and no intervals.
    """
    cells = cells or default_cells()
    check_encoder(encoder, cells)
    check_encoder(truth, cells)
    if n_boot < 1:
        raise AffectlensError(f"n_boot must be at least 1, got {n_boot}")
    faces = _aligned(encoder, truth, floor)
    sims = js_similarity(_matrix(encoder.loc[faces], cells), _matrix(truth.loc[faces], cells))
    weights = truth.loc[faces, "n"].to_numpy(dtype=np.float64)
    result = _summarise(np.asarray(sims), weights, n_boot=n_boot, seed=seed, floor=floor)
    return {**result, "face_set": OWN, **baselines(truth, faces, cells)}


def pairwise_similarity(
    encoders: dict[str, pd.DataFrame], cells: CellSet | None = None, *, faces: Sequence[str] | None = None
) -> pd.DataFrame:
    """Square matrix of face-uniform JS similarity between encoders, each pair on the faces both score.

    ``faces``, when given, limits every encoder to those faces first (the comparison passes the truth's
    faces at its floor, so the heat map and the table beside it see the same faces). The diagonal is 1.0;
    a pair with no shared face is NaN. ``.attrs["n_faces"]`` holds the shared-face counts as a nested
    dict, so every entry's n travels with the matrix.
    """
    cells = cells or default_cells()
    names = list(encoders)
    for frame in encoders.values():
        check_encoder(frame, cells)
    if faces is not None:
        encoders = {name: frame.loc[frame.index.isin(list(faces))] for name, frame in encoders.items()}
    values = np.eye(len(names))
    counts = {a: {b: len(encoders[a]) if a == b else 0 for b in names} for a in names}
    for i, j in itertools.combinations(range(len(names)), 2):
        a, b = encoders[names[i]], encoders[names[j]]
        shared = list(a.index[a.index.isin(b.index)])
        counts[names[i]][names[j]] = counts[names[j]][names[i]] = len(shared)
        if shared:
            sims = js_similarity(_matrix(a.loc[shared], cells), _matrix(b.loc[shared], cells))
            values[i, j] = values[j, i] = float(np.mean(sims))
        else:
            values[i, j] = values[j, i] = np.nan
    matrix = pd.DataFrame(
        values, index=pd.Index(names, name="encoder"), columns=pd.Index(names, name="encoder")
    )
    matrix.attrs["n_faces"] = counts
    return matrix
