"""The statistics core: grouped cross-validation, group bootstrap and group permutation tests.

Arrays in, numbers out; nothing here knows about models or run folders. The unit of resampling is the
*group* (in affectlens, the prompt): rows that share a group never straddle train and test, the bootstrap
draws whole groups, and the permutation test shuffles which label each group carries. Rows from one
prompt are near-copies of each other, so treating them as independent would leak and inflate everything.

Every claim against chance carries a permutation p-value p = (k + 1) / (n + 1), where k counts null
scores at least as large as the observed one; the smallest p a test can report is 1 / (n + 1).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController

__all__ = [
    "ClassifierResult",
    "PermutationResult",
    "accuracy",
    "bootstrap_ci",
    "default_estimator",
    "evaluate_classifier",
    "grouped_cv_predict",
    "grouped_folds",
    "macro_f1",
    "min_attainable_p",
    "pearson_with_ci",
    "permutation_test",
]

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


def _group_rows(groups: np.ndarray) -> list[np.ndarray]:
    """Row indices of each group, in order of the sorted group ids."""
    codes = np.unique(groups, return_inverse=True)[1]
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(codes))[:-1])


def bootstrap_ci(
    stat_fn: Callable[[np.ndarray], float],
    groups: Sequence | np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile interval (level 1 - alpha) of ``stat_fn`` under a bootstrap over groups.

    Each resample draws as many groups as there are, with replacement, and hands ``stat_fn`` the row
    indices of all their rows (a group drawn twice appears twice). Resamples where the statistic is
    undefined (NaN) are left out. For row-level resampling pass ``groups=np.arange(n)``.
    """
    rows = _group_rows(np.asarray(groups))
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.integers(0, len(rows), size=len(rows))
        stats[b] = stat_fn(np.concatenate([rows[g] for g in picked]))
    lo, hi = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _labels_per_group(y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the one label of each group, each row's group code); ValueError if a group carries several."""
    uniq, first, codes = np.unique(groups, return_index=True, return_inverse=True)
    group_label = y[first]
    mixed = np.flatnonzero(group_label[codes] != y)
    if len(mixed):
        raise ValueError(
            f"group {uniq[codes[mixed[0]]]!r} carries more than one label; a group-level permutation "
            "needs one label per group"
        )
    return group_label, codes


def min_attainable_p(n_permutations: int) -> float:
    """1 / (n_permutations + 1): the p-value of (k + 1) / (n + 1) when no null score reaches the observed one."""
    return 1.0 / (n_permutations + 1)


class PermutationResult(NamedTuple):
    """What :func:`permutation_test` found; it unpacks as ``p_value, null`` like the plain pair it extends."""

    p_value: float
    null: np.ndarray  # the null scores, shape [n_permutations]

    @property
    def n_permutations(self) -> int:
        return len(self.null)

    @property
    def min_attainable_p(self) -> float:
        return min_attainable_p(self.n_permutations)


def permutation_test(
    score_fn: Callable[[np.ndarray], float],
    y: Sequence | np.ndarray,
    groups: Sequence | np.ndarray,
    observed: float,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    n_jobs: int = 1,
) -> PermutationResult:
    """One-sided permutation p-value of ``observed`` and the null scores, shape [n_permutations].

    Each permutation shuffles which label each group carries (rows keep their group, a group keeps one
    label) and calls ``score_fn(y_perm)``, which must redo the whole analysis, cross-validation
    included. p = (k + 1) / (n_permutations + 1) with k = #(null >= observed), so p >= 1 / (n + 1).

    Every group must carry a single label, else ValueError: with labels that vary inside a group the
    group-level null is not defined, and a row-level shuffle would break the grouping the CV protects.
    The permutations are drawn up front from ``seed``, so ``n_jobs`` (joblib processes; ``score_fn``
    must then be picklable by cloudpickle, which closures are) changes the speed, never the numbers.

    Returns ``(p_value, null)`` (it unpacks as that pair), which also carries ``min_attainable_p``.
    """
    if n_permutations < 1:
        raise ValueError("n_permutations must be at least 1")
    group_label, codes = _labels_per_group(np.asarray(y), np.asarray(groups))
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(len(group_label)) for _ in range(n_permutations)]
    if n_jobs == 1:
        null = [score_fn(group_label[p][codes]) for p in perms]
    else:
        null = Parallel(n_jobs=n_jobs)(delayed(score_fn)(group_label[p][codes]) for p in perms)
    null_scores = np.asarray(null, dtype=float)
    k = int(np.sum(null_scores >= observed))
    return PermutationResult((k + 1) / (n_permutations + 1), null_scores)


# ---------------------------------------------------------------------------------------- classifiers


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


def pearson_with_ci(
    x: Sequence | np.ndarray,
    y: Sequence | np.ndarray,
    *,
    groups: Sequence | np.ndarray | None = None,
    n_boot: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Pearson r of x and y, shape [n] each, with a bootstrap interval and a two-sided permutation p.

    With ``groups`` the bootstrap draws whole groups and the permutation shuffles y between groups (y
    must then be constant within a group, e.g. the valence of a prompt's cell); without, rows are
    independent. p counts null |r| >= observed |r|; ``n_permutations=0`` skips it (p_value None).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length, got shapes {x.shape} and {y.shape}")
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)

    def r_of(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        denom = np.sqrt((a @ a) * (b @ b))
        return float(a @ b / denom) if denom > 0 else float("nan")

    r = r_of(x, y)
    lo, hi = bootstrap_ci(lambda idx: r_of(x[idx], y[idx]), groups, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = dict(
        r=r, lo=lo, hi=hi, n=len(x), n_boot=n_boot, seed=seed, n_permutations=n_permutations
    )
    out["p_value"] = None
    out["min_attainable_p"] = None
    if n_permutations > 0:
        test = permutation_test(
            lambda y_perm: abs(r_of(x, y_perm)), y, groups, abs(r), n_permutations=n_permutations, seed=seed
        )
        out["p_value"], out["min_attainable_p"] = test.p_value, test.min_attainable_p
    return out
