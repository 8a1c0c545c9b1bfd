"""Elicitation from an API model: the same prompts, instruction, primer and samples as a local elicitation, and
the same ``generations.parquet``; no hidden states (the manifest says so, and analyses skip what needs them).

The instruction is the system text and the primer exchanges are earlier turns, which is what a chat template
does locally. Endpoints that take a seed get the local per-(prompt, sample) seed; the sample index is part of
every request's cache key either way, so samples are distinct requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from affectlens.config import ApiConfig, ElicitConfig
from affectlens.errors import AffectlensError
from affectlens.faces import extract_face
from affectlens.runtime.generate import row_seed
from affectlens.runtime.providers import ApiRequest, Provider
from affectlens.runtime.providers.runner import Job, Outcome
from affectlens.stages.api_stage import ApiStage
from affectlens.stages.elicit import in_prompt_order, stop_reason, summarize
from affectlens.stimuli import PromptSet, load_primer
from affectlens.store.runs import ELICIT, GENERATION_COLUMNS, write_elicit


def api_turns(message: str, primed: bool) -> tuple[tuple[str, str], ...]:
    turns: list[tuple[str, str]] = []
    for exchange in load_primer() if primed else []:
        turns += [("user", exchange["user"]), ("assistant", exchange["reply"])]
    return (*turns, ("user", message))


class ApiElicitation(ApiStage):
    name = ELICIT

    def __init__(self, provider: Provider, out: str, prompts: PromptSet, config: ElicitConfig, api: ApiConfig,
                 *, quiet: bool = False) -> None:  # fmt: skip
        super().__init__(provider, out, api, quiet=quiet)
        self.prompts, self.config = prompts, config
        self.by_id = {p.id: p for p in prompts}

    @property
    def system(self) -> str:
        return self.config.instruction

    def validate(self) -> None:
        if len(self.prompts) == 0:
            raise AffectlensError("the prompt set is empty")
        if self.config.suppress:
            raise AffectlensError(f"--suppress needs a local model's logits; {self.provider.spec} has none")
        if self.config.layers:
            raise AffectlensError(f"--layers: {self.provider.spec} has no hidden states")
        if self.config.top_k or self.config.min_p:
            raise AffectlensError(
                f"--top-k and --min-p: {self.provider.spec} takes no such sampling parameter"
            )

    def identity(self) -> dict[str, Any]:
        config = {k: v for k, v in self.config.identity().items() if k not in ("layers", "suppress")}
        return {
            "model": self.model_identity(),
            "stimuli": {"hash": self.prompts.hash, "n": len(self.prompts)},
            "config": config,
        }

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {
            "prompting": {
                "instruction": self.config.instruction,
                "variant": "primed" if self.config.primed else "free",
                "format": "API messages, system field",
            },
            "layers": [],
            "stimuli_source": self.prompts.source,
            "cells": self.prompts.cells,
            "sampling": self.sampling(),
        }

    def sampling(self) -> dict[str, Any]:
        """What the endpoint was asked for (top-k and min-p, which no API takes, are refused in ``validate``)."""
        accepted = self.provider.capabilities.temperature
        return {
            "temperature": self.config.temperature if accepted else "the endpoint's default (not accepted)",
            "top_p": self.config.top_p if accepted else "the endpoint's default (not accepted)",
            "seeded": self.provider.capabilities.seed,
        }

    def keys(self) -> list[str]:
        return [p.id for p in self.prompts]

    def weight(self) -> int:
        return self.config.samples

    def jobs(self, key: str) -> list[Job]:
        prompt, config, caps = self.by_id[key], self.config, self.provider.capabilities
        return [
            Job(
                key,
                ApiRequest(
                    system=config.instruction,
                    turns=api_turns(prompt.text, config.primed),
                    max_tokens=config.max_new_tokens,
                    temperature=config.temperature if caps.temperature else None,
                    top_p=(config.top_p if config.top_p < 1 else None) if caps.temperature else None,
                    seed=row_seed(config.seed, key, sample) if caps.seed else None,
                ),
                sample,
            )
            for sample in range(config.samples)
        ]

    def tables(self, key: str, outcomes: Sequence[Outcome]) -> dict[str, pd.DataFrame]:
        prompt = self.by_id[key]
        records = []
        for outcome in outcomes:
            reply = outcome.reply.text if outcome.reply else ""
            face = extract_face(reply)
            records.append({
                "prompt_id": key, "cell": prompt.cell, "sample": outcome.job.sample, "reply": reply,
                "face": face.text if face else None, "face_kind": face.kind if face else None,
                "well_formed": face.well_formed if face else None,
                "n_new_tokens": outcome.reply.output_tokens if outcome.reply else 0, "stop": stop_reason(reply),
            })  # fmt: skip
        return {"generations": pd.DataFrame.from_records(records, columns=GENERATION_COLUMNS)}

    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        order = {key: i for i, key in enumerate(self.keys())}
        generations = in_prompt_order(self.store.merged_table(self.name, "generations"), order)
        write_elicit(self.store.root, generations, self.prompts.to_frame(), None, [])
        summary = summarize(generations)
        summary["seconds"] = round(seconds, 1)
        summary["samples_per_second"] = round(n_computed * self.config.samples / max(seconds, 1e-9), 2)
        summary["requests"] = self.write_accounting()
        return summary
