"""Figures of the emotion-vector analyses: similarity heat map, PCA scatter, probe curve, bridge, story UMAP.

``draw`` saves each as PNG and SVG under ``out`` (through the atomic writer) and returns their paths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.colors import to_hex
from matplotlib.figure import Figure as MplFigure

from affectlens.analysis.emotions import EmotionsAnalysis
from affectlens.reporting.figures.umap import umap_figure
from affectlens.store.atomic import write_figure

FIGURES = ("vectors_similarity", "vectors_pca", "vectors_probe", "vectors_bridge", "vectors_umap")


def _save(fig: MplFigure, stem: Path) -> list[Path]:
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    # Text stays text in the SVG (smaller, faster to write); a fixed salt and no date keep reruns byte-identical.
    with rc_context({"svg.hashsalt": "affectlens", "svg.fonttype": "none"}):
        write_figure(fig, paths[0], dpi=150)
        write_figure(fig, paths[1], metadata={"Date": None})
    return paths


def emotion_colours(names: list[str]) -> dict[str, str]:
    """One distinct colour per emotion: tab20 up to 20 emotions, evenly spaced turbo hues beyond."""
    cmap = colormaps["tab20"] if len(names) <= 20 else colormaps["turbo"].resampled(len(names))
    return {name: to_hex(cmap(i)) for i, name in enumerate(names)}


def similarity_figure(a: EmotionsAnalysis) -> MplFigure:
    """Cosine similarity of the unit vectors, rows and columns in the clustering's leaf order."""
    names, order = a.emotions, a.similarity["order"]
    sim = np.asarray(a.similarity["matrix"])[np.ix_(order, order)]
    fig = MplFigure(figsize=(8.5, 7.2), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(sim, vmin=-1, vmax=1, cmap="RdBu_r")
    ticks = [names[i] for i in order]
    ax.set_xticks(range(len(ticks)), ticks, rotation=90)
    ax.set_yticks(range(len(ticks)), ticks)
    ax.set_title(f"cosine similarity of denoised emotion vectors, layer {a.layer}")
    fig.colorbar(image, ax=ax, shrink=0.8, label="cosine")
    return fig


def pca_figure(a: EmotionsAnalysis) -> MplFigure:
    """The vectors on their oriented PC1 and PC2, coloured by the corpus valence rating."""
    pca = a.pca
    scores = np.asarray(pca["scores"])
    fig = MplFigure(figsize=(7.5, 6.2), layout="constrained")
    ax = fig.subplots()
    points = ax.scatter(
        scores[:, 0],
        scores[:, 1],
        c=a.valence,
        cmap="RdYlGn",
        vmin=-1,
        vmax=1,
        edgecolors="black",
        linewidths=0.5,
        s=60,
    )
    for (x, yv), name in zip(scores, a.emotions, strict=True):
        ax.annotate(name, (x, yv), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ev = pca["variance_explained"]
    ax.set_xlabel(f"PC1 ({ev[0]:.0%} of variance; oriented so r with valence >= 0)")
    ax.set_ylabel(f"PC2 ({ev[1]:.0%}; oriented so r with arousal >= 0)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_title(f"PCA of unit emotion vectors, layer {a.layer}")
    fig.colorbar(points, ax=ax, label="valence (corpus rating)")
    return fig


def probe_figure(a: EmotionsAnalysis) -> MplFigure:
    """Probe accuracy by layer, the headline layer's interval, chance, and adjacent-layer vector cosine."""
    curve, head = a.probe["by_layer"], a.probe["headline"]
    fig = MplFigure(figsize=(8.5, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(
        [r["layer"] for r in curve], [r["accuracy"] for r in curve], marker="o", ms=3, label="probe accuracy"
    )
    lo, hi = head["accuracy_ci"]
    ax.errorbar(
        [a.layer],
        [head["accuracy"]],
        yerr=[[head["accuracy"] - lo], [hi - head["accuracy"]]],
        fmt="s",
        color="black",
        capsize=4,
        label="headline layer, 95% CI (topics)",
    )
    ax.axhline(head["chance"], color="grey", ls="--", label=f"chance {head['chance']:.2f}")
    stability = a.probe["stability"]
    if stability:
        ax.plot(
            [r["to"] for r in stability],
            [r["mean_cosine"] for r in stability],
            color="#c87f55",
            lw=1,
            label="vector cosine with previous layer",
        )
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer (output of decoder block i)")
    ax.set_ylabel("accuracy / cosine")
    ax.set_title("emotion probe by layer (topic held out)")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def bridge_figure(a: EmotionsAnalysis) -> MplFigure | None:
    """Mean projection of each prompt cell's states on each emotion vector; None without a bridge."""
    b = a.bridge
    if not b:
        return None
    values = np.asarray([[np.nan if x is None else x for x in row] for row in b["mean_projection"]], float)
    fig = MplFigure(figsize=(10, 4.8), layout="constrained")
    ax = fig.subplots()
    limit = np.nanmax(np.abs(values)) or 1.0
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(
        range(len(b["emotions"])),
        [f"{e} ({c})" for e, c in zip(b["emotions"], a.cells, strict=True)],
        rotation=90,
    )
    ax.set_yticks(range(len(b["cells"])), b["cells"])
    ax.set_xlabel("emotion vector (its cell)")
    ax.set_ylabel("prompt cell")
    ax.set_title(f"mean projection of prompt states on emotion vectors, layer {b['layer']}")
    fig.colorbar(image, ax=ax, label="projection (centred h_first . unit vector)")
    return fig


def stories_umap_figure(a: EmotionsAnalysis) -> MplFigure | None:
    """UMAP of the story activations at the headline layer, coloured by emotion.

    None when the activations are not at hand (a result read back from emotions.json) or too few.
    """
    if a.story_activations is None or a.story_emotions is None:
        return None
    return umap_figure(
        a.story_activations,
        a.story_emotions,
        emotion_colours(list(a.emotions)),
        f"UMAP of story activations, layer {a.layer} (layout only, not a test)",
        seed=a.seed,
        legend_title="emotion (stories)",
    )


def draw(analysis: EmotionsAnalysis, out: Path | str) -> dict[str, list[Path]]:
    """Every figure that applies, as ``out/<name>.png`` and ``.svg``; paths by figure name (see FIGURES)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "vectors_similarity": similarity_figure,
        "vectors_pca": pca_figure,
        "vectors_probe": probe_figure,
        "vectors_bridge": bridge_figure,
        "vectors_umap": stories_umap_figure,
    }
    written: dict[str, list[Path]] = {}
    for name, make in figures.items():
        fig = make(analysis)
        if fig is not None:
            written[name] = _save(fig, out / name)
    return written
