"""Elicitation run folders as the kaomoji analyses see them: prompts, samples and h_first as numpy.

An API model's run holds no hidden states: its ``Run`` has ``hidden=None``, no layers and no headline layer,
and only the analyses that read generations alone apply to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from affectlens.analysis.kaomoji.common import LAYER_RULE, NO_HIDDEN
from affectlens.cells import CellSet, get_cell_set
from affectlens.conventions import headline_layer
from affectlens.errors import AffectlensError
from affectlens.store.runs import FACE_FILTERS, ElicitRun, read_elicit, well_formed_mask


@dataclass
class Run:
    label: str
    path: str
    spec: str
    prompts: pd.DataFrame  # id, cell, ... in h_first row order
    samples: pd.DataFrame  # prompt_id, cell (of the prompt), face (None where none), row (prompt row)
    hidden: np.ndarray | None  # [n_prompts, n_stored_layers, d] float32; None: no hidden states (API model)
    layers: list[int]  # model layer number of each stored layer ([] without hidden states)
    index: int | None  # stored-layer index of the headline layer (None without hidden states)
    layer_rule: str

    @property
    def has_hidden(self) -> bool:
        return self.hidden is not None

    @property
    def layer(self) -> int | None:
        return None if self.index is None else self.layers[self.index]


def load_runs(paths: Sequence[str], layer: int | None, cells: CellSet | None,
              faces: str = "well_formed") -> tuple[list[Run], CellSet]:  # fmt: skip
    """The runs at ``paths``, labelled by model spec (``#2``, ``#3`` on repeats), and the cell set used.

    ``cells=None`` takes the set the first run's elicit stage recorded (pad9 where it recorded none).
    ``faces="well_formed"`` (the default) counts only well-formed faces as faces; ``"all"`` counts whatever a
    reply opens with.
    """
    if faces not in FACE_FILTERS:
        raise AffectlensError(f"faces must be one of {', '.join(FACE_FILTERS)}, got {faces!r}")
    elicited = [read_elicit(path) for path in paths]
    if cells is None:
        cells = get_cell_set(str(elicited[0].entry.get("cells", "pad9")))
    runs = [_run(e, layer, cells, faces) for e in elicited]
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.spec] = seen.get(run.spec, 0) + 1
        run.label = run.spec if seen[run.spec] == 1 else f"{run.spec}#{seen[run.spec]}"
    return runs, cells


def _headline(path: str, layers: list[int], n_model_layers: int, layer: int | None) -> tuple[int, str]:
    """(stored-layer index of the headline layer, how it was chosen)."""
    if layer is None:
        target = headline_layer(n_model_layers)
        index = layers.index(headline_layer(n_model_layers, layers))  # nearest stored, lower on a tie
        rule = f"{LAYER_RULE}: n_layers = {n_model_layers} gives layer {target}"
        if layers[index] != target:
            rule += f"; layer {target} is not stored, so the nearest stored layer {layers[index]} is used"
        return index, rule
    if layer not in layers:
        raise AffectlensError(
            f"{path}: layer {layer} is not stored; stored layers are {layers[0]}..{layers[-1]}"
        )
    return layers.index(layer), f"layer {layer}, set by the caller"


def _hidden(elicited: ElicitRun, n_prompts: int) -> tuple[np.ndarray | None, list[int]]:
    """(h_first as numpy, the model layer of each stored layer); (None, []) for a run without hidden states."""
    path, entry = elicited.path, elicited.entry
    if elicited.h_first is None:
        return None, []
    hidden = elicited.h_first.detach().cpu().float().numpy()
    if hidden.ndim != 3 or hidden.shape[0] != n_prompts:
        raise AffectlensError(
            f"{path}: h_first has shape {tuple(hidden.shape)}, expected [{n_prompts} prompts, layers, d]"
        )
    layers = [int(v) for v in (entry.get("layers") or range(hidden.shape[1]))]
    if len(layers) != hidden.shape[1]:
        raise AffectlensError(
            f"{path}: the manifest lists {len(layers)} layers but h_first holds {hidden.shape[1]}"
        )
    return hidden, layers


def _run(elicited: ElicitRun, layer: int | None, cells: CellSet, faces: str) -> Run:
    path, generations, prompts, entry = elicited.path, elicited.generations, elicited.prompts, elicited.entry
    hidden, layers = _hidden(elicited, len(prompts))
    model = entry.get("model") or {}
    spec = str(model.get("spec") or entry.get("identity", {}).get("model", {}).get("spec") or Path(path).name)
    if unknown := sorted(set(prompts["cell"]) - set(cells.codes)):
        raise AffectlensError(
            f"{path}: prompts name cells outside the {cells.name} set: {', '.join(unknown)}"
        )
    index: int | None
    if hidden is None:  # a caller's layer has nothing to select here; the other runs still use it
        index, rule = None, NO_HIDDEN
    else:
        index, rule = _headline(path, layers, int(model.get("n_layers") or max(layers) + 1), layer)
    row = {pid: i for i, pid in enumerate(prompts["id"])}
    if missing := sorted(set(generations["prompt_id"]) - set(row)):
        raise AffectlensError(f"{path}: generations name prompts missing from prompts.parquet: {missing[:3]}")
    face = generations["face"].astype(object)
    keep = face.notna() & (face.astype(str) != "")
    if faces == "well_formed":
        keep &= well_formed_mask(generations)
    face = face.where(keep, None)
    samples = pd.DataFrame(
        {
            "prompt_id": generations["prompt_id"].astype(str).to_numpy(),
            "row": generations["prompt_id"].map(row).to_numpy(dtype=np.int64),
            "face": face.to_numpy(dtype=object),
        }
    )
    samples["cell"] = prompts["cell"].to_numpy()[samples["row"].to_numpy()]
    return Run(
        label=spec,
        path=str(path),
        spec=spec,
        prompts=prompts.reset_index(drop=True),
        samples=samples,
        hidden=hidden,
        layers=layers,
        index=index,
        layer_rule=rule,
    )
