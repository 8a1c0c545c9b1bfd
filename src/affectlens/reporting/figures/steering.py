"""Figures of the steering analysis, drawn from the ``steering.json`` dict: dose-response and coherence.

Both set each emotion direction (solid, in the colour of the emotion's cell) and its orthogonal direction
(dashed) against the band the random directions span. ``draw`` saves each as PNG and SVG under ``out``
(through the atomic writer) and returns their paths relative to ``out``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure as MplFigure

from affectlens.cells import get_cell_set
from affectlens.store.atomic import write_figure

FIGURES = ("steering_dose", "steering_coherence")
RANDOM_COLOUR = "#9a9a9a"
QUANTILE_BAND_MIN = 10  # from this many random directions the band is their 10-90% range, else min-max
Rows = list[dict[str, Any]]


def _save(fig: MplFigure, out: Path, name: str) -> dict[str, str]:
    # Text stays text in the SVG; a fixed salt and no date keep reruns byte-identical.
    with rc_context({"svg.hashsalt": "affectlens", "svg.fonttype": "none"}):
        write_figure(fig, out / f"{name}.png", dpi=150)
        write_figure(fig, out / f"{name}.svg", metadata={"Date": None})
    return {"png": f"{name}.png", "svg": f"{name}.svg"}


def _curve(rows: Rows, value: Any) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, values) in alpha order; ``value`` picks the number from a per-alpha row (None: gap)."""
    points = sorted((r["alpha"], value(r)) for r in rows)
    y = np.array([np.nan if v is None else float(v) for _, v in points])
    return np.array([a for a, _ in points], dtype=float), y


def _band(ax: Axes, curves: Iterable[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Shade the range of the random directions' curves at each alpha; False when there are none."""
    by_alpha: dict[float, list[float]] = {}
    n = 0
    for x, y in curves:
        n += 1
        for a, v in zip(x, y, strict=True):
            if not math.isnan(v):
                by_alpha.setdefault(float(a), []).append(float(v))
    if not by_alpha:
        return False
    alphas = sorted(by_alpha)
    q = (0.1, 0.9) if n >= QUANTILE_BAND_MIN else (0.0, 1.0)
    lo = [np.quantile(by_alpha[a], q[0]) for a in alphas]
    hi = [np.quantile(by_alpha[a], q[1]) for a in alphas]
    label = f"random directions ({n}), {'10-90%' if q[0] else 'min-max'}"
    ax.fill_between(alphas, lo, hi, color=RANDOM_COLOUR, alpha=0.35, lw=0, label=label)
    return True


def _by_direction(result: dict[str, Any], kind: str, emotion: str | None = None) -> dict[str, Rows]:
    rows: dict[str, Rows] = {}
    for r in result["per_alpha"]:
        if r["kind"] == kind and (emotion is None or r["emotion"] == emotion):
            rows.setdefault(r["direction"], []).append(r)
    return rows


def _colour(result: dict[str, Any], info: dict[str, Any]) -> str:
    cells = get_cell_set(result["settings"]["cells"])
    return cells.colours.get(str(info.get("cell")), "black")


def dose_figure(result: dict[str, Any]) -> MplFigure | None:
    """Target share against alpha, a panel per emotion with targets; None without an encoder."""
    emotions = {e: i for e, i in result["emotions"].items() if i["targets"]}
    if not result["settings"].get("encoder") or not emotions:
        return None
    ncols = min(3, len(emotions))
    nrows = math.ceil(len(emotions) / ncols)
    fig = MplFigure(figsize=(4.6 * ncols, 3.8 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    randoms = _by_direction(result, "random")
    for ax, (emotion, info) in zip(axes, emotions.items(), strict=False):
        colour = _colour(result, info)

        def share(r: dict[str, Any], e: str = emotion) -> Any:
            return (r.get("target_share") or {}).get(e)

        span = info.get("coherent_range")
        if span:  # drawn first, so the random band lies over it
            ax.axvspan(span["lo"], span["hi"], color="#f4ebc6", alpha=0.45, lw=0, label="coherent range")
        _band(ax, (_curve(rows, share) for rows in randoms.values()))
        for d, rows in _by_direction(result, "emotion", emotion).items():
            ax.plot(*_curve(rows, share), color=colour, marker="o", ms=3, label=d)
        for d, rows in _by_direction(result, "orthogonal", emotion).items():
            ax.plot(*_curve(rows, share), color=colour, ls="--", marker="s", ms=2.5, label=d)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_title(f"{emotion}: targets {', '.join(info['targets'])}", fontsize=10)
        ax.set_xlabel("alpha (fraction of the layer's mean residual norm)")
        ax.set_ylabel("target share of encoded faces")
        ax.legend(fontsize=7, loc="best")
    for ax in axes[len(emotions) :]:
        ax.set_visible(False)
    fig.suptitle("Dose-response: share of faces on the emotion's target cells (alpha 0: unsteered)")
    return fig


def coherence_figure(result: dict[str, Any]) -> MplFigure | None:
    """Reply NLL relative to alpha 0 and first-token KL against alpha, per direction; None without either."""
    panels = (("reply_nll_ratio", "reply NLL / reply NLL at alpha 0"), ("first_token_kl", "first-token KL"))
    if not any(r.get(key) is not None for r in result["per_alpha"] for key, _ in panels):
        return None
    fig = MplFigure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    tolerance = result["settings"]["tolerance"]
    for ax, (key, label) in zip(axes, panels, strict=True):

        def value(r: dict[str, Any], k: str = key) -> Any:
            return r.get(k)

        _band(ax, (_curve(rows, value) for rows in _by_direction(result, "random").values()))
        for emotion, info in result["emotions"].items():
            colour = _colour(result, info)
            for kind, style in (("emotion", "-"), ("orthogonal", "--")):
                for d, rows in _by_direction(result, kind, emotion).items():
                    ax.plot(*_curve(rows, value), color=colour, ls=style, marker="o", ms=2.5, label=d)
        if key == "reply_nll_ratio":
            for bound in (1 - tolerance, 1 + tolerance):
                ax.axhline(bound, color="black", lw=0.6, ls=":")
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("alpha (fraction of the layer's mean residual norm)")
        ax.set_ylabel(label)
    axes[0].set_title(f"reply NLL (dotted: the coherent tolerance, {tolerance:g})", fontsize=10)
    axes[1].set_title("KL of the first reply token from the unsteered model", fontsize=10)
    axes[1].legend(fontsize=7, loc="best")
    return fig


def draw(result: dict[str, Any], out: Path | str) -> dict[str, dict[str, str]]:
    """Every figure that applies, as ``out/<name>.png`` and ``.svg``; paths relative to ``out`` by name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, make in zip(FIGURES, (dose_figure, coherence_figure), strict=True):
        fig = make(result)
        if fig is not None:
            written[name] = _save(fig, out, name)
    return written
