"""The emotion probe: topic-held-out logistic regression, its exact within-topic permutation test, and by layer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.preprocessing import StandardScaler

from affectlens.analysis.emotions.common import THREADPOOLS
from affectlens.stats import evaluate_classifier, grouped_folds, min_attainable_p


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
        with THREADPOOLS.limit(limits=1):
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
    with THREADPOOLS.limit(limits=1):
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
        "min_attainable_p": min_attainable_p(n_permutations),
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
