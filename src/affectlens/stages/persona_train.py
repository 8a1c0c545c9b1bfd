"""``persona train``: a LoRA adapter on one trait pole of the trait corpus, or on its neutral answers (control).

Each epoch is one part: the LoRA weights and AdamW's moments after it, plus its step losses. A killed run
resumes at the first unfinished epoch from the last finished one's weights and moments, with that epoch's
own seeded order, so it ends where an uninterrupted run ends. ``merge`` writes ``adapter/`` (peft's format),
which makes the run folder a model spec for every other stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from affectlens.config import PersonaTrainConfig
from affectlens.errors import AffectlensError
from affectlens.runtime.adapters import ADAPTER_DIR
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.lora import (
    build_example,
    load_optimizer_state,
    load_trainable_state,
    lora_model,
    mean_loss,
    optimizer_state,
    train_epoch,
    trainable_state,
)
from affectlens.runtime.render import Renderer
from affectlens.stages.base import Part, Stage
from affectlens.stimuli.traits import TraitCorpus
from affectlens.store.atomic import atomic_folder
from affectlens.store.persona import TRAIN, write_training


def _epoch(key: str) -> int:
    return int(key.removeprefix("epoch-"))


class PersonaTrain(Stage):
    name = TRAIN

    def __init__(self, handle: ModelHandle, out: str, corpus: TraitCorpus, config: PersonaTrainConfig, *,
                 qlora: bool = False, quiet: bool = False) -> None:  # fmt: skip
        super().__init__(handle, out, quiet=quiet)
        self.corpus, self.config, self.qlora = corpus, config, qlora
        self.renderer = Renderer(handle.tokenizer, config.instruction)

    def validate(self) -> None:
        if self.corpus.trait != self.config.trait:
            raise AffectlensError(f"corpus is for {self.corpus.trait!r}, config for {self.config.trait!r}")
        voice, limit = self.config.voice, self.config.max_length

        def examples(split: str) -> list:
            return [
                build_example(
                    self.renderer, i.question, i.answer(voice), limit, f"{self.corpus.source}: {i.id}"
                )
                for i in self.corpus.split(split)
            ]

        self.train, self.test = examples("train"), examples("test")

    def identity(self) -> dict[str, Any]:
        spec = self.handle.spec
        base = str(Path(spec).expanduser().resolve()) if Path(spec).expanduser().exists() else spec
        return {
            "base": base,
            "model": {"spec": base, "fingerprint": self.handle.fingerprint},
            "stimuli": {"trait": self.corpus.trait, "hash": self.corpus.hash, "voice": self.config.voice},
            "config": self.config.identity(),
            "qlora": self.qlora,
        }

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {
            "prompting": self.renderer.describe(),
            "corpus": self.corpus.source,
        }

    def keys(self) -> list[str]:
        return [f"epoch-{e}" for e in range(1, self.config.epochs + 1)]

    def prepare(self, pending: Sequence[str]) -> None:
        """The LoRA model and its optimizer, at the state after the last finished epoch."""
        self.model = lora_model(self.handle, self.config)
        self.names = [name for name, p in self.model.named_parameters() if p.requires_grad]
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.config.learning_rate, weight_decay=0.0)
        done = sorted((_epoch(keys[0]), tag) for tag, keys in self.store.done_parts(self.name))
        if done:
            state = self.store.part_tensors(self.name, done[-1][1])
            weights = {k.removeprefix("lora."): v for k, v in state.items() if k.startswith("lora.")}
            load_trainable_state(self.model, weights)
            load_optimizer_state(self.optimizer, self.names, state)

    def groups(self, pending: Sequence[str]) -> list[list[str]]:
        return [[key] for key in pending]

    def compute(self, group: list[str]) -> Part:
        epoch = _epoch(group[0])
        losses = train_epoch(self.model, self.optimizer, self.train, epoch=epoch, config=self.config,
                             pad_id=self.handle.tokenizer.pad_token_id)  # fmt: skip
        weights = {f"lora.{k}": v for k, v in trainable_state(self.model).items()}
        steps = pd.DataFrame({"epoch": epoch, "step": range(1, len(losses) + 1), "loss": losses})
        return Part(tables={"steps": steps}, tensors=weights | optimizer_state(self.optimizer, self.names))

    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        steps = self.store.merged_table(self.name, "steps").sort_values(["epoch", "step"], ignore_index=True)
        write_training(self.store.root, steps)
        pad = self.handle.tokenizer.pad_token_id
        after = mean_loss(self.model, self.test, pad_id=pad)
        with self.model.disable_adapter():
            before = mean_loss(self.model, self.test, pad_id=pad)
        with atomic_folder(self.store.root / ADAPTER_DIR) as tmp:
            self.model.save_pretrained(str(tmp))
        n_trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.handle.model = self.model.unload()  # the handle is the base model again, as the caller gave it
        return {
            "n_train": len(self.train),
            "n_test": len(self.test),
            "voice": self.config.voice,
            "trainable_parameters": int(n_trainable),
            "final_epoch_loss": round(float(steps[steps.epoch == steps.epoch.max()].loss.mean()), 4),
            "heldout_loss_before": round(before, 4),
            "heldout_loss_after": round(after, 4),
            "seconds": round(seconds, 1),
            "qlora": self.qlora,
        }
