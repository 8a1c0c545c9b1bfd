"""PC1/PC2 against valence and arousal, with the cell as the unit.

Valence and arousal are fixed per cell, so however many prompts a cell holds it adds one independent point:
the correlations are taken between the cells' centroids (mean PC score of their prompts) and the cells'
coordinates, n = number of cells. The interval resamples cells (the PCA fixed); the p-value relabels cells
(see ``permutations``). PCs have no inherent order or sign, so PC1 and PC2 are paired with valence and
arousal by the larger summed |r| and flipped to make the paired r positive; since that choice is made on
the data, ``pairing_test`` tests the chosen pairing against a null that redoes the choice on every
relabelling (the max over both pairings). Each row's own p tests its PC-axis pair alone.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from affectlens.analysis.kaomoji.common import thin
from affectlens.analysis.kaomoji.permutations import RELABEL_RULE, label_floor, relabel_p, relabellings
from affectlens.cells import CellSet
from affectlens.stats import bootstrap_ci

AXES = ("valence", "arousal")
MIN_CORRELATION_CELLS = 3  # with 2 cells every r is +-1
PAIRING_RULE = (
    "PC1 and PC2 paired with valence and arousal by the larger summed |r| over cell centroids (ties: PC1 "
    "with valence), each PC flipped so its paired r is positive"
)
PAIRING_CORRECTION = (
    "chosen on these data; pairing_test's null redoes the choice on every relabelling of the cells (max "
    "over the two pairings of the summed |r|); each correlation's own p tests that PC-axis pair alone"
)


def _r_matrix(C: np.ndarray, V: np.ndarray, perms: np.ndarray | None = None) -> np.ndarray:
    """r of each column of C ([k, 2] PC centroids) with each column of V ([k, 2] coordinates): [2, 2] (PC,
    axis), or [m, 2, 2] with V's rows relabelled by each of ``perms`` ([m, k]). NaN where a column is flat."""
    Cc, Vc = C - C.mean(axis=0), V - V.mean(axis=0)
    denom = np.outer(np.linalg.norm(Cc, axis=0), np.linalg.norm(Vc, axis=0))
    num = Cc.T @ Vc if perms is None else np.einsum("kj,mka->mja", Cc, Vc[perms])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, num / np.where(denom > 0, denom, 1.0), np.nan)


def _pairing_scores(R: np.ndarray) -> np.ndarray:
    """Summed |r| of (PC1-valence, PC2-arousal) and of (PC1-arousal, PC2-valence): [..., 2]; NaN counts 0."""
    A = np.nan_to_num(np.abs(R))
    return np.stack([A[..., 0, 0] + A[..., 1, 1], A[..., 0, 1] + A[..., 1, 0]], axis=-1)


def _r_of(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denom) if denom > 0 else math.nan


def pc_axis_correlations(
    scores: np.ndarray, y: np.ndarray, cells: CellSet, *, n_boot: int, n_permutations: int, seed: int
) -> tuple[list[dict], dict, dict]:
    """(the four PC-axis correlations, the pairing, the pairing test); flips ``scores[:, :2]`` in place."""
    coords = cells.coordinates()
    labels = [c for c in cells.codes if c in set(y)]
    k = len(labels)
    C = np.stack([scores[y == c, :2].mean(axis=0) for c in labels])
    V = np.array([coords[c][:2] for c in labels], dtype=float)
    flat = V.std(axis=0) == 0
    if k < MIN_CORRELATION_CELLS:
        reason = f"{k} cells; a correlation over cell centroids needs >= {MIN_CORRELATION_CELLS}"
        rows = [{"pc": j + 1, "axis": a, **thin(reason, n_cells=k)} for j in range(2) for a in AXES]
        pairing = {"PC1": AXES[0], "PC2": AXES[1], "signs": [1.0, 1.0], "rule": PAIRING_RULE}
        return rows, pairing | {"correction": PAIRING_CORRECTION}, thin(reason, n_cells=k)
    R = _r_matrix(C, V)
    by_pairing = _pairing_scores(R)
    best = AXES[::-1] if by_pairing[1] > by_pairing[0] else AXES
    signs = [-1.0 if R[j, AXES.index(best[j])] < 0 else 1.0 for j in range(2)]
    scores[:, :2] *= signs
    C = C * signs
    R = R * np.asarray(signs)[:, None]
    draws = relabellings(k, n_permutations, seed) if n_permutations > 0 else None
    null = _r_matrix(C, V, draws.perms) if draws is not None else None
    cell_ids = np.arange(k)
    rows = []
    for j in range(2):
        for ai, a in enumerate(AXES):
            if flat[ai]:
                rows.append({"pc": j + 1, "axis": a, **thin(f"every cell has the same {a}", n_cells=k)})
                continue
            lo, hi = bootstrap_ci(
                lambda idx, j=j, ai=ai: _r_of(C[idx, j], V[idx, ai]), cell_ids, n_boot=n_boot, seed=seed
            )
            row: dict[str, Any] = {
                "pc": j + 1,
                "axis": a,
                "paired": best[j] == a,
                "unit": "cell",
                "r": float(R[j, ai]),
                "lo": lo,
                "hi": hi,
                "n": k,
                "n_prompts": len(y),
                "n_boot": n_boot,
                "seed": seed,
                "n_permutations": n_permutations,
                "p_value": None,
                "min_attainable_p": None,
            }
            if draws is not None:
                row |= relabel_p(abs(R[j, ai]), np.abs(null[:, j, ai]), draws, label_floor(V[:, ai]))
            rows.append(row)
    pairing = {"PC1": best[0], "PC2": best[1], "signs": signs, "rule": PAIRING_RULE}
    pairing["correction"] = PAIRING_CORRECTION
    observed = float(_pairing_scores(R).max())
    test: dict[str, Any] = {
        "thin": False,
        "statistic": "summed |r| of the better pairing (max over the two pairings)",
        "observed": observed,
        "n_cells": k,
        "p_value": None,
    }
    if draws is not None:
        test |= relabel_p(observed, _pairing_scores(null).max(axis=-1), draws, label_floor(V, swap=True))
        test["permutation"] = RELABEL_RULE
    return rows, pairing, test
