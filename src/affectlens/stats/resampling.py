"""Group bootstrap intervals and group permutation tests, whose p = (k + 1) / (n + 1) never goes below
its own minimum."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from joblib import Parallel, delayed


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
