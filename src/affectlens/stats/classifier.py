"""One classifier evaluation: accuracy, macro-F1, confusion, chance, a cross-validated majority baseline,
bootstrap intervals and a permutation p, all grouped."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning

from affectlens.stats.cv import (
    PredictFn,
    _macro_f1_codes,
    grouped_cv_predict,
)
from affectlens.stats.resampling import (
    bootstrap_ci,
    permutation_test,
)


@dataclass
class ClassifierResult:
    """Out-of-fold classification scores with their interval, baselines and permutation test.

    Intervals are 95% percentile intervals from a bootstrap over groups; ``p_value`` tests accuracy
    against a group-level label permutation (None when no permutations were run). ``chance`` is the
    right yardstick only for balanced classes; with unbalanced ones compare with ``majority_baseline``
    and ``null_mean``, which a classifier on noise reaches by leaning to the commonest class.
    """

    accuracy: float
    accuracy_ci: tuple[float, float]
    macro_f1: float
    macro_f1_ci: tuple[float, float]
    labels: list
    confusion: list[list[int]]  # rows: true label, columns: predicted, both in the order of ``labels``
    chance: float  # 1 / number of classes present in y
    majority_baseline: float  # each test fold predicted as the majority class of its training folds
    n: int
    n_groups: int
    n_boot: int
    seed: int
    n_permutations: int = 0
    p_value: float | None = None
    min_attainable_p: float | None = None
    null_mean: float | None = None
    predictions: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain floats, ints and lists (the per-row predictions are left out)."""
        d = asdict(self)
        d.pop("predictions")
        d["accuracy_ci"] = [float(v) for v in self.accuracy_ci]
        d["macro_f1_ci"] = [float(v) for v in self.macro_f1_ci]
        d["labels"] = [v.item() if isinstance(v, np.generic) else v for v in self.labels]
        return d


def evaluate_classifier(
    X: Any,
    y: Sequence | np.ndarray,
    groups: Sequence | np.ndarray,
    *,
    labels: Sequence | None = None,
    n_splits: int = 5,
    n_boot: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
    make_estimator: Callable[[], BaseEstimator] | None = None,
    predict: PredictFn | None = None,
    n_jobs: int = 1,
) -> ClassifierResult:
    """Score out-of-fold predictions of y from X, with a group bootstrap and a group permutation test.

    ``predict(X, y, groups, seed) -> [n] predictions`` replaces the default grouped CV of
    ``make_estimator`` (any non-sklearn predictor, e.g. "the majority cell of this face in the training
    folds"); it must be out-of-fold by groups itself, and it is rerun on every permuted y. ``X`` is only
    handed through, so it may be anything ``predict`` accepts. ``labels`` orders the confusion matrix
    and must contain every label in y. ``seed`` drives the folds, the bootstrap and the permutations.
    ``n_permutations=0`` skips the test; ``n_jobs`` runs permutations in parallel processes.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    n = len(y)
    if len(groups) != n or len(X) != n:
        raise ValueError(f"X, y and groups must have the same length, got {len(X)}, {n}, {len(groups)}")
    labels = list(np.unique(y)) if labels is None else list(labels)
    index = {label: i for i, label in enumerate(labels)}
    if len(index) != len(labels):
        raise ValueError("labels contains duplicates")
    if missing := [v for v in np.unique(y).tolist() if v not in index]:
        raise ValueError(f"labels lacks classes present in y: {missing}")

    if predict is None:

        def predict(X_: Any, y_: np.ndarray, g_: np.ndarray, s_: int) -> np.ndarray:
            return grouped_cv_predict(X_, y_, g_, n_splits=n_splits, seed=s_, make_estimator=make_estimator)

    pred = np.asarray(predict(X, y, groups, seed))
    if len(pred) != n:
        raise ValueError(f"predict returned {len(pred)} predictions for {n} rows")
    if unknown := [v for v in np.unique(pred).tolist() if v not in index]:
        raise ValueError(f"predict returned labels outside labels: {unknown}")
    t = np.array([index[v] for v in y.tolist()])
    p = np.array([index[v] for v in pred.tolist()])
    correct = t == p
    confusion = np.bincount(t * len(labels) + p, minlength=len(labels) ** 2).reshape(len(labels), -1)

    dummy = grouped_cv_predict(
        np.zeros((n, 1)), y, groups, n_splits=n_splits, seed=seed, make_estimator=DummyClassifier
    )

    # Same seed, so both intervals come from the same group resamples.
    acc_ci = bootstrap_ci(lambda idx: correct[idx].mean(), groups, n_boot=n_boot, seed=seed)
    f1_ci = bootstrap_ci(
        lambda idx: _macro_f1_codes(t[idx], p[idx], len(labels)), groups, n_boot=n_boot, seed=seed
    )

    result = ClassifierResult(
        accuracy=float(correct.mean()),
        accuracy_ci=acc_ci,
        macro_f1=_macro_f1_codes(t, p, len(labels)),
        macro_f1_ci=f1_ci,
        labels=labels,
        confusion=confusion.tolist(),
        chance=1.0 / len(np.unique(y)),
        majority_baseline=float(np.mean(dummy == y)),
        n=n,
        n_groups=len(np.unique(groups)),
        n_boot=n_boot,
        seed=seed,
        predictions=pred,
    )
    if n_permutations > 0:

        def null_accuracy(y_perm: np.ndarray) -> float:
            # One summary warning for the observed fit is enough; the null fits are the same pipeline.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return float(np.mean(np.asarray(predict(X, y_perm, groups, seed)) == y_perm))

        test = permutation_test(
            null_accuracy, y, groups, result.accuracy, n_permutations=n_permutations, seed=seed, n_jobs=n_jobs
        )
        result.n_permutations = n_permutations
        result.p_value = test.p_value
        result.min_attainable_p = test.min_attainable_p
        result.null_mean = float(test.null.mean())
    return result


# -------------------------------------------------------------------------------------------- correlation
