"""The records that transcript parsers yield, before redaction and face extraction."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RawTurn:
    """One assistant text turn and the user text before it, as read from a transcript (not yet redacted)."""

    source: str  # "claude-code", "codex" or "chat"
    session: str  # the session id as the transcript has it (hashed at ingest)
    file: str  # the transcript's path
    line: int  # 1-based line of the assistant turn
    assistant_text: str
    user_text: str | None  # the last real user text before it (tool results and injected text skipped)
    model: str | None = None
    timestamp: str | None = None  # ISO 8601 as written in the transcript
    cwd: str | None = None
    sidechain: bool = False  # a Claude Code subagent's turn


@dataclass(frozen=True)
class Malformed:
    """A line that could not be read; counted and reported as file:line, never fatal."""

    file: str
    line: int
    reason: str
