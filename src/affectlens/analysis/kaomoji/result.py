"""The typed result of the kaomoji analyses, and the one way it becomes ``analysis.json``.

Besides what is serialised, each run carries what the figures draw and the JSON leaves out (the prompts
and their PC scores), and the whole carries the cell set (for colours).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from affectlens.cells import CellSet
from affectlens.store.atomic import json_ready

FigurePaths = dict[str, dict[str, str]]  # figure key -> {"png": path, "svg": path}, relative to the output
Block = dict[str, Any]  # one analysis's JSON block (thin, or its numbers)
_NOT_SERIALISED = {"json": False}


@dataclass
class RunAnalysis:
    """Every analysis of one run; the serialised fields, in order, are its entry in ``analysis.json``."""

    label: str = field(metadata=_NOT_SERIALISED)  # the entry's key, not a field of it
    path: str
    spec: str
    n_prompts: int
    n_samples: int
    layers: list[int]  # [] without hidden states
    headline_layer: int | None  # None without hidden states
    layer_rule: str
    hidden_to_cell: Block
    face_to_cell: Block
    hidden_to_face: Block
    geometry: Block
    face_similarity: Block
    # For the figures:
    prompts: pd.DataFrame = field(repr=False, metadata=_NOT_SERIALISED)  # id, cell, ... in h_first row order
    scores: np.ndarray | None = field(default=None, repr=False, metadata=_NOT_SERIALISED)  # [n_prompts, 2]
    hidden: np.ndarray | None = field(default=None, repr=False, metadata=_NOT_SERIALISED)  # [n_prompts, d]
    # False for a run without hidden states (an API model); ``skipped`` then names each analysis it did not
    # get (those of HIDDEN_ANALYSES) with why. Both are serialised, after face_similarity.
    hidden_states: bool = True
    skipped: dict[str, str] = field(default_factory=dict)

    def to_json(self, figures: FigurePaths) -> dict[str, Any]:
        """The run's entry in ``analysis.json`` (not yet json-ready), ``figures`` last."""
        entry = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("json", True)}
        return entry | {"figures": figures}


@dataclass
class KaomojiAnalysis:
    """The kaomoji analyses of some runs: per run (by unique label, in the order given) and per pair."""

    settings: dict[str, Any]
    runs: dict[str, RunAnalysis]
    alignment: list[Block]  # one per pair of runs with hidden states, the earlier run the reference
    cells: CellSet = field(repr=False)  # not serialised (its name is in settings): colours for the figures

    def to_json(self, figures: dict[str, FigurePaths], alignment_figures: list[FigurePaths | None]) -> dict:
        """What ``analysis.json`` holds, json-ready: ``figures`` by run label, ``alignment_figures`` one per
        pair (None for a pair without a figure), both with paths relative to the output folder."""
        if len(alignment_figures) != len(self.alignment):
            raise ValueError(
                f"{len(alignment_figures)} alignment figure entries for {len(self.alignment)} pairs of runs"
            )
        pairs = [
            al if paths is None else {**al, "figures": paths}
            for al, paths in zip(self.alignment, alignment_figures, strict=True)
        ]
        return json_ready(
            {
                "analysis": "kaomoji",
                "settings": self.settings,
                "runs": {label: run.to_json(figures.get(label, {})) for label, run in self.runs.items()},
                "alignment": pairs,
            }
        )
