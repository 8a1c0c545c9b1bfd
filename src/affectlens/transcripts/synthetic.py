"""Synthetic Claude Code transcripts, for ingest-speed benchmarks and parser tests.

``generate_claude_code(path, n_lines, seed)`` writes a session file shaped like a real one: user prompts
(some with a ``<system-reminder>`` or CLAUDE.md context injected), streamed assistant messages (a thinking
line, a text line and tool_use lines sharing one ``message.id``), tool_result lines, slash-command and
``isMeta`` lines, summary and system lines, and subagent (sidechain) runs. Assistant texts open with a
kaomoji or emoji most of the time. Everything in it is made up.
"""

from __future__ import annotations

import io
import json
import random
import uuid as uuidlib
from pathlib import Path

from .formats.lines import is_zstd

FACES = ("(^▽^)", "(╥﹏╥)", "(・_・)", "✨", "(｡•́︿•̀｡)", "(≧▽≦)", "¯\\_(ツ)_/¯", "(｀・ω・´)", "🎉", "(⊙_⊙)")
WORDS = [
    "the",
    "test",
    "suite",
    "passes",
    "now",
    "and",
    "the",
    "flaky",
    "refresh",
    "is",
    "fixed;",
    "I",
    "checked",
    "the",
    "config,",
    "the",
    "cache",
    "key",
    "and",
    "the",
    "retry",
    "path,",
    "then",
    "updated",
    "the",
    "docs",
    "and",
    "the",
    "changelog",
    "so",
    "the",
    "next",
    "release",
    "notes",
    "mention",
    "it",
]
TOOLS = ("Read", "Edit", "Bash", "Grep", "Glob", "Write")
MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001")
REMINDER = (
    "<system-reminder>\nThe user opened the file /home/synth/proj/src/app.py in the IDE.\n</system-reminder>"
)
CLAUDE_MD = (
    "<system-reminder>\nAs you answer the user's questions, you can use the following context:\n# claudeMd\n"
    "Contents of /home/synth/proj/CLAUDE.md (project instructions, checked into the codebase):\n\n"
    "Run make test before every commit.\n</system-reminder>"
)


class _Writer:
    """Lines of one synthetic session, counted, until ``n_lines``; assistant turns counted as parsed."""

    def __init__(self, out: io.TextIOBase, n_lines: int, rng: random.Random):
        self.out, self.left, self.rng = out, n_lines, rng
        self.session = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        self.parent: str | None = None
        self.side_parent: str | None = None
        self.turns = 0
        self.counted: set[str] = set()
        self.clock = 0
        # Pools drawn once, so that a 100k-line file is written in about a second.
        self.sentences = [self._sentence() for _ in range(512)]
        self.outputs = [
            "\n".join(f"{i}\t{rng.choice(self.sentences)}" for i in range(rng.randint(1, 12)))
            for _ in range(64)
        ]

    def _uuid(self) -> str:
        return str(uuidlib.UUID(int=self.rng.getrandbits(128), version=4))

    def emit(self, obj: dict) -> bool:
        if self.left <= 0:
            return False
        self.out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.left -= 1
        return True

    def line(self, kind: str, message: dict, side: bool = False, **extra) -> bool:
        uid = self._uuid()
        self.clock += 1
        obj = {
            "parentUuid": self.side_parent if side else self.parent,
            "isSidechain": side,
            "userType": "external",
            "cwd": "/home/synth/proj",
            "sessionId": self.session,
            "version": "2.0.14",
            "gitBranch": "main",
            "type": kind,
            "message": message,
            **extra,
            "uuid": uid,
            "timestamp": f"2025-10-{1 + self.clock // 86400 % 28:02d}T{self.clock // 3600 % 24:02d}:"
            f"{self.clock // 60 % 60:02d}:{self.clock % 60:02d}.000Z",
        }
        if not self.emit(obj):
            return False
        if side:
            self.side_parent = uid
        else:
            self.parent = uid
        return True

    def _sentence(self) -> str:
        words = " ".join(self.rng.choices(WORDS, k=self.rng.randint(6, 30)))
        return words[0].upper() + words[1:] + "."

    def sentence(self, face: bool = True) -> str:
        text = self.rng.choice(self.sentences)
        if face and self.rng.random() < 0.8:
            text = f"{self.rng.choice(FACES)} {text}"
        return text

    def user(self, text: str, side: bool = False, **extra) -> bool:
        return self.line("user", {"role": "user", "content": text}, side=side, **extra)

    def assistant_message(self, side: bool = False, tools: int = 0) -> bool:
        """One streamed assistant message: maybe thinking, one text line, ``tools`` tool_use lines."""
        mid = "msg_01" + "".join(self.rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", k=22))
        model = self.rng.choice(MODELS)

        def msg(block: dict) -> dict:
            return {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [block],
                "stop_reason": None,
                "usage": {"input_tokens": 4, "output_tokens": 120},
            }

        if self.rng.random() < 0.4 and not self.line(
            "assistant",
            msg({"type": "thinking", "thinking": self.sentence(False), "signature": "SYNTH"}),
            side,
        ):
            return False
        if not self.line("assistant", msg({"type": "text", "text": self.sentence()}), side):
            return False
        if mid not in self.counted:
            self.counted.add(mid)
            self.turns += 1
        ids = []
        for _ in range(tools):
            tid = "toolu_01" + self._uuid().replace("-", "")[:20]
            ids.append(tid)
            block = {
                "type": "tool_use",
                "id": tid,
                "name": self.rng.choice(TOOLS),
                "input": {"file_path": "/home/synth/proj/src/app.py"},
            }
            if not self.line("assistant", msg(block), side):
                return False
        for tid in ids:
            content = [{"tool_use_id": tid, "type": "tool_result", "content": self.rng.choice(self.outputs)}]
            if not self.line("user", {"role": "user", "content": content}, side):
                return False
        return True

    def exchange(self, first: bool) -> bool:
        rng = self.rng
        if rng.random() < 0.05 and not self.emit(
            {"type": "summary", "summary": self.sentence(False), "leafUuid": self._uuid()}
        ):
            return False
        if rng.random() < 0.1:
            caveat = "Caveat: The messages below were generated by the user while running local commands."
            ok = (
                self.user(caveat, isMeta=True)
                and self.user("<command-name>/cost</command-name>\n<command-args></command-args>")
                and self.user("<local-command-stdout>Total cost: $0.12</local-command-stdout>")
            )
            if not ok:
                return False
        prompt = self.sentence(False)
        if first:
            prompt = CLAUDE_MD + "\n" + prompt
        elif rng.random() < 0.3:
            prompt = prompt + "\n\n" + REMINDER
        if not self.user(prompt):
            return False
        for _ in range(rng.randint(0, 4)):
            if not self.assistant_message(tools=rng.randint(1, 2)):
                return False
        if rng.random() < 0.15:  # a subagent run
            self.side_parent = None
            if not self.user(self.sentence(False), side=True):
                return False
            for _ in range(rng.randint(1, 3)):
                if not self.assistant_message(side=True, tools=rng.randint(0, 1)):
                    return False
        if rng.random() < 0.05 and not self.emit(
            {
                "parentUuid": self.parent,
                "isSidechain": False,
                "type": "system",
                "subtype": "informational",
                "content": "Conversation compacted",
                "level": "info",
                "uuid": self._uuid(),
                "sessionId": self.session,
            }
        ):
            return False
        return self.assistant_message(tools=0)


def generate_claude_code(path: str | Path, n_lines: int, seed: int = 0) -> int:
    """Write a synthetic Claude Code session of exactly ``n_lines`` lines to ``path``; return its turn count.

    The count is what ``parse`` yields for the file: one per assistant message with a written text line.
    A path ending in ``.zst`` is zstd-compressed.
    """
    rng = random.Random(seed)
    buffer = io.StringIO()
    writer = _Writer(buffer, n_lines, rng)
    first = True
    while writer.left > 0:
        writer.exchange(first)
        first = False
    data = buffer.getvalue().encode("utf-8")
    if is_zstd(path):
        import zstandard

        data = zstandard.ZstdCompressor(level=3).compress(data)
    Path(path).write_bytes(data)
    return writer.turns
