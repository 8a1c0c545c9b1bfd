"""The bridge to self-report: do elicitation prompts' states project onto the vectors of their own cell?"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from affectlens.analysis.emotions.common import unit
from affectlens.cells import CellSet, default_cells, get_cell_set
from affectlens.errors import AffectlensError
from affectlens.stats import bootstrap_ci, permutation_test
from affectlens.store.manifest import RunStore
from affectlens.store.runs import VectorsRun, read_elicit


def bridge(
    h_first: np.ndarray,
    prompt_cells: Sequence[str],
    vectors: np.ndarray,
    names: Sequence[str],
    emotion_cells: Sequence[str],
    cell_codes: Sequence[str],
    *,
    n_boot: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Project prompts' states on the unit vectors; does the top emotion's cell match the prompt's cell?

    ``h_first``: [n_prompts, d], centred here by its mean over prompts (the constant part of the state would
    otherwise favour the same emotion for every prompt). Returns the mean projection per cell
    ([n_cells, n_emotions]), the match rate with a bootstrap interval over prompts, a permutation p (prompt
    cells shuffled among prompts), the permutation null mean (chance that keeps how often each cell is
    predicted), and ``chance_uniform``: the expected match when the top emotion is drawn uniformly, i.e. the
    mean over prompts of (emotions in the prompt's cell) / n_emotions.
    """
    h = np.asarray(h_first, dtype=np.float64)
    proj = (h - h.mean(axis=0)) @ unit(vectors).T  # [P, E]
    prompt_cells = np.asarray(prompt_cells)
    emotion_cells = np.asarray(emotion_cells)
    predicted = emotion_cells[np.argmax(proj, axis=1)]
    match = (predicted == prompt_cells).astype(float)
    per_cell = np.array(
        [
            proj[prompt_cells == c].mean(axis=0) if np.any(prompt_cells == c) else np.full(len(names), np.nan)
            for c in cell_codes
        ]
    )
    share = {c: float(np.mean(emotion_cells == c)) for c in cell_codes}
    rows = np.arange(len(h))
    lo, hi = bootstrap_ci(lambda idx: match[idx].mean(), rows, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {
        "n_prompts": len(h),
        "match_rate": float(match.mean()),
        "lo": lo,
        "hi": hi,
        "n_boot": n_boot,
        "chance_uniform": float(np.mean([share.get(c, 0.0) for c in prompt_cells])),
        "cells": list(cell_codes),
        "emotions": list(names),
        "mean_projection": [[None if math.isnan(x) else float(x) for x in row] for row in per_cell],
        "top_emotion_counts": {
            str(k): int(v)
            for k, v in zip(
                *np.unique(np.asarray(names)[np.argmax(proj, axis=1)], return_counts=True), strict=True
            )
        },
        "p_value": None,
        "null_mean": None,
    }
    if n_permutations > 0:
        test = permutation_test(
            lambda y: float(np.mean(predicted == y)),
            prompt_cells,
            rows,
            float(match.mean()),
            n_permutations=n_permutations,
            seed=seed,
        )
        out.update(
            p_value=test.p_value,
            null_mean=float(test.null.mean()),
            n_permutations=test.n_permutations,
            min_attainable_p=test.min_attainable_p,
        )
    return out


def run_cells(entry: dict[str, Any], cells: CellSet | None = None) -> CellSet:
    """``cells`` if given, else the set the elicitation run's manifest entry names, else the default set."""
    if cells is not None:
        return cells
    return get_cell_set(entry["cells"]) if entry.get("cells") else default_cells()


def bridge_from_run(
    vr: VectorsRun, layer: int, elicitation_run: str, cells: CellSet | None = None, **kw: Any
) -> dict[str, Any]:
    """:func:`bridge` on an elicitation run of the same model, at ``layer``; ``kw`` goes to :func:`bridge`.

    Refuses a run of another model (fingerprint), another layer convention, without ``layer``, of another
    width, or whose emotions or prompts carry cells outside the cell set.
    """
    er = read_elicit(elicitation_run)
    ours = vr.entry["identity"]["model"]["fingerprint"]
    theirs = er.entry["identity"]["model"]["fingerprint"]
    if ours != theirs:
        raise AffectlensError(
            f"{elicitation_run} comes from another model ({theirs}) than the vectors run ({ours})"
        )
    convention = RunStore(elicitation_run).manifest().get("layer_convention")
    if convention != vr.layer_convention:
        raise AffectlensError(f"{elicitation_run} uses another layer convention ({convention!r})")
    elicit_layers = [int(x) for x in er.entry["layers"]]
    if layer not in elicit_layers:
        raise AffectlensError(f"{elicitation_run} did not capture layer {layer} (it has {elicit_layers})")
    h = er.h_first[:, elicit_layers.index(layer)].numpy()
    if h.shape[-1] != vr.denoised.shape[-1]:
        raise AffectlensError(
            f"{elicitation_run}: width {h.shape[-1]} differs from the vectors' {vr.denoised.shape[-1]}"
        )
    cell_set = run_cells(er.entry, cells)
    emotion_cells, prompt_cells = list(vr.emotions["cell"]), list(er.prompts["cell"])
    # A cell outside the set would never match, silently pulling the rate towards zero.
    if unknown := sorted(set(emotion_cells + prompt_cells) - set(cell_set.codes)):
        raise AffectlensError(f"cells {unknown} are not in the cell set {cell_set.name!r} ({cell_set.codes})")
    result = bridge(
        h,
        prompt_cells,
        vr.denoised[:, vr.layers.index(layer)],
        list(vr.emotions["name"]),
        emotion_cells,
        cell_set.codes,
        **kw,
    )
    result["run"] = str(elicitation_run)
    result["layer"] = layer
    result["cell_set"] = cell_set.name
    return result
