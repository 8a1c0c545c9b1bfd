"""Affect prompts (first-person disclosures in nine cells), the kaomoji catalogue and the priming exchanges."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from affectlens.cells import CellSet, default_cells
from affectlens.errors import AffectlensError
from affectlens.faces import canonicalize
from affectlens.stimuli.jsonl import DATA_DIR, content_hash, read_jsonl, read_lines

DEFAULT_PROMPTS = DATA_DIR / "prompts.jsonl"
DEFAULT_CATALOGUE = DATA_DIR / "kaomoji.txt"
DEFAULT_PRIMER = DATA_DIR / "primer.jsonl"


@dataclass(frozen=True)
class Prompt:
    id: str
    cell: str
    text: str
    dominance: str | None = None
    domain: str | None = None


@dataclass(frozen=True)
class PromptSet:
    prompts: tuple[Prompt, ...]
    hash: str
    source: str
    cells: str = "pad9"  # the name of the registered cell set the prompts' cells belong to

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self):
        return iter(self.prompts)

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame([asdict(p) for p in self.prompts])
        frame["n_chars"] = frame["text"].str.len()
        return frame


def load_prompts(path: Path | str | None = None, cells: CellSet | None = None) -> PromptSet:
    """Load and validate a prompt JSONL (``id``, ``cell``, ``text``, optional ``dominance``, ``domain``)."""
    cells = cells or default_cells()
    path = Path(path) if path is not None else DEFAULT_PROMPTS
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for number, record in read_jsonl(path):
        where = f"{path}:{number}"
        for key in ("id", "cell", "text"):
            if not isinstance(record.get(key), str):
                raise AffectlensError(f"{where}: missing or non-string field {key!r}")
        unknown = set(record) - {"id", "cell", "text", "dominance", "domain"}
        if unknown:
            raise AffectlensError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        if record["cell"] not in cells.codes:
            raise AffectlensError(
                f"{where}: unknown cell {record['cell']!r}; expected one of {', '.join(cells.codes)}"
            )
        if not record["text"].strip():
            raise AffectlensError(f"{where}: empty text for prompt {record['id']!r}")
        if record["id"] in seen:
            raise AffectlensError(
                f"{where}: duplicate id {record['id']!r} (first on line {seen[record['id']]})"
            )
        seen[record["id"]] = number
        prompts.append(Prompt(**record))
    return PromptSet(tuple(prompts), content_hash(asdict(p) for p in prompts), str(path), cells.name)


def load_catalogue(path: Path | str | None = None) -> list[str]:
    """The face vocabulary: one face a line, canonicalized, duplicates dropped in order."""
    path = Path(path) if path is not None else DEFAULT_CATALOGUE
    faces: list[str] = []
    for line in read_lines(path):
        face = canonicalize(line)
        if face and face not in faces:
            faces.append(face)
    if not faces:
        raise AffectlensError(f"{path}: holds no faces")
    return faces


def load_primer(path: Path | str | None = None) -> list[dict[str, str]]:
    """Neutral example exchanges whose replies open with catalogue faces, one per cell."""
    path = Path(path) if path is not None else DEFAULT_PRIMER
    exchanges = []
    for number, record in read_jsonl(path):
        if not all(isinstance(record.get(k), str) for k in ("cell", "face", "user", "reply")):
            raise AffectlensError(f"{path}:{number}: a primer line needs cell, face, user and reply")
        exchanges.append(record)
    return exchanges
