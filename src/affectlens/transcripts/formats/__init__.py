"""Agent transcript formats: detection, parsing to RawTurn / Malformed records, and finding transcript files.

Three formats are read (see each module): ``claude-code`` (Claude Code session JSONL), ``codex`` (Codex
CLI rollouts) and ``chat`` (generic OpenAI-style chat JSONL). A ``.jsonl.zst`` file is decompressed on the
fly. Parsers pass text through unchanged (no redaction, no face extraction); a line that cannot be read
is a ``Malformed`` record and parsing goes on with the next line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..records import Malformed, RawTurn
from . import chat, claude_code, codex
from .lines import ZSTD_SUFFIX, read_objects

FORMATS = ("claude-code", "codex", "chat")
PARSERS: dict[str, Callable[[str | Path], Iterator[RawTurn | Malformed]]] = {
    "claude-code": claude_code.parse,
    "codex": codex.parse,
    "chat": chat.parse,
}
TRANSCRIPT_SUFFIXES = (".jsonl", ".jsonl" + ZSTD_SUFFIX)
PEEK_OBJECTS = 20  # parseable lines looked at before giving up on a format
PEEK_LINES = 200  # lines looked at, parseable or not

_CLAUDE_KEYS = ("sessionId", "parentUuid", "uuid", "leafUuid")
_CLAUDE_ONLY_TYPES = frozenset({"file-history-snapshot", "queue-operation"})
_CODEX_TYPES = frozenset({"session_meta", "turn_context", "response_item", "event_msg", "compacted"})
_CODEX_CONTENT_TYPES = frozenset({"input_text", "output_text"})


def _classify(obj: dict) -> str | None:
    """The format one line's object belongs to, or None where it says nothing decisive."""
    kind = obj.get("type")
    if kind in _CODEX_TYPES and "payload" in obj:
        return "codex"
    if kind in _CLAUDE_ONLY_TYPES or (isinstance(kind, str) and any(k in obj for k in _CLAUDE_KEYS)):
        return "claude-code"
    if "record_type" in obj or (kind is None and "id" in obj and "instructions" in obj):
        return "codex"  # an older rollout's state line or session header
    if kind in codex.LEGACY_ITEM_TYPES - {"message"}:
        return "codex"
    if kind == "message" and isinstance(obj.get("content"), list):
        types = {b.get("type") for b in obj["content"] if isinstance(b, dict)}
        if types & _CODEX_CONTENT_TYPES:
            return "codex"
    if isinstance(obj.get("messages"), list):
        return "chat"
    if isinstance(obj.get("role"), str) and "content" in obj:
        return "chat"
    return None


def _detect(path: str | Path) -> tuple[str | None, bool]:
    """The format, and whether the file had any non-blank line at all."""
    objects, seen = 0, False
    for item in read_objects(path):
        seen = True
        if isinstance(item, Malformed):
            if item.line >= PEEK_LINES:
                break
            continue
        lineno, obj = item
        if fmt := _classify(obj):
            return fmt, True
        objects += 1
        if objects >= PEEK_OBJECTS or lineno >= PEEK_LINES:
            break
    return None, seen


def detect_format(path: str | Path) -> str | None:
    """``"claude-code"``, ``"codex"`` or ``"chat"`` from the first lines that say, else None.

    Up to ``PEEK_OBJECTS`` parseable lines (within the first ``PEEK_LINES``) are looked at; malformed and
    non-decisive lines are passed over. A ``.zst`` file is decompressed.
    """
    return _detect(path)[0]


def parse(path: str | Path, format: str = "auto") -> Iterator[RawTurn | Malformed]:
    """The RawTurn and Malformed records of one transcript file, in line order.

    ``format`` is one of ``FORMATS`` or ``"auto"`` (detected). A file whose format cannot be detected
    yields one ``Malformed`` at line 0 (the whole file) unless it is empty; an unknown format name raises
    ``ValueError``.
    """
    if format != "auto" and format not in PARSERS:
        raise ValueError(f"unknown transcript format {format!r}: expected 'auto' or one of {FORMATS}")
    if format == "auto":
        detected, nonempty = _detect(path)
        if detected is None:
            reason = "unrecognized transcript format (not claude-code, codex or chat JSONL)"
            return iter([Malformed(str(path), 0, reason)] if nonempty else [])
        format = detected
    return PARSERS[format](path)


def is_transcript_name(name: str) -> bool:
    return name.endswith(TRANSCRIPT_SUFFIXES)


def transcript_files(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    """The transcript files that PATHS name, sorted and without repeats.

    A file is taken as it is (whatever its name); a folder is walked recursively (symlinked folders are not
    followed) for ``*.jsonl`` and ``*.jsonl.zst``. A path that does not exist raises ``FileNotFoundError``.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    found: set[Path] = set()
    for entry in map(Path, paths):
        if entry.is_file():
            found.add(entry)
        elif entry.is_dir():
            for root, dirs, files in os.walk(entry):
                dirs.sort()
                found.update(Path(root, name) for name in files if is_transcript_name(name))
        else:
            raise FileNotFoundError(f"no such transcript file or folder: {entry}")
    return sorted(found)


__all__ = ["FORMATS", "Malformed", "RawTurn", "detect_format", "parse", "transcript_files"]
