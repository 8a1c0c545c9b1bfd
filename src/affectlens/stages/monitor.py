"""Monitoring: what the emotion vectors read, token by token, along a model's own replies.

For each prompt, ``samples`` replies are sampled (a shared prefill, then the one decoding loop, each row with
its own seeded stream). A reply runs to EOS or to ``max_new_tokens`` (no face rule: the whole reply is what
is read). Then every prompt + reply of the batch goes through the model once more, in ONE forward pass per
batch stopped after the layer, and the residual stream at each real token, minus the vectors run's neutral
mean at the layer, is projected on each unit emotion vector. Reading from a fresh full pass rather than from
the decoding steps keeps a reading independent of the decode path (the KV cache, rows leaving the batch) and
equal to ``output_hidden_states`` on the same tokens.

Each batch of prompts (with all its samples) is one part, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import DynamicCache

from affectlens.config import MonitorConfig
from affectlens.conventions import LAYER_CONVENTION
from affectlens.errors import AffectlensError
from affectlens.runtime.capture import LastToken, capture, token_states
from affectlens.runtime.generate import Sampling, decode, row_seed
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.render import Renderer
from affectlens.runtime.tokens import left_pad
from affectlens.stages.base import Part, Stage
from affectlens.stages.elicit import prompt_batches
from affectlens.stimuli import Prompt, PromptSet
from affectlens.store.manifest import RunStore
from affectlens.store.runs import MONITOR, MONITOR_COLUMNS, VECTORS, read_vectors, write_monitor

REPLY_COLUMNS = ["prompt_id", "cell", "sample", "reply", "n_new_tokens", "stop"]
CENTRING = (
    "reading = (h - mu) . v / ||v||: h the residual stream at the layer, mu the mean over the vectors run's "
    "neutral dialogues of their activations at the layer (minus the mean neutral-dialogue activation at the "
    "layer), v the emotion vector (raw or denoised, as recorded)"
)
POSITIONS = (
    "every real token: part 'prompt' = the rendered prompt's tokens (special tokens included), stored "
    "once per prompt under sample 0 since its samples share them; part 'reply' = the sampled tokens (EOS "
    "excluded); token_index counts from the part's first token; read in one forward pass over prompt + "
    "reply per batch, after decoding"
)
STOP_RULE = "EOS or max_new_tokens"
PART_ORDER = {"prompt": 0, "reply": 1}


def check_vectors_run(path: str) -> dict[str, Any]:
    """The manifest entry of a finished vectors run at ``path``, or one line saying what it is instead."""
    entry = RunStore(path).stage(VECTORS)
    if entry is None:
        raise AffectlensError(f"{path} is not a vectors run (no 'vectors' stage in its manifest)")
    if not entry.get("finished"):
        raise AffectlensError(
            f"{path}: its vectors run is not finished; run `affectlens vectors` into it again to finish it"
        )
    return entry


def unit_rows(vectors: np.ndarray, emotions: Sequence[str]) -> np.ndarray:
    """float32 [n_emotions, d]: each vector over its norm; a zero vector is an error naming its emotion."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1)
    if (zero := np.flatnonzero(norms == 0)).size:
        raise AffectlensError(f"the vector of {emotions[zero[0]]!r} is zero: it has no direction to read")
    return (v / norms[:, None]).astype(np.float32)


@torch.inference_mode()
def read_batch(
    handle: ModelHandle,
    renderer: Renderer,
    prompts: Sequence[Prompt],
    config: MonitorConfig,
    layer: int,
    mu: torch.Tensor,
    units: torch.Tensor,
) -> tuple[list[dict[str, Any]], list[list[int]], list[int], torch.Tensor]:
    """Sample replies for ``prompts``, then read prompt + reply in one pass.

    Returns (one reply record per row, each row's token ids prompt + reply, each row's prompt length,
    readings float32 [rows, seq, n_emotions] over the left-padded rows: row ``r``'s tokens are its last
    ``len(ids[r])`` columns).
    """
    model, tokenizer, device = handle.model, handle.tokenizer, handle.device
    encoded = [renderer.encode(p.text) for p in prompts]
    input_ids, mask = left_pad(encoded, tokenizer.pad_token_id)
    input_ids, mask = input_ids.to(device), mask.to(device)
    cache = DynamicCache(config=model.config)
    first = capture(
        model,
        handle.arch,
        input_ids,
        mask,
        [layer],
        LastToken(),
        need_logits=True,
        cache=cache,
        logits_to_keep=1,
    )
    n = config.samples
    logits = first.logits[:, -1, :].repeat_interleave(n, dim=0)
    cache.batch_repeat_interleave(n)
    rows = [(i, p, s) for i, p in enumerate(prompts) for s in range(n)]
    generators = [torch.Generator().manual_seed(row_seed(config.seed, p.id, s)) for _, p, s in rows]
    tokens, stop = decode(
        handle,
        logits,
        cache,
        mask.repeat_interleave(n, dim=0),
        generators,
        max_new_tokens=config.max_new_tokens,
        sampling=Sampling.of(config),
        settled=lambda _text: None,  # read the whole reply: it stops at EOS or the cap only
    )
    del cache, first
    sequences = [encoded[i] + tokens[r] for r, (i, _, _) in enumerate(rows)]
    ids, full_mask = left_pad(sequences, tokenizer.pad_token_id)
    states = token_states(model, handle.arch, ids.to(device), full_mask.to(device), [layer])[:, 0]
    readings = (states - mu.to(states.device)) @ units.to(states.device).T
    records = [
        {
            "prompt_id": p.id,
            "cell": p.cell,
            "sample": s,
            "reply": tokenizer.decode(tokens[r], skip_special_tokens=True),
            "n_new_tokens": len(tokens[r]),
            "stop": stop[r],
        }
        for r, (_, p, s) in enumerate(rows)
    ]
    return records, sequences, [len(encoded[i]) for i, _, _ in rows], readings.cpu()


def readings_frame(
    records: Sequence[dict[str, Any]],
    sequences: Sequence[Sequence[int]],
    prompt_lengths: Sequence[int],
    readings: torch.Tensor,
    emotions: Sequence[str],
    token_text: dict[int, str],
    tokenizer: Any,
) -> pd.DataFrame:
    """Long MONITOR_COLUMNS rows, one per (row, token, emotion); a prompt's tokens only under sample 0."""
    frames = []
    width, n_emotions = readings.shape[1], len(emotions)
    for r, (record, ids, n_prompt) in enumerate(zip(records, sequences, prompt_lengths, strict=True)):
        values = readings[
            r, width - len(ids) :
        ].numpy()  # left padding: the row's tokens end at the last column
        keep = slice(0, len(ids)) if record["sample"] == 0 else slice(n_prompt, len(ids))
        ids_kept, values = list(ids[keep]), values[keep]
        if not ids_kept:
            continue
        start = keep.start
        parts = np.array(["prompt" if k < n_prompt else "reply" for k in range(start, len(ids))])
        index = np.array([k if k < n_prompt else k - n_prompt for k in range(start, len(ids))])
        for token_id in ids_kept:
            if token_id not in token_text:
                token_text[token_id] = tokenizer.decode([token_id])
        frames.append(
            pd.DataFrame(
                {
                    "prompt_id": record["prompt_id"],
                    "cell": record["cell"],
                    "sample": record["sample"],
                    "part": np.repeat(parts, n_emotions),
                    "token_index": np.repeat(index, n_emotions),
                    "token_id": np.repeat(np.asarray(ids_kept, dtype=np.int64), n_emotions),
                    "token": np.repeat(np.array([token_text[t] for t in ids_kept], dtype=object), n_emotions),
                    "emotion": np.tile(np.asarray(emotions, dtype=object), len(ids_kept)),
                    "reading": values.reshape(-1).astype(np.float32),
                },
                columns=MONITOR_COLUMNS,
            )
        )
    if not frames:
        return pd.DataFrame(columns=MONITOR_COLUMNS)
    return pd.concat(frames, ignore_index=True)


class Monitoring(Stage):
    """Prompts in length-sorted batches, each batch (with all its samples) one part."""

    name = MONITOR

    def __init__(self, handle: ModelHandle, out: str, vectors_run: str, prompts: PromptSet,
                 config: MonitorConfig, *, quiet: bool = False) -> None:  # fmt: skip
        super().__init__(handle, out, quiet=quiet)
        self.vectors_run, self.prompts, self.config = str(vectors_run), prompts, config
        self.by_id = {p.id: p for p in prompts}
        self.renderer = Renderer(handle.tokenizer, config.instruction, config.primed)
        self.token_text: dict[int, str] = {}
        self.generated = 0

    def validate(self) -> None:
        if len(self.prompts) == 0:
            raise AffectlensError(f"the prompt set {self.prompts.source!r} is empty")
        entry = check_vectors_run(self.vectors_run)
        made_with = entry["identity"]["model"]
        if made_with["fingerprint"] != self.handle.fingerprint:
            raise AffectlensError(
                f"vectors run {self.vectors_run} was made with {made_with['spec']} (fingerprint "
                f"{str(made_with['fingerprint'])[:16]}), not {self.handle.spec} (fingerprint "
                f"{self.handle.fingerprint[:16]}): vectors read only the model they came from"
            )
        stored = [int(x) for x in entry["layers"]]
        layer = self.config.layer
        if layer is None:
            layer = int(entry.get("headline_layer", stored[-1]))
        if not 0 <= layer < self.handle.n_layers:
            raise AffectlensError(
                f"layer {layer} out of range: {self.handle.spec} has layers 0..{self.handle.n_layers - 1}"
            )
        if layer not in stored:
            raise AffectlensError(
                f"layer {layer} is not stored in vectors run {self.vectors_run} (its layers: {stored})"
            )
        self.layer = layer
        run = read_vectors(self.vectors_run)
        at = run.layers.index(layer)
        self.emotions = [str(name) for name in run.emotions["name"]]
        vectors = (run.denoised if self.config.vector == "denoised" else run.raw)[:, at]
        mu = run.activations["neutral"][:, at].astype(np.float64).mean(axis=0).astype(np.float32)
        self.units = torch.from_numpy(unit_rows(vectors, self.emotions))
        self.mu = torch.from_numpy(mu)
        digest = hashlib.sha256("\n".join(self.emotions).encode())
        for array in (np.ascontiguousarray(vectors, dtype=np.float32), mu):
            digest.update(array.tobytes())
        self.vectors_identity = {"identity": entry["identity"], "content": digest.hexdigest()[:16]}

    def identity(self) -> dict[str, Any]:
        return {
            "model": {"spec": self.handle.spec, "fingerprint": self.handle.fingerprint},
            "stimuli": {"hash": self.prompts.hash, "n": len(self.prompts)},
            "config": self.config.identity(),
            "vectors": self.vectors_identity,
            "layer": self.layer,
        }

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {
            "prompting": self.renderer.describe(),
            "vectors_run": str(Path(self.vectors_run).resolve()),
            "layer": self.layer,
            "layer_convention": LAYER_CONVENTION,
            "emotions": self.emotions,
            "vector": self.config.vector,
            "centring": CENTRING,
            "positions": POSITIONS,
            "stop": STOP_RULE,
            "stimuli_source": self.prompts.source,
            "cells": self.prompts.cells,
        }

    def keys(self) -> list[str]:
        return [p.id for p in self.prompts]

    def weight(self) -> int:
        return self.config.samples

    def groups(self, pending: Sequence[str]) -> list[list[str]]:
        return prompt_batches(self.renderer, self.by_id, pending, self.config.batch_prompts)

    def compute(self, group: list[str]) -> Part:
        batch = [self.by_id[key] for key in group]
        records, sequences, lengths, readings = read_batch(
            self.handle, self.renderer, batch, self.config, self.layer, self.mu, self.units
        )
        self.generated += sum(r["n_new_tokens"] for r in records)
        frame = readings_frame(
            records, sequences, lengths, readings, self.emotions, self.token_text, self.handle.tokenizer
        )
        return Part(
            tables={"readings": frame, "replies": pd.DataFrame.from_records(records, columns=REPLY_COLUMNS)}
        )

    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        order = {key: i for i, key in enumerate(self.keys())}
        emotion_order = {name: i for i, name in enumerate(self.emotions)}
        replies = self.store.merged_table(self.name, "replies")
        replies = replies.sort_values(
            ["prompt_id", "sample"], key=lambda c: c.map(order) if c.name == "prompt_id" else c
        ).reset_index(drop=True)
        readings = self.store.merged_table(self.name, "readings")
        ranks = {"prompt_id": order, "part": PART_ORDER, "emotion": emotion_order}
        readings = readings.sort_values(
            ["prompt_id", "sample", "part", "token_index", "emotion"],
            key=lambda c: c.map(ranks[c.name]) if c.name in ranks else c,
        ).reset_index(drop=True)
        write_monitor(self.store.root, readings, replies)
        return summarize(readings, replies, self.emotions) | {
            "layer": self.layer,
            "vector": self.config.vector,
            "seconds": round(seconds, 1),
            "tokens_per_second": round(self.generated / max(seconds, 1e-9), 1),
        }


def summarize(readings: pd.DataFrame, replies: pd.DataFrame, emotions: Sequence[str]) -> dict[str, Any]:
    """Counts, and each emotion's mean reading over every reply token (None when no reply has a token)."""
    reply = readings[readings["part"] == "reply"]
    means = reply.groupby("emotion")["reading"].mean()
    return {
        "n_replies": len(replies),
        "n_tokens": int(replies["n_new_tokens"].sum()),
        "mean_reading": {
            name: (float(f"{means[name]:.4g}") if name in means.index else None) for name in emotions
        },
    }


def monitor(handle: ModelHandle, out: str, vectors_run: str, prompts: PromptSet, config: MonitorConfig, *,
            quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) monitoring into run folder ``out``; returns the summary written to the manifest.

    Writes ``readings.parquet`` (MONITOR_COLUMNS; see POSITIONS and CENTRING) and ``replies.parquet``.
    """
    return Monitoring(handle, out, vectors_run, prompts, config, quiet=quiet).run()
