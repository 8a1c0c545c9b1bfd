"""Generic chat JSONL: one conversation per line, or one message per line.

A conversation line is an object with OpenAI-style ``messages: [{"role", "content"}, ...]`` (content a
string or a list of ``{"type": "text", "text"}`` parts) and optional ``model``, ``id`` and
``created`` (Unix seconds) or ``timestamp``. Each assistant message with text is a RawTurn at that line,
its ``user_text`` the last user message before it in the same conversation; system, developer and tool
messages are skipped. The session is the line's ``id`` (else ``<file stem>:<line>``).

A message line is a single ``{"role", "content"}`` object (optionally with ``model`` / ``timestamp``): the
file is then one flat conversation, its session the file stem.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from ..records import Malformed, RawTurn
from .lines import join_texts, read_objects, session_stem, texts_of

SOURCE = "chat"
TEXT_TYPES = ("text", "input_text", "output_text")


def _timestamp(obj: dict) -> str | None:
    value = obj.get("timestamp", obj.get("created"))
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _text(message: dict) -> str | None:
    return join_texts(texts_of(message.get("content"), TEXT_TYPES))


def parse(path: str | Path) -> Iterator[RawTurn | Malformed]:
    """The turns and malformed lines of one chat JSONL file, in line order."""
    file, stem = str(path), session_stem(path)
    flat_user: str | None = None  # the flat conversation's last user text

    def turn(session: str, lineno: int, text: str, user: str | None, model: object, ts: str | None):
        return RawTurn(
            source=SOURCE,
            session=session,
            file=file,
            line=lineno,
            assistant_text=text,
            user_text=user,
            model=model if isinstance(model, str) else None,
            timestamp=ts,
        )

    for item in read_objects(path):
        if isinstance(item, Malformed):
            yield item
            continue
        lineno, obj = item
        messages = obj.get("messages")
        if isinstance(messages, list):
            if bad := [i for i, m in enumerate(messages) if not isinstance(m, dict)]:
                yield Malformed(file, lineno, f"messages[{bad[0]}] is not an object")
                continue
            session = str(obj["id"]) if obj.get("id") is not None else f"{stem}:{lineno}"
            last_user: str | None = None
            for message in messages:
                role, text = message.get("role"), _text(message)
                if role == "user" and text is not None:
                    last_user = text
                elif role == "assistant" and text is not None:
                    model = message.get("model") or obj.get("model")
                    ts = _timestamp(message) or _timestamp(obj)
                    yield turn(session, lineno, text, last_user, model, ts)
        elif isinstance(obj.get("role"), str) and "content" in obj:
            role, text = obj["role"], _text(obj)
            if role == "user" and text is not None:
                flat_user = text
            elif role == "assistant" and text is not None:
                yield turn(stem, lineno, text, flat_user, obj.get("model"), _timestamp(obj))
        else:
            yield Malformed(
                file, lineno, "neither a conversation (messages list) nor a message (role, content)"
            )
