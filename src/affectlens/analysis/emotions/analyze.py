"""Every emotion-vector analysis of one vectors run, as one typed result that serialises to emotions.json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from affectlens.analysis.emotions.axes import (
    affect_axes,
    kmeans_clusters,
    layer_stability,
    similarity_block,
    stability_summary,
)
from affectlens.analysis.emotions.bridge import bridge_from_run
from affectlens.analysis.emotions.common import LAYER_RULE, unit
from affectlens.analysis.emotions.implicit import implicit_test
from affectlens.analysis.emotions.probe import probe, probe_curve
from affectlens.cells import CellSet
from affectlens.conventions import headline_layer
from affectlens.errors import AffectlensError
from affectlens.store.atomic import json_ready
from affectlens.store.runs import VectorsRun, read_vectors


@dataclass
class EmotionsAnalysis:
    """The result of :func:`analyze_run`. The fields up to ``bridge`` are emotions.json, in its key order.

    Inner blocks stay the dicts the JSON holds (their keys are documented by the functions that make them:
    ``similarity_block``, ``affect_axes``, ``kmeans_clusters``, ``probe``, ``implicit_test``, ``bridge``).
    ``story_activations`` and ``story_emotions`` are for figures only and never serialised.
    """

    run: str
    model: dict[str, Any]
    layer: int
    layer_rule: str
    layers: list[int]
    layer_convention: str
    positions: Any
    seed: int
    n_boot: int
    n_permutations: int
    emotions: list[str]
    cells: list[str]
    valence: list[float]
    arousal: list[float]
    corpus_clusters: list[str]
    n_stories: int
    n_topics: int
    denoise: dict[str, Any]
    similarity: dict[str, Any]
    pca: dict[str, Any]
    kmeans: dict[str, Any]
    probe: dict[str, Any]  # headline, by_layer, stability, stability_summary
    logit_lens: dict[str, Any]
    implicit: dict[str, Any]
    bridge: dict[str, Any] | None
    story_activations: np.ndarray | None = field(default=None, repr=False)  # [n_stories, d], headline layer
    story_emotions: list[str] | None = field(default=None, repr=False)

    def to_json(self, figures: Mapping[str, Sequence[str | Path]]) -> dict[str, Any]:
        """What emotions.json holds: the serialised fields, JSON-ready, and ``figures`` as path strings."""
        data = json_ready({f.name: getattr(self, f.name) for f in fields(self) if f.name not in _FIGURE_ONLY})
        data["figures"] = {k: [str(p) for p in v] for k, v in figures.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmotionsAnalysis:
        """Back from an emotions.json dict; the figure-only arrays are then None."""
        return cls(**{f.name: data.get(f.name) for f in fields(cls) if f.name not in _FIGURE_ONLY})


_FIGURE_ONLY = frozenset({"story_activations", "story_emotions"})


def _headline(vr: VectorsRun, layer: int | None) -> tuple[int, str]:
    if layer is None:
        return headline_layer(int(vr.entry["model"]["n_layers"]), vr.layers), LAYER_RULE
    if layer not in vr.layers:
        raise AffectlensError(f"layer {layer} is not in the run (stored layers: {vr.layers})")
    return layer, "chosen by the caller"


def _denoise_block(vr: VectorsRun, h: int) -> dict[str, Any]:
    return {
        "variance": vr.entry["identity"]["config"]["denoise_variance"],
        "n_components": dict(
            zip(map(str, vr.denoise["layer"]), map(int, vr.denoise["n_components"]), strict=True)
        ),
        "n_components_at_layer": int(vr.denoise["n_components"].iloc[h]),
        "raw_vs_denoised_mean_cosine": float(
            np.mean(np.sum(unit(vr.raw[:, h]) * unit(vr.denoised[:, h]), axis=-1))
        ),
    }


def _logit_lens_block(vr: VectorsRun) -> dict[str, Any]:
    lens = vr.logit_lens[vr.logit_lens["vector"] == "denoised"]
    return {
        "layer": int(lens["layer"].iloc[0]) if len(lens) else None,
        "rule": vr.entry.get("logit_lens"),
        "emotions": {
            e: {d: g.sort_values("rank")["token"].tolist() for d, g in rows.groupby("direction")}
            for e, rows in lens.groupby("emotion", sort=False)
        },
    }


def analyze_run(
    run: str,
    *,
    layer: int | None = None,
    n_permutations: int = 1000,
    n_boot: int = 1000,
    seed: int = 0,
    elicitation_run: str | None = None,
    cells: CellSet | None = None,
) -> EmotionsAnalysis:
    """Every emotion-vector analysis of a vectors run folder (and the bridge, given an elicitation run).

    ``layer`` None: the headline layer by :data:`LAYER_RULE`. ``cells`` (the bridge's cell set) None: the
    set the elicitation run's manifest names, else the default set. Reads run folders only.
    """
    vr = read_vectors(run)
    layer, rule = _headline(vr, layer)
    h = vr.layers.index(layer)
    emotions = vr.emotions
    names = list(emotions["name"])
    vecs = vr.denoised[:, h]
    stories = vr.stories
    acts = vr.activations["stories"]
    y, topics = stories["emotion"].to_numpy(), stories["topic"].to_numpy()
    labels = stories["emotion"].tolist()
    mu = np.stack([acts[:, h][y == name].mean(axis=0) for name in names]).mean(axis=0)
    tests = dict(n_boot=n_boot, n_permutations=n_permutations, seed=seed)

    return EmotionsAnalysis(
        run=str(run),
        model=vr.entry["model"],
        layer=layer,
        layer_rule=rule,
        layers=vr.layers,
        layer_convention=vr.layer_convention,
        positions=vr.entry.get("positions"),
        seed=seed,
        n_boot=n_boot,
        n_permutations=n_permutations,
        emotions=names,
        cells=list(emotions["cell"]),
        valence=emotions["valence"].tolist(),
        arousal=emotions["arousal"].tolist(),
        corpus_clusters=list(emotions["cluster"]),
        n_stories=len(stories),
        n_topics=int(stories["topic"].nunique()),
        denoise=_denoise_block(vr, h),
        similarity=similarity_block(vecs),
        pca=affect_axes(vecs, emotions["valence"], emotions["arousal"], **tests),
        kmeans=kmeans_clusters(vecs, names, seed=seed, reference=list(emotions["cluster"])),
        probe={
            "headline": probe(acts[:, h], labels, topics, names, **tests),
            "by_layer": probe_curve(acts, labels, topics, vr.layers, seed=seed),
            "stability": layer_stability(vr.denoised, vr.layers),
            "stability_summary": stability_summary(vr.denoised, vr.layers, n_boot=n_boot, seed=seed),
        },
        logit_lens=_logit_lens_block(vr),
        implicit=implicit_test(
            vr.activations["implicit"][:, h],
            list(vr.implicit["emotion"]),
            mu,
            vecs,
            names,
            list(vr.implicit["id"]),
            **tests,
        ),
        bridge=(bridge_from_run(vr, layer, elicitation_run, cells, **tests) if elicitation_run else None),
        story_activations=np.ascontiguousarray(acts[:, h]),  # a copy: the other layers can go
        story_emotions=labels,
    )
