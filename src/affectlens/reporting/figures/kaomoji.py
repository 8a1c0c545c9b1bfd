"""Figures of the kaomoji analyses: depth curve, confusion, PCA of prompts and faces, face similarity,
cross-run alignment. ``draw`` saves them as PNG and SVG under ``out/figures`` and returns their paths."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure as MplFigure

from affectlens.analysis.kaomoji import KaomojiAnalysis
from affectlens.analysis.kaomoji.result import FigurePaths
from affectlens.cells import CellSet
from affectlens.reporting.figures.umap import umap_figure
from affectlens.store.atomic import write_figure

_SAVEFIG = {"png": {"dpi": 150}, "svg": {"metadata": {"Date": None}}}  # no date: the same SVG every run


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def _stems(labels: list[str]) -> dict[str, str]:
    """File-name stems by run label, unique even where two labels slugify alike."""
    stems: dict[str, str] = {}
    for i, label in enumerate(labels):
        stem = _slug(label)
        stems[label] = stem if stem not in stems.values() else f"{stem}-{i + 1}"
    return stems


def _save(fig: MplFigure, out: Path, stem: str) -> dict[str, str]:
    """Write figures/<stem>.png and .svg under ``out``; paths come back relative to ``out``."""
    paths = {}
    # A fixed hash salt keeps SVG element ids, and so the file, the same from run to run.
    with rc_context({"svg.hashsalt": "affectlens"}), warnings.catch_warnings():
        # Kaomoji use glyphs the bundled fonts may lack; a box in a figure is fine, a warning per glyph is not.
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)
        warnings.filterwarnings(
            "ignore", message=r"Matplotlib currently does not support", category=UserWarning
        )
        for ext, savefig in _SAVEFIG.items():
            rel = f"figures/{stem}.{ext}"
            write_figure(fig, out / rel, **savefig)
            paths[ext] = rel
    return paths


def _label_axes(ax: Any, xlabel: str, ylabel: str, title: str, **legend: Any) -> None:
    """Axis labels, a small title and the legend: the finish of every scatter here."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best", **legend)


def depth_figure(label: str, h2c: dict) -> MplFigure:
    """Out-of-fold cell accuracy by layer with its bands, chance, majority and all-layers lines."""
    fig = MplFigure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.subplots()
    curve = h2c["by_layer"]
    x = [row["layer"] for row in curve]
    acc = np.array([row["accuracy"] for row in curve])
    lo = np.array([row["accuracy_ci"][0] for row in curve])
    hi = np.array([row["accuracy_ci"][1] for row in curve])
    ax.fill_between(x, lo, hi, color="#5194da", alpha=0.25, linewidth=0, label="95% bootstrap interval")
    ax.plot(x, acc, color="#5194da", marker="o", markersize=3, label="accuracy (out-of-fold)")
    ax.axhline(curve[0]["chance"], color="#919191", linestyle=":", label="chance (1 / cells)")
    ax.axhline(curve[0]["majority_baseline"], color="#919191", linestyle="--", label="majority baseline")
    ax.axhline(
        h2c["all_layers"]["accuracy"], color="#c87f55", linestyle="-.", label="all layers concatenated"
    )
    ax.axvline(h2c["headline"]["layer"], color="black", linewidth=0.8, label="headline layer")
    ax.set_xlabel("layer (residual stream after decoder block i)")
    ax.set_ylabel("cell accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(f"{label}: cell from h_first, by depth (n = {curve[0]['n']} prompts)")
    ax.legend(fontsize=7, loc="best")
    return fig


def _confusion_panel(fig: MplFigure, ax: Any, result: dict, cells: CellSet, title: str) -> None:
    labels = result["labels"]
    conf = np.asarray(result["confusion"], dtype=float)
    share = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1.0)
    image = ax.imshow(share, vmin=0.0, vmax=1.0, cmap="Blues")
    for (i, j), count in np.ndenumerate(conf):
        if count:
            ax.text(
                j,
                i,
                f"{int(count)}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for tick, code in zip(ax.get_xticklabels(), labels, strict=True):
        tick.set_color(cells.colours[code])
    for tick, code in zip(ax.get_yticklabels(), labels, strict=True):
        tick.set_color(cells.colours[code])
    ax.set_xlabel("predicted cell")
    ax.set_ylabel("true cell")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the true cell's rows", shrink=0.8)


def confusion_figure(label: str, h2c: dict, f2c: dict, cells: CellSet) -> MplFigure | None:
    """Confusion of hidden state -> cell at the headline layer, beside face -> cell (by identity, by
    characters), each where it is not thin (or skipped: a run without hidden states); None with no panel."""
    panels = []
    if not h2c.get("thin", True):
        head = h2c["headline"]
        panels.append((head, f"hidden state → cell, layer {head['layer']} (n = {head['n']} prompts)"))
    if not f2c.get("thin", True):
        panels.append((f2c, f"face identity → cell (n = {f2c['n']} samples with a face)"))
    chars = f2c.get("by_characters", {})
    if not chars.get("thin", True):
        panels.append((chars, f"face characters → cell (n = {chars['n']} samples with a face)"))
    if not panels:
        return None
    fig = MplFigure(figsize=(5.2 * len(panels), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (result, title) in zip(axes, panels, strict=True):
        _confusion_panel(fig, ax, result, cells, title)
    fig.suptitle(f"{label}: out-of-fold confusion (counts; colour = row share)", fontsize=10)
    return fig


def pca_figure(label: str, geo: dict, scores: np.ndarray, prompts: pd.DataFrame, cells: CellSet) -> MplFigure:
    """Each prompt at its PC1/PC2 ``scores``, coloured by cell, with the cell centroids."""
    fig = MplFigure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    y = prompts["cell"].to_numpy(dtype=str)
    for code in geo["cell_centroids"]:
        pts = scores[y == code]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=14,
            alpha=0.55,
            color=cells.colours[code],
            linewidths=0,
            label=f"{code} ({cells[code].name}, n = {len(pts)})",
        )
    for code, xy in geo["cell_centroids"].items():
        ax.scatter(
            [xy[0]], [xy[1]], s=140, color=cells.colours[code], edgecolors="black", linewidths=1.2, zorder=3
        )
        ax.annotate(code, xy, xytext=(5, 5), textcoords="offset points", fontsize=8, weight="bold")
    ev = geo["explained_variance"]
    _label_axes(
        ax,
        f"PC1 ({100 * ev[0]['ratio']:.1f}% of variance; sign-aligned with {geo['pairing']['PC1']})",
        f"PC2 ({100 * ev[1]['ratio']:.1f}%; sign-aligned with {geo['pairing']['PC2']})",
        f"{label}: prompts at layer {geo['layer']} (standardised h_first; large dots = cell centroids)",
        markerscale=1.5,
    )
    return fig


def faces_figure(label: str, geo: dict, scores: np.ndarray, cells: CellSet) -> MplFigure:
    """Each frequent face at the mean PC1/PC2 of its samples, over the prompts in grey."""
    fig = MplFigure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    ax.scatter(scores[:, 0], scores[:, 1], s=8, color="#d9d9d9", linewidths=0, label="prompts")
    faces = geo["faces"]["faces"]
    for f in faces:
        ax.scatter(
            [f["pc1"]],
            [f["pc2"]],
            s=20 + 8 * math.sqrt(f["n"]),
            color=cells.colours[f["majority_cell"]],
            edgecolors="black",
            linewidths=0.5,
            zorder=3,
        )
        ax.annotate(f["face"], (f["pc1"], f["pc2"]), xytext=(4, 4), textcoords="offset points", fontsize=7)
    shown = {f["majority_cell"] for f in faces}
    for code in (c for c in cells.codes if c in shown):
        ax.scatter([], [], color=cells.colours[code], label=f"majority cell {code}")
    _label_axes(
        ax,
        "PC1 (same axes as the prompt scatter)",
        "PC2",
        f"{label}: faces at the mean h_first of their samples (faces with n >= {geo['faces']['floor']})",
    )
    return fig


def face_similarity_figure(label: str, sim: dict, cells: CellSet) -> MplFigure:
    """Heat map of face-to-face cosine similarity, ticks coloured by each face's majority cell."""
    n = len(sim["faces"])
    size = min(4.0 + 0.28 * n, 16.0)
    fig = MplFigure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.asarray(sim["matrix"], dtype=float), vmin=-1.0, vmax=1.0, cmap="RdBu_r")
    ticks = [f"{f} (n={c})" for f, c in zip(sim["faces"], sim["n"], strict=True)]
    ax.set_xticks(range(n), ticks, rotation=90, fontsize=7)
    ax.set_yticks(range(n), ticks, fontsize=7)
    for axis_ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, code in zip(axis_ticks, sim["majority_cell"], strict=True):
            tick.set_color(cells.colours[code])
    fig.colorbar(image, ax=ax, label="cosine similarity of centred per-face mean h_first", shrink=0.8)
    ax.set_title(
        f"{label}: face similarity at layer {sim['layer']} (labels coloured by majority cell)", fontsize=9
    )
    return fig


def alignment_figure(al: dict, cells: CellSet) -> MplFigure:
    """The reference run's cell centroids and the other run's rotated onto them, joined cell by cell."""
    fig = MplFigure(figsize=(6.0, 5.2), layout="constrained")
    ax = fig.subplots()
    ref, aligned = np.asarray(al["reference_coords"]), np.asarray(al["aligned_coords"])
    for i, code in enumerate(al["cells"]):
        colour = cells.colours[code]
        ax.plot([ref[i, 0], aligned[i, 0]], [ref[i, 1], aligned[i, 1]], color=colour, linewidth=1)
        ax.scatter([ref[i, 0]], [ref[i, 1]], s=90, color=colour, edgecolors="black", zorder=3)
        ax.scatter(
            [aligned[i, 0]],
            [aligned[i, 1]],
            s=90,
            marker="^",
            facecolors="white",
            edgecolors=colour,
            linewidths=1.5,
            zorder=3,
        )
        ax.annotate(code, (ref[i, 0], ref[i, 1]), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.scatter([], [], s=60, color="#919191", edgecolors="black", label=f"{al['reference']} (reference)")
    ax.scatter(
        [], [], s=60, marker="^", facecolors="white", edgecolors="#919191", label=f"{al['other']} (aligned)"
    )
    _label_axes(
        ax,
        "centroid axis 1 (reference run)",
        "centroid axis 2",
        f"cell centroids after Procrustes ({al['n_prompts']} shared prompts, {al['n_cells']} cells)",
    )
    return fig


def draw(analysis: KaomojiAnalysis, out: Path) -> tuple[dict[str, FigurePaths], list[FigurePaths | None]]:
    """Every figure the analysis supports, under ``out/figures``: (paths by run label, paths per pair of
    runs, None for a pair that was skipped or thin), ready for ``KaomojiAnalysis.to_json``."""
    out, cells = Path(out), analysis.cells
    stems = _stems(list(analysis.runs))
    figures: dict[str, FigurePaths] = {}
    for label, run in analysis.runs.items():
        stem, made = stems[label], {}
        h2c, geo, sim = run.hidden_to_cell, run.geometry, run.face_similarity
        if not h2c["thin"]:
            made["depth"] = _save(depth_figure(label, h2c), out, f"{stem}-depth")
        # Without hidden states the confusion figure shows face -> cell alone.
        if (h2c.get("skipped") or not h2c["thin"]) and (
            confusion := confusion_figure(label, h2c, run.face_to_cell, cells)
        ) is not None:
            made["confusion"] = _save(confusion, out, f"{stem}-confusion")
        if not geo["thin"] and run.scores is not None:
            made["pca"] = _save(pca_figure(label, geo, run.scores, run.prompts, cells), out, f"{stem}-pca")
            if not geo["faces"]["thin"]:
                made["faces_pca"] = _save(
                    faces_figure(label, geo, run.scores, cells), out, f"{stem}-faces-pca"
                )
        umap = (
            None
            if run.hidden is None
            else umap_figure(
                run.hidden,
                list(run.prompts["cell"]),
                cells.colours,
                f"{label}: UMAP of h_first, layer {run.headline_layer}",
            )
        )
        if umap is not None:
            made["umap"] = _save(umap, out, f"{stem}-umap")
        if not sim["thin"]:
            made["face_similarity"] = _save(
                face_similarity_figure(label, sim, cells), out, f"{stem}-face-similarity"
            )
        figures[label] = made
    pairs: list[FigurePaths | None] = []
    for al in analysis.alignment:
        if al.get("skipped") or al.get("thin"):
            pairs.append(None)
            continue
        stem = f"align-{stems[al['reference']]}--{stems[al['other']]}"
        pairs.append({"alignment": _save(alignment_figure(al, cells), out, stem)})
    return figures, pairs
