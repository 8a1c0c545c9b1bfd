"""Emotion-vector analyses: geometry, a topic-held-out probe, implicit scenarios and the bridge to self-report.

Everything reads run folders (a vectors run, optionally an elicitation run of the same model), never a model.
All analyses use one *headline layer*, fixed by a rule stated in the result (``round(2/3 (n_layers - 1))``, or
the stored layer nearest to it) unless the caller names another. Vectors are the *denoised* ones, each
normalised to unit length, unless said otherwise.

* **Similarity.** Cosine similarity of the unit vectors, ordered by average-linkage hierarchical clustering
  on cosine distance.
* **Valence and arousal axes.** PCA of the unit vectors (centred over emotions). PC signs are arbitrary, so
  PC1 is oriented to correlate positively with valence and PC2 with arousal; p-values are two-sided (|r|),
  so the orientation cannot make them smaller. Intervals: bootstrap over emotions with the PCA held fixed
  (the PCA never sees the labels, which is also why a permutation of labels is a valid null).
* **Clusters.** k-means on the unit vectors for k in 2..8, k chosen by the cosine silhouette.
* **Probe.** Logistic regression (StandardScaler + L2, C=1, scikit-learn's objective and L-BFGS settings,
  fitted in the span of the training rows) from each story's activation to its emotion, 20 classes, trained
  on 11 topics and tested on the 12th (12 folds). Interval: bootstrap over topics. p: labels shuffled
  *within* each topic (every topic keeps one story per emotion), the whole cross-validation rerun for each
  shuffle until it can no longer reach the observed accuracy (so p is exact; see ``_probe_permutations``).
* **Implicit scenarios.** Each scenario's activation minus the corpus grand mean, ranked against the vectors
  by cosine; top-1 and top-3 accuracy (chance 1/20 and 3/20), bootstrap over scenarios, permutation p.
* **Bridge.** Each elicitation prompt's ``h_first`` (centred by its mean over prompts) projected on the unit
  vectors; the prompt's top emotion maps to a cell, compared with the prompt's cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure as MplFigure
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.optimize import minimize
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController

from affectlens.cells import default_cells
from affectlens.errors import AffectlensError
from affectlens.report.document import Figure, Section, Table
from affectlens.stages.elicit import load_elicitation
from affectlens.stages.vectors import HEADLINE_RULE, VectorRun, headline_layer, load_vectors
from affectlens.stats import (
    bootstrap_ci,
    evaluate_classifier,
    grouped_folds,
    pearson_with_ci,
    permutation_test,
)
from affectlens.store.atomic import json_ready, write_json
from affectlens.store.manifest import RunStore

K_RANGE = (2, 8)
RESULT_FILE = "emotions.json"
FIGURES = ("vectors_similarity", "vectors_pca", "vectors_probe", "vectors_bridge")
# Built once (discovering BLAS libraries costs milliseconds); fits this small run fastest on one thread.
_THREADPOOLS = ThreadpoolController()


# ------------------------------------------------------------------------------------------ geometry


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def similarity(vectors: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(cosine similarity [n, n], leaf order of average-linkage clustering on cosine distance)."""
    u = unit(vectors)
    order = leaves_list(linkage(u, method="average", metric="cosine"))
    return u @ u.T, [int(i) for i in order]


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
    each pairing r with its 95% bootstrap interval over emotions and a two-sided permutation p.
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
    return {
        "variance_explained": [float(x) for x in pca.explained_variance_ratio_],
        "scores": scores.tolist(),
        "signs": signs,
        "pc1_valence": pearson_with_ci(scores[:, 0], valence, **kw),
        "pc2_arousal": pearson_with_ci(scores[:, 1], arousal, **kw),
        # The crossed pairings, without tests: how specific each axis is.
        "pc1_arousal_r": float(np.corrcoef(scores[:, 0], arousal)[0, 1]),
        "pc2_valence_r": float(np.corrcoef(scores[:, 1], valence)[0, 1]),
    }


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
        with _THREADPOOLS.limit(limits=1):  # 20 points: OpenMP threads only add hand-offs
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


def layer_stability(vectors: np.ndarray, layers: Sequence[int]) -> list[dict[str, Any]]:
    """Cosine of each emotion's vector between adjacent stored layers: mean and min over emotions."""
    u = unit(np.moveaxis(np.asarray(vectors), 1, 0))  # [layers, emotions, d]
    rows = []
    for i in range(len(layers) - 1):
        cos = np.sum(u[i] * u[i + 1], axis=-1)
        rows.append(
            {
                "from": int(layers[i]),
                "to": int(layers[i + 1]),
                "mean_cosine": float(cos.mean()),
                "min_cosine": float(cos.min()),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------- probe


def softmax_regression(
    Z: np.ndarray,
    codes: np.ndarray,
    n_classes: int,
    *,
    C: float = 1.0,
    tol: float = 1e-4,
    max_iter: int = 5000,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(W [r, K], b [K], converged): multinomial logistic regression with an L2 penalty on W, fitted by L-BFGS.

    The objective and optimizer settings are scikit-learn's (``LogisticRegression(C, tol)``, lbfgs): mean
    cross-entropy + ||W||^2 / (2 C n), intercept unpenalised, L-BFGS-B with ``gtol=tol``, ``maxls=50``. It
    is written out here because scikit-learn's per-iteration overhead dominates fits this small, and the
    permutation test needs thousands of them. ``codes``: int labels in [0, n_classes).
    """
    n, r = Z.shape
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), codes] = 1.0
    l2 = 1.0 / (C * n)

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: r * n_classes].reshape(r, n_classes), theta[r * n_classes :]
        logits = Z @ W + b
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.log(s).sum() - np.sum(onehot * logits)) / n + 0.5 * l2 * float(np.sum(W * W))
        g = (e / s - onehot) / n
        return loss, np.concatenate([(Z.T @ g + l2 * W).ravel(), g.sum(axis=0)])

    res = minimize(
        loss_grad,
        np.zeros(r * n_classes + n_classes),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    theta = res.x
    return theta[: r * n_classes].reshape(r, n_classes), theta[r * n_classes :], bool(res.success)


class SpanProbe:
    """Out-of-fold predictions of StandardScaler + L2 logistic regression (C=1), fitted in the row span.

    The L2-penalised solution lies in the span of the (scaled) training rows, so fitting on the training
    rows' coordinates in that span (rank <= n_train) gives the same classifier as fitting in all d
    dimensions (L-BFGS is invariant to the rotation), and is several times faster when d > n. The per-fold
    scaling and basis depend on X only, so they are computed once and reused across permutations of y. Use
    one instance per X. Call signature as ``stats.evaluate_classifier``'s ``predict``.
    """

    def __init__(self, n_splits: int, *, C: float = 1.0, tol: float = 1e-4, max_iter: int = 5000) -> None:
        self.n_splits, self.C, self.tol, self.max_iter = n_splits, C, tol, max_iter
        self._folds: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self.unconverged = 0

    def _features(self, X: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = train.tobytes() + b"|" + test.tobytes()
        if key not in self._folds:
            scaler = StandardScaler().fit(X[train])
            a, b = scaler.transform(X[train]), scaler.transform(X[test])
            _, s, vt = np.linalg.svd(a, full_matrices=False)
            basis = vt[s > s[0] * 1e-9].T
            self._folds[key] = (a @ basis, b @ basis)
        return self._folds[key]

    def fold_predictions(
        self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(test rows, their predictions), one fold at a time."""
        y = np.asarray(y)
        classes, codes = np.unique(y, return_inverse=True)
        for train, test in grouped_folds(y, groups, n_splits=self.n_splits, seed=seed):
            seen, train_codes = np.unique(codes[train], return_inverse=True)
            if len(seen) == 1:
                yield test, np.full(len(test), classes[seen[0]], dtype=y.dtype)
                continue
            a, b = self._features(X, train, test)
            W, bias, ok = softmax_regression(
                a, train_codes, len(seen), C=self.C, tol=self.tol, max_iter=self.max_iter
            )
            self.unconverged += not ok
            yield test, classes[seen[np.argmax(b @ W + bias, axis=1)]]

    def __call__(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
        y = np.asarray(y)
        pred = np.empty(len(y), dtype=y.dtype)
        with _THREADPOOLS.limit(limits=1):
            for test, p in self.fold_predictions(X, y, groups, seed):
                pred[test] = p
        return pred


def shuffle_within(y: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``y`` with its values permuted inside each group (each group keeps its multiset of labels)."""
    out = np.array(y, copy=True)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        out[rows] = out[rng.permutation(rows)]
    return out


def probe(
    X: np.ndarray,
    y: Sequence[str],
    topics: Sequence[str],
    labels: Sequence[str],
    *,
    n_boot: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Topic-held-out probe accuracy with a bootstrap interval over topics and a within-topic permutation p.

    ``X``: [n_stories, d]. One fold per topic. ``n_permutations=0`` skips the test.
    """
    X, y, topics = np.asarray(X, dtype=np.float64), np.asarray(y), np.asarray(topics)
    n_topics = len(np.unique(topics))
    predict = SpanProbe(n_topics)
    result = evaluate_classifier(
        X,
        y,
        topics,
        labels=list(labels),
        n_splits=n_topics,
        n_boot=n_boot,
        n_permutations=0,
        seed=seed,
        predict=predict,
    ).to_dict()
    result["unconverged_fits"] = predict.unconverged
    result["folds"] = f"{n_topics} (one topic held out per fold)"
    result["bootstrap_unit"] = "topic"
    if n_permutations > 0:
        result.update(_probe_permutations(predict, X, y, topics, result["accuracy"], n_permutations, seed))
    return result


def _probe_permutations(
    predict: SpanProbe,
    X: np.ndarray,
    y: np.ndarray,
    topics: np.ndarray,
    observed: float,
    n_permutations: int,
    seed: int,
) -> dict[str, Any]:
    """p = (k + 1) / (n + 1), k = shuffles whose cross-validated accuracy reaches the observed one.

    Labels are shuffled within each topic and the whole cross-validation rerun, except that a shuffle stops
    as soon as its remaining folds could no longer lift it to the observed accuracy: k, hence p, is exact,
    and the null mean is estimated from the held-out rows actually scored.
    """
    n = len(y)
    need = round(observed * n)  # correct predictions of the observed fit
    rng = np.random.default_rng(seed)
    k = scored = scored_correct = completed = 0
    with _THREADPOOLS.limit(limits=1):
        for _ in range(n_permutations):
            y_perm = shuffle_within(y, topics, rng)
            correct, left = 0, n
            for test, pred in predict.fold_predictions(X, y_perm, topics, seed):
                hits = int(np.sum(pred == y_perm[test]))
                correct, left = correct + hits, left - len(test)
                scored, scored_correct = scored + len(test), scored_correct + hits
                if correct + left < need:
                    break
            completed += left == 0
            k += correct >= need
    return {
        "n_permutations": n_permutations,
        "p_value": (k + 1) / (n_permutations + 1),
        "min_attainable_p": 1 / (n_permutations + 1),
        "n_null_at_least_observed": k,
        "null_mean": scored_correct / scored,
        "null_rows_scored": scored,
        "null_completed": completed,
        "permutation": "labels shuffled within each topic; a shuffle stops once it cannot reach the observed "
        "accuracy",
    }


def probe_curve(
    acts: np.ndarray, y: Sequence[str], topics: Sequence[str], layers: Sequence[int], seed: int = 0
) -> list[dict[str, Any]]:
    """Topic-held-out accuracy at every stored layer (no intervals, no permutations). ``acts``: [n, L, d]."""
    y, topics = np.asarray(y), np.asarray(topics)
    n_topics = len(np.unique(topics))
    rows = []
    for i, layer in enumerate(layers):
        pred = SpanProbe(n_topics)(np.asarray(acts[:, i], dtype=np.float64), y, topics, seed)
        rows.append({"layer": int(layer), "accuracy": float(np.mean(pred == y))})
    return rows


# ------------------------------------------------------------------------------------------ implicit


def implicit_test(
    acts: np.ndarray,
    labels: Sequence[str],
    centre: np.ndarray,
    vectors: np.ndarray,
    names: Sequence[str],
    ids: Sequence[str],
    *,
    n_boot: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Rank emotions for each scenario by cosine(activation - centre, vector); top-1 and top-3 accuracy.

    ``acts``: [m, d]; ``centre``: [d] the corpus grand mean; ``vectors``: [n_emotions, d]. Intervals:
    bootstrap over scenarios; p: scenario labels permuted among scenarios.
    """
    m = len(labels)
    if m == 0:
        return {"n": 0}
    cos = unit(np.asarray(acts, float) - centre) @ unit(vectors).T  # [m, n_emotions]
    order = np.argsort(-cos, axis=1)
    truth = np.array([list(names).index(label) for label in labels])

    def ranks(t: np.ndarray) -> np.ndarray:
        return np.argmax(order == t[:, None], axis=1)

    rank = ranks(truth)
    out: dict[str, Any] = {
        "n": m,
        "chance_top1": 1 / len(names),
        "chance_top3": min(3, len(names)) / len(names),
        "n_boot": n_boot,
        "seed": seed,
    }
    rows = np.arange(m)
    for k in (1, 3):
        hit = (rank < k).astype(float)
        lo, hi = bootstrap_ci(lambda idx, h=hit: h[idx].mean(), rows, n_boot=n_boot, seed=seed)
        entry = {"accuracy": float(hit.mean()), "lo": lo, "hi": hi, "p_value": None}
        if n_permutations > 0:
            entry["p_value"], _ = permutation_test(
                lambda t, k=k: float(np.mean(ranks(t) < k)),
                truth,
                rows,
                float(hit.mean()),
                n_permutations=n_permutations,
                seed=seed,
            )
            entry["min_attainable_p"] = 1 / (n_permutations + 1)
        out[f"top{k}"] = entry
    out["scenarios"] = [
        {
            "id": ids[i],
            "emotion": labels[i],
            "rank": int(rank[i]) + 1,
            "top3": [names[j] for j in order[i, :3]],
            "cosine_true": float(cos[i, truth[i]]),
        }
        for i in range(m)
    ]
    return out


# -------------------------------------------------------------------------------------------- bridge


def bridge(
    h_first: np.ndarray,
    prompt_cells: Sequence[str],
    vectors: np.ndarray,
    names: Sequence[str],
    emotion_cells: Sequence[str],
    cell_codes: Sequence[str],
    *,
    n_boot: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Project prompts' states on the unit vectors; does the top emotion's cell match the prompt's cell?

    ``h_first``: [n_prompts, d], centred here by its mean over prompts (the constant part of the state would
    otherwise favour the same emotion for every prompt). Returns the mean projection per cell
    ([n_cells, n_emotions]), the match rate with a bootstrap interval over prompts, a permutation p (prompt
    cells shuffled among prompts), the permutation null mean (chance that keeps how often each cell is
    predicted), and ``chance_uniform``: the expected match when the top emotion is drawn uniformly, i.e. the
    mean over prompts of (emotions in the prompt's cell) / n_emotions.
    """
    h = np.asarray(h_first, dtype=np.float64)
    proj = (h - h.mean(axis=0)) @ unit(vectors).T  # [P, E]
    prompt_cells = np.asarray(prompt_cells)
    emotion_cells = np.asarray(emotion_cells)
    predicted = emotion_cells[np.argmax(proj, axis=1)]
    match = (predicted == prompt_cells).astype(float)
    per_cell = np.array(
        [
            proj[prompt_cells == c].mean(axis=0) if np.any(prompt_cells == c) else np.full(len(names), np.nan)
            for c in cell_codes
        ]
    )
    share = {c: float(np.mean(emotion_cells == c)) for c in cell_codes}
    rows = np.arange(len(h))
    lo, hi = bootstrap_ci(lambda idx: match[idx].mean(), rows, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {
        "n_prompts": len(h),
        "match_rate": float(match.mean()),
        "lo": lo,
        "hi": hi,
        "n_boot": n_boot,
        "chance_uniform": float(np.mean([share.get(c, 0.0) for c in prompt_cells])),
        "cells": list(cell_codes),
        "emotions": list(names),
        "mean_projection": [[None if math.isnan(x) else float(x) for x in row] for row in per_cell],
        "top_emotion_counts": {
            str(k): int(v)
            for k, v in zip(
                *np.unique(np.asarray(names)[np.argmax(proj, axis=1)], return_counts=True), strict=True
            )
        },
        "p_value": None,
        "null_mean": None,
    }
    if n_permutations > 0:
        p, null = permutation_test(
            lambda y: float(np.mean(predicted == y)),
            prompt_cells,
            rows,
            float(match.mean()),
            n_permutations=n_permutations,
            seed=seed,
        )
        out.update(
            p_value=p,
            null_mean=float(null.mean()),
            n_permutations=n_permutations,
            min_attainable_p=1 / (n_permutations + 1),
        )
    return out


def _bridge_from_run(vr: VectorRun, layer: int, elicitation_run: str, **kw: Any) -> dict[str, Any]:
    _, prompts, h_first, entry = load_elicitation(elicitation_run)
    ours = vr.entry["identity"]["model"]["fingerprint"]
    theirs = entry["identity"]["model"]["fingerprint"]
    if ours != theirs:
        raise AffectlensError(
            f"{elicitation_run} comes from another model ({theirs}) than the vectors run ({ours})"
        )
    convention = RunStore(elicitation_run).manifest().get("layer_convention")
    if convention != vr.layer_convention:
        raise AffectlensError(f"{elicitation_run} uses another layer convention ({convention!r})")
    elicit_layers = [int(x) for x in entry["layers"]]
    if layer not in elicit_layers:
        raise AffectlensError(f"{elicitation_run} did not capture layer {layer} (it has {elicit_layers})")
    h = h_first[:, elicit_layers.index(layer)].numpy()
    if h.shape[-1] != vr.denoised.shape[-1]:
        raise AffectlensError(
            f"{elicitation_run}: width {h.shape[-1]} differs from the vectors' {vr.denoised.shape[-1]}"
        )
    names = list(vr.emotions["name"])
    result = bridge(
        h,
        list(prompts["cell"]),
        vr.denoised[:, vr.layers.index(layer)],
        names,
        list(vr.emotions["cell"]),
        default_cells().codes,
        **kw,
    )
    result["run"] = str(elicitation_run)
    result["layer"] = layer
    return result


# ----------------------------------------------------------------------------------------------- driver


def analyze_vectors(
    run: str,
    out: str,
    *,
    layer: int | None = None,
    n_permutations: int = 1000,
    n_boot: int = 1000,
    seed: int = 0,
    elicitation_run: str | None = None,
) -> dict[str, Any]:
    """Run every emotion-vector analysis on a vectors run folder; writes ``out/emotions.json`` and figures."""
    vr = load_vectors(run)
    n_layers = int(vr.entry["model"]["n_layers"])
    if layer is None:
        layer = headline_layer(n_layers, vr.layers)
        rule = HEADLINE_RULE
    elif layer not in vr.layers:
        raise AffectlensError(f"layer {layer} is not in the run (stored layers: {vr.layers})")
    else:
        rule = "chosen by the caller"
    h = vr.layers.index(layer)
    emotions = vr.emotions
    names = list(emotions["name"])
    vecs = vr.denoised[:, h]
    stories = vr.stories
    acts = vr.activations["stories"]
    y, topics = stories["emotion"].to_numpy(), stories["topic"].to_numpy()
    labels = stories["emotion"].tolist()
    mu = np.stack([acts[:, h][y == name].mean(axis=0) for name in names]).mean(axis=0)

    sim, order = similarity(vecs)
    result: dict[str, Any] = {
        "run": str(run),
        "model": vr.entry["model"],
        "layer": layer,
        "layer_rule": rule,
        "layers": vr.layers,
        "layer_convention": vr.layer_convention,
        "positions": vr.entry.get("positions"),
        "seed": seed,
        "n_boot": n_boot,
        "n_permutations": n_permutations,
        "emotions": names,
        "cells": list(emotions["cell"]),
        "valence": emotions["valence"].tolist(),
        "arousal": emotions["arousal"].tolist(),
        "corpus_clusters": list(emotions["cluster"]),
        "n_stories": len(stories),
        "n_topics": int(stories["topic"].nunique()),
        "denoise": {
            "variance": vr.entry["identity"]["config"]["denoise_variance"],
            "n_components": dict(
                zip(map(str, vr.denoise["layer"]), map(int, vr.denoise["n_components"]), strict=True)
            ),
            "n_components_at_layer": int(vr.denoise["n_components"].iloc[h]),
            "raw_vs_denoised_mean_cosine": float(np.mean(np.sum(unit(vr.raw[:, h]) * unit(vecs), axis=-1))),
        },
        "similarity": {
            "matrix": sim.tolist(),
            "order": order,
            "method": "average linkage, cosine distance",
            "mean_offdiagonal": float(sim[~np.eye(len(sim), dtype=bool)].mean()),
        },
        "pca": affect_axes(
            vecs,
            emotions["valence"],
            emotions["arousal"],
            n_boot=n_boot,
            n_permutations=n_permutations,
            seed=seed,
        ),
        "kmeans": kmeans_clusters(vecs, names, seed=seed, reference=list(emotions["cluster"])),
    }
    result["probe"] = {
        "headline": probe(
            acts[:, h], labels, topics, names, n_boot=n_boot, n_permutations=n_permutations, seed=seed
        ),
        "by_layer": probe_curve(acts, labels, topics, vr.layers, seed=seed),
        "stability": layer_stability(vr.denoised, vr.layers),
    }
    lens = vr.logit_lens[vr.logit_lens["vector"] == "denoised"]
    result["logit_lens"] = {
        "layer": int(lens["layer"].iloc[0]) if len(lens) else None,
        "rule": vr.entry.get("logit_lens"),
        "emotions": {
            e: {d: g.sort_values("rank")["token"].tolist() for d, g in rows.groupby("direction")}
            for e, rows in lens.groupby("emotion", sort=False)
        },
    }
    implicit = vr.implicit
    result["implicit"] = implicit_test(
        vr.activations["implicit"][:, h],
        list(implicit["emotion"]),
        mu,
        vecs,
        names,
        list(implicit["id"]),
        n_boot=n_boot,
        n_permutations=n_permutations,
        seed=seed,
    )
    result["bridge"] = (
        _bridge_from_run(vr, layer, elicitation_run, n_boot=n_boot, n_permutations=n_permutations, seed=seed)
        if elicitation_run
        else None
    )
    result = json_ready(result)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result["figures"] = {k: [str(p) for p in v] for k, v in write_figures(result, out_dir).items()}
    write_json(out_dir / RESULT_FILE, result)
    return result


# ---------------------------------------------------------------------------------------------- figures


def _save(fig: MplFigure, stem: Path) -> list[Path]:
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    # Text stays text in the SVG (smaller, faster to write); a fixed salt and no date keep reruns byte-identical.
    with rc_context({"svg.hashsalt": "affectlens", "svg.fonttype": "none"}):
        fig.savefig(paths[0], dpi=150)
        fig.savefig(paths[1], metadata={"Date": None})
    return paths


def write_figures(result: dict[str, Any], out: Path | str) -> dict[str, list[Path]]:
    """The similarity heat map, PCA scatter, probe curve and (with a bridge) the bridge heat map, PNG + SVG."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = result["emotions"]
    written: dict[str, list[Path]] = {}

    order = result["similarity"]["order"]
    sim = np.asarray(result["similarity"]["matrix"])[np.ix_(order, order)]
    fig = MplFigure(figsize=(8.5, 7.2), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(sim, vmin=-1, vmax=1, cmap="RdBu_r")
    ticks = [names[i] for i in order]
    ax.set_xticks(range(len(ticks)), ticks, rotation=90)
    ax.set_yticks(range(len(ticks)), ticks)
    ax.set_title(f"cosine similarity of denoised emotion vectors, layer {result['layer']}")
    fig.colorbar(image, ax=ax, shrink=0.8, label="cosine")
    written["vectors_similarity"] = _save(fig, out / "vectors_similarity")

    pca = result["pca"]
    scores = np.asarray(pca["scores"])
    fig = MplFigure(figsize=(7.5, 6.2), layout="constrained")
    ax = fig.subplots()
    points = ax.scatter(
        scores[:, 0],
        scores[:, 1],
        c=result["valence"],
        cmap="RdYlGn",
        vmin=-1,
        vmax=1,
        edgecolors="black",
        linewidths=0.5,
        s=60,
    )
    for (x, yv), name in zip(scores, names, strict=True):
        ax.annotate(name, (x, yv), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ev = pca["variance_explained"]
    ax.set_xlabel(f"PC1 ({ev[0]:.0%} of variance; oriented so r with valence >= 0)")
    ax.set_ylabel(f"PC2 ({ev[1]:.0%}; oriented so r with arousal >= 0)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_title(f"PCA of unit emotion vectors, layer {result['layer']}")
    fig.colorbar(points, ax=ax, label="valence (corpus rating)")
    written["vectors_pca"] = _save(fig, out / "vectors_pca")

    curve = result["probe"]["by_layer"]
    head = result["probe"]["headline"]
    fig = MplFigure(figsize=(8.5, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(
        [r["layer"] for r in curve], [r["accuracy"] for r in curve], marker="o", ms=3, label="probe accuracy"
    )
    lo, hi = head["accuracy_ci"]
    ax.errorbar(
        [result["layer"]],
        [head["accuracy"]],
        yerr=[[head["accuracy"] - lo], [hi - head["accuracy"]]],
        fmt="s",
        color="black",
        capsize=4,
        label="headline layer, 95% CI (topics)",
    )
    ax.axhline(head["chance"], color="grey", ls="--", label=f"chance {head['chance']:.2f}")
    stability = result["probe"]["stability"]
    if stability:
        ax.plot(
            [r["to"] for r in stability],
            [r["mean_cosine"] for r in stability],
            color="#c87f55",
            lw=1,
            label="vector cosine with previous layer",
        )
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer (output of decoder block i)")
    ax.set_ylabel("accuracy / cosine")
    ax.set_title("emotion probe by layer (topic held out)")
    ax.legend(fontsize=8, loc="lower right")
    written["vectors_probe"] = _save(fig, out / "vectors_probe")

    b = result.get("bridge")
    if b:
        values = np.asarray(
            [[np.nan if x is None else x for x in row] for row in b["mean_projection"]], float
        )
        fig = MplFigure(figsize=(10, 4.8), layout="constrained")
        ax = fig.subplots()
        limit = np.nanmax(np.abs(values)) or 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(
            range(len(b["emotions"])),
            [f"{e} ({c})" for e, c in zip(b["emotions"], result["cells"], strict=True)],
            rotation=90,
        )
        ax.set_yticks(range(len(b["cells"])), b["cells"])
        ax.set_xlabel("emotion vector (its cell)")
        ax.set_ylabel("prompt cell")
        ax.set_title(f"mean projection of prompt states on emotion vectors, layer {b['layer']}")
        fig.colorbar(image, ax=ax, label="projection (centred h_first . unit vector)")
        written["vectors_bridge"] = _save(fig, out / "vectors_bridge")
    return written


# ----------------------------------------------------------------------------------------------- report


def _ci(entry: dict[str, Any], value: str = "r", lo: str = "lo", hi: str = "hi") -> str:
    return f"{entry[value]:.2f} [{entry[lo]:.2f}, {entry[hi]:.2f}]"


def _p(p: float | None) -> str:
    return "not tested" if p is None else f"p = {p:.3g}"


def vector_sections(result: dict[str, Any], out: Path | str) -> list[Section]:
    """Report sections for an :func:`analyze_vectors` result.

    The figures that ``analyze_vectors`` wrote are reused when they lie in ``out``; otherwise they are drawn there.
    """
    drawn = {k: [Path(p) for p in v] for k, v in result.get("figures", {}).items()}
    reusable = drawn and all(
        p.exists() and p.parent.resolve() == Path(out).resolve() for v in drawn.values() for p in v
    )
    paths = drawn if reusable else write_figures(result, out)
    png = {k: v[0] for k, v in paths.items()}
    layer = result["layer"]
    pca, km, head = result["pca"], result["kmeans"], result["probe"]["headline"]
    n_e = len(result["emotions"])

    geometry = Section(
        "Emotion vectors: geometry",
        [
            f"Emotion vectors are each emotion's mean story activation minus the mean over emotions, cleaned of the "
            f"top principal components of neutral dialogues ({result['denoise']['n_components_at_layer']} removed "
            f"at layer {layer}, reaching {result['denoise']['variance']:.0%} of their variance). Layer {layer} is "
            f"the headline layer ({result['layer_rule']}). {n_e} emotions, {result['n_stories']} stories.",
            Figure(
                png["vectors_similarity"],
                "Cosine similarity between the unit emotion vectors, rows and columns "
                "ordered by hierarchical clustering. Red: vectors point the same way; blue: opposite ways. "
                "Similar directions do not mean the model confuses the emotions.",
            ),
            f"PC1 explains {pca['variance_explained'][0]:.0%} and PC2 {pca['variance_explained'][1]:.0%} of the "
            f"variance between the vectors. PC1 against the corpus valence ratings: r = {_ci(pca['pc1_valence'])} "
            f"(95% bootstrap interval over emotions, {_p(pca['pc1_valence']['p_value'])}, n = {n_e}); PC2 against "
            f"arousal: r = {_ci(pca['pc2_arousal'])} ({_p(pca['pc2_arousal']['p_value'])}). Each PC's sign is "
            "arbitrary and was flipped to make its r positive; the p-values are two-sided, so the flip does not "
            "lower them.",
            Figure(
                png["vectors_pca"],
                "The emotion vectors on their first two principal components, coloured by "
                "the corpus valence rating. The ratings are the corpus authors' judgement, not the model's.",
            ),
            Table(
                pd.DataFrame(
                    {"cluster": range(1, km["k"] + 1), "emotions": [", ".join(c) for c in km["clusters"]]}
                ),
                f"k-means clusters of the unit vectors (k = {km['k']}, chosen by silhouette among "
                f"{km['k_range'][0]}..{km['k_range'][1]}; adjusted Rand index with the corpus's own clusters "
                f"{km.get('ari_with_corpus_clusters', float('nan')):.2f}).",
            ),
        ],
    )

    p_text = _p(head.get("p_value"))
    probe_section = Section(
        "Emotion probe",
        [
            f"A logistic-regression probe reads the emotion from a story's activation at layer {layer} with "
            f"accuracy {head['accuracy']:.2f} [{head['accuracy_ci'][0]:.2f}, {head['accuracy_ci'][1]:.2f}] "
            f"({n_e} classes, chance {head['chance']:.2f}; n = {head['n']} stories; trained on all topics but one "
            f"and tested on the held-out topic, 95% interval by bootstrap over the {head['n_groups']} topics; "
            f"{p_text} from {head.get('n_permutations', 0)} shuffles of the labels within each topic, null mean "
            f"{head.get('null_mean') or float('nan'):.2f}).",
            Figure(
                png["vectors_probe"],
                "Probe accuracy at every stored layer (no intervals except at the headline "
                "layer) and how much each emotion vector keeps its direction from one layer to the next. A probe "
                "that reads an emotion does not show that the model uses it.",
            ),
        ],
    )

    lens = result["logit_lens"]
    lens_rows = [
        {
            "emotion": e,
            "raises": " ".join(repr(t) for t in d.get("top", [])),
            "lowers": " ".join(repr(t) for t in d.get("bottom", [])),
        }
        for e, d in lens["emotions"].items()
    ]
    lens_section = Section(
        "Logit lens",
        [
            f"The tokens whose next-token logits each denoised vector raises and lowers most at layer "
            f"{lens['layer']} ({lens['rule']}). Intermediate layers are not made to be read this way, so odd "
            "tokens are expected.",
            Table(pd.DataFrame(lens_rows), "Top and bottom 10 tokens per emotion vector."),
        ],
    )

    sections = [geometry, probe_section, lens_section]
    imp = result["implicit"]
    if imp.get("n"):
        sections.append(
            Section(
                "Implicit scenarios",
                [
                    f"For {imp['n']} scenarios that evoke an emotion without naming it, the emotion whose vector lies "
                    f"closest (cosine, after subtracting the corpus mean) is right {imp['top1']['accuracy']:.2f} of the "
                    f"time [{imp['top1']['lo']:.2f}, {imp['top1']['hi']:.2f}] (chance {imp['chance_top1']:.2f}, "
                    f"{_p(imp['top1']['p_value'])}); the right emotion is among the top three "
                    f"{imp['top3']['accuracy']:.2f} [{imp['top3']['lo']:.2f}, {imp['top3']['hi']:.2f}] (chance "
                    f"{imp['chance_top3']:.2f}, {_p(imp['top3']['p_value'])}). Intervals: bootstrap over scenarios.",
                    Table(
                        pd.DataFrame(
                            [
                                {
                                    "scenario": s["id"],
                                    "emotion": s["emotion"],
                                    "rank": s["rank"],
                                    "closest three": ", ".join(s["top3"]),
                                }
                                for s in imp["scenarios"]
                            ]
                        )
                    ),
                ],
            )
        )
    b = result.get("bridge")
    if b:
        sections.append(
            Section(
                "Bridge to self-report",
                [
                    f"Each elicitation prompt's state at its last token (layer {b['layer']}, centred over prompts) is "
                    f"projected on the emotion vectors. The top emotion's cell matches the prompt's cell for "
                    f"{b['match_rate']:.2f} of {b['n_prompts']} prompts [{b['lo']:.2f}, {b['hi']:.2f}] (bootstrap over "
                    f"prompts). Chance is {b['chance_uniform']:.2f} if the top emotion were drawn uniformly (the share of "
                    f"emotions in each prompt's cell, averaged over prompts) and {b['null_mean'] or float('nan'):.2f} "
                    f"under the permutation null that keeps how often each cell is predicted ({_p(b['p_value'])}, "
                    "prompt cells shuffled).",
                    Figure(
                        png["vectors_bridge"],
                        "Mean projection of each cell's prompt states on each emotion vector. "
                        "Prompts describe a feeling; the model is not claimed to feel it.",
                    ),
                ],
            )
        )
    return sections
