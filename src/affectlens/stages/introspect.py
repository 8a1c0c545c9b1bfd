"""Introspection: show a judge a bare face and read its distribution over the affect cells, an encoder in the
likelihood encoder's schema (``face_cells.parquet``), so compare and the ensemble search take it as is.

``schema``: the judge answers a JSON object with one probability per cell code (structured output). The
answer is renormalised and its raw sum kept; a face's row is the mean of its samples' distributions.
``logprobs``: the judge names the best cell's digit, and the distribution is read from the first reply token's
log-probs over the nine digits (renormalised; the digits' total mass is kept as the raw sum).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from affectlens.cells import CellSet, default_cells
from affectlens.config import ApiConfig, IntrospectConfig
from affectlens.errors import AffectlensError
from affectlens.runtime.generate import row_seed
from affectlens.runtime.providers import ApiReply, ApiRequest, Provider
from affectlens.runtime.providers.runner import Job, Outcome
from affectlens.stages.api_stage import ApiStage
from affectlens.stimuli import content_hash
from affectlens.store.runs import INTROSPECT, write_judged

ANSWER_COLUMNS = ["face", "sample", "ok", "reason", "raw_sum", "answer"]


def cell_list(cells: CellSet, labels: Sequence[str]) -> str:
    return "\n".join(
        f"- {label}: {c.name} ({c.description})" for label, c in zip(labels, cells.cells, strict=True)
    )


def schema_prompt(cells: CellSet) -> str:
    return (
        "You will be shown a face (a kaomoji or an emoji) that someone opened a message with. For each affect "
        "below, give the probability that the writer felt it; the probabilities sum to 1.\n"
        + cell_list(cells, cells.codes)
        + "\nAnswer with a JSON object whose keys are the codes."
    )


def label_prompt(cells: CellSet) -> str:
    digits = [str(i + 1) for i in range(len(cells))]
    return (
        "You will be shown a face (a kaomoji or an emoji) that someone opened a message with. Which affect did "
        "the writer most likely feel?\n" + cell_list(cells, digits) + "\nAnswer with the digit only."
    )


def cell_schema(cells: CellSet) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {code: {"type": "number"} for code in cells.codes},
        "required": list(cells.codes),
        "additionalProperties": False,
    }


def parse_distribution(reply: ApiReply, cells: CellSet) -> tuple[np.ndarray, float]:
    """(renormalised distribution, raw sum) from a JSON answer; ValueError names what is wrong."""
    try:
        data = json.loads(reply.text)
    except ValueError:
        raise ValueError(f"not JSON: {reply.text[:60]!r}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if missing := [c for c in cells.codes if c not in data]:
        raise ValueError(f"missing cell(s) {', '.join(missing)}")
    values = []
    for code in cells.codes:
        value = data[code]
        try:
            number = (
                float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
            )
        except OverflowError:  # an integer beyond float range
            number = math.inf
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"{code} is {str(value)[:20]}, not a probability")
        values.append(number)
    raw = math.fsum(values)
    if not math.isfinite(raw):
        raise ValueError("the probabilities sum beyond float range")
    if raw <= 0:
        raise ValueError("all probabilities are zero")
    return np.asarray(values) / raw, raw


def parse_label_logprobs(reply: ApiReply, cells: CellSet) -> tuple[np.ndarray, float]:
    """(distribution over cells, total mass of the digit labels) from the first reply token's top log-probs."""
    if not reply.top_logprobs:
        raise ValueError("the endpoint returned no log-probs")
    labels = {str(i + 1): i for i in range(len(cells))}  # ASCII digits only: "²" or "١" is no label
    mass = np.zeros(len(cells))
    for token, logprob in reply.top_logprobs[0].items():
        if (index := labels.get(token.strip())) is not None:
            mass[index] += math.exp(logprob)
    total = float(mass.sum())
    if total <= 0:
        raise ValueError("no cell digit among the first token's top log-probs")
    return mass / total, total


def face_cell_table(rows: dict[str, np.ndarray], cells: CellSet) -> pd.DataFrame:
    """The likelihood encoder's schema: one row per face, one column per cell, entropy_bits, top_cell."""
    faces = list(rows)
    probs = np.stack([rows[f] for f in faces]) if faces else np.zeros((0, len(cells)))
    out = pd.DataFrame(probs, index=pd.Index(faces, name="face"), columns=cells.codes)
    out["entropy_bits"] = np.maximum(-(probs * np.log2(np.clip(probs, 1e-300, None))).sum(axis=1), 0.0)
    out["top_cell"] = [cells.codes[i] for i in probs.argmax(axis=1)]
    return out


class Introspection(ApiStage):
    name = INTROSPECT

    def __init__(self, provider: Provider, out: str, faces: Sequence[str], config: IntrospectConfig,
                 api: ApiConfig, *, faces_source: str = "list", quiet: bool = False) -> None:  # fmt: skip
        super().__init__(provider, out, api, quiet=quiet)
        self.faces, self.config, self.faces_source = list(dict.fromkeys(faces)), config, faces_source
        self.cells = default_cells()

    @property
    def system(self) -> str:
        return schema_prompt(self.cells) if self.config.method == "schema" else label_prompt(self.cells)

    def validate(self) -> None:
        if not self.faces:
            raise AffectlensError("no faces to introspect")
        caps = self.provider.capabilities
        if self.config.method == "logprobs" and len(self.cells) > 9:
            raise AffectlensError("--method logprobs reads one digit per cell, so at most 9 cells")
        if self.config.method == "logprobs" and not caps.logprobs:
            raise AffectlensError(f"{self.provider.spec} gives no log-probs; use --method schema")
        if self.config.method == "schema" and not caps.json_schema:
            raise AffectlensError(f"{self.provider.spec} has no structured output; use --method logprobs")

    def identity(self) -> dict[str, Any]:
        return {
            "model": self.model_identity(),
            "stimuli": {"hash": content_hash(self.faces), "n": len(self.faces)},
            "config": self.config.identity(),
            "cells": self.cells.codes,
        }

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {"faces_source": self.faces_source, "system": self.system}

    def keys(self) -> list[str]:
        return self.faces

    def weight(self) -> int:
        return self.config.samples

    def jobs(self, key: str) -> list[Job]:
        config, cells, caps = self.config, self.cells, self.provider.capabilities
        temperature = config.temperature if caps.temperature else None
        turns = (("user", f"Face: {key}"),)
        if config.method == "schema":
            request = ApiRequest(
                self.system, turns, config.max_tokens, temperature, schema=cell_schema(cells)
            )

            def parse(reply: ApiReply) -> Any:
                return parse_distribution(reply, cells)
        else:
            request = ApiRequest(self.system, turns, 1, temperature, logprobs=caps.logprobs)

            def parse(reply: ApiReply) -> Any:
                return parse_label_logprobs(reply, cells)

        return [
            Job(key, replace(request, seed=row_seed(config.seed, key, s)) if caps.seed else request, s, parse)
            for s in range(config.samples)
        ]

    def tables(self, key: str, outcomes: Sequence[Outcome]) -> dict[str, pd.DataFrame]:
        rows = []
        for outcome in outcomes:
            dist, raw = outcome.value if outcome.ok else (None, None)
            rows.append({
                "face": key, "sample": outcome.job.sample, "ok": outcome.ok, "reason": outcome.reason,
                "raw_sum": raw, "answer": outcome.reply.text if outcome.reply else None,
                **({c: float(p) for c, p in zip(self.cells.codes, dist, strict=True)} if dist is not None else {}),
            })  # fmt: skip
        return {"answers": pd.DataFrame(rows, columns=[*ANSWER_COLUMNS, *self.cells.codes])}

    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        answers = self.store.merged_table(self.name, "answers")
        order = {face: i for i, face in enumerate(self.faces)}
        answers = answers.sort_values(
            ["face", "sample"], key=lambda c: c.map(order) if c.name == "face" else c
        )
        good = answers[answers["ok"].astype(bool)]
        means = good.groupby("face", sort=False)[self.cells.codes].mean()
        rows = {face: means.loc[face].to_numpy(float) for face in self.faces if face in means.index}
        write_judged(
            self.store.root, face_cell_table(rows, self.cells), {"answers": answers.reset_index(drop=True)}
        )
        unanswered = [face for face in self.faces if face not in rows]
        return {
            "n_faces": len(self.faces),
            "n_answers": len(answers),
            "n_failed_answers": int((~answers["ok"].astype(bool)).sum()),
            "faces_without_answer": unanswered,
            "raw_sum": _spread(good["raw_sum"]),
            "seconds": round(seconds, 1),
            "requests": self.write_accounting(),
        }


def _spread(values: pd.Series) -> dict[str, float | None]:
    """Median and range: one judge answer can sum to 1e200, which a mean would report instead of the rest."""
    if values.empty:
        return {"median": None, "min": None, "max": None}
    return {name: float(f"{getattr(values, name)():.6g}") for name in ("median", "min", "max")}
