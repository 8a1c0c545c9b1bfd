"""Alignment across runs on shared prompts: orthogonal Procrustes of cell centroids, and RSA."""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

from affectlens.analysis.kaomoji.common import ALIGN_DIMS, INTERVAL, MIN_ALIGN_CELLS, memo, thin
from affectlens.analysis.kaomoji.loading import Run
from affectlens.cells import CellSet
from affectlens.stats import bootstrap_ci, permutation_test


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


def _permutation_tests(
    ref: np.ndarray, other: np.ndarray, rsa: float, disparity: float, *, n_permutations: int, seed: int
) -> dict:
    """RSA (r >= observed) and disparity (<= observed) against shuffles of the other run's cell labels."""
    cell_ids = np.arange(len(ref))
    rsa_test = permutation_test(
        lambda perm: _rsa(ref, other[perm]), cell_ids, cell_ids, rsa, n_permutations=n_permutations, seed=seed
    )
    disparity_test = permutation_test(
        lambda perm: -_procrustes(ref, other[perm])[1],
        cell_ids,
        cell_ids,
        -disparity,
        n_permutations=n_permutations,
        seed=seed,
    )
    return {
        "rsa_p_value": rsa_test.p_value,
        "disparity_p_value": disparity_test.p_value,
        "n_permutations": n_permutations,
        "min_attainable_p": rsa_test.min_attainable_p,  # the same for both: one number of shuffles
        "permutation": "cell labels of the other run shuffled (RSA: r >= observed; disparity: <= observed)",
    }


def align(a: Run, b: Run, cells: CellSet, *, n_boot: int, n_permutations: int, seed: int) -> dict:
    """Run ``b``'s cell-centroid configuration rotated onto ``a``'s (the reference) on their shared prompts:
    disparity and RSA with intervals and permutation tests; skipped or thin (with reasons) where undefined."""
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
    ref = _configuration(Xa, codes, len(labels), k)
    other = _configuration(Xb, codes, len(labels), k)
    if ref is None or other is None:
        return {**pair, **thin("a run's cell centroids coincide (no spread to align)", **counts)}
    aligned, disparity = _procrustes(ref, other)
    rsa = _rsa(ref, other)

    def per_resample(idx: np.ndarray) -> tuple[float, float]:
        r, o = (
            _configuration(Xa[idx], codes[idx], len(labels), k),
            _configuration(Xb[idx], codes[idx], len(labels), k),
        )
        if r is None or o is None:
            return math.nan, math.nan
        return _procrustes(r, o)[1], _rsa(r, o)

    stats_of = memo(per_resample)
    groups = np.asarray(shared)
    disparity_ci = bootstrap_ci(lambda idx: stats_of(idx)[0], groups, n_boot=n_boot, seed=seed)
    rsa_ci = bootstrap_ci(lambda idx: stats_of(idx)[1], groups, n_boot=n_boot, seed=seed)
    out = {
        **pair,
        "thin": False,
        **counts,
        "cells": labels,
        "k": k,
        "preprocessing": "cell centroids of raw h_first, centred, projected on their own top-k principal "
        "axes, scaled to unit Frobenius norm (rotation- and scale-invariant, unlike per-feature z-scoring)",
        "disparity": disparity,
        "disparity_ci": list(disparity_ci),
        "disparity_note": "sum of squared differences after orthogonal Procrustes (rotation and reflection, "
        "no scaling) of the other run onto the reference; 0 = identical arrangement, 2 = maximal",
        "rsa": rsa,
        "rsa_ci": list(rsa_ci),
        "rsa_method": "Spearman correlation of the upper triangles of the two Euclidean cell-distance matrices",
        "interval": f"{INTERVAL} (shared prompts, centroids recomputed per resample); resampling adds noise "
        "to the centroids, so these intervals lean toward worse agreement than the estimate",
        "reference_coords": ref,
        "aligned_coords": aligned,
    }
    if n_permutations > 0:
        out.update(_permutation_tests(ref, other, rsa, disparity, n_permutations=n_permutations, seed=seed))
    return out
