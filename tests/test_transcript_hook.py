"""The Claude Code Stop hook: settings install/uninstall, and the journal it appends to.

Most run_hook tests stand in small fakes for the parser and redactor (``formats``, ``redact``), so they pin
the hook's own logic exactly; the end-to-end test uses the real ones and is skipped while they are missing.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import types
from pathlib import Path

import pytest

from affectlens.errors import AffectlensError
from affectlens.transcripts import hook
from affectlens.transcripts.records import Malformed, RawTurn

CMD = "affectlens corpus hook run --journal /tmp/j.jsonl"
SESSION = "0b7c2a4e-session"
SID = hook.session_hash(SESSION)


# -- install / uninstall ---------------------------------------------------------------------------------

EXISTING = (
    b'{\n    "model": "opus",\n    "env": {"FOO": "1"},\n    "hooks": {\n'
    b'        "Stop": [{"matcher": "", "hooks": [{"type": "command", "command": "say done"}]}],\n'
    b'        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "guard"}]}]\n'
    b"    }\n}"
)


def test_install_keeps_everything_else_is_idempotent_and_uninstall_restores_bytes(tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_bytes(EXISTING)
    settings.chmod(0o640)
    assert hook.install(settings, CMD) is True
    doc = json.loads(settings.read_text())
    assert doc["model"] == "opus" and doc["env"] == {"FOO": "1"}
    assert doc["hooks"]["PreToolUse"] == json.loads(EXISTING)["hooks"]["PreToolUse"]
    assert doc["hooks"]["Stop"] == [
        {"matcher": "", "hooks": [{"type": "command", "command": "say done"}]},
        {"matcher": "", "hooks": [{"type": "command", "command": CMD}]},
    ]
    assert settings.stat().st_mode & 0o777 == 0o640
    installed = settings.read_bytes()
    assert hook.install(settings, CMD) is False
    assert settings.read_bytes() == installed
    assert hook.uninstall(settings, CMD) is True
    assert settings.read_bytes() == EXISTING
    assert not (tmp_path / "settings.json.affectlens-backup").exists()
    assert hook.uninstall(settings, CMD) is False
    assert settings.read_bytes() == EXISTING
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]


def test_install_creates_a_missing_file_and_uninstall_removes_it(tmp_path):
    settings = tmp_path / ".claude" / "settings.json"
    assert hook.install(settings, CMD) is True
    assert json.loads(settings.read_text()) == {
        "hooks": {"Stop": [{"matcher": "", "hooks": [{"type": "command", "command": CMD}]}]}
    }
    assert hook.uninstall(settings, CMD) is True
    assert not settings.exists()
    assert list(settings.parent.iterdir()) == []


def test_uninstall_after_user_edits_removes_only_our_entry(tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_bytes(EXISTING)
    hook.install(settings, CMD)
    doc = json.loads(settings.read_text())
    doc["theme"] = "dark"
    doc["hooks"]["Stop"][1]["hooks"].append({"type": "command", "command": "mine too"})
    settings.write_text(json.dumps(doc))
    assert hook.uninstall(settings, CMD) is True
    after = json.loads(settings.read_text())
    expected = json.loads(EXISTING)
    expected["theme"] = "dark"
    expected["hooks"]["Stop"].append({"matcher": "", "hooks": [{"type": "command", "command": "mine too"}]})
    assert after == expected
    assert not (tmp_path / "settings.json.affectlens-backup").exists()


def test_two_commands_uninstall_one_keeps_the_other(tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_bytes(EXISTING)
    hook.install(settings, CMD)
    hook.install(settings, "other hook")
    assert hook.uninstall(settings, CMD) is True
    stop = json.loads(settings.read_text())["hooks"]["Stop"]
    assert [h["command"] for g in stop for h in g["hooks"]] == ["say done", "other hook"]
    assert hook.uninstall(settings, "other hook") is True
    assert json.loads(settings.read_text()) == json.loads(EXISTING)


@pytest.mark.parametrize(
    "content",
    [b'{"hooks": {"Stop": [', b"[1, 2]", b'{"hooks": []}', b'{"hooks": {"Stop": {"x": 1}}}', b"\xff\xfe{}"],
)
def test_malformed_settings_are_refused_and_untouched(tmp_path, content):
    settings = tmp_path / "settings.json"
    settings.write_bytes(content)
    for action in (hook.install, hook.uninstall):
        with pytest.raises(AffectlensError) as info:
            action(settings, CMD)
        message = str(info.value)
        assert "\n" not in message and str(settings) in message
    assert settings.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data dir"))
    assert hook.default_journal() == tmp_path / "data dir" / "affectlens" / "journal.jsonl"
    assert hook.default_log() == tmp_path / "data dir" / "affectlens" / "hook.log"
    assert hook.hook_command() == f"affectlens corpus hook run --journal '{hook.default_journal()}'"


# -- run_hook on fakes -----------------------------------------------------------------------------------


def _fake_redact(text: str) -> str:
    text = re.sub(r"[\w.]+@[\w.]+\.\w+", "<email>", text)
    return re.sub(r"/home/\w+", "~", text)


@pytest.fixture
def fakes(monkeypatch):
    """Fake formats/redact modules; ``fakes.turns`` is what parse yields for an existing transcript."""
    state = types.SimpleNamespace(turns=[], calls=0)

    def parse(path, format="auto"):
        assert format == "claude-code"
        state.calls += 1
        Path(path).read_text()  # a missing file raises, as a real parser would
        yield from state.turns

    formats = types.ModuleType("affectlens.transcripts.formats")
    formats.parse = parse
    redact = types.ModuleType("affectlens.transcripts.redact")
    redact.redact, redact.redact_path = _fake_redact, _fake_redact
    monkeypatch.setitem(sys.modules, "affectlens.transcripts.formats", formats)
    monkeypatch.setitem(sys.modules, "affectlens.transcripts.redact", redact)
    return state


def _turn(line, text, user, **kw):
    base = dict(source="claude-code", session=SESSION, file="t.jsonl", line=line, model="claude-x")
    return RawTurn(
        assistant_text=text, user_text=user, timestamp=f"2025-01-01T00:00:0{line}Z", **{**base, **kw}
    )


TURNS = [
    _turn(2, "(^▽^) Hello!", "hi", cwd="/home/alice/proj"),
    Malformed(file="t.jsonl", line=3, reason="bad json"),
    _turn(4, "No face here.", "and now?", cwd="/home/alice/proj"),
    _turn(
        6,
        "(・_・) Wrote /home/alice/proj/notes.md and mailed alice@example.com",
        "mail alice@example.com about /home/alice/proj/x.py",
        cwd="/home/alice/proj",
    ),
]


def _payload(transcript, last="(・_・) Wrote /home/alice/proj/notes.md and mailed alice@example.com", **kw):
    return json.dumps(
        {
            "session_id": SESSION,
            "transcript_path": str(transcript),
            "cwd": "/home/alice/proj",
            "hook_event_name": "Stop",
            "stop_hook_active": False,
            "last_assistant_message": last,
            **kw,
        }
    )


def _lines(journal: Path) -> list[dict]:
    return [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]


def _expected(line, assistant, user, face):
    return {
        "source": "claude-code",
        "session": SID,
        "timestamp": f"2025-01-01T00:00:0{line}Z",
        "model": "claude-x",
        "cwd": "~/proj",
        "user_text": user,
        "assistant_text": assistant,
        "face": face,
        "face_kind": "kaomoji",
        "well_formed": True,
        "sidechain": False,
    }


def test_run_hook_journals_new_face_turns_redacted_once(fakes, tmp_path):
    transcript = tmp_path / "t.jsonl"
    transcript.write_text("{}\n")
    journal, log = tmp_path / "j" / "journal.jsonl", tmp_path / "j" / "hook.log"
    fakes.turns = TURNS
    assert hook.run_hook(_payload(transcript), journal, log) == 0
    first = [
        _expected(2, "(^▽^) Hello!", "hi", "(^▽^)"),
        _expected(
            6, "(・_・) Wrote ~/proj/notes.md and mailed <email>", "mail <email> about ~/proj/x.py", "(・_・)"
        ),
    ]
    assert _lines(journal) == first
    text = journal.read_text(encoding="utf-8")
    assert "alice" not in text and "@" not in text and SESSION not in text
    assert not log.exists()
    # The same Stop again: no new turn, and the last message is the one journaled last.
    assert hook.run_hook(_payload(transcript), journal, log) == 0
    assert _lines(journal) == first
    # One more assistant turn (a subagent's) in the transcript: just that one is appended.
    fakes.turns = [*TURNS, _turn(8, "(^▽^) Done.", "go", cwd=None, sidechain=True)]
    assert hook.run_hook(_payload(transcript, last="(^▽^) Done."), journal, log) == 0
    assert _lines(journal) == [*first, {**_expected(8, "(^▽^) Done.", "go", "(^▽^)"), "sidechain": True}]
    assert not log.exists()


def test_missing_transcript_falls_back_to_last_message_once(fakes, tmp_path):
    transcript = tmp_path / "not-yet.jsonl"
    journal, log = tmp_path / "journal.jsonl", tmp_path / "hook.log"
    payload = _payload(transcript, last="(^▽^) Hello alice@example.com!")
    assert hook.run_hook(payload, journal, log) == 0
    [line] = _lines(journal)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line.pop("timestamp"))
    assert line == {
        "source": "claude-code",
        "session": SID,
        "model": None,
        "cwd": "~/proj",
        "user_text": None,
        "assistant_text": "(^▽^) Hello <email>!",
        "face": "(^▽^)",
        "face_kind": "kaomoji",
        "well_formed": True,
        "sidechain": False,
    }
    assert hook.run_hook(payload, journal, log) == 0
    assert len(_lines(journal)) == 1
    # The transcript catches up: the turn already journaled from the fallback is not journaled again.
    transcript.write_text("{}\n")
    fakes.turns = [_turn(2, "(^▽^) Hello alice@example.com!", "hi", cwd="/home/alice/proj")]
    assert hook.run_hook(payload, journal, log) == 0
    assert len(_lines(journal)) == 1
    fakes.turns.append(_turn(4, "(^▽^) Again.", "more", cwd="/home/alice/proj"))
    assert hook.run_hook(_payload(transcript, last="(^▽^) Again."), journal, log) == 0
    assert _lines(journal)[1] == _expected(4, "(^▽^) Again.", "more", "(^▽^)")
    assert not log.exists()


def test_a_parser_error_is_logged_and_the_fallback_used(fakes, monkeypatch, tmp_path):
    def broken(path, format="auto"):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(sys.modules["affectlens.transcripts.formats"], "parse", broken)
    transcript = tmp_path / "t.jsonl"
    transcript.write_text("{}\n")
    journal, log = tmp_path / "journal.jsonl", tmp_path / "hook.log"
    assert hook.run_hook(_payload(transcript, last="(^▽^) ok"), journal, log) == 0
    assert [r["assistant_text"] for r in _lines(journal)] == ["(^▽^) ok"]
    [error] = log.read_text().splitlines()
    assert "transcript unreadable" in error and "UnicodeDecodeError" in error


@pytest.mark.parametrize("stdin", ["not json {", "", "[1]", '{"transcript_path": "/x"}'])
def test_garbage_stdin_returns_0_and_logs_one_line(fakes, tmp_path, stdin):
    journal, log = tmp_path / "journal.jsonl", tmp_path / "logs" / "hook.log"
    assert hook.run_hook(stdin, journal, log) == 0
    assert hook.run_hook(stdin, journal, log) == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ error: \w+", line) for line in lines)
    assert not journal.exists()


def test_a_torn_last_line_does_not_swallow_the_next(fakes, tmp_path):
    journal = tmp_path / "journal.jsonl"
    journal.write_text('{"cut": ')
    hook.run_hook(_payload(tmp_path / "none.jsonl", last="(^▽^) hi"), journal, tmp_path / "hook.log")
    assert journal.read_text().splitlines()[1].startswith('{"source": "claude-code"')


def test_concurrent_hooks_write_whole_lines(fakes, tmp_path):
    journal, log = tmp_path / "journal.jsonl", tmp_path / "hook.log"
    payloads = [
        json.dumps({"session_id": f"s{i}", "last_assistant_message": f"(^▽^) {'x' * 5000} {i}"})
        for i in range(16)
    ]
    threads = [threading.Thread(target=hook.run_hook, args=(p, journal, log)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = _lines(journal)
    assert sorted(r["assistant_text"].rsplit(" ", 1)[1] for r in lines) == sorted(str(i) for i in range(16))
    assert len(json.loads((tmp_path / "journal.jsonl.state.json").read_text())) == 16
    assert not log.exists()


# -- end to end, with the real parser and redactor -------------------------------------------------------


def _cc(kind, text, n, **kw):
    content = text if kind == "user" else [{"type": "text", "text": text}]
    message = {"role": kind, "content": content}
    if kind == "assistant":
        message.update(model="claude-sonnet-4-5", id=f"msg_{n}")
    return json.dumps(
        {
            "parentUuid": f"u{n - 1}" if n > 1 else None,
            "isSidechain": False,
            "type": kind,
            "message": message,
            "uuid": f"u{n}",
            "sessionId": SESSION,
            "cwd": "/home/alice/proj",
            "timestamp": f"2025-01-01T00:00:0{n}.000Z",
            **kw,
        }
    )


def test_end_to_end_with_the_real_parser_and_redactor(tmp_path):
    pytest.importorskip("affectlens.transcripts.formats")
    pytest.importorskip("affectlens.transcripts.redact")
    last = "(・_・) Wrote /home/alice/proj/notes.md and mailed alice.smith@example.com"
    lines = [
        _cc("user", "hi", 1),
        _cc("assistant", "(^▽^) Hello!", 2),
        _cc("user", "and now?", 3),
        _cc("assistant", "No face here.", 4),
        _cc("user", "mail alice.smith@example.com about /home/alice/proj/x.py", 5),
        _cc("assistant", last, 6),
    ]
    transcript = tmp_path / "t.jsonl"
    transcript.write_text("\n".join(lines) + "\n", encoding="utf-8")
    journal, log = tmp_path / "journal.jsonl", tmp_path / "hook.log"
    assert hook.run_hook(_payload(transcript, last=last), journal, log) == 0
    assert not log.exists(), log.read_text()
    records = _lines(journal)
    assert [(r["face"], r["face_kind"], r["well_formed"]) for r in records] == [
        ("(^▽^)", "kaomoji", True),
        ("(・_・)", "kaomoji", True),
    ]
    assert records[0]["assistant_text"] == "(^▽^) Hello!" and records[0]["user_text"] == "hi"
    assert {(r["source"], r["session"], r["model"], r["sidechain"]) for r in records} == {
        ("claude-code", SID, "claude-sonnet-4-5", False)
    }
    assert [r["timestamp"][:19] for r in records] == ["2025-01-01T00:00:02", "2025-01-01T00:00:06"]
    text = journal.read_text(encoding="utf-8")
    assert "alice" not in text and "example.com" not in text and SESSION not in text
    assert hook.run_hook(_payload(transcript, last=last), journal, log) == 0
    assert journal.read_text(encoding="utf-8") == text


def test_session_hash_matches_ingest():
    assert hook.session_hash("abc") == hashlib.sha256(b"claude-code\x1fabc").hexdigest()[:16]
