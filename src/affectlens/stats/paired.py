"""Ratios over units (questions) and tests between two models measured on the same units.

A pooled ratio is sum(num) / sum(den) over units: the emoji-sentence ratio is emoji sentences over sentences,
pooled over questions. Its interval resamples the units. The paired test flips the sign of each unit's
difference in rate (the null that the model label does not matter for any question), so a question's
replies always stay together. p = (k + 1) / (n + 1), two-sided on |difference|.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pooled(num: np.ndarray, den: np.ndarray) -> float:
    total = float(np.sum(den))
    return float(np.sum(num)) / total if total > 0 else float("nan")


def ratio_ci(num: Sequence[float], den: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
             alpha: float = 0.05) -> tuple[float, float]:  # fmt: skip
    """Percentile interval of the pooled ratio under a bootstrap over units."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(num), size=(n_boot, len(num)))
    sums = den[picks].sum(axis=1)
    stats = np.where(sums > 0, num[picks].sum(axis=1) / np.where(sums > 0, sums, 1), np.nan)
    if np.all(np.isnan(stats)):
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_rate_test(rate_a: Sequence[float], rate_b: Sequence[float], *, n_permutations: int = 2000,
                     seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """(mean over units of rate_b - rate_a, two-sided sign-flip p): under the null the two models' rates are
    exchangeable within each unit, so each unit's difference flips its sign at random.

    The statistic is the mean of per-unit differences, not the difference of pooled ratios: swapping pooled
    numerators and denominators would test reply length along with the rate whenever one model writes
    longer replies.
    """
    diff = np.asarray(rate_b, float) - np.asarray(rate_a, float)
    diff = diff[np.isfinite(diff)]
    if not len(diff):
        return float("nan"), float("nan")
    observed = float(diff.mean())
    rng = np.random.default_rng(seed)
    signs = np.where(rng.random((n_permutations, len(diff))) < 0.5, -1.0, 1.0)
    null = (signs * diff).mean(axis=1)
    k = int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    return observed, (k + 1) / (n_permutations + 1)


def two_sample_test(statistic, a: Sequence, b: Sequence, *, n_permutations: int = 1000,
                    seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """(statistic(b) - statistic(a), two-sided p) with units shuffled between the two samples under the null;
    for units that are not paired (the in-context test's samples)."""
    pool = list(a) + list(b)
    observed = statistic(list(b)) - statistic(list(a))
    rng = np.random.default_rng(seed)
    k = 0
    for _ in range(n_permutations):
        order = rng.permutation(len(pool))
        x, y = [pool[i] for i in order[: len(a)]], [pool[i] for i in order[len(a) :]]
        k += abs(statistic(y) - statistic(x)) >= abs(observed) - 1e-12
    return float(observed), (k + 1) / (n_permutations + 1)


def overlap_test(first: Sequence[int], second: Sequence[int], n_units: int, *, n_permutations: int = 10000,
                 seed: int = 0) -> tuple[int, float, float]:  # fmt: skip
    """(|first ∩ second|, its expectation for random sets of the same sizes, one-sided p): the null draws
    ``second`` as a random subset of the ``n_units`` (a permutation of the unit labels)."""
    a, b = set(first), set(second)
    observed = len(a & b)
    rng = np.random.default_rng(seed)
    member = np.zeros(n_units, bool)
    member[list(a)] = True
    null = np.array([member[rng.permutation(n_units)[: len(b)]].sum() for _ in range(n_permutations)])
    k = int(np.sum(null >= observed))
    return observed, len(a) * len(b) / n_units, (k + 1) / (n_permutations + 1)
