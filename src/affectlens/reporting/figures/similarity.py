"""The encoder-comparison figure: pairwise similarity of encoders, and each encoder against the truth."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

from affectlens.store.atomic import write_figure


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def draw(pairwise: pd.DataFrame, comparison_rows: Sequence[dict[str, Any]]) -> Figure:
    """Two panels: the pairwise similarity heat map (annotated; its title names ``pairwise.attrs["floor"]``
    when set), and each encoder's emit-weighted similarity to the truth with its 95% interval and, marked
    on each bar, the uniform and truth-marginal baselines on its faces.

    ``comparison_rows`` are ``compare_to_truth`` results, each with an ``"encoder"`` name. A thin row (no
    interval) is drawn without an error bar.
    """
    # A bare Figure draws with Agg (PNG) and the SVG backend without touching pyplot's global state.
    fig = Figure(figsize=(max(10.0, 1.2 * len(pairwise) + 6.0), 4.8), layout="constrained")
    heat, bars = fig.subplots(1, 2, width_ratios=[1.1, 1.0])
    values = pairwise.to_numpy(dtype=np.float64)
    image = heat.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
    for (i, j), value in np.ndenumerate(values):
        label, colour = (
            ("n/a", "black") if np.isnan(value) else (f"{value:.2f}", "white" if value < 0.6 else "black")
        )
        heat.text(j, i, label, ha="center", va="center", fontsize=8, color=colour)
    heat.set_xticks(range(len(pairwise.columns)), [str(c) for c in pairwise.columns], rotation=45, ha="right")
    heat.set_yticks(range(len(pairwise.index)), [str(c) for c in pairwise.index])
    floor = pairwise.attrs.get("floor")
    heat.set_title(
        "pairwise JS similarity (face-uniform" + (f", faces emitted >= {floor})" if floor else ")")
    )
    fig.colorbar(image, ax=heat, label="1 − JSD (bits)")

    estimates = np.array([_number(row.get("emit_weighted")) for row in comparison_rows])
    lows = np.array([_number(row.get("emit_weighted_lo")) for row in comparison_rows])
    highs = np.array([_number(row.get("emit_weighted_hi")) for row in comparison_rows])
    errors = np.nan_to_num(np.vstack([estimates - lows, highs - estimates]), nan=0.0)
    positions = np.arange(len(comparison_rows))
    bars.bar(positions, np.nan_to_num(estimates, nan=0.0), yerr=errors, capsize=4, color="#5194da")
    # The know-nothing encoders on each bar's own faces: what a bar must clear to mean anything.
    markers = (
        ("uniform", "D", "#e08214", "uniform baseline"),
        ("marginal", "X", "#b2182b", "truth marginal baseline"),
    )
    for key, marker, colour, label in markers:
        values = [_number(row.get(f"{key}_emit_weighted")) for row in comparison_rows]
        if not np.isnan(values).all():
            bars.scatter(positions, values, marker=marker, s=45, color=colour, zorder=3, label=label)
    if bars.get_legend_handles_labels()[0]:
        bars.legend(loc="upper right", fontsize=8)
    labels = [f"{row.get('encoder', '?')}\nn={row.get('n_faces', 0)}" for row in comparison_rows]
    bars.set_xticks(positions, labels, rotation=45, ha="right")
    bars.set_ylim(0.0, 1.0)
    bars.set_ylabel("emit-weighted JS similarity to truth")
    bars.set_title("vs truth (95% bootstrap interval; n = faces)")
    return fig


def figure_paths(path_stem: str | Path) -> list[Path]:
    """The PNG and SVG that :func:`similarity_figure` writes for ``path_stem``."""
    stem = Path(path_stem)
    return [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]


def similarity_figure(
    pairwise: pd.DataFrame, comparison_rows: Sequence[dict[str, Any]], path_stem: str | Path
) -> list[Path]:
    """Draw the figure (see :func:`draw`) and write ``path_stem`` + ``.png`` and ``.svg`` atomically."""
    fig = draw(pairwise, comparison_rows)
    png, svg = paths = figure_paths(path_stem)
    # A fixed hash salt and no date keep the SVG byte-identical across reruns.
    with rc_context({"svg.hashsalt": "affectlens"}):
        write_figure(fig, png, dpi=150)
        write_figure(fig, svg, metadata={"Date": None})
    return paths
