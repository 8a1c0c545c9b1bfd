"""Geometry at the headline layer: where prompts, cells and faces sit (PCA), and which faces sit together."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from affectlens.analysis.kaomoji.common import (
    INTERVAL,
    MIN_FACES,
    MIN_PROMPTS,
    frequent_faces,
    majority_cell,
    memo,
    thin,
)
from affectlens.analysis.kaomoji.loading import Run
from affectlens.analysis.kaomoji.pc_axes import PAIRING_CORRECTION, pc_axis_correlations
from affectlens.cells import CellSet
from affectlens.stats import bootstrap_ci


@dataclass
class Geometry:
    summary: dict  # the JSON block
    scores: np.ndarray | None = field(default=None, repr=False)  # [n_prompts, 2] sign-aligned PC1, PC2
    standardised: np.ndarray | None = field(default=None, repr=False)  # [n_prompts, d] z-scored h_first


def explained_ratios(X: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Share of total variance of the top-k principal components of the rows ``idx`` of X (repeats allowed),
    each feature standardised over those rows. Repeated rows enter once, weighted by their count, which
    leaves the spectrum unchanged and shrinks the eigenproblem to the distinct rows."""
    rows, counts = np.unique(idx, return_counts=True)
    w = counts / counts.sum()
    Xu = X[rows]
    Z = Xu - w @ Xu
    sd = np.sqrt(w @ (Z * Z))
    Z = Z / np.where(sd > 0, sd, 1.0)
    A = np.sqrt(w)[:, None] * Z
    total = float(np.sum(A * A))
    small = A @ A.T if A.shape[0] <= A.shape[1] else A.T @ A
    m = small.shape[0]
    top = scipy.linalg.eigh(small, eigvals_only=True, subset_by_index=[max(m - k, 0), m - 1])[::-1]
    ratios = np.full(k, np.nan)
    if total > 0:
        ratios[: len(top)] = np.maximum(top, 0.0) / total
    return ratios


def geometry(
    run: Run, cells: CellSet, *, floor: int, n_boot: int, n_permutations: int, seed: int
) -> Geometry:
    """Standardised PCA of h_first at the headline layer: explained variance with intervals, PC-valence and
    PC-arousal correlations, cell centroids and face centroids in PC1/PC2."""
    X = run.hidden[:, run.index].astype(np.float64)
    y = run.prompts["cell"].to_numpy(dtype=str)
    n, d = X.shape
    labels = [c for c in cells.codes if c in set(y)]
    if n < MIN_PROMPTS or d < 2 or len(labels) < 2:
        return Geometry(
            thin(
                f"{n} prompts, d = {d}, {len(labels)} cell(s); PCA needs >= {MIN_PROMPTS} prompts in >= 2 cells",
                n_prompts=n,
                d=d,
            )
        )
    Z = StandardScaler().fit(X).transform(X)
    n_comp = min(10, n, d)
    pca = PCA(n_components=n_comp, svd_solver="full").fit(Z)
    scores = pca.transform(Z)
    k = min(3, n_comp)
    groups = run.prompts["id"].to_numpy(dtype=str)
    ratios = memo(lambda idx: explained_ratios(X, idx, k))
    variance = []
    for j in range(k):
        lo, hi = bootstrap_ci(lambda idx, j=j: float(ratios(idx)[j]), groups, n_boot=n_boot, seed=seed)
        variance.append({"pc": j + 1, "ratio": float(pca.explained_variance_ratio_[j]), "ci": [lo, hi]})
    correlations, pairing, pairing_test = pc_axis_correlations(
        scores, y, cells, n_boot=n_boot, n_permutations=n_permutations, seed=seed
    )
    summary = {
        "thin": False,
        "layer": run.layer,
        "preprocessing": "each feature standardised (z-scored) over prompts, then PCA; one point per prompt",
        "n_prompts": n,
        "d": d,
        "explained_variance": variance,
        "explained_variance_interval": f"{INTERVAL} (standardisation and PCA refitted per resample); repeated "
        "prompts in a resample lower its effective rank, so the interval leans above the estimate",
        "correlations": correlations,
        "correlation_note": "Pearson r over cells of a cell's mean PC score (its prompts' mean) with its "
        "coordinate, n = number of cells (valence and arousal are fixed per cell, so a cell is one independent "
        "point); the interval resamples cells with the PCA fixed (coarse with so few cells); p is two-sided "
        "(|r|), relabelling cells. " + PAIRING_CORRECTION.capitalize() + ".",
        "pairing": pairing,
        "pairing_test": pairing_test,
        "cell_centroids": {c: scores[y == c, :2].mean(axis=0).tolist() for c in labels},
        "faces": _face_centroids(run, cells, scores[:, :2], floor),
    }
    return Geometry(summary, scores=scores[:, :2], standardised=Z)


def _face_centroids(run: Run, cells: CellSet, scores: np.ndarray, floor: int) -> dict:
    """Each face emitted >= floor times at the mean PC1/PC2 score of its samples' prompts."""
    rows, faces = frequent_faces(run.samples, floor)
    if len(faces) < MIN_FACES:
        return thin(
            f"{len(faces)} face(s) emitted >= {floor} times; need >= {MIN_FACES}",
            n_faces=len(faces),
            n_samples=len(rows),
            floor=floor,
        )
    out = []
    for face in faces:
        group = rows[rows["face"] == face]
        xy = scores[group["row"].to_numpy()].mean(axis=0)
        out.append(
            {
                "face": face,
                "n": len(group),
                "n_prompts": int(group["prompt_id"].nunique()),
                "majority_cell": majority_cell(group["cell"], cells),
                "pc1": float(xy[0]),
                "pc2": float(xy[1]),
            }
        )
    return {"thin": False, "floor": floor, "n_faces": len(faces), "faces": out}


def face_similarity(run: Run, cells: CellSet, standardised: np.ndarray | None, floor: int) -> dict:
    """Cosine similarity of the centred per-face mean standardised h_first, in average-linkage order."""
    rows, faces = frequent_faces(run.samples, floor)
    counts = dict(n_faces=len(faces), n_samples=len(rows), floor=floor)
    if len(faces) < MIN_FACES or standardised is None:
        return thin(f"{len(faces)} face(s) emitted >= {floor} times; need >= {MIN_FACES}", **counts)
    means = np.stack(
        [standardised[rows.loc[rows["face"] == f, "row"].to_numpy()].mean(axis=0) for f in faces]
    )
    means -= means.mean(axis=0)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    unit = means / np.where(norms > 0, norms, 1.0)
    cos = np.clip(unit @ unit.T, -1.0, 1.0)
    dist = np.clip(1.0 - cos, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    order = leaves_list(linkage(squareform(dist, checks=False), method="average"))
    ordered = [faces[i] for i in order]
    majority = {f: majority_cell(rows.loc[rows["face"] == f, "cell"], cells) for f in faces}
    return {
        "thin": False,
        "layer": run.layer,
        "representation": "per-face mean of h_first (features standardised over prompts), centred across faces",
        "similarity": "cosine",
        "order": "average-linkage clustering on 1 - cosine",
        **counts,
        "faces": ordered,
        "n": [int(np.sum(rows["face"] == f)) for f in ordered],
        "majority_cell": [majority[f] for f in ordered],
        "matrix": cos[np.ix_(order, order)],
    }
