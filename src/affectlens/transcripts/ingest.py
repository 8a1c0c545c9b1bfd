"""From transcript files to corpus rows: parse, redact every text field and path, read the opening face, hash
the session id, and count every outcome (kept, no face, malformed line, duplicate).

Redaction happens here, before a row exists: nothing that leaves this module holds unredacted text.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from affectlens.faces import extract_face
from affectlens.transcripts.formats import detect_format, parse, transcript_files
from affectlens.transcripts.records import Malformed, RawTurn
from affectlens.transcripts.redact import redact, redact_path

TURN_COLUMNS = [
    "turn_id", "source", "session", "file", "line", "model", "timestamp", "cwd", "sidechain", "user_text",
    "assistant_text", "face", "face_kind", "well_formed",
]  # fmt: skip
OUTCOMES = ("kept", "no_face", "malformed", "duplicate")


def short_hash(*parts: str | None) -> str:
    return hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def turn_row(raw: RawTurn) -> dict[str, object] | None:
    """The corpus row of one assistant turn, redacted, or None when it opens with no face."""
    text = redact(raw.assistant_text)
    face = extract_face(text.lstrip())
    if face is None:
        return None
    return {
        # The id is of the unredacted turn, so the same turn read twice (a copied session) is one row.
        "turn_id": short_hash(raw.source, raw.session, raw.timestamp, raw.assistant_text),
        "source": raw.source,
        "session": short_hash(raw.source, raw.session),
        "file": redact_path(raw.file),
        "line": raw.line,
        "model": raw.model,
        "timestamp": raw.timestamp,
        "cwd": redact_path(raw.cwd) if raw.cwd else None,
        "sidechain": raw.sidechain,
        "user_text": redact(raw.user_text) if raw.user_text is not None else None,
        "assistant_text": text,
        "face": face.text,
        "face_kind": face.kind,
        "well_formed": face.well_formed,
    }


@dataclass
class Ingested:
    rows: list[dict[str, object]] = field(default_factory=list)
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (source, model, outcome)
    malformed: list[str] = field(default_factory=list)  # "file:line: reason", redacted
    files: list[dict[str, object]] = field(default_factory=list)  # every file read: path, digest, format


def ingest_files(paths: Iterable[Path], *, format: str = "auto", seen_turns: set[str] | None = None,
                 seen_files: set[str] | None = None) -> Ingested:  # fmt: skip
    """Rows for every face turn in ``paths`` not already in ``seen_turns``; files whose digest is in
    ``seen_files`` (ingested before, unchanged) are skipped."""
    seen_turns = set(seen_turns or ())
    out = Ingested()
    for path in paths:
        digest = file_digest(path)
        if seen_files and digest in seen_files:
            continue
        source = format if format != "auto" else (detect_format(path) or "unknown")
        out.files.append({"file": redact_path(str(path)), "sha256": digest, "format": source})
        for item in parse(path, format):
            if isinstance(item, Malformed):
                out.counts[(source, "unknown", "malformed")] += 1
                out.malformed.append(redact(f"{redact_path(item.file)}:{item.line}: {item.reason}"))
                continue
            key = (item.source, item.model or "unknown")
            row = turn_row(item)
            if row is None:
                out.counts[(*key, "no_face")] += 1
            elif row["turn_id"] in seen_turns:
                out.counts[(*key, "duplicate")] += 1
            else:
                seen_turns.add(str(row["turn_id"]))
                out.rows.append(row)
                out.counts[(*key, "kept")] += 1
    return out


def collect(paths: Sequence[Path | str]) -> list[Path]:
    return transcript_files([Path(p) for p in paths])
