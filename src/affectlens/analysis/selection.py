"""Choosing the best of many candidates without scoring it on the faces that chose it, and know-nothing baselines.

Arrays in, arrays out (``affectlens.analysis.ensembles`` builds the arrays from encoder tables). A candidate
is a row of a score matrix ``sims`` of shape (candidates, faces); the best candidate is the one with the
highest emit-weighted mean (ties: higher face-uniform mean, then fewer members, then earlier). Picking the
maximum of many noisy means and reporting that same maximum is biased upward; :func:`crossfit` scores each
face with a candidate picked on other faces only, and :func:`heldout_estimate` adds an interval that
repeats the picking in every bootstrap resample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

N_FOLDS = 2  # halves: each choice sees half the faces, each face is scored by a choice made without it
N_SPLITS_BOOT = 2  # halvings inside each bootstrap resample (the point estimate uses the caller's n_splits)


def rank_order(emit_weighted: np.ndarray, face_uniform: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Candidate indices best first: emit_weighted, then face_uniform (both descending, NaN last), then size
    ascending, then the candidates' own order."""
    emit = np.where(np.isnan(emit_weighted), -np.inf, emit_weighted)
    uniform = np.where(np.isnan(face_uniform), -np.inf, face_uniform)
    return np.lexsort((np.arange(len(size)), size, -uniform, -emit))


def first(emit_weighted: np.ndarray, face_uniform: np.ndarray, size: np.ndarray) -> int:
    """``rank_order(...)[0]`` without sorting every candidate: only ties on emit_weighted go further."""
    emit = np.where(np.isnan(emit_weighted), -np.inf, emit_weighted)
    tied = np.flatnonzero(emit == emit.max())
    return (
        int(tied[rank_order(emit[tied], face_uniform[tied], size[tied])[0]])
        if len(tied) > 1
        else int(tied[0])
    )


def _means(sims: np.ndarray, weights: np.ndarray, count: np.ndarray) -> tuple[Any, Any]:
    """(face-uniform, emit-weighted) means over the columns of ``sims`` (1-D or 2-D), faces ``count`` times."""
    emit = weights * count
    emit_weighted = sims @ emit / emit.sum() if emit.sum() > 0 else np.full(np.shape(sims)[:-1], np.nan)
    return sims @ count / count.sum(), emit_weighted


def crossfit(
    sims: np.ndarray,
    weights: np.ndarray,
    size: np.ndarray,
    *,
    n_splits: int,
    rng: np.random.Generator,
    count: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Repeated 2-fold cross-fitting over faces: (each face's held-out score, the pick of every fold).

    Each of ``n_splits`` random halvings of the faces gives two folds: the best candidate on one half
    scores the faces of the other. A face's held-out score is its score under the picks made without it,
    averaged over the halvings; its mean over faces estimates what choosing the best on half the faces
    earns on new faces (a little below what choosing on all of them earns). ``count`` weights faces that a
    bootstrap resample drew more than once; the copies of a face always fall in the same half.
    """
    n_faces = sims.shape[1]
    count = np.ones(n_faces) if count is None else count
    heldout = np.zeros(n_faces)
    picks = []
    for _ in range(n_splits):
        order = rng.permutation(n_faces)
        halves = (order[: n_faces // 2], order[n_faces // 2 :])
        for select, score in (halves, halves[::-1]):
            face_uniform, emit_weighted = _means(sims[:, select], weights[select], count[select])
            pick = first(emit_weighted, face_uniform, size)
            heldout[score] += sims[pick, score]
            picks.append(pick)
    return heldout / n_splits, np.asarray(picks, dtype=np.int64)


def heldout_estimate(
    sims: np.ndarray, weights: np.ndarray, size: np.ndarray, *, n_splits: int, n_boot: int, seed: int
) -> dict[str, Any]:
    """The held-out face-uniform and emit-weighted means of choosing the best candidate, with 95% intervals.

    The estimates come from :func:`crossfit` with ``n_splits`` seeded halvings. Each of ``n_boot`` bootstrap
    resamples draws faces with replacement and does the choosing and the scoring again (``N_SPLITS_BOOT``
    halvings), so the interval carries the noise of the choice as well as of the scoring; an interval of
    the held-out scores alone, with the choices fixed, covers too rarely. A resample chooses among fewer
    distinct faces, so its scores run low: the interval is the resamples' 2.5% and 97.5% quantiles taken
    about their median and placed about the estimate. Returns face_uniform, emit_weighted, their ``_lo``
    and ``_hi``, and ``picks`` (the candidate chosen in each of the ``2 * n_splits`` folds).
    """
    rng = np.random.default_rng([seed, N_FOLDS])  # its own stream, apart from the plain bootstrap's
    n_faces = sims.shape[1]
    per_face, picks = crossfit(sims, weights, size, n_splits=n_splits, rng=rng)
    estimates = _means(per_face, weights, np.ones(n_faces))
    boots = np.full((n_boot, 2), np.nan)
    for b in range(n_boot):
        count = np.bincount(rng.integers(0, n_faces, n_faces), minlength=n_faces).astype(np.float64)
        drawn = count > 0
        if drawn.sum() >= N_FOLDS:
            per, _ = crossfit(
                sims[:, drawn], weights[drawn], size, n_splits=N_SPLITS_BOOT, rng=rng, count=count[drawn]
            )
            boots[b] = _means(per, weights[drawn], count[drawn])
    result: dict[str, Any] = {"picks": picks}
    for column, key in enumerate(("face_uniform", "emit_weighted")):
        value = float(estimates[column])
        result[key], result[f"{key}_lo"], result[f"{key}_hi"] = value, None, None
        if np.isfinite(value) and np.isfinite(boots[:, column]).any():
            lo, mid, hi = np.nanquantile(boots[:, column], [0.025, 0.5, 0.975])
            result[f"{key}_lo"], result[f"{key}_hi"] = value - (mid - lo), value + (hi - mid)
    return result


def loo_marginal(matrix: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Each face's leave-one-face-out marginal: the cell distribution of the emits of every *other* face.

    ``matrix`` holds the truth's per-face distributions (rows sum to 1) and ``n`` their emit counts. Leaving
    the face's own emits out keeps the baseline from being scored on counts it was built from (with few
    faces the full marginal is close to each face's own row). Where no other face has an emit the row is
    uniform.
    """
    counts = matrix * np.asarray(n, dtype=np.float64)[:, None]
    rest = np.maximum(counts.sum(axis=0)[None, :] - counts, 0.0)  # rounding can leave -1e-16
    mass = rest.sum(axis=1, keepdims=True)
    uniform = np.full_like(matrix, 1.0 / max(matrix.shape[1], 1))
    return np.where(mass > 1e-9, rest / np.where(mass > 0, mass, 1.0), uniform)
