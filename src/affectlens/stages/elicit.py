"""Elicitation: ask a model to open its reply with a kaomoji, record the face and the state it came from.

Speed comes from three things. Prompts are batched (left-padded, with per-sequence positions). Each prompt's
prefill runs once, and its KV cache is shared by its N samples; ``h_first``, the residual stream at the last
prompt token (whose logits choose the first reply token), comes out of that same prefill. And a sample leaves
the batch as soon as its face is settled, so nobody decodes 24 tokens to read a 5-token face.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from transformers import DynamicCache

from affectlens.errors import AffectlensError
from affectlens.faces import extract_face, face_settled, is_emoji_cluster
from affectlens.progress import progress
from affectlens.runtime.capture import LastToken, capture
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.render import DEFAULT_INSTRUCTION, Renderer
from affectlens.runtime.tokens import left_pad, split_continuation, token_bytes
from affectlens.stimuli import Prompt, PromptSet, load_prompts
from affectlens.store.atomic import write_parquet, write_tensors
from affectlens.store.manifest import RunStore, part_tag
from affectlens.store.read import read_parquet, read_tensors

STAGE = "elicit"
GENERATION_COLUMNS = ["prompt_id", "cell", "sample", "reply", "face", "face_kind", "n_new_tokens", "stop"]


@dataclass(frozen=True)
class ElicitConfig:
    samples: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 24
    seed: int = 0
    instruction: str = DEFAULT_INSTRUCTION
    primed: bool = False
    suppress: tuple[str, ...] = ()
    layers: tuple[int, ...] | None = None  # None: every decoder layer
    batch_prompts: int = 32  # measured best on a 2-core CPU for SmolLM2 (bench/elicit.py --batch-prompts)

    def identity(self) -> dict[str, object]:
        """The settings that change results (batch size does not)."""
        return {k: v for k, v in self.__dict__.items() if k != "batch_prompts"} | {
            "suppress": list(self.suppress),
            "layers": list(self.layers) if self.layers else "all",
        }


def row_seed(seed: int, prompt_id: str, sample: int) -> int:
    """One RNG stream per (seed, prompt, sample): results do not depend on batching or on resuming."""
    digest = hashlib.sha256(f"{seed}|{prompt_id}|{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class Suppressor:
    """Blocks chosen faces (as the reply's opening tokens) and, optionally, every emoji token."""

    banned_tokens: torch.Tensor  # token ids never allowed
    banned_sequences: list[list[int]] = field(default_factory=list)

    def apply(self, logits: torch.Tensor, generated: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.banned_tokens.numel():
            logits[:, self.banned_tokens] = float("-inf")
        for row, tokens in enumerate(generated):
            for seq in self.banned_sequences:
                # A face is blocked by forbidding its last token after its other tokens opened the reply.
                if len(tokens) == len(seq) - 1 and list(tokens) == seq[:-1]:
                    logits[row, seq[-1]] = float("-inf")
        return logits


def emoji_token_ids(tokenizer) -> torch.Tensor:
    """Ids of tokens that spell an emoji or start a 4-byte UTF-8 emoji sequence (lead bytes F0 9F)."""
    ids = []
    for token_id in range(len(tokenizer)):
        raw = token_bytes(tokenizer, token_id)
        if b"\xf0\x9f" in raw:
            ids.append(token_id)
            continue
        text = raw.decode("utf-8", errors="ignore")
        if any(is_emoji_cluster(ch) for ch in text if ord(ch) > 0x2000):
            ids.append(token_id)
    return torch.tensor(ids, dtype=torch.long)


def build_suppressor(handle: ModelHandle, renderer: Renderer, suppress: Sequence[str]) -> Suppressor | None:
    if not suppress:
        return None
    banned = torch.zeros(0, dtype=torch.long)
    sequences = []
    prefix_text = renderer.render("x")
    prefix_ids = renderer.encode("x")
    for item in suppress:
        if item == "emoji":
            banned = emoji_token_ids(handle.tokenizer)
            continue
        n, tokens = split_continuation(
            handle.tokenizer,
            prefix_ids,
            prefix_text,
            renderer.reply_prefix + item,
            add_special_tokens=not renderer.chat,
        )
        if n != len(prefix_ids) or not tokens:
            raise AffectlensError(f"cannot suppress {item!r}: it merges with the prompt when tokenized")
        sequences.append(tokens)
    return Suppressor(banned, sequences)


def sample_tokens(
    logits: torch.Tensor, generators: Sequence[torch.Generator], temperature: float
) -> torch.Tensor:
    """One token per row by inverse-CDF sampling with that row's own generator (greedy at temperature 0)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    cdf = probs.cumsum(dim=-1)
    draws = torch.stack([torch.rand((), generator=g) for g in generators]).to(cdf.device)
    draws = draws * cdf[:, -1]
    tokens = torch.searchsorted(cdf, draws[:, None]).squeeze(1)
    return tokens.clamp(max=logits.shape[-1] - 1)


def stop_reason(text: str) -> str:
    """Why a settled reply stopped: its face is complete, no face is possible, or its first line ended."""
    face = extract_face(text)
    if face is not None and face.end < len(text) and "\n" not in text[: face.end]:
        return "face"
    return "line" if "\n" in text.strip(" \t") else "no_face"


def _eos_ids(handle: ModelHandle) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(handle.model, "generation_config", None), handle.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


@torch.inference_mode()
def decode(
    handle: ModelHandle,
    logits: torch.Tensor,
    cache: DynamicCache,
    mask: torch.Tensor,
    generators: Sequence[torch.Generator],
    *,
    max_new_tokens: int,
    temperature: float,
    settled: Callable[[str], str | None],
    suppressor: Suppressor | None = None,
) -> tuple[list[list[int]], list[str]]:
    """Sample every row of a prefilled, left-padded batch until EOS, ``settled``, or the token cap.

    ``logits`` [rows, vocab] are the prefill's last-position logits and ``cache`` its KV cache. ``settled``
    reads a row's reply so far and returns why it is done, or None. A finished row leaves the batch at once.
    Returns each row's new tokens and its stop reason ("eos", "cap" or what ``settled`` said).
    """
    model, tokenizer, device = handle.model, handle.tokenizer, handle.device
    next_position = mask.sum(dim=1)
    tokens: list[list[int]] = [[] for _ in generators]
    stop: list[str] = ["cap"] * len(generators)
    active = list(range(len(generators)))
    eos = _eos_ids(handle)
    for step in range(max_new_tokens):
        if suppressor is not None:
            logits = suppressor.apply(logits, [tokens[r] for r in active])
        chosen = sample_tokens(logits, [generators[r] for r in active], temperature).tolist()
        keep = []
        for j, r in enumerate(active):
            if chosen[j] in eos:
                stop[r] = "eos"
                continue
            tokens[r].append(chosen[j])
            reason = settled(tokenizer.decode(tokens[r], skip_special_tokens=True))
            if reason is not None:
                stop[r] = reason
                continue
            keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, next_position = mask[index], next_position[index]
        active = [active[j] for j in keep]
        step_ids = torch.tensor([[tokens[r][-1]] for r in active], device=device)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=next_position[:, None],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        next_position = next_position + 1
    return tokens, stop


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
        temperature=config.temperature,
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
                "n_new_tokens": len(tokens[r]),
                "stop": stop[r],
            }
        )
    return first.hidden.cpu(), records


def resolve_layers(handle: ModelHandle, layers: Sequence[int] | None) -> list[int]:
    if not layers:
        return list(range(handle.n_layers))
    bad = [layer for layer in layers if not 0 <= layer < handle.n_layers]
    if bad:
        raise AffectlensError(f"layers {bad} out of range: {handle.spec} has layers 0..{handle.n_layers - 1}")
    return sorted(set(layers))


def _batches(prompts: list[Prompt], renderer: Renderer, size: int) -> list[list[Prompt]]:
    """Length-sorted batches, so that padding stays short."""
    ordered = sorted(prompts, key=lambda p: len(renderer.encode(p.text)))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def elicit(
    handle: ModelHandle,
    out: str,
    prompts: PromptSet | None = None,
    config: ElicitConfig | None = None,
    *,
    quiet: bool = False,
) -> dict[str, object]:
    """Run (or resume) elicitation into run folder ``out``; returns the summary written to the manifest."""
    config = config or ElicitConfig()
    prompts = load_prompts() if prompts is None else prompts  # an empty set is an error, not the default
    if len(prompts) == 0:
        raise AffectlensError("the prompt set is empty")
    if config.samples < 1 or config.max_new_tokens < 1:
        raise AffectlensError("--samples and --max-new-tokens must be at least 1")
    layers = resolve_layers(handle, config.layers)
    renderer = Renderer(handle.tokenizer, config.instruction, config.primed)
    store = RunStore(out)
    identity = {
        "model": {"spec": handle.spec, "fingerprint": handle.fingerprint},
        "stimuli": {"hash": prompts.hash, "n": len(prompts)},
        "config": config.identity(),
    }
    if store.begin(
        STAGE,
        identity,
        {
            "model": handle.describe(),
            "prompting": renderer.describe(),
            "layers": layers,
            "stimuli_source": prompts.source,
        },
    ):
        return store.stage(STAGE)["summary"]
    suppressor = build_suppressor(handle, renderer, config.suppress)
    done = {key for _, keys in store.done_parts(STAGE) for key in keys}
    pending = [p for p in prompts if p.id not in done]
    started = time.perf_counter()
    with progress(quiet) as bar:
        task = bar.add_task(
            f"elicit {handle.spec}", total=len(prompts) * config.samples, completed=len(done) * config.samples
        )
        for batch in _batches(pending, renderer, config.batch_prompts):
            hidden, records = generate_batch(handle, renderer, batch, config, layers, suppressor)
            store.write_part(
                STAGE,
                part_tag(p.id for p in batch),
                [p.id for p in batch],
                tables={"generations": pd.DataFrame.from_records(records, columns=GENERATION_COLUMNS)},
                tensors={"h_first": hidden},
            )
            bar.advance(task, len(records))
    elapsed = time.perf_counter() - started
    generations, h_first = _merge(store, prompts)
    write_parquet(store.root / "generations.parquet", generations)
    write_parquet(store.root / "prompts.parquet", prompts.to_frame())
    write_tensors(
        store.root / "h_first.safetensors",
        {"h_first": h_first},
        metadata={
            "layers": ",".join(map(str, layers)),
            "prompt_order": "prompts.parquet",
            "position": "last prompt token",
        },
    )
    summary = summarize(generations)
    summary["seconds"] = round(elapsed, 1)
    summary["samples_per_second"] = round(len(pending) * config.samples / max(elapsed, 1e-9), 2)
    store.finish(STAGE, summary=summary)
    return summary


def _merge(store: RunStore, prompts: PromptSet) -> tuple[pd.DataFrame, torch.Tensor]:
    """Gather all parts into prompt order."""
    frames, rows = [], {}
    for tag, keys in store.done_parts(STAGE):
        frames.append(store.part_table(STAGE, tag, "generations"))
        hidden = store.part_tensors(STAGE, tag)["h_first"]
        rows.update({key: hidden[i] for i, key in enumerate(keys)})
    order = {p.id: i for i, p in enumerate(prompts)}
    generations = pd.concat(frames, ignore_index=True)
    generations = generations.sort_values(
        ["prompt_id", "sample"], key=lambda c: c.map(order) if c.name == "prompt_id" else c
    )
    h_first = torch.stack([rows[p.id] for p in prompts])
    return generations.reset_index(drop=True), h_first


def summarize(generations: pd.DataFrame, top: int = 3) -> dict[str, object]:
    """Face rate per cell and the top faces per cell."""
    per_cell = {}
    for cell, group in generations.groupby("cell", sort=False):
        faces = group["face"].dropna()
        per_cell[cell] = {
            "n": len(group),
            "face_rate": round(len(faces) / len(group), 3),
            "top_faces": [[face, int(count)] for face, count in faces.value_counts().head(top).items()],
        }
    faces = generations["face"].dropna()
    return {
        "n_samples": len(generations),
        "face_rate": round(len(faces) / max(len(generations), 1), 3),
        "n_distinct_faces": int(faces.nunique()),
        "cells": per_cell,
    }


def load_elicitation(run: str) -> tuple[pd.DataFrame, pd.DataFrame, torch.Tensor, dict[str, object]]:
    """(generations, prompts, h_first [prompts, layers, d], manifest stage entry) of a finished run."""
    store = RunStore(run)
    entry = store.require(STAGE)
    generations = read_parquet(store.root / "generations.parquet")
    prompts = read_parquet(store.root / "prompts.parquet")
    h_first = read_tensors(store.root / "h_first.safetensors")["h_first"]
    return generations, prompts, h_first, entry
