"""Encoders from run folders, and their comparison with the faces a model actually emitted.

An elicitation run is an encoder through its emissions (each face's empirical cell distribution, with its emit
count); an encoder run (``ENCODER_KINDS``) through its face-by-cell table: a likelihood run is an LM-head
encoder, an introspect or synthesize run an API judge's reading of the faces. All load into the one table
shape of ``affectlens.analysis.similarity``, named ``"<spec> (<kind>)"``. Only generations are read, never
h_first, so an API model's elicitation run (no hidden states) serves as the truth like any other. ``compare_runs`` computes and returns a :class:`Comparison`; it draws and
writes nothing (``affectlens.api.compare`` writes its files).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affectlens.analysis import ensembles, similarity
from affectlens.cells import CellSet, get_cell_set
from affectlens.errors import AffectlensError
from affectlens.store.runs import (
    ELICIT,
    ENCODER_KINDS,
    INTROSPECT,
    emitted_faces,
    finished_stages,
    read_face_cells,
    read_generations,
)

__all__ = ["Comparison", "compare_runs", "emitted_faces", "load_encoder", "run_cells"]


@dataclass
class Comparison:
    """Every encoder against the emission ground truth, pairwise similarity, and the best ensemble."""

    truth: str  # the ground truth's encoder name
    floor: int
    n_boot: int
    seed: int
    cells: CellSet
    encoders: dict[str, pd.DataFrame]  # by unique name, in the order the runs were given
    kinds: dict[str, str]  # each encoder's kind (likelihood, introspect, synthesize), by its name
    rows: list[dict[str, Any]]  # one compare_to_truth result per encoder ("encoder"; face_set "own")
    pairwise: pd.DataFrame  # the truth and every encoder, on the truth's faces at the floor
    ensembles: pd.DataFrame | None = None  # subset_search's ranking (two or more encoders; face_set "common")
    lookup: pd.DataFrame | None = None  # the best ensemble's lookup table, indexed by face
    # The best ranking row with its held-out score, baselines and the attrs saying how it was held out; or
    # {"thin": True, "reason": ...}
    best_ensemble: dict[str, Any] | None = None
    common_rows: list[dict[str, Any]] | None = None  # each single encoder on the common faces


def _source(run: Path | str, kinds: tuple[str, ...] = (*ENCODER_KINDS, ELICIT)) -> tuple[str, dict[str, Any]]:
    """(stage, manifest entry) that a run is read from as an encoder: the first of ``kinds`` it finished."""
    stages = finished_stages(run)
    for kind in kinds:
        if kind in stages:
            return kind, stages[kind]
    raise AffectlensError(f"{run} has no finished {', '.join(kinds)} stage to read faces from")


def run_cells(run: Path | str) -> CellSet:
    """The cell set a run was made with: the one its manifest entry names (pad9 where none is recorded)."""
    _, entry = _source(run)
    return get_cell_set(entry.get("cells", "pad9"))


def load_encoder(run: Path | str, cells: CellSet | None = None, *, emitted: bool = False
                 ) -> tuple[str, pd.DataFrame]:  # fmt: skip
    """(name, encoder table) of a run folder: its encoder stage (likelihood, introspect or synthesize) if it
    has one, named ``"<spec> (<kind>)"``, else its emissions, ``"<spec> (emitted)"`` (``emitted=True`` reads
    the emissions of a folder that holds both). Faces whose row has no positive finite mass (a judge that
    gave no answer) are left out.

    ``cells`` defaults to the run's own cell set (:func:`run_cells`).
    """
    kind, entry = _source(run, (ELICIT,) if emitted else (*ENCODER_KINDS, ELICIT))
    cells = cells or get_cell_set(entry.get("cells", "pad9"))
    spec = entry["identity"]["model"]["spec"]
    if kind == ELICIT:
        return f"{spec} (emitted)", similarity.emission_encoder(read_generations(run), cells)
    frame = read_face_cells(run)
    if missing := [code for code in cells.codes if code not in frame.columns]:
        raise AffectlensError(f"{run}: face table lacks the {cells.name} cells {', '.join(missing)}")
    frame = frame[cells.codes].astype(float)
    total = frame.sum(axis=1)
    usable = np.isfinite(frame.to_numpy()).all(axis=1) & (total.to_numpy() > 0)
    frame = frame[usable].div(total[usable], axis=0)
    frame["n"] = 0
    method = entry["identity"].get("config", {}).get("method")  # introspection: schema or logprobs
    return f"{spec} ({kind} {method})" if kind == INTROSPECT and method else f"{spec} ({kind})", frame


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out


def compare_runs(
    truth_run: Path | str,
    encoder_runs: list[str],
    *,
    floor: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    cells: CellSet | None = None,
) -> Comparison:
    """Each encoder run against the faces ``truth_run`` emitted, pairwise similarity, and the best ensemble.

    ``cells`` defaults to the cell set the truth run names; every encoder is read on those cells.
    """
    cells = cells or run_cells(truth_run)
    truth_name, truth = load_encoder(truth_run, cells, emitted=True)
    if truth["n"].sum() == 0:
        raise AffectlensError(f"--truth {truth_run} must be an elicitation run (emitted faces with counts)")
    loaded = [load_encoder(run, cells) for run in encoder_runs]
    names = _unique([name for name, _ in loaded])
    encoders = dict(zip(names, [frame for _, frame in loaded], strict=True))
    kinds = {name: _source(run)[0] for name, run in zip(names, encoder_runs, strict=True)}
    options = {"floor": floor, "n_boot": n_boot, "seed": seed, "cells": cells}
    rows = [
        {"encoder": name, **similarity.compare_to_truth(frame, truth, **options)}
        for name, frame in encoders.items()
    ]
    kept = list(truth.index[truth["n"].to_numpy() >= floor])  # the heat map sees the table's faces
    pairwise = similarity.pairwise_similarity({truth_name: truth, **encoders}, cells, faces=kept)
    pairwise.attrs["floor"] = floor
    result = Comparison(truth_name, floor, n_boot, seed, cells, encoders, kinds, rows, pairwise)
    if len(encoders) >= 2:
        try:
            search = ensembles.subset_search(encoders, truth, **options)
        except AffectlensError as exc:  # no face common to every encoder and the truth
            result.best_ensemble = {"thin": True, "reason": str(exc)}
        else:
            result.ensembles = search
            held = {key: value for key, value in search.attrs.items() if key.startswith("heldout_")}
            result.best_ensemble = {**_plain(search.iloc[0].to_dict()), **held}
            columns = ["members", "face_uniform", "emit_weighted", "n_faces", "n_emits", "face_set"]
            singles = search.loc[search["size"] == 1, columns].rename(columns={"members": "encoder"})
            result.common_rows = [_plain(row) for row in singles.to_dict("records")]
            members = str(search.iloc[0]["members"]).split(",")
            result.lookup = ensembles.lookup_table({n: encoders[n] for n in members}, cells)
    return result


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A table row as JSON-ready values: NaN becomes None, numpy scalars Python ones."""
    out = {}
    for key, value in row.items():
        value = value.item() if hasattr(value, "item") else value
        out[key] = None if isinstance(value, float) and math.isnan(value) else value
    return out
