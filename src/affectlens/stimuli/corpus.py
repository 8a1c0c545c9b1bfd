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
from typing import Annotated, Any

import pandas as pd
from pydantic import PlainValidator, ValidationInfo

from affectlens.cells import CellSet, default_cells
from affectlens.errors import AffectlensError
from affectlens.stimuli.jsonl import DATA_DIR, Name, Ref, Str, Text, content_hash, read_records, record

DEFAULT_CORPUS = DATA_DIR / "emotions"
FILES = ("emotions", "topics", "stories", "neutral", "implicit")


def _coordinate(value: Any, info: ValidationInfo) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
        raise ValueError(f"{info.field_name} must be a number in [-1, 1], got {value!r}")
    return float(value)


def _words(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in value):
        raise ValueError("banned must be a list of non-empty words")
    return tuple(w.lower() for w in value)


Coordinate = Annotated[float, PlainValidator(_coordinate)]
Words = Annotated[tuple[str, ...], PlainValidator(_words)]


@record
class Emotion:
    name: Name
    cell: Ref  # affect-cell code (cells.py)
    valence: Coordinate  # in [-1, 1]
    arousal: Coordinate  # in [-1, 1]
    cluster: Str
    banned: Words = ()  # lower-cased


@record
class Story:
    id: Name
    emotion: Ref
    topic: Ref
    text: Text


@record
class Topic:
    id: Name
    description: Str = ""


@record
class Scenario:
    """An implicit scenario: evokes ``emotion`` without naming it."""

    id: Name
    emotion: Ref
    text: Text


@record
class Dialogue:
    """A neutral dialogue: no emotion, any topic."""

    id: Name
    text: Text


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


def load_corpus(folder: Path | str | None = None, cells: CellSet | None = None) -> Corpus:
    """Load and validate a corpus folder (default: the shipped one); errors name the file and line."""
    cells = cells or default_cells()
    folder = Path(folder) if folder is not None else DEFAULT_CORPUS
    if not folder.is_dir():
        raise AffectlensError(f"corpus folder {folder} does not exist")
    path = {kind: folder / f"{kind}.jsonl" for kind in FILES}
    emotions = read_records(
        path["emotions"], Emotion, key="name", what="emotion", context={"cell": cells.codes}
    )
    topics = read_records(path["topics"], Topic, what="topic")
    known = {"emotion": [e.name for e in emotions], "topic": [t.id for t in topics]}
    stories = read_records(path["stories"], Story, context=known)
    neutral = read_records(path["neutral"], Dialogue)
    implicit = read_records(path["implicit"], Scenario, context=known)
    missing = [name for name in known["emotion"] if not any(s.emotion == name for s in stories)]
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
