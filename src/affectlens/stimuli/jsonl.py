"""Strict JSONL reading: one record a line, validated by pydantic, errors that name the file and the line.

A record kind is a frozen dataclass declared with :func:`record`; its field types say what a line may hold
(:data:`Str`, :data:`Name`, :data:`Ref`, :data:`Text` or a kind's own), and :func:`read_records` checks every
line of a file against it. At run time the fields are plain values: building a record in code validates
nothing. :func:`content_hash` hashes records' content, not a file's bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, dataclass_transform

from pydantic import (
    AfterValidator,
    ConfigDict,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    with_config,
)

from affectlens.errors import AffectlensError

DATA_DIR = Path(__file__).parent / "data"

T = TypeVar("T")


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


# --- field types and record kinds -------------------------------------------------------------------------


def shown(values: Sequence[str], most: int = 25) -> str:
    """Values for an error message, cut after ``most``."""
    return ", ".join(values[:most]) + (", ..." if len(values) > most else "")


def _non_empty(value: str, info: ValidationInfo) -> str:
    if not value.strip():
        raise ValueError(f"empty {info.field_name}")
    return value


def _known(value: str, info: ValidationInfo) -> str:
    """A value the validation context lists under the field's name (no list in the context: any value)."""
    known = (info.context or {}).get(info.field_name)
    if known is not None and value not in known:
        raise ValueError(f"unknown {info.field_name} {value!r}; expected one of {shown(list(known))}")
    return value


def _text(value: str, info: ValidationInfo) -> str:
    if not value.strip():
        owner = info.data.get("id", info.data.get("name"))
        raise ValueError(f"empty text for {owner!r}")
    return value


Str = Annotated[str, Strict()]
"""Any string (a JSON string, never a number)."""
Name = Annotated[str, Strict(), AfterValidator(_non_empty)]
"""A non-blank string: an id, a name."""
Ref = Annotated[str, Strict(), AfterValidator(_known)]
"""A string that must be one of ``context[field name]`` (a cell code, an emotion's name, a topic id)."""
Text = Annotated[str, Strict(), AfterValidator(_text)]
"""A non-blank text; its error names the record by its ``id`` (or ``name``)."""


@dataclass_transform(frozen_default=True)
def record(cls: type[T]) -> type[T]:
    """A frozen dataclass that is also a record kind: its fields are the only keys a line may hold."""
    return with_config(ConfigDict(extra="forbid"))(dataclass(frozen=True)(cls))


@functools.cache
def _adapter(kind: type) -> TypeAdapter:
    return TypeAdapter(kind)


_EXTRA = ("unexpected_keyword_argument", "extra_forbidden")


def _rank(error: Mapping[str, Any]) -> int:
    """Which error of a line to report: a missing or mistyped field first, then unknown fields, then values."""
    if error["type"] in ("missing", "string_type"):
        return 0
    return 1 if error["type"] in _EXTRA else 2


def _describe(exc: ValidationError) -> str:
    """One line for the most basic thing wrong with a record."""
    errors = exc.errors(include_url=False)
    error = min(errors, key=_rank)
    field = ".".join(str(part) for part in error["loc"])
    if error["type"] in _EXTRA:
        return (
            f"unknown field(s) {', '.join(sorted(str(e['loc'][0]) for e in errors if e['type'] in _EXTRA))}"
        )
    if error["type"] == "missing":
        return f"missing field {field!r}"
    if error["type"] == "string_type":
        return f"non-string field {field!r} (got {type(error['input']).__name__})"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return f"field {field!r}: {error['msg']}"


def read_records(
    path: Path | str,
    kind: type[T],
    *,
    key: str | None = "id",
    what: str | None = None,
    context: Mapping[str, Sequence[str]] | None = None,
) -> list[T]:
    """Every record of a JSONL file as a ``kind``, in file order.

    ``key`` names the field that must be unique in the file (None: no such field); ``what`` is what a
    duplicate is called in the error (default: ``key``). ``context`` lists the known values of the
    file's :data:`Ref` fields, by field name. Any error is ``file:line: what is wrong``.
    """
    path = Path(path)
    adapter = _adapter(kind)
    items: list[T] = []
    first: dict[Any, int] = {}
    for number, raw in read_jsonl(path):
        try:
            item = adapter.validate_python(raw, context=context)
        except ValidationError as exc:
            raise AffectlensError(f"{path}:{number}: {_describe(exc)}") from None
        if key is not None:
            value = getattr(item, key)
            if value in first:
                raise AffectlensError(
                    f"{path}:{number}: duplicate {what or key} {value!r} (first on line {first[value]})"
                )
            first[value] = number
        items.append(item)
    return items
