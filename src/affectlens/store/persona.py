"""Persona run folders: what ``persona train`` and ``persona measure`` write, and the typed readers of both.

A train run holds ``adapter/`` (peft's ``adapter_config.json`` and ``adapter_model.safetensors``) and
``training.parquet`` (one row per optimizer step: epoch, step, loss). A measure run holds::

    replies.parquet     question_id, sample, reply, n_sentences, n_emoji_sentences, has_emoji, has_kaomoji
    mass.parquet        question_id, context (first_token, or end:<voice>: the mean at the sentence ends of
                        that corpus answer), mass, n (positions)
    incontext.parquet   sample, reply, items (the tokens the reply listed, JSON list)
    occurrences.parquet question_id, emoji: each emoji inserted into the emoji-bearing texts (rows of ``each``)
    neurons.safetensors trait [questions, layers, d_mlp] MLP activations at the last prompt token;
                        emoji, plain [questions, layers, d_mlp]: mean activation over the emoji tokens of each
                        emoji-bearing text, and over its other tokens; each [occurrences, layers, d_mlp]: over
                        one inserted emoji's tokens
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from affectlens.store.atomic import write_parquet, write_tensors
from affectlens.store.manifest import RunStore
from affectlens.store.read import read_parquet, read_tensors

TRAIN = "persona_train"
MEASURE = "persona_measure"


def _finished(path: Path | str, kind: str) -> tuple[Path, dict[str, Any]]:
    store = RunStore(path)
    return store.root, store.require(kind)


def write_training(root: Path, steps: pd.DataFrame) -> None:
    write_parquet(root / "training.parquet", steps)


@dataclass
class MeasureRun:
    root: Path
    entry: dict[str, Any]
    replies: pd.DataFrame
    mass: pd.DataFrame
    incontext: pd.DataFrame
    occurrences: pd.DataFrame
    neurons: dict[str, torch.Tensor]

    @property
    def trait(self) -> str:
        return self.entry["identity"]["config"]["trait"]

    @property
    def label(self) -> str:
        return self.entry.get("label") or self.root.name


def write_measure(root: Path, tables: dict[str, pd.DataFrame], neurons: dict[str, torch.Tensor]) -> None:
    for name, frame in tables.items():
        write_parquet(root / f"{name}.parquet", frame)
    write_tensors(root / "neurons.safetensors", {k: v.contiguous() for k, v in neurons.items()})


def read_measure(path: Path | str) -> MeasureRun:
    root, entry = _finished(path, MEASURE)
    tables = {
        name: read_parquet(root / f"{name}.parquet")
        for name in ("replies", "mass", "incontext", "occurrences")
    }
    return MeasureRun(root, entry, neurons=read_tensors(root / "neurons.safetensors"), **tables)


PERSONA_ANALYSIS = "persona.json"
