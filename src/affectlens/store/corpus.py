"""The corpus folder: ``turns.parquet`` (one row per face turn, redacted), ``files.parquet`` (every transcript
file read, by content digest, so a rerun reads only new or changed files) and ``manifest.json`` (counts per
source, model and outcome, and each ingest).

An ingest writes its tables under new names (``turns.<n>.parquet``), then the manifest that names them, then
the stable names that pandas users open; the manifest is the commit. A killed ingest therefore leaves the
corpus as it was: the reader follows the manifest, never a half-written table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from affectlens.errors import AffectlensError
from affectlens.store.atomic import write_json, write_parquet
from affectlens.store.manifest import MANIFEST
from affectlens.store.read import read_json, read_parquet

CORPUS = "corpus"
SCHEMA_VERSION = "1"


@dataclass
class CorpusRun:
    path: str
    turns: pd.DataFrame
    files: pd.DataFrame
    entry: dict[str, Any]  # the manifest's corpus entry: schema version, counts, ingests


def is_corpus(path: Path | str) -> bool:
    manifest = Path(path) / MANIFEST
    return manifest.is_file() and read_json(manifest).get("kind") == CORPUS


def read_corpus(path: Path | str) -> CorpusRun:
    root = Path(path)
    if not is_corpus(root):
        raise AffectlensError(f"{root} is not a corpus folder (make one with affectlens corpus ingest)")
    entry = read_json(root / MANIFEST)
    return CorpusRun(
        str(root), read_parquet(root / "turns.parquet"), read_parquet(root / "files.parquet"), entry
    )


def write_corpus(root: Path | str, turns: pd.DataFrame, files: pd.DataFrame, entry: dict[str, Any]) -> None:
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise AffectlensError(f"corpus folder {root} exists and is not a folder")
    if (root / MANIFEST).exists() and not is_corpus(root):
        raise AffectlensError(f"{root} holds a run folder, not a corpus; use a new --out")
    generation = int(read_json(root / MANIFEST).get("generation", 0)) + 1 if (root / MANIFEST).exists() else 1
    tables = {"turns": f"turns.{generation}.parquet", "files": f"files.{generation}.parquet"}
    write_parquet(root / tables["turns"], turns)
    write_parquet(root / tables["files"], files)
    manifest = {"kind": CORPUS, "schema_version": SCHEMA_VERSION, "generation": generation, "tables": tables}
    write_json(root / MANIFEST, manifest | entry)
    for name, frame in (("turns", turns), ("files", files)):  # the stable names, for pandas and polars
        write_parquet(root / f"{name}.parquet", frame)
    for old in root.glob("*.parquet"):
        if old.name.count(".") == 2 and old.name not in tables.values():
            old.unlink()


def corpus_contexts(run: CorpusRun) -> pd.DataFrame:
    """(face, prompt_id, message, reply) of every well-formed face turn with a user text: synthesis contexts.
    The texts are the corpus's, redacted at ingest."""
    turns = run.turns[run.turns["well_formed"].astype(bool) & run.turns["user_text"].notna()]
    return pd.DataFrame({"face": turns["face"], "prompt_id": turns["turn_id"], "message": turns["user_text"],
                         "reply": turns["assistant_text"]}).reset_index(drop=True)  # fmt: skip
