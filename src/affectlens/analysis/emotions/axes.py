"""The geometry of the emotion vectors: similarity, PCA against valence and arousal, k-means, layer stability."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score

from affectlens.analysis.emotions.common import THREADPOOLS, unit
from affectlens.stats import bootstrap_ci, pearson_with_ci

K_RANGE = (2, 8)
# Matching over the top 3 lets PC1/PC2 and PC2/PC3 trade places (what resampling does on SmolLM2) without
# letting PC2 be taken from far down the spectrum, which would re-anchor it to the original axis: on SmolLM2's
# layer 19 the PC2-arousal lower bound is -0.36 with 3, -0.15 with 5 or more, -0.33 with 2 (fixed PCA: 0.27).
MATCH_TOP = 3
AXES_INTERVAL = (
    "95% percentile bootstrap over emotions, the PCA refitted in each resample: the resample's top "
    f"{MATCH_TOP} components are matched one to one to the original ones by maximum total |cosine|, and the "
    "one matched to the axis is used with the axis's sign"
)
STABILITY_DEFINITION = (
    "cosine of each emotion's denoised vector between adjacent stored layers, averaged over the layer pairs, "
    "then over emotions"
)


def similarity(vectors: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(cosine similarity [n, n], leaf order of average-linkage clustering on cosine distance)."""
    u = unit(vectors)
    order = leaves_list(linkage(u, method="average", metric="cosine"))
    return u @ u.T, [int(i) for i in order]


def similarity_block(vectors: np.ndarray) -> dict[str, Any]:
    """:func:`similarity` as emotions.json holds it, with the mean off-diagonal cosine."""
    sim, order = similarity(vectors)
    return {
        "matrix": sim.tolist(),
        "order": order,
        "method": "average linkage, cosine distance",
        "mean_offdiagonal": float(sim[~np.eye(len(sim), dtype=bool)].mean()),
    }


def affect_axes(
    vectors: np.ndarray,
    valence: Sequence[float],
    arousal: Sequence[float],
    *,
    n_boot: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """PCA of the unit vectors; Pearson r of PC1 with valence and of PC2 with arousal (signs aligned).

    Returns variance explained per component, the oriented PC1/PC2 scores, the signs applied, and for
    each pairing r with its 95% bootstrap interval over emotions (:data:`AXES_INTERVAL`: the PCA refitted
    in every resample) and a two-sided permutation p (the PCA fixed: it never sees the labels). The
    interval a fixed PCA gives, too narrow wherever the axes themselves move under resampling, is kept
    as ``lo_fixed_pca`` / ``hi_fixed_pca``.
    """
    u = unit(vectors)
    pca = PCA(n_components=min(u.shape) - 1 if u.shape[0] <= u.shape[1] else None, svd_solver="full").fit(u)
    scores = pca.transform(u)[:, :2]
    valence, arousal = np.asarray(valence, float), np.asarray(arousal, float)
    signs = [
        1.0 if np.corrcoef(scores[:, 0], valence)[0, 1] >= 0 else -1.0,
        1.0 if np.corrcoef(scores[:, 1], arousal)[0, 1] >= 0 else -1.0,
    ]
    scores = scores * np.array(signs)
    kw = dict(n_boot=n_boot, n_permutations=n_permutations, seed=seed)
    axes = pca.components_[:MATCH_TOP].copy()
    axes[:2] *= np.array(signs)[:, None]
    pairs = {}
    for name, axis, target in (("pc1_valence", 0, valence), ("pc2_arousal", 1, arousal)):
        entry = pearson_with_ci(scores[:, axis], target, **kw)
        with THREADPOOLS.limit(limits=1):  # 20-row SVDs: BLAS threads made them 100x slower on a busy machine
            lo, hi = bootstrap_ci(
                lambda idx, a=axis, t=target: _refit_r(u[idx], t[idx], axes, a),
                np.arange(len(u)),
                n_boot=n_boot,
                seed=seed,
            )
        entry["lo_fixed_pca"], entry["hi_fixed_pca"] = entry["lo"], entry["hi"]
        pairs[name] = {**entry, "lo": lo, "hi": hi, "interval": AXES_INTERVAL}
    return {
        "variance_explained": [float(x) for x in pca.explained_variance_ratio_],
        "scores": scores.tolist(),
        "signs": signs,
        **pairs,
        # The crossed pairings, without tests: how specific each axis is.
        "pc1_arousal_r": float(np.corrcoef(scores[:, 0], arousal)[0, 1]),
        "pc2_valence_r": float(np.corrcoef(scores[:, 1], valence)[0, 1]),
    }


def _refit_r(u: np.ndarray, target: np.ndarray, axes: np.ndarray, axis: int) -> float:
    """r of ``target`` with a resample's own PCA component matched to original (oriented) axis ``axis``.

    The resample's top components (no more than its rank) are assigned one to one to the original ``axes``
    [m, d] by maximum total |cosine|; the one assigned to ``axis`` takes that axis's sign. NaN when the
    resample has too few distinct rows to have that many components.
    """
    x = u - u.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    rank = int(np.sum(s > s[0] * 1e-10)) if s[0] > 0 else 0
    m = min(len(axes), rank)
    if m <= axis:
        return float("nan")
    cos = vt[:m] @ axes[:m].T  # [resample component, original axis]
    rows, cols = linear_sum_assignment(-np.abs(cos))
    picked = int(rows[cols == axis][0])
    score = x @ (vt[picked] * np.sign(cos[picked, axis]))
    t = target - target.mean()
    denom = np.sqrt((score @ score) * (t @ t))
    return float(score @ t / denom) if denom > 0 else float("nan")


def kmeans_clusters(
    vectors: np.ndarray,
    names: Sequence[str],
    *,
    k_range: tuple[int, int] = K_RANGE,
    seed: int = 0,
    reference: Sequence[str] | None = None,
) -> dict[str, Any]:
    """k-means on the unit vectors for each k in ``k_range`` (inclusive); the k with the best cosine silhouette.

    With ``reference`` labels (the corpus's own clusters), also their adjusted Rand index with the result.
    """
    u = unit(vectors)
    lo, hi = k_range[0], min(k_range[1], len(u) - 1)
    scores, fits = {}, {}
    for k in range(lo, hi + 1):
        with THREADPOOLS.limit(limits=1):  # 20 points: OpenMP threads only add hand-offs
            labels = KMeans(n_clusters=k, n_init=20, random_state=seed).fit_predict(u)
        fits[k] = labels
        scores[k] = float(silhouette_score(u, labels, metric="cosine")) if len(set(labels)) > 1 else -1.0
    best = max(scores, key=lambda k: (scores[k], -k))
    labels = fits[best]
    clusters = [[names[i] for i in np.flatnonzero(labels == c)] for c in range(best)]
    out = {
        "k": best,
        "k_range": [lo, hi],
        "silhouette": {str(k): s for k, s in scores.items()},
        "labels": [int(x) for x in labels],
        "clusters": sorted(clusters, key=lambda c: names.index(c[0])),
    }
    if reference is not None:
        out["ari_with_corpus_clusters"] = float(adjusted_rand_score(reference, labels))
    return out


def _adjacent_cosines(vectors: np.ndarray) -> np.ndarray:
    """[emotions, layers - 1]: cosine of each emotion's vector between adjacent stored layers."""
    u = unit(np.asarray(vectors))  # [emotions, layers, d]
    return np.sum(u[:, :-1] * u[:, 1:], axis=-1)


def layer_stability(vectors: np.ndarray, layers: Sequence[int]) -> list[dict[str, Any]]:
    """Cosine of each emotion's vector between adjacent stored layers: mean and min over emotions."""
    cos = _adjacent_cosines(vectors)
    return [
        {
            "from": int(layers[i]),
            "to": int(layers[i + 1]),
            "mean_cosine": float(cos[:, i].mean()),
            "min_cosine": float(cos[:, i].min()),
        }
        for i in range(len(layers) - 1)
    ]


def stability_summary(
    vectors: np.ndarray, layers: Sequence[int], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """One cross-layer stability number per run, with a 95% bootstrap interval over emotions.

    Each emotion's adjacent-layer cosines are averaged first, so an emotion (the unit the vectors are
    estimated for, independent of the others) is what the bootstrap resamples. ``vectors``: [emotions,
    layers, d]. With one stored layer there is no pair: the value and interval are None.
    """
    n = int(np.asarray(vectors).shape[0])
    out: dict[str, Any] = {
        "mean_cosine": None,
        "lo": None,
        "hi": None,
        "n": n,
        "n_layer_pairs": max(len(layers) - 1, 0),
        "n_boot": n_boot,
        "seed": seed,
        "bootstrap_unit": "emotion",
        "definition": STABILITY_DEFINITION,
    }
    if len(layers) < 2:
        return out
    per_emotion = _adjacent_cosines(vectors).mean(axis=1)
    lo, hi = bootstrap_ci(lambda idx: per_emotion[idx].mean(), np.arange(n), n_boot=n_boot, seed=seed)
    return {**out, "mean_cosine": float(per_emotion.mean()), "lo": lo, "hi": hi}
