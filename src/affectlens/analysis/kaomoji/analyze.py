"""``analyze_runs``: every kaomoji analysis of some elicitation runs, computed, nothing written."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from threadpoolctl import threadpool_limits

from affectlens.analysis.kaomoji.alignment import align
from affectlens.analysis.kaomoji.common import (
    CLASSIFIER,
    CV,
    HIDDEN_ANALYSES,
    INTERVAL,
    LAYER_RULE,
    MIN_ALIGN_CELLS,
    MIN_FACES,
    MIN_PROMPTS,
    MIN_SAMPLES,
    NO_HIDDEN,
    SKIPPED_RULE,
    skipped,
)
from affectlens.analysis.kaomoji.face_cell import face_to_cell
from affectlens.analysis.kaomoji.geometry import face_similarity, geometry
from affectlens.analysis.kaomoji.hidden_cell import hidden_to_cell
from affectlens.analysis.kaomoji.hidden_face import hidden_to_face
from affectlens.analysis.kaomoji.loading import Run, load_runs
from affectlens.analysis.kaomoji.permutations import RELABEL_RULE
from affectlens.analysis.kaomoji.result import KaomojiAnalysis, RunAnalysis
from affectlens.cells import CellSet
from affectlens.errors import AffectlensError
from affectlens.progress import progress

FACE_RULES = {
    "well_formed": "well-formed faces only: a reply that opens with bracketed noise counts as one without a face",
    "all": "every face a reply opens with, well-formed or not",
}


def _settings(
    cells: CellSet, *, n_permutations: int, n_boot: int, seed: int, floor: int, layer: int | None, faces: str
) -> dict[str, Any]:
    return {
        "faces": FACE_RULES[faces],
        "n_permutations": n_permutations,
        "n_boot": n_boot,
        "seed": seed,
        "floor": floor,
        "layer": layer,
        "layer_rule": LAYER_RULE if layer is None else f"layer {layer}, set by the caller",
        "classifier": CLASSIFIER,
        "cv": CV,
        "interval": INTERVAL,
        "p_value": "(k + 1) / (n_permutations + 1), k = null scores at least as extreme",
        "cell_relabelling": f"geometry correlations and alignment: {RELABEL_RULE}",
        "face_to_cell_estimators": "face identity (the top-level face_to_cell keys) and face characters "
        "(face_to_cell.by_characters)",
        "hidden_to_face_nulls": "hidden states shuffled between all prompts (p_value: does the state predict "
        "the face?) and only within each cell (within_cell: does it predict the face beyond the cell?)",
        "thin_thresholds": {
            "min_prompts": MIN_PROMPTS,
            "min_samples": MIN_SAMPLES,
            "min_faces": MIN_FACES,
            "min_alignment_cells": MIN_ALIGN_CELLS,
        },
        "cells": cells.name,
        "skipped": SKIPPED_RULE,
    }


def _describe(run: Run, **blocks: Any) -> RunAnalysis:
    return RunAnalysis(
        label=run.label,
        path=run.path,
        spec=run.spec,
        n_prompts=len(run.prompts),
        n_samples=len(run.samples),
        layers=run.layers,
        headline_layer=run.layer,
        layer_rule=run.layer_rule,
        prompts=run.prompts,
        hidden_states=run.has_hidden,
        **blocks,
    )


def _analyze_run(
    run: Run, cells: CellSet, *, floor: int, tick: Callable[[], Any], **resampling: int
) -> RunAnalysis:
    """Every per-run analysis; ``resampling`` is n_boot, n_permutations and seed. A run without hidden
    states gets face -> cell, and a skipped block (with why) for each analysis that reads h_first."""
    if run.hidden is None:
        f2c = face_to_cell(run, cells, **resampling)
        tick()
        reasons = {key: NO_HIDDEN for key in HIDDEN_ANALYSES}
        reasons["alignment"] = f"{NO_HIDDEN}: left out of the cross-run alignment"
        blocks = {key: skipped(reasons[key]) for key in HIDDEN_ANALYSES if key != "alignment"}
        return _describe(run, face_to_cell=f2c, skipped=reasons, **blocks)
    h2c = hidden_to_cell(run, cells, tick=tick, **resampling)
    f2c = face_to_cell(run, cells, **resampling)
    tick()
    h2f = hidden_to_face(run, floor=floor, **resampling)
    tick()
    geo = geometry(run, cells, floor=floor, **resampling)
    sim = face_similarity(run, cells, geo.standardised, floor)
    tick()
    return _describe(
        run,
        hidden_to_cell=h2c,
        face_to_cell=f2c,
        hidden_to_face=h2f,
        geometry=geo.summary,
        face_similarity=sim,
        scores=geo.scores,
        hidden=run.hidden[:, run.index],
    )


def analyze_runs(
    runs: list[str],
    *,
    cells: CellSet | None = None,
    n_permutations: int = 1000,
    n_boot: int = 1000,
    seed: int = 0,
    layer: int | None = None,
    floor: int = 3,
    faces: str = "well_formed",
    quiet: bool = False,
) -> KaomojiAnalysis:
    """Kaomoji analyses of elicitation run folders; reads them, writes nothing.

    Per run (keyed by its model spec, made unique with ``#2``, ``#3``): ``hidden_to_cell`` (every stored
    layer, all layers concatenated, and the headline layer with a permutation test; ``layer`` overrides the
    fixed rule round(2/3 x (n_layers - 1))), ``face_to_cell`` (by face identity, and by the face's characters
    in ``by_characters``), ``hidden_to_face`` (faces emitted >= ``floor`` times; at most 200 permutations,
    shuffling states between all prompts and, in ``within_cell``, only within cells), ``geometry``
    (standardised PCA, PC-valence/arousal correlations over cell centroids with cells relabelled, face
    centroids) and ``face_similarity``. ``alignment`` holds every pair of runs with hidden states (the earlier
    run is the reference), on raw and on z-scored h_first (``standardised``). A run without hidden states (an
    API model) gets ``face_to_cell`` only: its other blocks are skipped ones, and its ``skipped`` names each
    analysis it did not get (``hidden_to_cell``, ``hidden_to_face``, ``geometry``, ``face_similarity``,
    ``alignment``) with why. Intervals are 95% bootstrap percentile
    intervals (``n_boot`` resamples of prompts; of cells for the geometry correlations); p-values are
    (k + 1) / (n_permutations + 1), except that cell relabellings are enumerated when k! <= n_permutations
    and no p is reported below its exact floor. ``cells=None`` takes the cell set the first run's elicit stage
    recorded (pad9 where it recorded none). ``faces="well_formed"`` (the default) counts only well-formed
    faces as faces; ``"all"`` counts whatever a reply opens with.
    """
    if not runs:
        raise AffectlensError("analyze needs at least one run folder")
    if n_boot < 1 or n_permutations < 0:
        raise AffectlensError("n_boot must be >= 1 and n_permutations >= 0")
    floor = max(int(floor), 1)
    loaded, cells = load_runs(runs, layer, cells, faces)
    resampling = dict(n_boot=n_boot, n_permutations=n_permutations, seed=seed)
    results: dict[str, RunAnalysis] = {}
    alignment = []
    # Every array here is small: BLAS threads cost more in hand-offs than they save (see stats.py).
    with progress(quiet) as bar, threadpool_limits(limits=1):
        for run in loaded:
            task = bar.add_task(f"kaomoji {run.label}", total=len(run.layers) + 5 if run.has_hidden else 1)
            tick = functools.partial(bar.advance, task, 1)
            results[run.label] = _analyze_run(run, cells, floor=floor, tick=tick, **resampling)
        with_hidden = [run for run in loaded if run.has_hidden]  # alignment compares hidden states only
        for i, a in enumerate(with_hidden):
            for b in with_hidden[i + 1 :]:
                alignment.append(align(a, b, cells, **resampling))
    return KaomojiAnalysis(
        settings=_settings(
            cells,
            n_permutations=n_permutations,
            n_boot=n_boot,
            seed=seed,
            floor=floor,
            layer=layer,
            faces=faces,
        ),
        runs=results,
        alignment=alignment,
        cells=cells,
    )
