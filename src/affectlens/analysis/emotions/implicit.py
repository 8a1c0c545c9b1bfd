"""Implicit scenarios: does the vector nearest a scenario that never names its emotion belong to that emotion?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from affectlens.analysis.emotions.common import unit
from affectlens.stats import bootstrap_ci, permutation_test


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
            test = permutation_test(
                lambda t, k=k: float(np.mean(ranks(t) < k)),
                truth,
                rows,
                float(hit.mean()),
                n_permutations=n_permutations,
                seed=seed,
            )
            entry["p_value"], entry["min_attainable_p"] = test.p_value, test.min_attainable_p
            entry["n_permutations"] = test.n_permutations
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
