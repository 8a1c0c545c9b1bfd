"""Affect prompts (first-person disclosures in nine cells), the kaomoji catalogue and the priming exchanges."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from affectlens.cells import CellSet, default_cells
from affectlens.errors import AffectlensError
from affectlens.faces import canonicalize
from affectlens.stimuli.jsonl import (
    DATA_DIR,
    Name,
    Ref,
    Str,
    Text,
    content_hash,
    read_lines,
    read_records,
    record,
)

DEFAULT_PROMPTS = DATA_DIR / "prompts.jsonl"
DEFAULT_CATALOGUE = DATA_DIR / "kaomoji.txt"
DEFAULT_PRIMER = DATA_DIR / "primer.jsonl"


@record
class Prompt:
    id: Name
    cell: Ref  # a code of the cell set the prompts are loaded with
    text: Text
    dominance: Str | None = None
    domain: Str | None = None


@record
class Exchange:
    """A primer line: a neutral question and a reply that opens with the cell's face."""

    cell: Name
    face: Name
    user: Name
    reply: Name


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

    def balanced(self, per_cell: int | None) -> PromptSet:
        """The first ``per_cell`` prompts of each cell, as a prompt set of its own (hash and source)."""
        if per_cell is None:
            return self
        taken: dict[str, int] = {}
        chosen = []
        for prompt in self.prompts:
            if taken.get(prompt.cell, 0) < per_cell:
                taken[prompt.cell] = taken.get(prompt.cell, 0) + 1
                chosen.append(prompt)
        if len(chosen) == len(self.prompts):
            return self
        source = f"{self.source} (balanced subset of {len(chosen)})"
        return PromptSet(tuple(chosen), content_hash(asdict(p) for p in chosen), source, self.cells)

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame([asdict(p) for p in self.prompts])
        frame["n_chars"] = frame["text"].str.len()
        return frame


def load_prompts(path: Path | str | None = None, cells: CellSet | None = None) -> PromptSet:
    """Load and validate a prompt JSONL (``id``, ``cell``, ``text``, optional ``dominance``, ``domain``)."""
    cells = cells or default_cells()
    path = Path(path) if path is not None else DEFAULT_PROMPTS
    prompts = read_records(path, Prompt, context={"cell": cells.codes})
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
    return [asdict(exchange) for exchange in read_records(path, Exchange, key=None)]
