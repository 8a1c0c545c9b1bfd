"""Alignment across runs on shared prompts: orthogonal Procrustes of cell centroids, and RSA.

Both are computed twice: on cell centroids of raw h_first, and on cell centroids of h_first with each
feature z-scored over the shared prompts (as geometry does). Raw keeps the model's own metric, in which a
few high-variance features can dominate the distances; z-scored gives every feature equal weight. Where the
two disagree, the conclusion depends on that choice. The p-values relabel the other run's cells (see
``permutations``: all k! relabellings when k! <= n_permutations, and p never below the exact floor).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

from affectlens.analysis.kaomoji.common import ALIGN_DIMS, INTERVAL, MIN_ALIGN_CELLS, memo, thin
from affectlens.analysis.kaomoji.loading import Run
from affectlens.analysis.kaomoji.permutations import RELABEL_RULE, relabel_p, relabellings
from affectlens.cells import CellSet
from affectlens.stats import bootstrap_ci

RAW = (
    "cell centroids of raw h_first, centred, projected on their own top-k principal axes, scaled to unit "
    "Frobenius norm (rotation- and scale-invariant, unlike per-feature z-scoring)"
)
STANDARDISED = (
    "each feature of h_first z-scored over the shared prompts (refitted per bootstrap resample), then cell "
    "centroids as for raw: centred, own top-k principal axes, unit Frobenius norm"
)


def _configuration(X: np.ndarray, codes: np.ndarray, n_cells: int, k: int) -> np.ndarray | None:
    """Cell centroids [n_cells, k]: centred, in their own PCA coordinates, unit Frobenius norm."""
    counts = np.bincount(codes, minlength=n_cells)
    if (counts == 0).any():
        return None
    onehot = np.zeros((n_cells, len(codes)))
    onehot[codes, np.arange(len(codes))] = 1.0
    centroids = (onehot @ X) / counts[:, None]
    centroids -= centroids.mean(axis=0)
    u, s, _ = np.linalg.svd(centroids, full_matrices=False)
    coords = np.zeros((n_cells, k))
    m = min(k, len(s))
    coords[:, :m] = u[:, :m] * s[:m]
    norm = np.linalg.norm(coords)
    return coords / norm if norm > 0 else None


def _procrustes(ref: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, float]:
    """(other rotated onto ref, disparity = sum of squared differences); both centred, unit norm."""
    rotation, _ = scipy.linalg.orthogonal_procrustes(other, ref)
    aligned = other @ rotation
    return aligned, float(np.sum((ref - aligned) ** 2))


def _rsa(ref: np.ndarray, other: np.ndarray) -> float:
    return float(spearmanr(pdist(ref), pdist(other)).statistic)


def _zscore(X: np.ndarray) -> np.ndarray:
    """Each column centred and scaled to unit standard deviation over the rows (a constant column: 0)."""
    Z = X - X.mean(axis=0)
    sd = Z.std(axis=0)
    return Z / np.where(sd > 0, sd, 1.0)


def _compare(
    Xa: np.ndarray,
    Xb: np.ndarray,
    codes: np.ndarray,
    groups: np.ndarray,
    k: int,
    prep: Callable[[np.ndarray], np.ndarray],
    *,
    n_boot: int,
    n_permutations: int,
    seed: int,
) -> dict[str, Any] | None:
    """Disparity and RSA of the two runs' configurations after ``prep`` (applied to the rows in use, so it is
    refitted per resample), with intervals and relabelling tests; None where a configuration has no spread."""
    n_cells = int(codes.max()) + 1
    ref = _configuration(prep(Xa), codes, n_cells, k)
    other = _configuration(prep(Xb), codes, n_cells, k)
    if ref is None or other is None:
        return None
    aligned, disparity = _procrustes(ref, other)
    rsa = _rsa(ref, other)

    def per_resample(idx: np.ndarray) -> tuple[float, float]:
        r = _configuration(prep(Xa[idx]), codes[idx], n_cells, k)
        o = _configuration(prep(Xb[idx]), codes[idx], n_cells, k)
        if r is None or o is None:
            return math.nan, math.nan
        return _procrustes(r, o)[1], _rsa(r, o)

    stats_of = memo(per_resample)
    out: dict[str, Any] = {
        "disparity": disparity,
        "disparity_ci": list(bootstrap_ci(lambda idx: stats_of(idx)[0], groups, n_boot=n_boot, seed=seed)),
        "rsa": rsa,
        "rsa_ci": list(bootstrap_ci(lambda idx: stats_of(idx)[1], groups, n_boot=n_boot, seed=seed)),
        "reference_coords": ref,
        "aligned_coords": aligned,
    }
    if n_permutations > 0:
        # The same relabellings for both statistics; disparity is tested as -disparity (smaller = better).
        draws = relabellings(n_cells, n_permutations, seed)
        floor = 1.0 / math.factorial(n_cells)  # cells are distinct: only the identity ties whatever the data
        rsa_test = relabel_p(rsa, np.array([_rsa(ref, other[p]) for p in draws.perms]), draws, floor)
        null_disparity = np.array([_procrustes(ref, other[p])[1] for p in draws.perms])
        disparity_test = relabel_p(-disparity, -null_disparity, draws, floor)
        out |= {
            "rsa_p_value": rsa_test["p_value"],
            "rsa_null_mean": rsa_test["null_mean"],
            "disparity_p_value": disparity_test["p_value"],
            "disparity_null_mean": float(null_disparity.mean()),
            "n_permutations": rsa_test["n_permutations"],
            "permutations": rsa_test["permutations"],
            "min_attainable_p": rsa_test["min_attainable_p"],  # the same for both: one set of relabellings
            "n_relabellings": math.factorial(n_cells),
            "permutation": f"the other run's {RELABEL_RULE} (RSA: r >= observed; disparity: <= observed)",
        }
    return out


def align(a: Run, b: Run, cells: CellSet, *, n_boot: int, n_permutations: int, seed: int) -> dict:
    """Run ``b``'s cell-centroid configuration rotated onto ``a``'s (the reference) on their shared prompts:
    disparity and RSA with intervals and permutation tests, on raw h_first (the top-level keys) and on
    z-scored h_first (``standardised``); skipped or thin (with reasons) where undefined."""
    pair = {"reference": a.label, "other": b.label, "reference_layer": a.layer, "other_layer": b.layer}
    rows_b = {pid: i for i, pid in enumerate(b.prompts["id"])}
    shared = [pid for pid in a.prompts["id"] if pid in rows_b]
    if not shared:
        return {**pair, "skipped": True, "reason": "the runs share no prompt ids"}
    rows_a = {pid: i for i, pid in enumerate(a.prompts["id"])}
    ia = np.array([rows_a[pid] for pid in shared])
    ib = np.array([rows_b[pid] for pid in shared])
    cell_a = a.prompts["cell"].to_numpy(dtype=str)[ia]
    if (cell_a != b.prompts["cell"].to_numpy(dtype=str)[ib]).any():
        return {**pair, "skipped": True, "reason": "shared prompt ids carry different cells in the two runs"}
    labels = [c for c in cells.codes if c in set(cell_a)]
    k = min(ALIGN_DIMS, len(labels) - 1)
    counts = dict(n_prompts=len(shared), n_cells=len(labels))
    if len(labels) < MIN_ALIGN_CELLS:
        return {**pair, **thin(f"{len(labels)} cells on shared prompts; need >= {MIN_ALIGN_CELLS}", **counts)}
    index = {c: i for i, c in enumerate(labels)}
    codes = np.array([index[c] for c in cell_a])
    Xa = a.hidden[ia, a.index].astype(np.float64)
    Xb = b.hidden[ib, b.index].astype(np.float64)
    resampling = dict(n_boot=n_boot, n_permutations=n_permutations, seed=seed)
    groups = np.asarray(shared)
    raw = _compare(Xa, Xb, codes, groups, k, lambda X: X, **resampling)
    if raw is None:
        return {**pair, **thin("a run's cell centroids coincide (no spread to align)", **counts)}
    std = _compare(Xa, Xb, codes, groups, k, _zscore, **resampling)
    if std is None:
        standardised = thin("a run's z-scored cell centroids coincide (no spread to align)", **counts)
    else:
        std.pop("reference_coords")
        std.pop("aligned_coords")
        standardised = {"thin": False, "preprocessing": STANDARDISED, **std}
    coords = {key: raw.pop(key) for key in ("reference_coords", "aligned_coords")}
    return {
        **pair,
        "thin": False,
        **counts,
        "cells": labels,
        "k": k,
        "preprocessing": RAW,
        "disparity_note": "sum of squared differences after orthogonal Procrustes (rotation and reflection, "
        "no scaling) of the other run onto the reference; 0 = identical arrangement, 2 = maximal",
        "rsa_method": "Spearman correlation of the upper triangles of the two Euclidean cell-distance matrices",
        "interval": f"{INTERVAL} (shared prompts, centroids recomputed per resample); resampling adds noise "
        "to the centroids, so these intervals lean toward worse agreement than the estimate",
        **raw,
        "standardised": standardised,
        "standardised_note": "the same comparison with every feature z-scored first: raw distances follow the "
        "model's own metric, where a few high-variance features can dominate; z-scored ones weigh every "
        "feature alike. Where the two disagree, the conclusion depends on that choice",
        **coords,
    }
