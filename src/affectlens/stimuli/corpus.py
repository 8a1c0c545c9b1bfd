"""The emotion-story corpus: emotions, topics, stories, neutral dialogues and implicit scenarios.

A corpus is a folder of five JSONL files (``emotions``, ``topics``, ``stories``, ``neutral``, ``implicit``).
Every story is about one emotion and one topic; the neutral dialogues carry no emotion (they define the
nuisance directions that emotion vectors are cleaned of); the implicit scenarios evoke an emotion without
naming it. Each emotion lists banned words that its stories (and scenarios) must not use, so that a vector
or a probe cannot succeed by reading the emotion's name; :func:`banned_hits` finds them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from affectlens.cells import CellSet, default_cells
from affectlens.errors import AffectlensError
from affectlens.stimuli.jsonl import DATA_DIR, content_hash, read_jsonl

DEFAULT_CORPUS = DATA_DIR / "emotions"
FILES = ("emotions", "topics", "stories", "neutral", "implicit")


@dataclass(frozen=True)
class Emotion:
    name: str
    cell: str  # affect-cell code (cells.py)
    valence: float  # in [-1, 1]
    arousal: float  # in [-1, 1]
    cluster: str
    banned: tuple[str, ...]


@dataclass(frozen=True)
class Topic:
    id: str
    description: str


@dataclass(frozen=True)
class Story:
    id: str
    emotion: str
    topic: str
    text: str


@dataclass(frozen=True)
class Dialogue:
    """A neutral dialogue: no emotion, any topic."""

    id: str
    text: str


@dataclass(frozen=True)
class Scenario:
    """An implicit scenario: evokes ``emotion`` without naming it."""

    id: str
    emotion: str
    text: str


_KINDS = {"emotions": Emotion, "topics": Topic, "stories": Story, "neutral": Dialogue, "implicit": Scenario}


@dataclass(frozen=True)
class Corpus:
    emotions: tuple[Emotion, ...]
    topics: tuple[Topic, ...]
    stories: tuple[Story, ...]
    neutral: tuple[Dialogue, ...]
    implicit: tuple[Scenario, ...]
    source: str = ""

    @functools.cached_property
    def hash(self) -> str:
        """Content hash of every record (not of the files' bytes); a subset made with ``replace`` rehashes."""

        def records():
            for kind in FILES:
                for item in getattr(self, kind):
                    yield {"kind": kind, **asdict(item)}

        return content_hash(records())

    @property
    def emotion_names(self) -> list[str]:
        return [e.name for e in self.emotions]

    def emotion(self, name: str) -> Emotion:
        for e in self.emotions:
            if e.name == name:
                return e
        raise AffectlensError(f"unknown emotion {name!r}")

    def frame(self, kind: str) -> pd.DataFrame:
        """One of the five files as a table (``banned`` joined by spaces for emotions)."""
        rows = [asdict(item) for item in getattr(self, kind)]
        if kind == "emotions":
            for row in rows:
                row["banned"] = " ".join(row["banned"])
        return pd.DataFrame(rows, columns=[f.name for f in fields(_KINDS[kind])])


def _strings(
    where: str, record: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> None:
    for key in required:
        if not isinstance(record.get(key), str):
            raise AffectlensError(f"{where}: missing or non-string field {key!r}")
    unknown = set(record) - set(required) - set(optional)
    if unknown:
        raise AffectlensError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")


def _unique(where: str, key: str, seen: dict[str, str], what: str) -> None:
    if key in seen:
        raise AffectlensError(f"{where}: duplicate {what} {key!r} (first at {seen[key]})")
    seen[key] = where


def _text(where: str, record: dict[str, Any]) -> None:
    if not record["text"].strip():
        raise AffectlensError(f"{where}: empty text for {record.get('id', record.get('name'))!r}")


def _known(where: str, field: str, value: str, known: list[str]) -> None:
    if value not in known:
        shown = ", ".join(known[:25]) + (", ..." if len(known) > 25 else "")
        raise AffectlensError(f"{where}: unknown {field} {value!r}; expected one of {shown}")


def _emotions(path: Path, cells: CellSet) -> list[Emotion]:
    out, seen = [], {}
    for number, record in read_jsonl(path):
        where = f"{path}:{number}"
        _strings(where, record, ("name", "cell", "cluster"), ("valence", "arousal", "banned"))
        _unique(where, record["name"], seen, "emotion")
        _known(where, "cell", record["cell"], cells.codes)
        coords = []
        for key in ("valence", "arousal"):
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
                raise AffectlensError(f"{where}: {key} must be a number in [-1, 1], got {value!r}")
            coords.append(float(value))
        banned = record.get("banned", [])
        if not isinstance(banned, list) or not all(isinstance(w, str) and w.strip() for w in banned):
            raise AffectlensError(f"{where}: banned must be a list of non-empty words")
        out.append(
            Emotion(
                record["name"], record["cell"], *coords, record["cluster"], tuple(w.lower() for w in banned)
            )
        )
    return out


def load_corpus(folder: Path | str | None = None, cells: CellSet | None = None) -> Corpus:
    """Load and validate a corpus folder (default: the shipped one); errors name the file and line."""
    cells = cells or default_cells()
    folder = Path(folder) if folder is not None else DEFAULT_CORPUS
    if not folder.is_dir():
        raise AffectlensError(f"corpus folder {folder} does not exist")
    path = {kind: folder / f"{kind}.jsonl" for kind in FILES}
    emotions = _emotions(path["emotions"], cells)
    names = [e.name for e in emotions]

    topics, seen = [], {}
    for number, record in read_jsonl(path["topics"]):
        where = f"{path['topics']}:{number}"
        _strings(where, record, ("id",), ("description",))
        _unique(where, record["id"], seen, "topic")
        topics.append(Topic(record["id"], str(record.get("description", ""))))
    topic_ids = [t.id for t in topics]

    stories, seen = [], {}
    for number, record in read_jsonl(path["stories"]):
        where = f"{path['stories']}:{number}"
        _strings(where, record, ("id", "emotion", "topic", "text"))
        _unique(where, record["id"], seen, "id")
        _known(where, "emotion", record["emotion"], names)
        _known(where, "topic", record["topic"], topic_ids)
        _text(where, record)
        stories.append(Story(**record))

    neutral, seen = [], {}
    for number, record in read_jsonl(path["neutral"]):
        where = f"{path['neutral']}:{number}"
        _strings(where, record, ("id", "text"))
        _unique(where, record["id"], seen, "id")
        _text(where, record)
        neutral.append(Dialogue(**record))

    implicit, seen = [], {}
    for number, record in read_jsonl(path["implicit"]):
        where = f"{path['implicit']}:{number}"
        _strings(where, record, ("id", "emotion", "text"))
        _unique(where, record["id"], seen, "id")
        _known(where, "emotion", record["emotion"], names)
        _text(where, record)
        implicit.append(Scenario(**record))

    missing = [name for name in names if not any(s.emotion == name for s in stories)]
    if missing:
        raise AffectlensError(f"{path['stories']}: no story for emotion(s) {', '.join(missing)}")
    return Corpus(
        tuple(emotions), tuple(topics), tuple(stories), tuple(neutral), tuple(implicit), str(folder)
    )


# A word is a run of letters, possibly joined by apostrophes (don't, Ben's); hyphens and digits split words.
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")


def banned_hits(text: str, banned: list[str] | tuple[str, ...]) -> list[str]:
    """The banned words that ``text`` uses, in order of first use: whole words, case-insensitive.

    A word with an apostrophe also counts by its part before the apostrophe, so ``fear's`` hits ``fear``.
    """
    wanted = {w.lower() for w in banned}
    hits: list[str] = []
    for match in _WORD.finditer(text):
        word = match.group().lower().replace("\u2019", "'")
        for candidate in (word, word.split("'")[0]):
            if candidate in wanted and candidate not in hits:
                hits.append(candidate)
    return hits
