"""Codex CLI rollouts (``~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl``, or ``.jsonl.zst``).

Lines are ``{"timestamp", "type", "payload"}`` with type ``session_meta`` (payload: ``id``, ``cwd``,
``instructions``, ...), ``turn_context`` (payload: ``cwd``, ``model``, ...), ``response_item`` (a
``message`` with ``role`` user / assistant / developer and ``input_text`` / ``output_text`` content, or a
``reasoning`` / ``function_call`` / ``function_call_output`` item) and ``event_msg`` (``user_message``,
``agent_message``, ``agent_reasoning``, ``token_count``, ...). Older rollouts wrote a bare session header
(``{"id", "timestamp", "instructions"}``) and bare response items (``{"type": "message", ...}``) with
``{"record_type": "state"}`` lines between; those are read too.

A turn is each assistant ``response_item`` message with text, plus each ``agent_message`` event that no
assistant message of the file repeats (the CLI usually writes both for one reply; each message absorbs
one event with the same text). ``user_text`` is the last user text before the turn's line, from user
``response_item`` messages or ``user_message`` events, with the environment context and AGENTS.md
injections stripped (see ``strip_injected``); developer messages are never user text. ``model`` is that
of the latest ``turn_context``, ``cwd`` that of the latest ``turn_context`` (else ``session_meta``), and
``session`` the ``session_meta`` id (else the file stem).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..records import Malformed, RawTurn
from .lines import join_texts, read_objects, session_stem, texts_of

SOURCE = "codex"
TEXT_TYPES = ("input_text", "output_text", "text")
LEGACY_ITEM_TYPES = frozenset(
    {"message", "reasoning", "function_call", "function_call_output", "local_shell_call", "custom_tool_call"}
)

# Injected by the CLI as user messages: the session's environment, and AGENTS.md / user instructions.
INJECTED_TAGS = ("environment_context", "user_instructions", "INSTRUCTIONS", "user_shell_command")
_TAG_RE = re.compile("<(" + "|".join(map(re.escape, INJECTED_TAGS)) + r")>.*?(?:</\1>|\Z)", re.S)
# Newer CLIs head the AGENTS.md body with this line; it runs to the end of its block.
_TAIL_RE = re.compile(r"^# AGENTS\.md instructions for\b.*\Z", re.S | re.M)


def strip_injected(text: str) -> str:
    """A Codex user text without ``<environment_context>``, ``<user_instructions>``, ``<INSTRUCTIONS>``
    and ``<user_shell_command>`` elements (contents included) or a ``# AGENTS.md instructions for …``
    section (to the end of the block), stripped of surrounding whitespace."""
    return _TAIL_RE.sub("", _TAG_RE.sub("", text)).strip()


def _normalize(text: str) -> str:
    return " ".join(text.split())


def parse(path: str | Path) -> Iterator[RawTurn | Malformed]:
    """The turns and malformed lines of one Codex rollout, in line order."""
    file = str(path)
    session: str | None = None
    model: str | None = None
    cwd: str | None = None
    last_user: str | None = None
    out: list[tuple[int, RawTurn | Malformed]] = []
    events: list[RawTurn] = []
    answered: Counter[str] = Counter()  # assistant message texts, to drop the events that repeat them

    def turn(lineno: int, text: str, timestamp: object) -> RawTurn:
        return RawTurn(
            source=SOURCE,
            session=session or session_stem(path),
            file=file,
            line=lineno,
            assistant_text=text,
            user_text=last_user,
            model=model,
            timestamp=timestamp if isinstance(timestamp, str) else None,
            cwd=cwd,
        )

    for item in read_objects(path):
        if isinstance(item, Malformed):
            out.append((item.line, item))
            continue
        lineno, obj = item
        kind, payload, timestamp = obj.get("type"), obj.get("payload"), obj.get("timestamp")
        if "payload" not in obj:  # an older rollout's bare lines
            if kind is None and "id" in obj and "record_type" not in obj:
                kind, payload = "session_meta", obj
            elif kind in LEGACY_ITEM_TYPES:
                kind, payload = "response_item", obj
            else:
                continue
        if kind not in ("session_meta", "turn_context", "response_item", "event_msg"):
            continue
        if not isinstance(payload, dict):
            out.append((lineno, Malformed(file, lineno, f"a {kind} line whose payload is not an object")))
            continue
        if kind == "session_meta":
            if session is None and payload.get("id"):
                session = str(payload["id"])
            cwd = cwd or payload.get("cwd")
        elif kind == "turn_context":
            model = payload.get("model") or model
            cwd = payload.get("cwd") or cwd
        elif kind == "response_item" and payload.get("type") == "message":
            role = payload.get("role")
            content = payload.get("content")
            if not isinstance(content, str | list):
                out.append((lineno, Malformed(file, lineno, "a message whose content is not a list")))
            elif role == "user":
                last_user = (
                    join_texts([strip_injected(t) for t in texts_of(content, TEXT_TYPES)]) or last_user
                )
            elif role == "assistant" and (text := join_texts(texts_of(content, TEXT_TYPES))):
                out.append((lineno, turn(lineno, text, timestamp)))
                answered[_normalize(text)] += 1
        elif kind == "event_msg":
            message = payload.get("message")
            if not isinstance(message, str):
                continue
            if payload.get("type") == "user_message":
                last_user = join_texts([strip_injected(message)]) or last_user
            elif payload.get("type") == "agent_message" and message.strip():
                events.append(turn(lineno, message, timestamp))

    for event in events:
        key = _normalize(event.assistant_text)
        if answered[key]:
            answered[key] -= 1
        else:
            out.append((event.line, event))
    for _, entry in sorted(out, key=lambda pair: pair[0]):
        yield entry
