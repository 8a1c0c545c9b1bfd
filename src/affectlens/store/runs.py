"""Typed readers and writers for each kind of run folder: the only place that names their files.

A stage writes its outputs with the ``write_*`` function of its kind; an analysis or the report reads them
with ``read_*``, which checks that the stage finished and returns plain pandas, numpy and torch objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from affectlens.conventions import H_FIRST_POSITION, LAYER_CONVENTION
from affectlens.errors import AffectlensError
from affectlens.faces import is_well_formed
from affectlens.store.atomic import write_parquet, write_tensors
from affectlens.store.manifest import MANIFEST, RunStore
from affectlens.store.read import read_json, read_parquet, read_tensors

ELICIT, LIKELIHOOD, VECTORS, STORIES = "elicit", "likelihood", "vectors", "stories"
STEER, MONITOR = "steer", "monitor"
INTROSPECT, SYNTHESIZE = "introspect", "synthesize"
# Run kinds that leave a per-face cell table (face_cells.parquet) which compare and the ensembles read.
ENCODER_KINDS = (LIKELIHOOD, INTROSPECT, SYNTHESIZE)
GENERATION_COLUMNS = [
    "prompt_id", "cell", "sample", "reply", "face", "face_kind", "well_formed", "n_new_tokens", "stop",
]  # fmt: skip
# Which faces the analyses count: only well-formed ones (the default), or whatever a reply opens with.
FACE_FILTERS = ("well_formed", "all")
# Files that analyses leave in their output folders; the report looks for them by name.
KAOMOJI_ANALYSIS, COMPARISON, EMOTIONS_ANALYSIS = "analysis.json", "comparison.json", "emotions.json"
STEERING_ANALYSIS = "steering.json"
# What an encoder comparison leaves beside COMPARISON; the figure stem gets .png and .svg.
SIMILARITY_TABLE, SIMILARITY_MARKDOWN, SIMILARITY_FIGURE = "similarity.parquet", "similarity.md", "similarity"
ENSEMBLES, LOOKUP = "ensembles.parquet", "lookup.parquet"
VECTOR_TABLES = ("stories", "neutral", "implicit", "emotions", "denoise", "logit_lens")


def finished_stages(path: Path | str) -> dict[str, dict[str, Any]]:
    """The finished stages of a run folder, by name ({} for a folder without a manifest)."""
    stages = RunStore(path).manifest().get("stages", {})
    return {name: entry for name, entry in stages.items() if entry.get("finished")}


def find(roots: Sequence[Path | str], name: str) -> list[Path]:
    """Every file called ``name`` at or under ``roots`` (a root may be that file), without repeats."""
    found: dict[Path, None] = {}
    for root in map(Path, roots):
        if root.is_file() and root.name == name:
            found[root.resolve()] = None
        elif root.is_dir():
            found.update((p.resolve(), None) for p in sorted(root.rglob(name)) if "parts" not in p.parts)
    return list(found)


def run_folders(roots: Sequence[Path | str]) -> dict[Path, dict[str, Any]]:
    """The manifest of every run folder at or under ``roots``, by folder."""
    return {path.parent: read_json(path) for path in find(roots, MANIFEST)}


# ------------------------------------------------------------------------------------------ elicitation


@dataclass
class ElicitRun:
    path: str
    generations: pd.DataFrame  # GENERATION_COLUMNS, prompt order then sample
    prompts: pd.DataFrame  # id, cell, text, ...: the rows of h_first
    h_first: torch.Tensor | None  # [n_prompts, n_layers, d] float32; None for an API model (no hidden states)
    entry: dict[str, Any]  # the manifest's stage entry

    @property
    def spec(self) -> str:
        return str(self.entry["identity"]["model"]["spec"])

    @property
    def has_hidden_states(self) -> bool:
        return self.h_first is not None


def write_elicit(root: Path, generations: pd.DataFrame, prompts: pd.DataFrame, h_first: torch.Tensor | None,
                 layers: Sequence[int]) -> None:  # fmt: skip
    """``h_first`` None (an API model) writes no tensor file; the manifest says ``hidden_states: false``."""
    write_parquet(root / "generations.parquet", generations)
    write_parquet(root / "prompts.parquet", prompts)
    if h_first is None:
        return
    metadata = {"layers": ",".join(map(str, layers)), "prompt_order": "prompts.parquet",
                "position": H_FIRST_POSITION}  # fmt: skip
    write_tensors(root / "h_first.safetensors", {"h_first": h_first}, metadata=metadata)


def _finished(path: Path | str, kind: str) -> tuple[Path, dict[str, Any]]:
    """(folder, manifest entry) of a run whose ``kind`` stage finished, or a clear error."""
    store = RunStore(path)
    return store.root, store.require(kind)


def read_elicit(path: Path | str) -> ElicitRun:
    root, entry = _finished(path, ELICIT)
    hidden = entry.get("hidden_states", True)
    h_first = read_tensors(root / "h_first.safetensors")["h_first"] if hidden else None
    generations, prompts = read_parquet(root / "generations.parquet"), read_parquet(root / "prompts.parquet")
    return ElicitRun(str(path), generations, prompts, h_first, entry)


def read_generations(path: Path | str) -> pd.DataFrame:
    """Only the generations of a finished elicitation run, or of a steer run (no tensors read)."""
    kind = STEER if STEER in finished_stages(path) else ELICIT
    return read_parquet(_finished(path, kind)[0] / "generations.parquet")


def read_elicit_prompts(path: Path | str) -> pd.DataFrame:
    """Only the prompts table (id, cell, text, ...) of a finished elicitation run."""
    return read_parquet(_finished(path, ELICIT)[0] / "prompts.parquet")


def well_formed_mask(generations: pd.DataFrame) -> pd.Series:
    """True where a sample's face is well-formed; runs written before the column existed are judged now."""
    kinds = generations["face_kind"] if "face_kind" in generations else ["kaomoji"] * len(generations)
    judged = pd.Series(
        [
            isinstance(f, str) and is_well_formed(f, k)
            for f, k in zip(generations["face"], kinds, strict=True)
        ],
        index=generations.index,
    )
    if "well_formed" not in generations:
        return judged
    # A resumed run can hold parts written before the column existed: those rows are judged now.
    recorded = generations["well_formed"]
    return recorded.where(recorded.notna(), judged).astype(bool)


def emitted_faces(path: Path | str) -> list[str]:
    """The well-formed faces an elicitation run emitted, most frequent first."""
    generations = read_generations(path)
    faces = generations["face"][well_formed_mask(generations)]
    if faces.empty:
        raise AffectlensError(f"{path} emitted no well-formed faces")
    return list(faces.value_counts().index)


# ------------------------------------------------------------------------------------------- likelihood


@dataclass
class LikelihoodRun:
    path: str
    logp: pd.DataFrame  # face, prompt_id, logp: long form
    face_cells: pd.DataFrame  # indexed by face: one column per cell, entropy_bits, top_cell
    prompts: pd.DataFrame
    entry: dict[str, Any]

    @property
    def spec(self) -> str:
        return str(self.entry["identity"]["model"]["spec"])


def write_likelihood(root: Path, logp: pd.DataFrame, face_cells: pd.DataFrame, prompts: pd.DataFrame) -> None:
    write_parquet(root / "face_logp.parquet", logp)
    write_parquet(root / "face_cells.parquet", face_cells.reset_index())
    write_parquet(root / "prompts.parquet", prompts)


def read_likelihood(path: Path | str) -> LikelihoodRun:
    root, entry = _finished(path, LIKELIHOOD)
    logp, prompts = read_parquet(root / "face_logp.parquet"), read_parquet(root / "prompts.parquet")
    return LikelihoodRun(str(path), logp, _face_cells(root), prompts, entry)


def _face_cells(root: Path) -> pd.DataFrame:
    return read_parquet(root / "face_cells.parquet").set_index("face")


def encoder_kind(path: Path | str) -> str:
    """Which encoder stage (likelihood, introspect, synthesize) a run folder finished, or a clear error."""
    finished = finished_stages(path)
    for kind in ENCODER_KINDS:
        if kind in finished:
            return kind
    raise AffectlensError(f"{path} has no finished encoder stage ({', '.join(ENCODER_KINDS)})")


def read_face_cells(path: Path | str) -> pd.DataFrame:
    """Only the per-face cell table of a finished encoder run (likelihood, introspect or synthesize), indexed
    by face (no log-probs read)."""
    return _face_cells(_finished(path, encoder_kind(path))[0])


def write_judged(root: Path, face_cells: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> None:
    """An API judge's encoder run: ``face_cells.parquet`` in the likelihood schema, plus its own tables
    (``answers``: every sample's answer; ``words`` for synthesis)."""
    write_parquet(root / "face_cells.parquet", face_cells.reset_index())
    for name, frame in tables.items():
        write_parquet(root / f"{name}.parquet", frame)


def read_judged_table(path: Path | str, name: str) -> pd.DataFrame:
    """One of an API judge run's own tables (``answers``, ``words``)."""
    root = _finished(path, encoder_kind(path))[0]
    return read_parquet(root / f"{name}.parquet")


def write_requests(root: Path, accounts: pd.DataFrame) -> None:
    """An API run's accounting: one row per attempt (tokens, retries, request id, from cache or sent)."""
    write_parquet(root / "requests.parquet", accounts)


def batch_state(root: Path | str) -> Path:
    """Where an API stage keeps the id of a submitted batch until its results are in the cache."""
    return Path(root) / "batch.json"


def read_requests(path: Path | str) -> pd.DataFrame:
    """The accounting of an API run (elicit, introspect or synthesize), whichever stage left it."""
    file = Path(path) / "requests.parquet"
    if not file.exists():
        raise AffectlensError(f"{path} holds no API requests (not an API model's run)")
    return read_parquet(file)


# ---------------------------------------------------------------------------------------------- vectors


@dataclass
class VectorsRun:
    """What a finished vectors stage left in its run folder."""

    path: str
    stories: pd.DataFrame
    neutral: pd.DataFrame
    implicit: pd.DataFrame
    emotions: pd.DataFrame
    activations: dict[str, np.ndarray]  # stories / neutral / implicit: float32 [n, n_layers, d]
    raw: np.ndarray  # [n_emotions, n_layers, d]
    denoised: np.ndarray
    denoise: pd.DataFrame
    logit_lens: pd.DataFrame
    layers: list[int]
    entry: dict[str, Any]
    layer_convention: str = field(default=LAYER_CONVENTION)

    @property
    def spec(self) -> str:
        return str(self.entry["identity"]["model"]["spec"])


def write_vectors(root: Path, tables: dict[str, pd.DataFrame], activations: dict[str, torch.Tensor],
                  vectors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:  # fmt: skip
    """``tables`` by the names in VECTOR_TABLES; ``activations`` and ``vectors`` as safetensors."""
    if unknown := set(tables) - set(VECTOR_TABLES):
        raise ValueError(f"unknown vectors tables {sorted(unknown)}")
    for name, frame in tables.items():
        write_parquet(root / f"{name}.parquet", frame)
    write_tensors(root / "activations.safetensors", activations, metadata=metadata)
    write_tensors(root / "vectors.safetensors", vectors, metadata=metadata)


def read_vectors(path: Path | str) -> VectorsRun:
    root, entry = _finished(path, VECTORS)
    acts = read_tensors(root / "activations.safetensors")
    vecs = read_tensors(root / "vectors.safetensors")
    tables = {name: read_parquet(root / f"{name}.parquet") for name in VECTOR_TABLES}
    return VectorsRun(
        path=str(path),
        activations={k: v.numpy() for k, v in acts.items()},
        raw=vecs["raw"].numpy(),
        denoised=vecs["denoised"].numpy(),
        layers=[int(x) for x in entry["layers"]],
        entry=entry,
        layer_convention=str(RunStore(root).manifest().get("layer_convention", "")),
        **tables,
    )


# --------------------------------------------------------------------------------------------- steering

# A steered elicitation's generations: the elicitation columns, then which direction and how strong. The
# unsteered baseline is direction BASELINE at alpha 0 (it is alpha 0 of every direction).
STEER_COLUMNS = [*GENERATION_COLUMNS, "direction", "alpha"]
BASELINE = "none"
DIRECTION_KINDS = ("none", "emotion", "orthogonal", "random")
STEER_TABLES = ("generations", "directions", "projections", "coherence", "prompts")


@dataclass
class SteerRun:
    """What a finished steer stage left in its run folder (every table long form, one row per fact).

    - ``generations``: STEER_COLUMNS, one row per (direction, alpha, prompt, sample);
    - ``directions``: direction, kind (DIRECTION_KINDS), emotion (the emotion it stands for; None for random
      and the baseline), valence, arousal, cell (of that emotion), layer, vector_norm (||v|| before scaling),
      n_L (the layer's mean residual norm), scale (the norm of what alpha 1 adds): one row per steered layer;
    - ``projections``: direction, alpha, prompt_id, cell, emotion, projection: h_first at the read layer,
      minus the neutral mean, on unit(v_emotion) there, for every steered emotion;
    - ``coherence``: direction, alpha, measure (reply_nll | neutral_nll | first_token_kl), item (prompt id,
      "prompt_id#sample" or neutral id), value, n_tokens;
    - ``prompts``: the prompt set.
    """

    path: str
    generations: pd.DataFrame
    directions: pd.DataFrame
    projections: pd.DataFrame
    coherence: pd.DataFrame
    prompts: pd.DataFrame
    entry: dict[str, Any]

    @property
    def spec(self) -> str:
        return str(self.entry["identity"]["model"]["spec"])


def write_steer(root: Path, tables: dict[str, pd.DataFrame]) -> None:
    if set(tables) != set(STEER_TABLES):
        raise ValueError(f"a steer run needs exactly the tables {STEER_TABLES}, got {sorted(tables)}")
    for name, frame in tables.items():
        write_parquet(root / f"{name}.parquet", frame)


def read_steer(path: Path | str) -> SteerRun:
    root, entry = _finished(path, STEER)
    tables = {name: read_parquet(root / f"{name}.parquet") for name in STEER_TABLES}
    return SteerRun(str(path), entry=entry, **tables)


# ------------------------------------------------------------------------------------------- monitoring

MONITOR_COLUMNS = [
    "prompt_id",
    "cell",
    "sample",
    "part",
    "token_index",
    "token_id",
    "token",
    "emotion",
    "reading",
]


@dataclass
class MonitorRun:
    """Per-token readings: ``readings`` has MONITOR_COLUMNS (part is "prompt" or "reply"; token_index counts
    from the part's first token; reading is the residual stream at the layer minus the neutral mean, on
    unit(v_emotion)); ``replies`` has prompt_id, cell, sample, reply, n_new_tokens, stop."""

    path: str
    readings: pd.DataFrame
    replies: pd.DataFrame
    entry: dict[str, Any]

    @property
    def spec(self) -> str:
        return str(self.entry["identity"]["model"]["spec"])


def write_monitor(root: Path, readings: pd.DataFrame, replies: pd.DataFrame) -> None:
    write_parquet(root / "readings.parquet", readings)
    write_parquet(root / "replies.parquet", replies)


def read_monitor(path: Path | str) -> MonitorRun:
    root, entry = _finished(path, MONITOR)
    return MonitorRun(
        str(path), read_parquet(root / "readings.parquet"), read_parquet(root / "replies.parquet"), entry
    )
