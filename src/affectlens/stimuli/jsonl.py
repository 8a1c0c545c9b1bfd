"""Strict JSONL reading with errors that name the file and line, and content hashing of records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from affectlens.errors import AffectlensError

DATA_DIR = Path(__file__).parent / "data"


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; bad UTF-8 is reported with its line number."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AffectlensError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AffectlensError(f"{path}: is a folder, expected a file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise AffectlensError(f"{path}:{line}: not valid UTF-8 (byte {exc.start})") from None
    # Split on newlines only: str.splitlines() would also break at U+2028/U+2029/U+0085, which JSON allows
    # unescaped inside strings.
    lines = text.lstrip("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line; each line must hold one JSON object."""
    records = []
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AffectlensError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise AffectlensError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append((number, record))
    if not records:
        raise AffectlensError(f"{path}: holds no records")
    return records


def content_hash(records: Iterable[Any]) -> str:
    """A short sha256 of the records' canonical JSON: the same content hashes the same from any file."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]
