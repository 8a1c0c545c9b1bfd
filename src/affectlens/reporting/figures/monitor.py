"""The monitoring figure: each emotion's reading along the reply, one small panel per emotion.

Twenty lines on one axis are unreadable, so each emotion gets its own panel, all on shared axes so that
heights compare across panels. A panel shows the mean over prompts at each reply token (a prompt's samples
are averaged first: they share its prompt, so the prompt is the unit of independence) with a 95% normal
band across prompts, drawn where at least two prompts still have a reply that long; a dashed line marks the
mean reading at the last prompt token, where the reply starts from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

from affectlens.store.atomic import write_figure

Y_LABEL = "projection on unit(v), centred on the neutral mean"
X_LABEL = "reply token index (0 = first reply token)"
MAX_COLUMNS = 5
# One colour for every panel (the title names the emotion): tab20's pale halves vanish as thin lines.
LINE_COLOUR, PROMPT_COLOUR = "#2b5d8a", "#c87f55"


def along_reply(readings: pd.DataFrame) -> pd.DataFrame:
    """Per (emotion, token_index) over reply tokens: ``mean`` and ``se`` across prompts, and ``n`` prompts.

    Each prompt's samples are averaged first; ``se`` is NaN where fewer than two prompts contribute.
    """
    reply = readings[readings["part"] == "reply"]
    per_prompt = reply.groupby(["emotion", "token_index", "prompt_id"], sort=True)["reading"].mean()
    grouped = per_prompt.astype(np.float64).groupby(level=["emotion", "token_index"])
    table = pd.DataFrame({"mean": grouped.mean(), "sd": grouped.std(ddof=1), "n": grouped.size()})
    table["se"] = table["sd"] / np.sqrt(table["n"])
    return table.drop(columns="sd").reset_index()


def last_prompt_token(readings: pd.DataFrame) -> pd.Series:
    """Per emotion, the mean over prompts of the reading at each prompt's last token (the reply's start)."""
    prompt = readings[readings["part"] == "prompt"]
    if prompt.empty:
        return pd.Series(dtype=np.float64)
    ends = prompt.groupby("prompt_id")["token_index"].transform("max")
    return prompt[prompt["token_index"] == ends].groupby("emotion")["reading"].mean().astype(np.float64)


def readings_figure(readings: pd.DataFrame, emotions: Sequence[str], *, layer: int | None = None,
                    title: str | None = None) -> Figure:  # fmt: skip
    """Small multiples, one panel and one line (labelled with the emotion) per emotion in ``emotions``' order.

    ``readings`` has MONITOR_COLUMNS; only ``part == "reply"`` rows are drawn. x is the reply token index,
    y the reading (projection on the unit vector of the residual stream minus the neutral mean).
    """
    emotions = list(emotions)
    table = along_reply(readings)
    n_prompts = int(readings.loc[readings["part"] == "reply", "prompt_id"].nunique())
    n_replies = int(
        readings.loc[readings["part"] == "reply", ["prompt_id", "sample"]].drop_duplicates().shape[0]
    )
    # With two or more prompts, a token index that only one prompt's replies reach is one prompt, not a mean.
    floor = 2 if n_prompts >= 2 else 1
    cols = max(1, min(MAX_COLUMNS, len(emotions)))
    rows = max(1, math.ceil(len(emotions) / cols))
    # A bare Figure draws with Agg (PNG) and the SVG backend without touching pyplot's global state.
    fig = Figure(figsize=(2.6 * cols + 0.8, 1.9 * rows + 1.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    last = last_prompt_token(readings)
    for ax, name in zip(axes, emotions, strict=False):
        part = table[(table["emotion"] == name) & (table["n"] >= floor)].sort_values("token_index")
        x, mean, se = part["token_index"].to_numpy(), part["mean"].to_numpy(), part["se"].to_numpy()
        ax.axhline(0.0, color="grey", lw=0.6)
        if name in last.index:
            ax.axhline(last[name], color=PROMPT_COLOUR, lw=0.9, ls="--", label="last prompt token (mean)")
        ax.plot(x, mean, color=LINE_COLOUR, lw=1.4, label=name)
        if np.isfinite(se).any():
            ax.fill_between(x, mean - 1.96 * se, mean + 1.96 * se, color=LINE_COLOUR, alpha=0.2, lw=0)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    if len(last):
        axes[0].legend(handles=axes[0].get_lines()[1:2], fontsize=7, loc="best")
    for ax in axes[len(emotions) :]:
        ax.set_visible(False)
    where = f", layer {layer}" if layer is not None else ""
    fig.suptitle(
        title
        or (
            f"emotion readings along the reply{where}: mean over prompts (n = {n_prompts} prompts, "
            f"{n_replies} replies), band 95% across prompts"
        ),
        fontsize=10,
    )
    fig.supxlabel(X_LABEL, fontsize=9)
    fig.supylabel(Y_LABEL, fontsize=9)
    return fig


def figure_paths(path_stem: str | Path) -> list[Path]:
    """The PNG and SVG that :func:`draw` writes for ``path_stem``."""
    stem = Path(path_stem)
    return [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]


def draw(readings: pd.DataFrame, emotions: Sequence[str], path_stem: str | Path, *,
         layer: int | None = None) -> list[Path]:  # fmt: skip
    """Draw :func:`readings_figure` and write ``path_stem`` + ``.png`` and ``.svg`` atomically."""
    fig = readings_figure(readings, emotions, layer=layer)
    png, svg = paths = figure_paths(path_stem)
    # Text stays text in the SVG; a fixed salt and no date keep reruns byte-identical.
    with rc_context({"svg.hashsalt": "affectlens", "svg.fonttype": "none"}):
        write_figure(fig, png, dpi=150)
        write_figure(fig, svg, metadata={"Date": None})
    return paths
