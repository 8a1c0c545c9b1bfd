"""Elicitation under steering: the same prompts, instruction and seeds, with a direction added at each alpha.

Each (direction, alpha) is one part, so a killed sweep resumes where it stopped. The baseline (no hook) is
one condition, ``none`` at alpha 0, shared by every direction; its replies are identical to ``affectlens
elicit`` with the same settings (same batches, same per-row seeds). Directions:

- ``<emotion>``: the emotion's vector (denoised by default) at each steered layer;
- ``<emotion>:orthogonal``: the same with the other steered emotions' components projected out, per layer;
- ``random-<k>``: Gaussian directions drawn with ``control_seed``, one per layer.

With ``unit="norm"`` each adds ``alpha * unit(d) * n_L``, so every direction is norm-matched by construction;
with ``unit="raw"`` an emotion adds ``alpha * v``, and the controls are scaled to the emotions' mean ||v||.
Besides the replies, each condition records the projection of h_first (at ``read_layer``, downstream of the
steered block) on every steered emotion, and coherence: the NLL of the baseline's replies and of the neutral
dialogues under the steering, and the KL from the baseline's first-reply-token distribution.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from affectlens.config import SteerConfig
from affectlens.errors import AffectlensError
from affectlens.runtime.coherence import kl_divergence, next_token_logp, teacher_forced
from affectlens.runtime.generate import Suppressor, build_suppressor
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.render import Renderer
from affectlens.runtime.steer import NORM_RULE, Steering, SteerTerm, mean_norms, steer_terms
from affectlens.stages.base import Part, Stage
from affectlens.stages.elicit import generate_batch, prompt_batches
from affectlens.stimuli import PromptSet
from affectlens.stimuli.corpus import Corpus, load_corpus
from affectlens.store.runs import (
    BASELINE,
    GENERATION_COLUMNS,
    STEER,
    STEER_COLUMNS,
    read_vectors,
    write_steer,
)

# |alpha| beyond this (in units of n_L; for raw units, |alpha| * ||v|| beyond n_L) needs force=True.
ALPHA_BOUND = 1.0
READ_OFFSET = 3  # h_first is read this many layers past the deepest steered block (or the nearest stored)
ORTHOGONAL_RULE = "v_e minus its projection on the span of the other steered emotions' vectors, per layer"
RANDOM_RULE = "standard normal in R^d per layer from torch.Generator(control_seed * 1000 + k), then unit norm"
NEUTRAL_NLL_RULE = "neutral dialogues are scored with the steering at every position, whatever the sweep's"


def _key(direction: str, alpha: float) -> str:
    return f"{direction}@{alpha!r}"


class SteerSweep(Stage):
    name = STEER

    def __init__(self, handle: ModelHandle, out: str, prompts: PromptSet, vectors_run: str, config: SteerConfig,
                 *, neutral: Corpus | None = None, quiet: bool = False) -> None:  # fmt: skip
        super().__init__(handle, out, quiet=quiet)
        self.prompts, self.vectors_path, self.config = prompts, str(vectors_run), config
        self.by_id = {p.id: p for p in prompts}
        self.renderer = Renderer(handle.tokenizer, config.instruction, config.primed)
        self.neutral_corpus = neutral
        self.suppressor: Suppressor | None = None
        self._baseline: pd.DataFrame | None = None

    # -- checks, all before the model runs (except n_L, which the raw-unit bound needs) ---------------------

    def validate(self) -> None:
        config, handle = self.config, self.handle
        if len(self.prompts) == 0:
            raise AffectlensError("the prompt set is empty")
        run = read_vectors(self.vectors_path)
        theirs = run.entry["identity"]["model"]
        if theirs["fingerprint"] != handle.fingerprint:
            raise AffectlensError(
                f"vectors run {self.vectors_path} was made with {theirs['spec']} (fingerprint "
                f"{theirs['fingerprint'][:12]}), not {handle.spec} ({handle.fingerprint[:12]})"
            )
        names = list(run.emotions["name"])
        if missing := [e for e in config.emotions if e not in names]:
            raise AffectlensError(
                f"emotion {', '.join(map(repr, missing))} not in vectors run {self.vectors_path}; it has {', '.join(names)}"
            )
        if len(set(config.emotions)) != len(config.emotions):
            raise AffectlensError(f"emotions repeat: {', '.join(config.emotions)}")
        stored = run.layers
        layers = list(config.steer_layers or [int(run.entry.get("headline_layer", stored[len(stored) // 2]))])
        for layer in layers:
            if not 0 <= layer < handle.n_layers:
                raise AffectlensError(
                    f"layer {layer} out of range: {handle.spec} has layers 0..{handle.n_layers - 1}"
                )
            if layer not in stored:
                raise AffectlensError(
                    f"layer {layer} is not in vectors run {self.vectors_path} (it has {stored})"
                )
        self.layers = sorted(set(layers))
        # h_first is read downstream of every steered block: at the steered block it would only echo the addition.
        downstream = [la for la in stored if la > max(self.layers)]
        if config.read_layer is None:
            if not downstream:
                raise AffectlensError(
                    f"vectors run {self.vectors_path} stores no layer past {max(self.layers)} to read h_first at"
                )
            target = max(self.layers) + READ_OFFSET
            self.read_layer = min(downstream, key=lambda la: (abs(la - target), -la))
        elif config.read_layer not in downstream:
            raise AffectlensError(
                f"read layer {config.read_layer} is not in vectors run {self.vectors_path} past the steered "
                f"layers {self.layers} (it has {stored})"
            )
        else:
            self.read_layer = config.read_layer
        if (
            config.unit == "norm"
            and not config.force
            and (big := [a for a in config.alphas if abs(a) > ALPHA_BOUND])
        ):
            raise AffectlensError(
                f"alpha {big[0]} is beyond +-{ALPHA_BOUND} x the layer's mean norm; pass --force to steer that hard"
            )
        self._build(run)

    def _build(self, run) -> None:
        """The directions per layer, the read-out vectors, and n_L."""
        config = self.config
        table = run.denoised if config.vector == "denoised" else run.raw
        names = list(run.emotions["name"])
        info = run.emotions.set_index("name")
        at = {layer: run.layers.index(layer) for layer in (*self.layers, self.read_layer)}
        vec = {e: {la: torch.from_numpy(np.asarray(table[names.index(e), at[la]])).float() for la in at}
               for e in config.emotions}  # fmt: skip
        corpus = self.neutral_corpus or load_corpus()
        offset = int(run.entry["identity"]["config"].get("offset", 50))
        self.norms = mean_norms(self.handle, self.layers, [d.text for d in corpus.neutral], offset=offset)
        scored = corpus.neutral[: config.neutral_texts]
        self.neutral_ids = [
            self.handle.tokenizer(d.text, add_special_tokens=True)["input_ids"] for d in scored
        ]
        self.neutral_names = [d.id for d in scored]
        if config.unit == "raw" and not config.force:
            for e in config.emotions:
                for la in self.layers:
                    if (
                        max(abs(a) for a in config.alphas) * float(vec[e][la].norm())
                        > ALPHA_BOUND * self.norms[la]
                    ):
                        raise AffectlensError(
                            f"alpha x ||{e}|| at layer {la} is beyond n_L; pass --force to steer that hard"
                        )
        directions: dict[str, dict[int, torch.Tensor]] = {}
        meta: dict[str, dict[str, Any]] = {}

        def emotion_meta(e: str | None, kind: str) -> dict[str, Any]:
            row = info.loc[e] if e is not None else None
            return {"kind": kind, "emotion": e,
                    "valence": float(row["valence"]) if row is not None else None,
                    "arousal": float(row["arousal"]) if row is not None else None,
                    "cell": str(row["cell"]) if row is not None else None}  # fmt: skip

        for e in config.emotions:
            directions[e] = {la: vec[e][la] for la in self.layers}
            meta[e] = emotion_meta(e, "emotion")
        if config.orthogonal_controls and len(config.emotions) > 1:
            for e in config.emotions:
                per_layer = {}
                for la in self.layers:
                    others = torch.stack([vec[o][la] for o in config.emotions if o != e], dim=1).double()
                    q, _ = torch.linalg.qr(others)
                    v = vec[e][la].double()
                    rest = (v - q @ (q.T @ v)).float()
                    if float(rest.norm()) < 1e-6 * float(v.norm()):
                        raise AffectlensError(f"{e} lies in the span of the other emotions at layer {la}")
                    per_layer[la] = rest / rest.norm() * vec[e][la].norm()  # raw units: norm-matched to v_e
                directions[f"{e}:orthogonal"] = per_layer
                meta[f"{e}:orthogonal"] = emotion_meta(e, "orthogonal")
        mean_norm = {
            la: float(np.mean([float(vec[e][la].norm()) for e in config.emotions])) for la in self.layers
        }
        for k in range(config.random_controls):
            g = torch.Generator().manual_seed(config.control_seed * 1000 + k)
            per_layer = {}
            for la in self.layers:
                r = torch.randn(self.handle.d_model, generator=g)
                per_layer[la] = r / r.norm() * mean_norm[la]
            directions[f"random-{k}"] = per_layer
            meta[f"random-{k}"] = emotion_meta(None, "random")
        self.terms: dict[str, list[SteerTerm]] = {
            name: steer_terms(per_layer, unit=config.unit, norms=self.norms)
            for name, per_layer in directions.items()
        }
        self.meta = meta
        read = {e: vec[e][self.read_layer] for e in config.emotions}
        self.read_units = {e: v / v.norm() for e, v in read.items()}
        neutral = run.activations["neutral"][:, at[self.read_layer]]
        self.neutral_mean = torch.from_numpy(np.asarray(neutral.mean(axis=0))).float()
        self.conditions = {_key(BASELINE, 0.0): (BASELINE, 0.0)}
        for name in directions:
            for alpha in config.alphas:
                if alpha != 0:
                    self.conditions[_key(name, float(alpha))] = (name, float(alpha))
        self.vectors_identity = run.entry["identity"]

    # -- the stage ----------------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        return {
            "model": {"spec": self.handle.spec, "fingerprint": self.handle.fingerprint},
            "stimuli": {"hash": self.prompts.hash, "n": len(self.prompts)},
            "vectors": self.vectors_identity,
            # What the vectors run and the neutral corpus gave this sweep: a rebuilt vectors folder or another
            # corpus under the same identity must not resume into it.
            "steering_digest": self._digest(),
            "config": self.config.identity(),
        }

    def _digest(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.terms):
            for term in self.terms[name]:
                h.update(name.encode() + term.delta.numpy().astype("<f4").tobytes())
        for e in sorted(self.read_units):
            h.update(self.read_units[e].numpy().astype("<f4").tobytes())
        h.update(self.neutral_mean.numpy().astype("<f4").tobytes() + "|".join(self.neutral_names).encode())
        return h.hexdigest()[:16]

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {
            "prompting": self.renderer.describe(),
            "vectors_run": str(Path(self.vectors_path).resolve()),
            "steering": {
                "layers": self.layers,
                "unit": self.config.unit,
                "unit_rule": "alpha x unit(d) x n_L" if self.config.unit == "norm" else "alpha x d (raw)",
                "position": self.config.position,
                "n_L": {str(k): v for k, v in self.norms.items()},
                "n_L_rule": NORM_RULE,
                "vector": self.config.vector,
                "read_layer": self.read_layer,
                "orthogonal_rule": ORTHOGONAL_RULE,
                "random_rule": RANDOM_RULE,
                "control_seed": self.config.control_seed,
                "neutral_nll_rule": NEUTRAL_NLL_RULE,
            },
            "cells": self.prompts.cells,
        }

    def keys(self) -> list[str]:
        return list(self.conditions)

    def weight(self) -> int:
        return len(self.prompts) * self.config.samples

    def prepare(self, pending: Sequence[str]) -> None:
        self.suppressor = build_suppressor(self.handle, self.renderer, self.config.suppress)
        self.prompt_ids = {p.id: self.renderer.encode(p.text) for p in self.prompts}
        # The batches elicitation makes, so that alpha 0 reproduces `affectlens elicit` exactly.
        self.batches = prompt_batches(self.renderer, self.by_id, list(self.by_id), self.config.batch_prompts)
        # The unsteered first-reply-token distribution, computed here, outside any steering context.
        self.baseline_logp = next_token_logp(self.handle, [self.prompt_ids[p.id] for p in self.prompts])

    def groups(self, pending: Sequence[str]) -> list[list[str]]:
        return [[key] for key in pending]

    def compute(self, group: list[str]) -> Part:
        direction, alpha = self.conditions[group[0]]
        terms = self.terms.get(direction, [])
        steering = Steering(self.handle, terms, alpha, self.config.position) if terms else None
        with steering or nullcontext():
            generations, projections = self._elicit()
            if direction == BASELINE:
                self._baseline = generations
            coherence = self._reply_coherence(steering)
        with Steering(self.handle, terms, alpha, "all") if terms else nullcontext():
            coherence += self._neutral_coherence()
        label = {"direction": direction, "alpha": alpha}
        return Part(tables={
            "generations": generations.assign(**label)[STEER_COLUMNS],
            "projections": pd.DataFrame(projections).assign(**label),
            "coherence": pd.DataFrame(coherence).assign(**label),
        })  # fmt: skip

    def _elicit(self) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        records, projections = [], []
        for batch in self.batches:
            prompts = [self.by_id[key] for key in batch]
            hidden, rows = generate_batch(self.handle, self.renderer, prompts, self.config, [self.read_layer],
                                          self.suppressor)  # fmt: skip
            records += rows
            centred = hidden[:, 0].float() - self.neutral_mean
            for e, unit in self.read_units.items():
                for prompt, value in zip(prompts, (centred @ unit).tolist(), strict=True):
                    projections.append(
                        {"prompt_id": prompt.id, "cell": prompt.cell, "emotion": e, "projection": value}
                    )
        order = {p.id: i for i, p in enumerate(self.prompts)}
        frame = pd.DataFrame.from_records(records, columns=GENERATION_COLUMNS)
        frame = frame.sort_values(
            ["prompt_id", "sample"], key=lambda c: c.map(order) if c.name == "prompt_id" else c
        )
        return frame.reset_index(drop=True), projections

    def _baseline_generations(self) -> pd.DataFrame:
        if self._baseline is None:
            tag = next(t for t, keys in self.store.done_parts(self.name) if keys == [_key(BASELINE, 0.0)])
            self._baseline = self.store.part_table(self.name, tag, "generations")
        return self._baseline

    def _reply_coherence(self, steering: Steering | None) -> list[dict[str, Any]]:
        """NLL of the baseline's replies (prompt + reply, teacher-forced) and the first-reply-token KL."""
        baseline = self._baseline_generations()
        tok = self.handle.tokenizer
        sequences, starts, items, prompt_of = [], [], [], []
        # Sample 0 of the first prompts of each cell: coherence is two extra passes, bounded by the config.
        scored = {p.id for p in self.prompts.balanced(self.config.coherence_per_cell)}
        for row in baseline[(baseline["sample"] == 0) & baseline["prompt_id"].isin(scored)].itertuples():
            prompt = self.prompt_ids[row.prompt_id]
            reply = tok(row.reply or "", add_special_tokens=False)["input_ids"]
            sequences.append(prompt + reply)
            starts.append(len(prompt))
            items.append(f"{row.prompt_id}#{row.sample}")
            prompt_of.append(row.prompt_id)
        scored = teacher_forced(self.handle, sequences, starts, keep_first=True, steering=steering)
        rows = [{"measure": "reply_nll", "item": item, "value": s.nll_sum / s.n_tokens, "n_tokens": s.n_tokens}
                for item, s in zip(items, scored, strict=True) if s.n_tokens]  # fmt: skip
        first = {}
        for pid, s in zip(prompt_of, scored, strict=True):
            first.setdefault(pid, s.last_prompt_logp)
        index = {p.id: i for i, p in enumerate(self.prompts)}
        ids = list(first)
        kl = kl_divergence(self.baseline_logp[[index[p] for p in ids]], torch.stack([first[p] for p in ids]))
        rows += [{"measure": "first_token_kl", "item": p, "value": float(v), "n_tokens": 1}
                 for p, v in zip(ids, kl.tolist(), strict=True)]  # fmt: skip
        return rows

    def _neutral_coherence(self) -> list[dict[str, Any]]:
        scored = teacher_forced(self.handle, self.neutral_ids, [1] * len(self.neutral_ids))
        return [{"measure": "neutral_nll", "item": name, "value": s.nll_sum / s.n_tokens, "n_tokens": s.n_tokens}
                for name, s in zip(self.neutral_names, scored, strict=True) if s.n_tokens]  # fmt: skip

    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        order = {key: i for i, key in enumerate(self.keys())}

        def key_of(frame: pd.DataFrame) -> list[int]:
            return [order[_key(d, float(a))] for d, a in zip(frame["direction"], frame["alpha"], strict=True)]

        tables = {}
        for suffix in ("generations", "projections", "coherence"):
            frame = self.store.merged_table(self.name, suffix)
            frame = (
                frame.assign(_order=key_of(frame)).sort_values("_order", kind="stable").drop(columns="_order")
            )
            tables[suffix] = frame.reset_index(drop=True)
        tables["directions"] = pd.DataFrame([
            {"direction": name, **self.meta[name], "layer": t.layer, "vector_norm": t.vector_norm, "n_L": t.n_l,
             "scale": float(t.delta.norm())}
            for name, terms in self.terms.items() for t in terms
        ] + [{"direction": BASELINE, "kind": "none", "emotion": None, "valence": None, "arousal": None,
              "cell": None, "layer": None, "vector_norm": 0.0, "n_L": None, "scale": 0.0}])  # fmt: skip
        tables["prompts"] = self.prompts.to_frame()
        write_steer(self.store.root, tables)
        generations = tables["generations"]
        well = generations["well_formed"].fillna(False).astype(bool)
        rate = generations.assign(well=well).groupby(["direction", "alpha"], sort=False)["well"].mean()
        n_rows = n_computed * len(self.prompts) * self.config.samples
        return {
            "n_conditions": len(order),
            "n_directions": len(self.terms),
            "n_replies": len(generations),
            "layers": self.layers,
            "read_layer": self.read_layer,
            "n_L": {str(k): round(v, 2) for k, v in self.norms.items()},
            "well_formed_rate": {f"{d}@{a:g}": round(float(v), 3) for (d, a), v in rate.items()},
            "seconds": round(seconds, 1),
            "samples_per_second": round(n_rows / max(seconds, 1e-9), 2),
        }


def steer_sweep(handle: ModelHandle, out: str, prompts: PromptSet, vectors_run: str, config: SteerConfig, *,
                neutral: Corpus | None = None, quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) a steering sweep into run folder ``out``; returns the manifest's summary."""
    return SteerSweep(handle, out, prompts, vectors_run, config, neutral=neutral, quiet=quiet).run()
