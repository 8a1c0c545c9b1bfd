"""Figures of a persona comparison, drawn from the ``persona.json`` dict: the rates with their intervals, and
the neuron overlap per layer against its random-set expectation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure as MplFigure

from affectlens.store.atomic import write_figure

FIGURES = ("persona_rates", "persona_neurons")
RATES = (("esr", "ESR"), ("reply_emoji_rate", "replies with emoji"), ("kaomoji_rate", "replies with kaomoji"),
         ("first_token_mass", "emoji mass, first token"), ("sentence_end_mass", "emoji mass, sentence ends"))  # fmt: skip


def _save(fig: MplFigure, out: Path, name: str) -> dict[str, str]:
    with rc_context({"svg.hashsalt": "affectlens", "svg.fonttype": "none"}):
        write_figure(fig, out / f"{name}.png", dpi=150)
        write_figure(fig, out / f"{name}.svg", metadata={"Date": None})
    return {"png": f"{name}.png", "svg": f"{name}.svg"}


def _rates(result: dict[str, Any]) -> MplFigure:
    models = result["models"]
    fig = MplFigure(figsize=(2.2 * len(RATES), 2.8), layout="constrained")
    for ax, (key, title) in zip(fig.subplots(1, len(RATES), squeeze=False)[0], RATES, strict=True):
        values = np.array([m[key]["value"] for m in models], float)
        lo = np.array([m[key]["ci"][0] for m in models], float)
        hi = np.array([m[key]["ci"][1] for m in models], float)
        x = np.arange(len(models))
        ax.bar(x, values, color="#7a9cc6")
        ax.errorbar(
            x, values, yerr=[np.nan_to_num(values - lo), np.nan_to_num(hi - values)], fmt="none", color="k"
        )
        ax.set_xticks(x, [m["label"] for m in models], rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=8)
    return fig


def _neurons(result: dict[str, Any]) -> MplFigure:
    fig = MplFigure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    for row in result["neurons"]:
        layers = [r["layer"] for r in row["layers"]]
        ax.plot(layers, [r["overlap_before"] for r in row["layers"]], marker="o", ms=3, label=f"{row['b']}")
    if result["neurons"]:
        layers = [r["layer"] for r in result["neurons"][0]["layers"]]
        ax.plot(layers, [r["expected"] for r in result["neurons"][0]["layers"]], "k--", label="random sets")
        ax.legend(fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel("top shifted ∩ top emoji neurons")
    return fig


def draw(result: dict[str, Any], out: Path) -> dict[str, dict[str, str]]:
    out.mkdir(parents=True, exist_ok=True)
    return {"persona_rates": _save(_rates(result), out, "persona_rates"),
            "persona_neurons": _save(_neurons(result), out, "persona_neurons")}  # fmt: skip
