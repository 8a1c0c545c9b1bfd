"""The Claude Code Stop hook: install it into Claude Code's settings, and journal the faces it sees.

``install`` adds one command hook under ``hooks.Stop`` of a Claude Code settings file (default
``~/.claude/settings.json``), in the format Claude Code reads::

    {"hooks": {"Stop": [{"matcher": "", "hooks": [{"type": "command", "command": "..."}]}]}}

Every other key and hook is kept; installing a command that is already there changes nothing. The original
bytes go into a sidecar ``<settings>.affectlens-backup`` (JSON: whether the file existed, its bytes, the
SHA-256 of what install wrote). ``uninstall`` restores those bytes exactly, or removes the file if install
created it, when the settings are still byte-for-byte what install left; if they were edited since, it
removes only our hook entry (and a group, ``Stop`` list or ``hooks`` object left empty by that) and keeps the
user's edits, so the result is re-serialized JSON, not the original bytes. Writes are atomic (temp file and
``os.replace``, through a symlinked settings file to its target, keeping its mode). A settings file that is
not a JSON object of the expected shape raises :class:`AffectlensError` and nothing is written.

``run_hook`` is what the hook command runs: it reads the Stop payload Claude Code writes on stdin, parses the
transcript, and appends one redacted journal line per new assistant turn that opens with a face (see
:func:`run_hook`). It never fails the agent: it returns 0 whatever happens and logs errors to a file.
The journal defaults to ``$XDG_DATA_HOME/affectlens/journal.jsonl`` (``~/.local/share/...`` when
``XDG_DATA_HOME`` is unset); its per-session state is ``journal.jsonl.state.json`` beside it, its lock file
``journal.jsonl.lock``, and the error log ``hook.log`` in the same folder.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib
import json
import os
import shlex
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from affectlens.errors import AffectlensError
from affectlens.faces import extract_face
from affectlens.transcripts.records import RawTurn

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, appends are still single writes
    fcntl = None  # type: ignore[assignment]

BACKUP_SUFFIX = ".affectlens-backup"
SOURCE = "claude-code"
MAX_PENDING = 32  # fallback-journaled texts remembered per session until the transcript shows them


# -- paths and the command -------------------------------------------------------------------------------


def default_settings_path() -> Path:
    return Path.home() / ".claude" / "settings.json"


def default_journal() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "affectlens" / "journal.jsonl"


def default_log(journal: Path | None = None) -> Path:
    return (journal or default_journal()).parent / "hook.log"


def hook_command(journal: Path | None = None) -> str:
    """The shell command the Stop hook runs."""
    return f"affectlens corpus hook run --journal {shlex.quote(str(journal or default_journal()))}"


def _backup_path(settings: Path) -> Path:
    return settings.with_name(settings.name + BACKUP_SUFFIX)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- install / uninstall ---------------------------------------------------------------------------------


def _load_settings(path: Path, raw: bytes) -> dict[str, Any]:
    def bad(why: str) -> AffectlensError:
        return AffectlensError(f"{path}: not a valid Claude Code settings file ({why}); nothing written")

    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(" ".join(str(exc).split())) from None
    if not isinstance(doc, dict):
        raise bad("the top level is not a JSON object")
    hooks = doc.get("hooks", {})
    if not isinstance(hooks, dict):
        raise bad('"hooks" is not an object')
    stop = hooks.get("Stop", [])
    if not isinstance(stop, list) or not all(isinstance(g, dict) for g in stop):
        raise bad('"hooks.Stop" is not a list of objects')
    for group in stop:
        if not isinstance(group.get("hooks", []), list):
            raise bad('a "hooks.Stop" entry has a "hooks" that is not a list')
    return doc


def _is_ours(hook: Any, command: str) -> bool:
    return isinstance(hook, dict) and hook.get("type") == "command" and hook.get("command") == command


def _has_command(doc: dict[str, Any], command: str) -> bool:
    stop = doc.get("hooks", {}).get("Stop", [])
    return any(_is_ours(h, command) for g in stop for h in g.get("hooks", []))


def _dump(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def install(settings_path: Path | None, command: str) -> bool:
    """Add ``command`` as a Claude Code Stop hook; True if the file changed, False if it was already there."""
    path = Path(settings_path or default_settings_path()).expanduser().resolve()
    existed = path.exists()
    raw = path.read_bytes() if existed else b""
    doc = _load_settings(path, raw)
    if _has_command(doc, command):
        return False
    doc.setdefault("hooks", {}).setdefault("Stop", []).append(
        {"matcher": "", "hooks": [{"type": "command", "command": command}]}
    )
    data = _dump(doc)
    backup_path = _backup_path(path)
    backup = _read_backup(backup_path)
    if backup is not None and not any(_has_command(doc, c) for c in backup["commands"]):
        backup = None  # stale: every hook it recorded was removed by hand since
    if backup is None:  # the first install keeps the bytes from before any of ours
        backup = {"existed": existed, "original": base64.b64encode(raw).decode("ascii"), "commands": []}
    backup["commands"] = [*backup["commands"], command]
    backup["installed_sha256"] = hashlib.sha256(data).hexdigest()
    _write_atomic(backup_path, _dump(backup))
    _write_atomic(path, data)
    return True


def _read_backup(path: Path) -> dict[str, Any] | None:
    try:
        backup = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(backup, dict) and isinstance(backup.get("commands"), list)
    return backup if ok and isinstance(backup.get("original"), str) else None


def _remove_command(doc: dict[str, Any], command: str) -> bool:
    hooks = doc.get("hooks", {})
    stop = hooks.get("Stop", [])
    kept, removed = [], False
    for group in stop:
        inner = group.get("hooks", [])
        rest = [h for h in inner if not _is_ours(h, command)]
        if len(rest) < len(inner):
            removed = True
            if not rest:
                continue  # a group left empty by our removal goes too
            group = {**group, "hooks": rest}
        kept.append(group)
    if removed:
        if kept:
            hooks["Stop"] = kept
        else:
            del hooks["Stop"]
            if not hooks:
                del doc["hooks"]
    return removed


def uninstall(settings_path: Path | None, command: str) -> bool:
    """Remove the Stop hook ``command``; True if something was removed (see the module docstring)."""
    path = Path(settings_path or default_settings_path()).expanduser().resolve()
    backup_path = _backup_path(path)
    backup = _read_backup(backup_path)
    if not path.exists():
        return False
    raw = path.read_bytes()
    untouched = (
        backup is not None
        and backup["commands"] == [command]
        and hashlib.sha256(raw).hexdigest() == backup.get("installed_sha256")
    )
    if untouched:
        assert backup is not None
        if backup.get("existed"):
            _write_atomic(path, base64.b64decode(backup["original"]))
        else:
            path.unlink()
        backup_path.unlink()
        return True
    doc = _load_settings(path, raw)
    removed = _remove_command(doc, command)
    if removed:
        _write_atomic(path, _dump(doc))
    if backup is not None and command in backup["commands"]:
        rest = [c for c in backup["commands"] if c != command]
        if rest:  # other commands still installed: keep the original, but never byte-restore over edits
            _write_atomic(backup_path, _dump({**backup, "commands": rest, "installed_sha256": None}))
        else:
            backup_path.unlink()
    return removed


# -- the hook itself -------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def session_hash(session_id: str, source: str = SOURCE) -> str:
    """The first 16 hex of a SHA-256 of the source and session id, as ``ingest`` hashes them, so that journal
    and transcript rows of one session share a session key."""
    return hashlib.sha256(f"{source}\x1f{session_id}".encode()).hexdigest()[:16]


def _text_key(text: str) -> str:
    """A fingerprint of a text that ignores whitespace, for matching a fallback message to its transcript turn."""
    return hashlib.sha256("".join(text.split()).encode("utf-8")).hexdigest()[:16]


def _log_error(log: Path, message: str) -> None:
    with contextlib.suppress(Exception):
        with contextlib.suppress(Exception):
            message = importlib.import_module("affectlens.transcripts.redact").redact(message)
        log.parent.mkdir(parents=True, exist_ok=True)
        line = f"{_now()} error: {' '.join(message.split())[:1000]}\n"
        with open(log, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


@contextlib.contextmanager
def _locked(journal: Path) -> Iterator[None]:
    journal.parent.mkdir(parents=True, exist_ok=True)
    with open(journal.with_name(journal.name + ".lock"), "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _append(journal: Path, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size:  # a line cut short by a crash must not swallow ours
            with open(journal, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_transcript(path: str | None, log: Path) -> list[RawTurn]:
    if not path or not Path(path).expanduser().is_file():
        return []  # not written yet (the transcript can lag the hook): the fallback covers it
    parse = importlib.import_module("affectlens.transcripts.formats").parse
    try:
        return [t for t in parse(Path(path).expanduser(), format="claude-code") if isinstance(t, RawTurn)]
    except Exception as exc:
        _log_error(log, f"transcript unreadable, using last_assistant_message: {type(exc).__name__}: {exc}")
        return []


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def run_hook(stdin_text: str, journal: Path | None = None, log: Path | None = None) -> int:
    """Journal the new assistant turns of the session a Stop payload names that open with a face; always 0.

    New turns are the transcript's assistant turns past the last line journaled for this session (state in
    ``<journal>.state.json``). When the transcript is missing, unreadable or has no new assistant turn, the
    payload's ``last_assistant_message`` stands in (``user_text`` None, timestamp the hook's own), unless it
    is the text already processed last; such a fallback text is remembered, so the transcript turn it
    becomes later is not journaled twice. Each journal line is one JSON object::

        {"source": "claude-code", "session": sha256(source, session id)[:16], "timestamp", "model", "cwd",
         "user_text", "assistant_text", "face", "face_kind", "well_formed", "sidechain"}

    with every text and the cwd redacted (``redact``, ``redact_path``) before the face is read from it.
    ``stop_hook_active`` is not consulted: the hook never blocks, so it cannot loop.
    """
    journal = Path(journal or default_journal())
    log = Path(log or default_log(journal))
    try:
        _run(stdin_text, journal, log)
    except BaseException as exc:  # the agent must never see this hook fail
        _log_error(log, f"{type(exc).__name__}: {exc}")
    return 0


def _run(stdin_text: str, journal: Path, log: Path) -> None:
    payload = json.loads(stdin_text)
    if not isinstance(payload, dict) or not isinstance(payload.get("session_id"), str):
        raise ValueError("the Stop payload is not a JSON object with a session_id")
    redaction = importlib.import_module("affectlens.transcripts.redact")
    redact, redact_path = redaction.redact, redaction.redact_path
    sid = session_hash(payload["session_id"])
    transcript = payload.get("transcript_path")
    last_message = payload.get("last_assistant_message")

    def record(text: str, user: str | None, *, model, timestamp, cwd, sidechain) -> dict[str, Any] | None:
        assistant = redact(text)
        face = extract_face(assistant)
        if face is None:
            return None
        return {
            "source": SOURCE,
            "session": sid,
            "timestamp": timestamp,
            "model": model,
            "cwd": redact_path(cwd) if cwd else None,
            "user_text": redact(user) if user is not None else None,
            "assistant_text": assistant,
            "face": face.text,
            "face_kind": face.kind,
            "well_formed": face.well_formed,
            "sidechain": sidechain,
        }

    turns = _read_transcript(transcript, log)  # outside the lock: it reads no state
    state_path = journal.with_name(journal.name + ".state.json")
    with _locked(journal):
        state = _load_state(state_path)
        entry = state.get(sid) if isinstance(state.get(sid), dict) else {}
        file_key = _text_key(str(transcript or ""))
        mark = int(entry.get("line", 0)) if entry.get("file") == file_key else 0
        pending: list[str] = list(entry.get("pending", []))
        last_key = entry.get("last")
        records = []
        new = [t for t in turns if t.line > mark]
        for turn in new:
            key = _text_key(turn.assistant_text)
            if not turn.sidechain:
                last_key = key
            if key in pending:  # journaled already from last_assistant_message
                pending.remove(key)
                continue
            records.append(
                record(
                    turn.assistant_text,
                    turn.user_text,
                    model=turn.model,
                    timestamp=turn.timestamp,
                    cwd=turn.cwd or payload.get("cwd"),
                    sidechain=turn.sidechain,
                )
            )
        if turns:
            mark = max(mark, *(t.line for t in turns))
        if not new and isinstance(last_message, str) and last_message.strip():
            key = _text_key(last_message)
            if key != last_key and key not in pending:
                records.append(
                    record(
                        last_message,
                        None,
                        model=None,
                        timestamp=_now(),
                        cwd=payload.get("cwd"),
                        sidechain=False,
                    )
                )
                pending = [*pending, key][-MAX_PENDING:]
                last_key = key
        _append(journal, [r for r in records if r is not None])
        state[sid] = {"file": file_key, "line": mark, "last": last_key, "pending": pending}
        _write_atomic(state_path, _dump(state))
