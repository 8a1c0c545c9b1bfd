"""Run folders: a manifest, resumable parts, and refusal to mix two different runs in one folder.

A run folder holds one model's stages. ``manifest.json`` records, for each stage, what produced it (package
version, model spec and fingerprint, dtype, device, the layer convention, the stimuli's content hash, the
stage config, the seed, timestamps). Stages write their work in parts as they go; a part that exists is done,
because every file is written through :mod:`affectlens.store.atomic`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from affectlens.conventions import LAYER_CONVENTION
from affectlens.errors import AffectlensError
from affectlens.store.atomic import write_json, write_parquet, write_tensors
from affectlens.store.read import read_parquet, read_tensors
from affectlens.version import __version__

MANIFEST = "manifest.json"


def package_version() -> str:
    return __version__


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def part_tag(keys: Iterable[str]) -> str:
    """A stable name for the part that holds ``keys``: the same work resumes under the same name."""
    return hashlib.sha1("|".join(keys).encode()).hexdigest()[:12]


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return out


class RunStore:
    """One run folder. Stages call ``begin`` (which validates against any earlier run), write parts, ``finish``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise AffectlensError(f"run folder {self.root} exists and is not a folder")

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {}
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise AffectlensError(f"{self.manifest_path}: not valid JSON; is this a run folder?") from None

    def stage(self, name: str) -> dict[str, Any] | None:
        return self.manifest().get("stages", {}).get(name)

    def require(self, name: str) -> dict[str, Any]:
        """The manifest entry of a finished stage, or a clear error."""
        entry = self.stage(name)
        if entry is None or not entry.get("finished"):
            raise AffectlensError(f"{self.root} has no finished {name!r} stage")
        return entry

    def begin(self, name: str, identity: dict[str, Any], extra: dict[str, Any] | None = None) -> bool:
        """Start or resume stage ``name``. ``identity`` (model, stimuli, config, seed) must match an earlier run.

        Returns True when the stage had already finished (nothing to do).
        """
        manifest = self.manifest()
        earlier = manifest.get("stages", {}).get(name)
        if earlier is not None:
            diffs = _differences(earlier["identity"], identity)
            if diffs:
                raise AffectlensError(
                    f"{self.root} holds a {name!r} run with a different "
                    + "; ".join(diffs[:4])
                    + ". Use a new --out folder, or delete the old one."
                )
            return bool(earlier.get("finished"))
        manifest.setdefault("affectlens_version", package_version())
        manifest.setdefault("layer_convention", LAYER_CONVENTION)
        manifest.setdefault("stages", {})[name] = {
            "identity": identity,
            "affectlens_version": package_version(),
            "started": now(),
            "finished": None,
            **(extra or {}),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.manifest_path, manifest)
        return False

    def update(self, name: str, **fields: Any) -> None:
        manifest = self.manifest()
        manifest["stages"][name].update(fields)
        write_json(self.manifest_path, manifest)

    def finish(self, name: str, **fields: Any) -> None:
        self.update(name, finished=now(), **fields)

    def parts(self, name: str) -> Path:
        path = self.root / "parts" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_part(
        self,
        name: str,
        tag: str,
        keys: list[str],
        tables: dict[str, pd.DataFrame] | None = None,
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Write one unit of finished work; its key list is written last and marks the part as done."""
        base = self.parts(name)
        for suffix, frame in (tables or {}).items():
            write_parquet(base / f"{tag}.{suffix}.parquet", frame)
        if tensors:
            write_tensors(base / f"{tag}.safetensors", tensors)
        write_json(base / f"{tag}.json", {"keys": keys})

    def write_extra(self, name: str, suffix: str, frame: pd.DataFrame) -> None:
        """A record beside the parts of work that is no part: what an API group sent before it failed or was
        interrupted, or what a batch answered. Merged with the parts' own ``suffix`` tables at the end."""
        write_parquet(self.parts(name) / f"extra-{time.time_ns()}.{suffix}.parquet", frame)

    def extra_tables(self, name: str, suffix: str) -> list[pd.DataFrame]:
        return [read_parquet(p) for p in sorted(self.parts(name).glob(f"extra-*.{suffix}.parquet"))]

    def done_parts(self, name: str) -> list[tuple[str, list[str]]]:
        """(tag, keys) of every finished part of stage ``name``, in tag order."""
        done = []
        for marker in sorted(self.parts(name).glob("*.json")):
            try:
                keys = json.loads(marker.read_text())["keys"]
            except (ValueError, KeyError):
                continue  # an unreadable marker means an unfinished part: it is redone
            done.append((marker.stem, keys))
        return done

    def part_table(self, name: str, tag: str, suffix: str) -> pd.DataFrame:
        return read_parquet(self.parts(name) / f"{tag}.{suffix}.parquet")

    def part_tensors(self, name: str, tag: str) -> dict[str, torch.Tensor]:
        return read_tensors(self.parts(name) / f"{tag}.safetensors")

    def done_keys(self, name: str) -> set[str]:
        """Every key that a finished part of stage ``name`` holds."""
        return {key for _, keys in self.done_parts(name) for key in keys}

    def merged_table(self, name: str, suffix: str) -> pd.DataFrame:
        """The ``suffix`` tables of every finished part, concatenated in tag order."""
        frames = [self.part_table(name, tag, suffix) for tag, _ in self.done_parts(name)]
        return pd.concat(frames, ignore_index=True)

    def merged_rows(self, name: str, tensor: str, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """Row ``i`` of each part's ``tensor`` under the part's ``i``-th key; every one of ``keys`` must be there."""
        rows: dict[str, torch.Tensor] = {}
        for tag, part_keys in self.done_parts(name):
            stacked = self.part_tensors(name, tag)[tensor]
            rows.update({key: stacked[i] for i, key in enumerate(part_keys)})
        if missing := [k for k in keys if k not in rows]:
            raise AffectlensError(
                f"{self.root}: parts lack {len(missing)} item(s), e.g. {missing[0]}; rerun the stage"
            )
        return rows
