"""Face likelihood: log P(face | prompt) for every face and prompt, and what each face means as cell
distributions. The scoring itself lives in :mod:`affectlens.runtime.face_scoring`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from affectlens.cells import CellSet, default_cells, get_cell_set
from affectlens.config import LikelihoodConfig
from affectlens.errors import AffectlensError
from affectlens.runtime.face_scoring import SharedHead, max_nodes, score_prompt, shared_head
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.render import Renderer
from affectlens.stages.base import Part, Stage
from affectlens.stimuli import PromptSet, content_hash, load_prompts
from affectlens.store.runs import ELICIT, LIKELIHOOD, STEER, finished_stages, write_likelihood

AGGREGATIONS = ("bayes", "meanlogp")


def cell_distributions(
    logp: pd.DataFrame, prompts: pd.DataFrame, cells: CellSet | None = None, aggregation: str = "bayes"
) -> pd.DataFrame:
    """Per-face distribution over cells from long-form log P(face | prompt).

    ``bayes`` (default): with a uniform prior over cells, P(c | f) is proportional to the mean over prompts p in
    c of P(f | p); computed with log-sum-exp. ``meanlogp``: a softmax over cells of the mean log P(f | p), i.e.
    a geometric instead of an arithmetic mean, which one very likely prompt cannot dominate.
    """
    cells = cells or default_cells()
    if aggregation not in AGGREGATIONS:
        raise AffectlensError(f"unknown aggregation {aggregation!r}; use one of {', '.join(AGGREGATIONS)}")
    frame = logp.merge(prompts[["id", "cell"]], left_on="prompt_id", right_on="id")
    table = frame.pivot_table(
        index="face", columns="cell", values="logp", aggfunc=_logmeanexp if aggregation == "bayes" else "mean"
    )
    missing = [c for c in cells.codes if c not in table.columns]
    if missing:
        raise AffectlensError(f"no prompts for cell(s) {', '.join(missing)}: cannot form cell distributions")
    scores = table[cells.codes].to_numpy()
    probs = np.exp(scores - _logsumexp(scores, axis=1, keepdims=True))
    out = pd.DataFrame(probs, index=table.index, columns=cells.codes)
    out["entropy_bits"] = -(probs * np.log2(np.clip(probs, 1e-300, None))).sum(axis=1)
    out["top_cell"] = [cells.codes[i] for i in probs.argmax(axis=1)]
    return out


def _logsumexp(x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    peak = np.max(x, axis=axis, keepdims=True)
    total = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return total if keepdims else np.squeeze(total, axis=axis)


def _logmeanexp(values: pd.Series) -> float:
    x = values.to_numpy(dtype=float)
    return float(_logsumexp(x, axis=0) - math.log(len(x)))


def emission_over_vocabulary(
    logp: pd.DataFrame, prompts: pd.DataFrame, face_cells: pd.DataFrame, cells: CellSet | None = None
) -> dict[str, float]:
    """If the model could only use the vocabulary: P(f | p, f in V), and the expected face-to-cell agreement.

    Agreement: the probability that the cell a face would be read as (its top cell here) is the prompt's cell,
    averaged over prompts, with faces drawn from P(f | p, f in V). Chance is 1 / number of cells.
    """
    cells = cells or default_cells()
    wide = logp.pivot(index="prompt_id", columns="face", values="logp")
    emission = np.exp(wide.to_numpy() - _logsumexp(wide.to_numpy(), axis=1, keepdims=True))
    top = face_cells.loc[wide.columns, "top_cell"].to_numpy()
    prompt_cell = prompts.set_index("id").loc[wide.index, "cell"].to_numpy()
    agreement = (emission * (top[None, :] == prompt_cell[:, None])).sum(axis=1)
    entropy = -(emission * np.log2(np.clip(emission, 1e-300, None))).sum(axis=1)
    return {
        "expected_agreement": float(agreement.mean()),
        "chance": 1 / len(cells),
        "n_prompts": len(prompt_cell),
        "mean_emission_entropy_bits": float(entropy.mean()),
        "max_entropy_bits": float(np.log2(wide.shape[1])),
    }


def check_same_prompting(elicit_run: str, config: LikelihoodConfig) -> None:
    """Faces taken from an elicitation run are scored after the prompt that run used, or not at all."""
    stages = finished_stages(elicit_run)
    used = (stages.get(ELICIT) or stages.get(STEER) or {}).get("identity", {}).get("config", {})
    for key in ("primed", "instruction"):
        if key in used and used[key] != getattr(config, key):
            raise AffectlensError(
                f"{elicit_run} was elicited with {key} = {used[key]!r}, but the likelihood would score its faces "
                f"with {key} = {getattr(config, key)!r}; use the run's prompting (--primed, --instruction)"
            )


class Likelihood(Stage):
    """One part per prompt: every face's log-probability after it."""

    name = LIKELIHOOD

    def __init__(self, handle: ModelHandle, out: str, faces: Sequence[str], prompts: PromptSet,
                 config: LikelihoodConfig, *, faces_source: str = "catalogue", quiet: bool = False) -> None:  # fmt: skip
        super().__init__(handle, out, quiet=quiet)
        self.faces, self.prompts, self.config = list(dict.fromkeys(faces)), prompts, config
        self.faces_source = faces_source
        self.by_id = {p.id: p for p in prompts}
        self.renderer = Renderer(handle.tokenizer, config.instruction, config.primed)
        self.shared: SharedHead | None = None

    def validate(self) -> None:
        if not self.faces:
            raise AffectlensError("the face vocabulary is empty")
        if len(self.prompts) == 0:
            raise AffectlensError("the prompt set is empty")
        covered = {p.cell for p in self.prompts}
        if missing := [c for c in get_cell_set(self.prompts.cells).codes if c not in covered]:
            raise AffectlensError(
                f"{self.prompts.source}: no prompts for cell(s) {', '.join(missing)}; face likelihood needs "
                "every cell to turn scores into cell distributions"
            )

    def identity(self) -> dict[str, Any]:
        return {
            "model": {"spec": self.handle.spec, "fingerprint": self.handle.fingerprint},
            "stimuli": {"hash": self.prompts.hash, "n": len(self.prompts)},
            "faces": {"hash": content_hash(self.faces), "n": len(self.faces), "source": self.faces_source},
            "config": self.config.identity(),
        }

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {"prompting": self.renderer.describe(), "cells": self.prompts.cells}

    def keys(self) -> list[str]:
        return [p.id for p in self.prompts]

    def prepare(self, pending: Sequence[str]) -> None:
        if pending:
            self.shared = shared_head(self.handle, self.renderer, [p.text for p in self.prompts])
        self.nodes = max_nodes(self.handle, self.config.memory_mb)

    def groups(self, pending: Sequence[str]) -> list[list[str]]:
        return [[key] for key in pending]

    def tag(self, group: Sequence[str]) -> str:
        return group[0]  # the prompt id: parts merge in prompt-id order

    def compute(self, group: list[str]) -> Part:
        text = self.by_id[group[0]].text
        scores = score_prompt(self.handle, self.renderer, text, self.faces, self.nodes, shared=self.shared)
        return Part(
            tables={"logp": pd.DataFrame({"face": self.faces, "prompt_id": group[0], "logp": scores})}
        )

    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        logp = self.store.merged_table(self.name, "logp")
        prompt_frame = self.prompts.to_frame()
        cells = get_cell_set(self.prompts.cells)
        face_cells = cell_distributions(logp, prompt_frame, cells, aggregation=self.config.aggregation)
        write_likelihood(self.store.root, logp, face_cells, prompt_frame)
        return {
            "n_faces": len(self.faces),
            "n_prompts": len(self.prompts),
            "aggregation": self.config.aggregation,
            "seconds": round(seconds, 1),
            "pairs_per_second": round(n_computed * len(self.faces) / max(seconds, 1e-9), 1),
            "emission": emission_over_vocabulary(logp, prompt_frame, face_cells, cells),
            "top_cell_counts": face_cells["top_cell"].value_counts().to_dict(),
        }


def likelihood(handle: ModelHandle, out: str, faces: Sequence[str], prompts: PromptSet | None = None,
               config: LikelihoodConfig | None = None, *, faces_source: str = "catalogue",
               quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Score every face after every prompt into run folder ``out``; resumes at prompt granularity."""
    prompts = load_prompts() if prompts is None else prompts  # an empty set is an error, not the default
    stage = Likelihood(handle, out, faces, prompts, config or LikelihoodConfig(), faces_source=faces_source,
                       quiet=quiet)  # fmt: skip
    return stage.run()
