"""Permutation nulls the kaomoji analyses need beyond ``stats.permutation_test``.

Two kinds. Relabelling the k cells among themselves (geometry, alignment): with few cells there are only k!
relabellings, so all of them are enumerated when k! <= n_permutations (then p = the share of relabellings at
least as extreme, the identity included), else n_permutations are drawn as ``stats.permutation_test`` draws
them and p = (k + 1) / (n + 1). Either way p is never reported below the exact floor: the share of
relabellings that tie with the identity on every data set (cells with equal labels swapped, or a label
column mapped onto its mirror image). And shuffling prompts only among prompts of the same cell (hidden ->
face beyond the cell), where p = (k + 1) / (n + 1), floored at 1 / (number of distinct within-cell shuffles).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from affectlens.stats import PermutationResult, min_attainable_p

TIE_TOL = 1e-10  # a null score within this (relative) of the observed one counts as a tie
EXACT = "exact"
MONTE_CARLO = "monte carlo"
RELABEL_RULE = (
    "cell labels shuffled among cells: all k! relabellings when k! <= n_permutations (p = share at least "
    "as extreme, identity included), else n_permutations random ones (p = (k + 1) / (n + 1)); p is never "
    "below the exact floor (the share of relabellings that tie with the identity whatever the data)"
)


@dataclass
class Relabellings:
    perms: np.ndarray  # [m, k] each row a relabelling of the k cells
    exact: bool  # all k! enumerated (the identity among them)

    @property
    def kind(self) -> str:
        return EXACT if self.exact else MONTE_CARLO


def relabellings(k: int, n_permutations: int, seed: int) -> Relabellings:
    """Every relabelling of k cells when k! <= n_permutations, else n_permutations random ones drawn exactly
    as ``stats.permutation_test`` draws them (so a Monte Carlo p matches it shuffle for shuffle)."""
    if math.factorial(k) <= n_permutations:
        return Relabellings(np.array(list(itertools.permutations(range(k))), dtype=np.int64), True)
    rng = np.random.default_rng(seed)
    return Relabellings(np.array([rng.permutation(k) for _ in range(n_permutations)], dtype=np.int64), False)


def label_floor(columns: np.ndarray, *, swap: bool = False) -> float:
    """The smallest p a relabelling test of |r|-like statistics can give, for cells labelled by ``columns``
    ([k, m], one row per cell): the share of the k! relabellings that map every column onto itself or its
    mirror image about its mean (and, with ``swap``, the two columns onto each other) after z-scoring, since
    those tie with the identity whatever the data. Constant columns are ignored."""
    cols = np.asarray(columns, dtype=float)
    cols = cols[:, None] if cols.ndim == 1 else cols
    cols = cols[:, cols.std(axis=0) > 0]
    k, m = cols.shape
    if m == 0:
        return 1.0
    z = np.round((cols - cols.mean(axis=0)) / cols.std(axis=0), 9) + 0.0  # + 0.0: no -0.0 in the keys

    def key(a: np.ndarray) -> Counter:
        return Counter(map(tuple, a.tolist()))

    base = key(z)
    orders = list(itertools.permutations(range(m))) if swap else [tuple(range(m))]
    targets = set()
    for order in orders:
        for signs in itertools.product((1.0, -1.0), repeat=m):
            target = np.round(z[:, list(order)] * np.asarray(signs), 9) + 0.0
            if key(target) == base:
                targets.add(tuple(map(tuple, target.tolist())))
    stabiliser = math.prod(math.factorial(c) for c in base.values())
    return min(1.0, stabiliser * len(targets) / math.factorial(k))


def relabel_p(observed: float, null: np.ndarray, draws: Relabellings, floor: float) -> dict[str, Any]:
    """p-value block of a relabelling test (larger = more extreme) with its floor and null mean."""
    null = np.asarray(null, dtype=float)
    m = len(null)
    count = int(np.sum(null >= observed - TIE_TOL * max(1.0, abs(observed))))
    if draws.exact:
        p, floor_p = count / m, max(floor, 1.0 / m)
    else:
        p, floor_p = max((count + 1) / (m + 1), floor), max(floor, min_attainable_p(m))
    return {
        "p_value": p,
        "min_attainable_p": floor_p,
        "n_permutations": m,
        "permutations": draws.kind,
        "null_mean": float(np.nanmean(null)) if m else float("nan"),
    }


def within_strata_test(
    score_fn: Callable[[np.ndarray], float],
    strata: np.ndarray,
    observed: float,
    *,
    n_permutations: int,
    seed: int,
    n_jobs: int = 1,
) -> tuple[PermutationResult, float]:
    """(one-sided test of ``observed``, its floor) against ``score_fn(perm)``, where ``perm`` maps each unit
    to the unit whose data it takes and only ever maps a unit to one of the same stratum.

    p = (k + 1) / (n + 1), raised to the floor 1 / (number of distinct within-stratum shuffles) when that is
    larger (few units per stratum). The shuffles are drawn up front from ``seed``; ``n_jobs`` changes only
    the speed.
    """
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    perms = []
    for _ in range(n_permutations):
        perm = np.arange(len(strata))
        for idx in members:
            perm[idx] = idx[rng.permutation(len(idx))]
        perms.append(perm)
    if n_jobs == 1:
        null = [score_fn(p) for p in perms]
    else:
        null = Parallel(n_jobs=n_jobs)(delayed(score_fn)(p) for p in perms)
    null_scores = np.asarray(null, dtype=float)
    distinct = math.prod(math.factorial(len(idx)) for idx in members)
    floor = max(min_attainable_p(n_permutations), 1.0 / distinct)
    k = int(np.sum(null_scores >= observed))
    return PermutationResult(max((k + 1) / (n_permutations + 1), 1.0 / distinct), null_scores), floor
