"""Reading a JSONL transcript (plain or zstd) as numbered JSON objects, with unreadable lines as Malformed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..records import Malformed

ZSTD_SUFFIX = ".zst"


def is_zstd(path: str | Path) -> bool:
    return str(path).endswith(ZSTD_SUFFIX)


def session_stem(path: str | Path) -> str:
    """The file name without ``.jsonl`` / ``.jsonl.zst``: the session id of last resort."""
    name = Path(path).name
    for suffix in (ZSTD_SUFFIX, ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


def _read_errors() -> tuple[type[BaseException], ...]:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - zstandard is a dependency
        return (OSError, EOFError)
    return (OSError, EOFError, zstandard.ZstdError)


@contextmanager
def open_binary(path: str | Path) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed when it ends in ``.zst`` (several concatenated frames are read through)."""
    with open(path, "rb") as fh:
        if not is_zstd(path):
            yield fh
            return
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        with io.BufferedReader(reader, buffer_size=1 << 16) as buffered:  # type: ignore[arg-type]
            yield buffered  # type: ignore[misc]


def _not_utf8(raw: bytes, err: UnicodeDecodeError) -> str:
    bad = raw[err.start : err.end].hex(" ")
    return f"not UTF-8: invalid byte(s) {bad} at byte {err.start} of the line ({err.reason})"


def read_objects(path: str | Path) -> Iterator[tuple[int, dict] | Malformed]:
    """``(line, object)`` for each non-blank line that is a JSON object, else a ``Malformed`` for that line.

    Lines are split on ``\\n`` only (not on the Unicode line separators ``str.splitlines`` knows), so line
    numbers match what ``wc -l`` and an editor show. A UTF-8 byte-order mark on the first line is dropped.
    A file that cannot be read (or a corrupt zstd stream) ends with one Malformed at the line it stopped on.
    """
    file = str(path)
    lineno = 0
    try:
        with open_binary(path) as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    yield Malformed(file, lineno, _not_utf8(raw, err))
                    continue
                if lineno == 1:
                    text = text.removeprefix("\ufeff")
                text = text.rstrip("\r\n")
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as err:
                    yield Malformed(file, lineno, f"invalid JSON: {err.msg} at column {err.colno}")
                    continue
                if not isinstance(value, dict):
                    yield Malformed(file, lineno, f"a JSON {type(value).__name__}, not an object")
                    continue
                yield lineno, value
    except _read_errors() as err:
        yield Malformed(file, lineno + 1, f"unreadable: {type(err).__name__}: {err}")


def texts_of(content: object, types: tuple[str, ...] = ("text",)) -> list[str]:
    """The texts in a message's content: a string, or the ``text`` of its blocks of the given types."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        block["text"]
        for block in content
        if isinstance(block, dict) and block.get("type") in types and isinstance(block.get("text"), str)
    ]


def join_texts(texts: list[str]) -> str | None:
    """Text blocks joined by a blank line, whitespace-only blocks dropped; None when nothing is left."""
    kept = [t for t in texts if t.strip()]
    return "\n\n".join(kept) if kept else None
