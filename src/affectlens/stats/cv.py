"""Grouped cross-validation: folds that never split a group, out-of-fold predictions, metrics."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController

# (X, y, groups, seed) -> out-of-fold predictions, shape [n]
PredictFn = Callable[[Any, np.ndarray, np.ndarray, int], np.ndarray]
Folds = list[tuple[np.ndarray, np.ndarray]]

# Built once: discovering the loaded BLAS and OpenMP libraries costs milliseconds, as much as a small fit.
_THREADPOOLS = ThreadpoolController()


# ---------------------------------------------------------------------------------------------- metrics


def accuracy(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """Fraction of rows where the prediction equals the truth."""
    return float(accuracy_score(y_true, y_pred))


def macro_f1(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """Unweighted mean F1 over the labels seen in ``y_true`` or ``y_pred``; an undefined F1 counts as 0."""
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def _macro_f1_codes(t: np.ndarray, p: np.ndarray, n_labels: int) -> float:
    """``macro_f1`` on integer codes, without sklearn's validation: it runs once per bootstrap resample."""
    conf = np.bincount(t * n_labels + p, minlength=n_labels * n_labels).reshape(n_labels, n_labels)
    tp = np.diag(conf)
    true_n, pred_n = conf.sum(axis=1), conf.sum(axis=0)
    seen = (true_n + pred_n) > 0
    # 2tp / (2tp + fp + fn), and 2tp + fp + fn = true_n + pred_n, which is > 0 for every seen label.
    return float(np.mean(2 * tp[seen] / (true_n[seen] + pred_n[seen])))


# ------------------------------------------------------------------------------------------ grouped CV


def default_estimator(*, C: float = 1.0, tol: float = 1e-4, max_iter: int = 5000) -> Pipeline:
    """A fresh StandardScaler + L2 logistic regression (lbfgs; multinomial whenever there are >2 classes).

    A looser ``tol`` (say 1e-3) is the cheap speed knob; pass it through ``make_estimator`` so the observed
    score and every permutation use the very same pipeline.
    """
    return Pipeline(
        [("scale", StandardScaler()), ("clf", LogisticRegression(C=C, tol=tol, max_iter=max_iter))]
    )


def grouped_folds(
    y: Sequence | np.ndarray, groups: Sequence | np.ndarray, *, n_splits: int = 5, seed: int = 0
) -> Folds:
    """(train, test) row-index pairs in which no group appears on both sides.

    StratifiedGroupKFold (shuffled with ``seed``) when every class spans at least ``n_splits`` groups,
    else GroupKFold (also shuffled), since stratification is impossible then. ``n_splits`` is cut to
    the number of groups. The folds depend on ``y`` only through stratification.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    if len(y) != len(groups):
        raise ValueError(f"y has {len(y)} rows but groups has {len(groups)}")
    group_codes = np.unique(groups, return_inverse=True)[1]
    n_groups = int(group_codes.max()) + 1 if len(groups) else 0
    k = min(n_splits, n_groups)
    if k < 2:
        raise ValueError(f"grouped cross-validation needs at least 2 groups, got {n_groups}")
    class_codes = np.unique(y, return_inverse=True)[1]
    class_group_pairs = np.unique(np.stack([class_codes, group_codes]), axis=1)
    groups_per_class = np.bincount(class_group_pairs[0])
    if groups_per_class.min() >= k and n_groups == len(groups):
        # One row per group: StratifiedKFold keeps the same guarantees ~50x faster than StratifiedGroupKFold.
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    elif groups_per_class.min() >= k:
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        cv = GroupKFold(n_splits=k, shuffle=True, random_state=seed)  # shuffle needs scikit-learn >= 1.6
    split_groups = (
        None if isinstance(cv, StratifiedKFold) else groups
    )  # it would warn that groups are ignored
    return list(cv.split(np.zeros((len(y), 1)), y, split_groups))


def grouped_cv_predict(
    X: Any,
    y: Sequence | np.ndarray,
    groups: Sequence | np.ndarray,
    *,
    n_splits: int = 5,
    seed: int = 0,
    make_estimator: Callable[[], BaseEstimator] | None = None,
) -> np.ndarray:
    """Out-of-fold class predictions, shape [n], under :func:`grouped_folds`.

    ``X`` is anything the estimator takes, indexable by rows ([n, d] features for the default).
    ``make_estimator()`` is called once per fold, so scaling and every other fit see only that fold's
    training rows. A fold whose training rows hold a single class predicts that class (no fit needed).
    Convergence warnings are collected and raised once per call, not once per fold.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    make_estimator = make_estimator or default_estimator
    pred = np.empty(len(y), dtype=y.dtype)
    unconverged = 0
    folds = grouped_folds(y, groups, n_splits=n_splits, seed=seed)
    # Fold fits are small (hundreds of rows): BLAS and OpenMP threads cost more in hand-offs than they save,
    # and on a busy machine they made a fit 15-40x slower. Parallelise over permutations (n_jobs) instead.
    with _THREADPOOLS.limit(limits=1):
        for train, test in folds:
            if len(np.unique(y[train])) == 1:
                pred[test] = y[train][0]
                continue
            model = make_estimator()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.fit(X[train], y[train])
            for w in caught:
                if issubclass(w.category, ConvergenceWarning):
                    unconverged += 1
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            pred[test] = model.predict(X[test])
    if unconverged:
        warnings.warn(
            f"{unconverged} of {len(folds)} fold fits did not converge; raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=2,
        )
    return pred


# ---------------------------------------------------------------------------- bootstrap and permutation
