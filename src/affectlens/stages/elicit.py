"""Elicitation: ask a model to open its reply with a kaomoji, record the face and the state it came from.

Speed comes from three things. Prompts are batched (left-padded, with per-sequence positions). Each prompt's
prefill runs once, and its KV cache is shared by its N samples; ``h_first``, the residual stream at the last
prompt token (whose logits choose the first reply token), comes out of that same prefill. And a sample leaves
the batch as soon as its face is settled, so nobody decodes 24 tokens to read a 5-token face.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from transformers import DynamicCache

from affectlens.config import ElicitConfig
from affectlens.conventions import check_layers
from affectlens.errors import AffectlensError
from affectlens.faces import extract_face, face_settled
from affectlens.runtime.capture import LastToken, capture
from affectlens.runtime.generate import Sampling, Suppressor, build_suppressor, decode, row_seed
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.render import Renderer
from affectlens.runtime.tokens import left_pad
from affectlens.stages.base import Part, Stage
from affectlens.stimuli import Prompt, PromptSet, load_prompts
from affectlens.store.runs import ELICIT, GENERATION_COLUMNS, well_formed_mask, write_elicit


def stop_reason(text: str) -> str:
    """Why a settled reply stopped: its face is complete, no face is possible, or its first line ended."""
    face = extract_face(text)
    if face is not None and face.end < len(text) and "\n" not in text[: face.end]:
        return "face"
    return "line" if "\n" in text.strip(" \t") else "no_face"


@torch.inference_mode()
def generate_batch(
    handle: ModelHandle,
    renderer: Renderer,
    prompts: Sequence[Prompt],
    config: ElicitConfig,
    layers: Sequence[int],
    suppressor: Suppressor | None = None,
) -> tuple[torch.Tensor, list[dict[str, object]]]:
    """(h_first [prompts, layers, d] float32, one record per sample) for a batch of prompts."""
    model, tokenizer = handle.model, handle.tokenizer
    device = handle.device
    input_ids, mask = left_pad([renderer.encode(p.text) for p in prompts], tokenizer.pad_token_id)
    input_ids, mask = input_ids.to(device), mask.to(device)
    cache = DynamicCache(config=model.config)
    first = capture(
        model,
        handle.arch,
        input_ids,
        mask,
        layers,
        LastToken(),
        need_logits=True,
        cache=cache,
        logits_to_keep=1,
    )
    n = config.samples
    logits = first.logits[:, -1, :].repeat_interleave(n, dim=0)
    cache.batch_repeat_interleave(n)
    rows = [(p, s) for p in prompts for s in range(n)]
    generators = [torch.Generator().manual_seed(row_seed(config.seed, p.id, s)) for p, s in rows]

    def settled(text: str) -> str | None:
        return stop_reason(text) if face_settled(text) else None

    tokens, stop = decode(
        handle,
        logits,
        cache,
        mask.repeat_interleave(n, dim=0),
        generators,
        max_new_tokens=config.max_new_tokens,
        sampling=Sampling.of(config),
        settled=settled,
        suppressor=suppressor,
    )
    records = []
    for r, (prompt, sample) in enumerate(rows):
        reply = tokenizer.decode(tokens[r], skip_special_tokens=True)
        face = extract_face(reply)
        records.append(
            {
                "prompt_id": prompt.id,
                "cell": prompt.cell,
                "sample": sample,
                "reply": reply,
                "face": face.text if face else None,
                "face_kind": face.kind if face else None,
                "well_formed": face.well_formed if face else None,
                "n_new_tokens": len(tokens[r]),
                "stop": stop[r],
            }
        )
    return first.hidden.cpu(), records


def prompt_batches(renderer: Renderer, by_id: dict[str, Prompt], keys: Sequence[str],
                   size: int) -> list[list[str]]:  # fmt: skip
    """Prompt ids in batches of ``size``, sorted by rendered length so that padding stays short."""
    ordered = sorted(keys, key=lambda key: len(renderer.encode(by_id[key].text)))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def in_prompt_order(generations: pd.DataFrame, order: dict[str, int]) -> pd.DataFrame:
    """Generations sorted by prompt (in ``order``), then sample: parts are merged in no particular order."""
    return generations.sort_values(
        ["prompt_id", "sample"], key=lambda c: c.map(order) if c.name == "prompt_id" else c
    ).reset_index(drop=True)


def resolve_layers(handle: ModelHandle, layers: Sequence[int] | None) -> list[int]:
    return (
        list(range(handle.n_layers)) if layers is None else check_layers(layers, handle.n_layers, handle.spec)
    )


class Elicitation(Stage):
    """Prompts in length-sorted batches, each batch (with all its samples) one part."""

    name = ELICIT

    def __init__(self, handle: ModelHandle, out: str, prompts: PromptSet, config: ElicitConfig, *,
                 quiet: bool = False) -> None:  # fmt: skip
        super().__init__(handle, out, quiet=quiet)
        self.prompts, self.config = prompts, config
        self.by_id = {p.id: p for p in prompts}
        self.renderer = Renderer(handle.tokenizer, config.instruction, config.primed)
        self.suppressor: Suppressor | None = None

    def validate(self) -> None:
        if len(self.prompts) == 0:
            raise AffectlensError("the prompt set is empty")
        self.layers = resolve_layers(self.handle, self.config.layers)

    def identity(self) -> dict[str, Any]:
        return {
            "model": {"spec": self.handle.spec, "fingerprint": self.handle.fingerprint},
            "stimuli": {"hash": self.prompts.hash, "n": len(self.prompts)},
            "config": self.config.identity(),
        }

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {
            "prompting": self.renderer.describe(),
            "layers": self.layers,
            "stimuli_source": self.prompts.source,
            "cells": self.prompts.cells,
        }

    def keys(self) -> list[str]:
        return [p.id for p in self.prompts]

    def weight(self) -> int:
        return self.config.samples

    def prepare(self, pending: Sequence[str]) -> None:
        self.suppressor = build_suppressor(self.handle, self.renderer, self.config.suppress)

    def groups(self, pending: Sequence[str]) -> list[list[str]]:
        return prompt_batches(self.renderer, self.by_id, pending, self.config.batch_prompts)

    def compute(self, group: list[str]) -> Part:
        batch = [self.by_id[key] for key in group]
        hidden, records = generate_batch(
            self.handle, self.renderer, batch, self.config, self.layers, self.suppressor
        )
        frame = pd.DataFrame.from_records(records, columns=GENERATION_COLUMNS)
        return Part(tables={"generations": frame}, tensors={"h_first": hidden})

    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        order = {key: i for i, key in enumerate(self.keys())}
        generations = in_prompt_order(self.store.merged_table(self.name, "generations"), order)
        rows = self.store.merged_rows(self.name, "h_first", order)
        h_first = torch.stack([rows[key] for key in order])
        write_elicit(self.store.root, generations, self.prompts.to_frame(), h_first, self.layers)
        summary = summarize(generations)
        summary["seconds"] = round(seconds, 1)
        summary["samples_per_second"] = round(n_computed * self.config.samples / max(seconds, 1e-9), 2)
        return summary


def elicit(handle: ModelHandle, out: str, prompts: PromptSet | None = None, config: ElicitConfig | None = None,
           *, quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) elicitation into run folder ``out``; returns the summary written to the manifest."""
    prompts = load_prompts() if prompts is None else prompts  # an empty set is an error, not the default
    return Elicitation(handle, out, prompts, config or ElicitConfig(), quiet=quiet).run()


def summarize(generations: pd.DataFrame, top: int = 3) -> dict[str, object]:
    """Per cell and overall: the share of replies that open with a bracket or emoji (``face_rate``), the
    share that open with a well-formed face (``well_formed_rate``), and the top well-formed faces."""

    def rates(group: pd.DataFrame) -> dict[str, object]:
        n = max(len(group), 1)
        well = well_formed_mask(group)
        return {
            "face_rate": round(group["face"].notna().sum() / n, 3),
            "well_formed_rate": round(well.sum() / n, 3),
        }

    per_cell = {}
    for cell, group in generations.groupby("cell", sort=False):
        faces = group["face"][well_formed_mask(group)]
        top_faces = [[face, int(count)] for face, count in faces.value_counts().head(top).items()]
        per_cell[cell] = {"n": len(group), **rates(group), "top_faces": top_faces}
    well = generations["face"][well_formed_mask(generations)]
    return {
        "n_samples": len(generations),
        **rates(generations),
        "n_distinct_faces": int(generations["face"].nunique()),
        "n_distinct_well_formed": int(well.nunique()),
        "cells": per_cell,
    }
