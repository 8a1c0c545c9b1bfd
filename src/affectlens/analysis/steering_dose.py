"""Dose-response statistics of a steer run: target cells, per-prompt score matrices, OLS slopes with a
cluster bootstrap over prompts, the coherent alpha range, and a slope's rank among random directions.

Arrays in, numbers out; :mod:`affectlens.analysis.steering` reads the run and calls these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from affectlens.cells import CellSet
from affectlens.stats.resampling import min_attainable_p

VALENCE_MIN, AROUSAL_MIN = 0.3, 0.5
TARGET_RULE = (
    f"target cells of an emotion with valence v and arousal a: the cells whose valence has the sign of v "
    f"(when |v| >= {VALENCE_MIN}) and, when |a| >= {AROUSAL_MIN}, whose arousal has the sign of a; if no cell "
    "meets both, the valence rule alone; an emotion that meets neither threshold has no targets. A face's "
    "target share is the encoder's probability mass on the target cells; orthogonal directions use their "
    "emotion's targets, random directions are scored against every emotion's targets"
)
COHERENCE_MEASURES = ("reply_nll", "neutral_nll")
SLOPE_RULE = (
    "OLS slope of the score against alpha over (prompt, alpha) points, each point the mean score of the "
    "prompt's encoded well-formed faces at that alpha (alpha 0 is the unsteered baseline); 95% percentile "
    "interval from a cluster bootstrap over prompts, stratified within cell, the same resamples for every "
    "direction and alpha"
)
CONTROL_RULE = (
    "one-sided rank among the random directions' slopes on the same targets and alpha range: "
    "p = (k + 1) / (n_random + 1), k = random slopes >= the observed slope"
)
SIGNIFICANCE = 0.05


def coherent_rule(tolerance: float) -> str:
    return (
        f"the widest contiguous range of alphas around 0 where every coherence measure of "
        f"{', '.join(COHERENCE_MEASURES)} that the run recorded at alpha 0 is recorded and its mean lies "
        f"within a relative {tolerance:g} of its alpha-0 mean (|m(alpha) / m(0) - 1| <= {tolerance:g}), read "
        "from the emotion direction; its orthogonal and random comparators use the same range"
    )


def target_cells(valence: float | None, arousal: float | None, cells: CellSet) -> list[str]:
    """The codes of an emotion's target cells under TARGET_RULE, in cell order."""

    def applies(x: float | None, threshold: float) -> bool:
        return x is not None and not math.isnan(x) and abs(x) >= threshold

    by_valence = applies(valence, VALENCE_MIN)
    by_arousal = applies(arousal, AROUSAL_MIN)
    if not (by_valence or by_arousal):
        return []

    def chosen(use_arousal: bool) -> list[str]:
        return [
            c.code
            for c in cells.cells
            if (not by_valence or np.sign(c.valence) == np.sign(valence))
            and (not use_arousal or np.sign(c.arousal) == np.sign(arousal))
        ]

    return chosen(by_arousal) or (chosen(False) if by_valence else [])


def prompt_weights(prompt_cells: Sequence[str], n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_prompts] counts: how often each prompt is drawn in each resample.

    Prompts are drawn with replacement within their cell, as many as the cell holds, so every resample keeps
    the design's cell balance. One matrix serves every direction and alpha (the same prompts are used at each).
    """
    cells = np.asarray(prompt_cells, dtype=object)
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, len(cells)))
    rows = np.arange(n_boot)[:, None]
    for cell in sorted(set(cells.tolist()), key=str):
        members = np.flatnonzero(cells == cell)
        picks = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
        np.add.at(weights, (rows, picks), 1.0)
    return weights


def prompt_matrix(
    prompt_ids: np.ndarray,
    alphas: np.ndarray,
    scores: np.ndarray,
    prompts: Sequence[str],
    grid: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """([n_prompts, n_alphas] mean score, same-shape count of scored replies); NaN scores are not scored.

    Rows follow ``prompts``, columns ``grid``; a (prompt, alpha) with no scored reply is NaN with count 0.
    """
    frame = pd.DataFrame({"prompt_id": prompt_ids, "alpha": alphas, "score": scores}).dropna(subset=["score"])
    grouped = frame.groupby(["prompt_id", "alpha"])["score"].agg(["mean", "size"])
    index, columns = pd.Index(list(prompts)), pd.Index(list(grid), dtype=float)
    mean = grouped["mean"].unstack("alpha").reindex(index=index, columns=columns)
    size = grouped["size"].unstack("alpha").reindex(index=index, columns=columns).fillna(0)
    return mean.to_numpy(dtype=float), size.to_numpy(dtype=float)


def ols_slopes(means: np.ndarray, grid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[n_weightings] within-prompt OLS slopes of ``means`` [n_prompts, n_alphas] against ``grid`` [n_alphas].

    Each prompt is centred on its own mean alpha and mean score over the alphas where it has a point (prompt
    fixed effects), so a prompt that drops out at some alpha (no encoded face there) cannot pass for a dose
    effect; on a complete panel this is the pooled slope. Each row of ``weights`` [n_weightings, n_prompts]
    weighs a prompt by how often the resample drew it. NaN where no prompt has two points.
    """
    present = ~np.isnan(means)
    n_points = present.sum(axis=1, keepdims=True)
    x = np.broadcast_to(np.asarray(grid, dtype=float), means.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_bar = np.where(present, x, 0.0).sum(axis=1, keepdims=True) / n_points
        y_bar = np.where(present, means, 0.0).sum(axis=1, keepdims=True) / n_points
    xc = np.where(present, x - x_bar, 0.0)
    yc = np.where(present, means - y_bar, 0.0)
    numerator = weights @ (xc * yc).sum(axis=1)
    denominator = weights @ (xc**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slopes = numerator / denominator
    return np.where(denominator > 1e-12, slopes, np.nan)


def slope_summary(
    means: np.ndarray, counts: np.ndarray, grid: Sequence[float], boot: np.ndarray
) -> dict[str, Any]:
    """Slope, 95% percentile interval over the resamples in ``boot`` ([n_boot, n_prompts]), and its n."""
    x = np.asarray(grid, dtype=float)
    used = counts.sum(axis=0) > 0
    out: dict[str, Any] = {
        "alpha_lo": float(x.min()) if len(x) else None,
        "alpha_hi": float(x.max()) if len(x) else None,
        "n_alphas": int(used.sum()),
        "n_prompts": int((counts.sum(axis=1) > 0).sum()),
        "n_replies": int(counts.sum()),
        "slope": None,
        "ci": [None, None],
        "n_boot": len(boot),
        "n_boot_defined": 0,
    }
    if out["n_alphas"] < 2:
        out["reason"] = "fewer than two alphas with an encoded face"
        return out
    out["slope"] = float(ols_slopes(means, x, np.ones((1, means.shape[0])))[0])
    resampled = ols_slopes(means, x, boot)
    defined = resampled[~np.isnan(resampled)]
    out["n_boot_defined"] = len(defined)
    if len(defined):
        out["ci"] = [float(v) for v in np.quantile(defined, [0.025, 0.975])]
    return out


def coherent_range(curves: Mapping[str, Mapping[float, float]], grid: Sequence[float], tolerance: float
                   ) -> dict[str, Any] | None:  # fmt: skip
    """The coherent alpha range (see :func:`coherent_rule`) over ``grid`` (which holds 0), or None where no
    coherence measure was recorded at alpha 0. ``curves``: mean of each measure by alpha."""
    measures = [m for m in COHERENCE_MEASURES if _positive(curves.get(m, {}).get(0.0))]
    if not measures:
        return None

    def coherent(alpha: float) -> bool:
        for m in measures:
            value = curves[m].get(alpha)
            if value is None or math.isnan(value) or abs(value / curves[m][0.0] - 1.0) > tolerance:
                return False
        return True

    ordered = sorted({float(a) for a in grid} | {0.0})
    at = ordered.index(0.0)
    lo = hi = at
    while lo > 0 and coherent(ordered[lo - 1]):
        lo -= 1
    while hi < len(ordered) - 1 and coherent(ordered[hi + 1]):
        hi += 1
    return {
        "lo": ordered[lo],
        "hi": ordered[hi],
        "alphas": ordered[lo : hi + 1],
        "excluded": [a for a in ordered if a < ordered[lo] or a > ordered[hi]],
        "measures": measures,
        "tolerance": tolerance,
    }


def _positive(value: float | None) -> bool:
    return value is not None and not math.isnan(value) and value > 0


def rank_against(observed: float | None, controls: Sequence[float | None]) -> dict[str, Any]:
    """One-sided rank of ``observed`` among the control slopes (CONTROL_RULE); p None without either."""
    values = [c for c in controls if c is not None and not math.isnan(c)]
    out: dict[str, Any] = {"n_random": len(values), "k": None, "p_value": None, "min_attainable_p": None}
    if observed is None or math.isnan(observed) or not values:
        return out
    k = int(sum(v >= observed for v in values))
    out.update(k=k, p_value=(k + 1) / (len(values) + 1), min_attainable_p=min_attainable_p(len(values)))
    # The report's p formatter names the size of the null beside the floor.
    out["n_permutations"] = len(values)
    return out
