"""Choosing the best of many candidates without scoring it on the faces that chose it, and know-nothing baselines.

Arrays in, arrays out (``affectlens.analysis.similarity`` builds the arrays from encoder tables). A candidate
is a row of a score matrix ``sims`` of shape (candidates, faces); the best candidate is the one with the
highest emit-weighted mean (ties: higher face-uniform mean, then fewer members, then earlier). Picking the
maximum of many noisy means and reporting that same maximum is biased upward; :func:`crossfit` scores each
face with a candidate picked on other faces only.
"""

from __future__ import annotations

import numpy as np

N_FOLDS = 2  # halves: each selection sees half the faces, each face is scored by a pick made without it


def rank_order(emit_weighted: np.ndarray, face_uniform: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Candidate indices best first: emit_weighted, then face_uniform (both descending, NaN last), then size
    ascending, then the candidates' own order."""
    emit = np.where(np.isnan(emit_weighted), -np.inf, emit_weighted)
    uniform = np.where(np.isnan(face_uniform), -np.inf, face_uniform)
    return np.lexsort((np.arange(len(size)), size, -uniform, -emit))


def best_on(sims: np.ndarray, weights: np.ndarray, size: np.ndarray) -> int:
    """The index of the best candidate judged on the faces (columns) of ``sims`` alone."""
    total = weights.sum()
    emit = sims @ weights / total if total > 0 else np.full(len(sims), np.nan)
    return int(rank_order(emit, sims.mean(axis=1), size)[0])


def crossfit(
    sims: np.ndarray, weights: np.ndarray, size: np.ndarray, *, n_splits: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Repeated 2-fold cross-fitting over faces: (each face's held-out score, the pick of every fold).

    Each of ``n_splits`` seeded random halvings of the faces gives two folds: the best candidate on one half
    scores the faces of the other. A face's held-out score is its score under the picks made without it,
    averaged over the splits; its mean over faces estimates what choosing the best on half the faces earns
    on new faces (slightly below what choosing on all faces earns, never above it in expectation).
    """
    n_faces = sims.shape[1]
    rng = np.random.default_rng([seed, N_FOLDS])  # its own stream: not the bootstrap's resamples
    heldout = np.zeros(n_faces)
    picks = []
    for _ in range(n_splits):
        order = rng.permutation(n_faces)
        halves = (order[: n_faces // 2], order[n_faces // 2 :])
        for select, score in (halves, halves[::-1]):
            pick = best_on(sims[:, select], weights[select], size)
            heldout[score] += sims[pick, score]
            picks.append(pick)
    return heldout / n_splits, np.asarray(picks, dtype=np.int64)


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
