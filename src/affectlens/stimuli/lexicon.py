"""The locked affect lexicon of the bag-of-lexicon (BoL) encoder.

A judge reads a face's context (the prompt and the reply that opened with the face) and answers with one
to three words of a fixed lexicon; each word carries weights over the affect cells, and a face's
distribution over the cells is the mean of its answers (each answer the mean of its words).

File format (JSONL, UTF-8, one JSON object a line; blank lines are skipped). The first line is the header
and holds only the version, a non-empty string; every later line is one word::

    {"version": "1"}
    {"word": "gleeful", "weights": {"HP-S": 0.6, "HP-D": 0.4}}
    {"word": "wistful", "weights": {"LN": 0.55, "LP": 0.3, "NP": 0.1, "NB": 0.05}}

A word is lowercase ASCII letters (parts may be joined by ``-``) and appears once. ``weights`` maps cell
codes of the cell set (default: :data:`~affectlens.cells.PAD9`) to non-negative numbers that sum to 1
within 1e-6; a cell left out weighs 0. Any error is ``file:line: what is wrong``.

The version is a label a person bumps on purpose; :attr:`Lexicon.hash` is the content hash of the words
and their weights (not of the file's bytes, nor of the version), so any change to a weight changes it.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from affectlens.cells import CellSet, default_cells
from affectlens.errors import AffectlensError
from affectlens.stimuli.jsonl import DATA_DIR, content_hash, read_jsonl, shown

DEFAULT_LEXICON = DATA_DIR / "lexicon.jsonl"
TOLERANCE = 1e-6  # how far a word's weights may sum from 1

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


@dataclass(frozen=True)
class Lexicon:
    """Words and their cell weights; ``weights[i]`` is ``words[i]``'s row, columns in ``cells.codes`` order."""

    version: str
    hash: str
    words: tuple[str, ...]
    weights: np.ndarray = field(repr=False, compare=False)  # [n_words, n_cells], read-only
    cells: CellSet = field(repr=False)
    source: str = field(default="", compare=False)

    def __len__(self) -> int:
        return len(self.words)

    def _row(self, word: str) -> int:
        try:
            return self.words.index(word)
        except ValueError:
            near = difflib.get_close_matches(word, self.words, n=3) if isinstance(word, str) else []
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise AffectlensError(
                f"unknown lexicon word {word!r} (lexicon {self.version}, {len(self.words)} words){hint}"
            ) from None

    def weight_of(self, word: str) -> np.ndarray:
        """A word's weights over the cells ([n_cells], ``cells.codes`` order, read-only)."""
        return self.weights[self._row(word)]

    def distribution(self, choices: Sequence[Sequence[str]]) -> np.ndarray:
        """The cell distribution of a face's judge answers: the mean over answers of each answer's mean row.

        Each answer is a list of 1 or more words (the schema allows up to ``max_words``); a word repeated
        within one answer counts once. Returns [n_cells] in ``cells.codes`` order, summing to 1.
        """
        if isinstance(choices, str) or not isinstance(choices, Sequence):
            raise AffectlensError(f"expected a list of judge answers, got {type(choices).__name__}")
        if not choices:
            raise AffectlensError("no judge answers to aggregate")
        rows = []
        for number, answer in enumerate(choices, 1):
            if isinstance(answer, str) or not isinstance(answer, Sequence):
                raise AffectlensError(
                    f"judge answer {number}: expected a list of words, got {type(answer).__name__} {answer!r}"
                )
            if not answer:
                raise AffectlensError(f"judge answer {number}: no words")
            odd = [word for word in answer if not isinstance(word, str)]
            if odd:
                raise AffectlensError(f"judge answer {number}: a word must be a string, got {odd[0]!r}")
            try:
                picked = [self._row(word) for word in dict.fromkeys(answer)]
            except AffectlensError as exc:
                raise AffectlensError(f"judge answer {number}: {exc}") from None
            rows.append(self.weights[picked].mean(axis=0))
        return np.mean(rows, axis=0)

    def json_schema(self, max_words: int = 3) -> dict[str, Any]:
        """The JSON schema of a judge answer: ``{"words": [1 to max_words lexicon words]}``, nothing else."""
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
            raise AffectlensError(f"max_words must be a whole number >= 1, got {max_words!r}")
        return {
            "type": "object",
            "properties": {
                "words": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(self.words)},
                    "minItems": 1,
                    "maxItems": max_words,
                }
            },
            "required": ["words"],
            "additionalProperties": False,
        }

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "hash": self.hash, "n_words": len(self.words)}


def _header(path: Path, number: int, raw: dict[str, Any]) -> str:
    if set(raw) != {"version"}:
        raise AffectlensError(
            f'{path}:{number}: the first line must be the header {{"version": "..."}} and nothing else, '
            f"got field(s) {', '.join(sorted(raw)) or 'none'}"
        )
    version = raw["version"]
    if not isinstance(version, str) or not version.strip():
        raise AffectlensError(f"{path}:{number}: version must be a non-empty string, got {version!r}")
    return version


def _entry(path: Path, number: int, raw: dict[str, Any], codes: list[str]) -> tuple[str, list[float]]:
    where = f"{path}:{number}"
    extra = sorted(set(raw) - {"word", "weights"})
    if extra:
        raise AffectlensError(f"{where}: unknown field(s) {', '.join(extra)}")
    for name in ("word", "weights"):
        if name not in raw:
            raise AffectlensError(f"{where}: missing field {name!r}")
    word = raw["word"]
    if not isinstance(word, str):
        raise AffectlensError(f"{where}: non-string field 'word' (got {type(word).__name__})")
    if not _WORD.fullmatch(word):
        raise AffectlensError(
            f"{where}: word {word!r} must be lowercase letters a-z (parts may be joined by '-')"
        )
    weights = raw["weights"]
    if not isinstance(weights, dict) or not weights:
        raise AffectlensError(f"{where}: weights of {word!r} must be a non-empty object of cell code: weight")
    row = [0.0] * len(codes)
    for code, value in weights.items():
        if code not in codes:
            raise AffectlensError(
                f"{where}: unknown cell {code!r} in the weights of {word!r}; expected one of {shown(codes)}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AffectlensError(f"{where}: weight of {word!r} for {code} must be a number, got {value!r}")
        if value < 0:
            raise AffectlensError(f"{where}: negative weight {value} of {word!r} for {code}")
        row[codes.index(code)] = float(value)
    total = math.fsum(row)
    if abs(total - 1) > TOLERANCE:
        raise AffectlensError(f"{where}: weights of {word!r} sum to {total:.9g}, not 1")
    return word, row


def load_lexicon(path: Path | str | None = None, cells: CellSet | None = None) -> Lexicon:
    """Load and validate a lexicon JSONL (default: the shipped one); errors name the file and line."""
    cells = cells or default_cells()
    path = Path(path) if path is not None else DEFAULT_LEXICON
    records = read_jsonl(path)
    number, raw = records[0]
    version = _header(path, number, raw)
    codes = cells.codes
    words: list[str] = []
    rows: list[list[float]] = []
    first: dict[str, int] = {}
    for number, raw in records[1:]:
        word, row = _entry(path, number, raw, codes)
        if word in first:
            raise AffectlensError(f"{path}:{number}: duplicate word {word!r} (first on line {first[word]})")
        first[word] = number
        words.append(word)
        rows.append(row)
    if not words:
        raise AffectlensError(f"{path}: holds no words (only the header)")
    weights = np.array(rows, dtype=np.float64)
    weights.flags.writeable = False
    digest = content_hash(
        {"word": word, "weights": {code: w for code, w in zip(codes, row, strict=True) if w}}
        for word, row in zip(words, rows, strict=True)
    )
    return Lexicon(version, digest, tuple(words), weights, cells, str(path))
