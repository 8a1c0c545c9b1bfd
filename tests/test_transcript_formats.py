"""Transcript formats: detection, exact RawTurn lists per fixture, malformed lines, zstd, folder walking."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import zstandard

from affectlens.transcripts.formats import detect_format, parse, transcript_files
from affectlens.transcripts.formats.claude_code import strip_injected as strip_claude
from affectlens.transcripts.formats.codex import strip_injected as strip_codex
from affectlens.transcripts.records import Malformed, RawTurn
from affectlens.transcripts.synthetic import generate_claude_code

DATA = Path(__file__).parent / "data" / "transcripts"
CLAUDE = DATA / "claude" / "-home-alice-proj" / "7f3e2c1a-5b4d-4e8f-9a0b-1c2d3e4f5a6b.jsonl"
CODEX = DATA / "codex/2025/10/14/rollout-2025-10-14T10-00-01-0199e0f2-6c3a-7d41-9b2e-5f8a1c3d7e90.jsonl"
CHAT = DATA / "chat" / "conversations.jsonl"
FLAT = DATA / "chat" / "flat.jsonl"
UNKNOWN = DATA / "unknown.jsonl"
EDGE = DATA / "edge"
RESUMED, CHAT_BAD = EDGE / "claude-resumed.jsonl", EDGE / "chat-malformed.jsonl"
DEVELOPER, OLD_ROLLOUT = EDGE / "rollout-developer.jsonl", EDGE / "rollout-old.jsonl"

KEY = "sk-ant-api03-FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE-not-a-real-key"
SONNET, OPUS = "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805"
ASK = (
    "The auth test in tests/test_auth.py is flaky again, can you look? "
    "Ping alice.smith@example.com if you need the staging creds."
)
WHY = "Now explain why it was flaky."
CI = "Search the CI logs in /home/alice/proj/ci for auth timeouts and report counts."


def turns(path: Path) -> list[RawTurn]:
    return [r for r in parse(path) if isinstance(r, RawTurn)]


def malformed(path: Path) -> list[Malformed]:
    return [r for r in parse(path) if isinstance(r, Malformed)]


def claude(line, text, user, model=SONNET, side=False, file=CLAUDE):
    return RawTurn(
        source="claude-code",
        session="7f3e2c1a-5b4d-4e8f-9a0b-1c2d3e4f5a6b",
        file=str(file),
        line=line,
        assistant_text=text,
        user_text=user,
        model=model,
        timestamp=f"2025-10-14T09:{line:02d}:00.000Z",
        cwd="/home/alice/proj",
        sidechain=side,
    )


def codex(line, text, user, model, cwd, file=CODEX):
    return RawTurn(
        source="codex",
        session="0199e0f2-6c3a-7d41-9b2e-5f8a1c3d7e90",
        file=str(file),
        line=line,
        assistant_text=text,
        user_text=user,
        model=model,
        timestamp=f"2025-10-14T10:00:{line:02d}.000Z",
        cwd=cwd,
    )


# ---- detection and walking ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        (CLAUDE, "claude-code"),
        (RESUMED, "claude-code"),
        (CODEX, "codex"),
        (DEVELOPER, "codex"),
        (OLD_ROLLOUT, "codex"),
        (CHAT, "chat"),
        (FLAT, "chat"),
        (CHAT_BAD, "chat"),
        (UNKNOWN, None),
    ],
)
def test_detect_format(path, fmt):
    assert detect_format(path) == fmt


def test_unknown_format_is_one_whole_file_malformed_and_empty_file_nothing(tmp_path):
    [only] = list(parse(UNKNOWN))
    assert isinstance(only, Malformed) and only.line == 0 and "unrecognized" in only.reason
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert detect_format(empty) is None and list(parse(empty)) == []
    with pytest.raises(ValueError, match="unknown transcript format"):
        parse(CLAUDE, format="yaml")


def test_detection_skips_junk_first_lines(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"not json\n\xff\xfe\n[1, 2]\n" + CLAUDE.read_bytes())
    assert detect_format(path) == "claude-code"


def test_explicit_format_skips_detection():
    assert [(r.line, type(r)) for r in parse(UNKNOWN, format="chat")] == [(n, Malformed) for n in (1, 2, 3)]
    assert list(parse(UNKNOWN, format="codex")) == []  # nothing a rollout would read


def test_transcript_files_walks_nested_folders_sorted(tmp_path):
    for rel in ["b/2025/01/rollout-2.jsonl", "a/x.jsonl.zst", "a/deep/er/y.jsonl", "a/notes.txt", "a/z.json"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    loose = tmp_path / "loose.txt"
    loose.write_text("{}\n")
    found = transcript_files([tmp_path / "b", tmp_path / "a", loose, tmp_path / "a"])
    assert found == sorted(
        [
            tmp_path / "a/deep/er/y.jsonl",
            tmp_path / "a/x.jsonl.zst",
            tmp_path / "b/2025/01/rollout-2.jsonl",
            loose,
        ]
    )
    everything = [CHAT, FLAT, CLAUDE, CODEX, UNKNOWN, RESUMED, CHAT_BAD, DEVELOPER, OLD_ROLLOUT]
    assert transcript_files(DATA) == sorted(everything)
    with pytest.raises(FileNotFoundError):
        transcript_files(tmp_path / "missing")


# ---- Claude Code ---------------------------------------------------------------------------------------

CLAUDE_TURNS = [
    claude(4, "(・_・) Let me look at the failing test first.", ASK),
    claude(8, f"(^▽^) Found it: the test hard-codes {KEY} and races the token refresh.", ASK),
    claude(12, "✨ Fixed! The test now waits for the refresh to finish.", ASK),
    claude(
        17,
        "It was flaky because the refresh ran on a background thread and the assertion did not wait for it.",
        WHY,
        model=OPUS,
    ),
    claude(19, "(╥﹏╥) Sorry! I'll have a subagent check the CI history instead.", WHY),
    claude(22, "(・_・) Searching the CI logs.", CI, side=True),
    claude(24, "Found 3 timeouts, all in test_refresh_token.", CI, side=True),
    claude(26, "(^▽^) The subagent found 3 timeouts, which fits the race.", WHY),
]


def test_claude_code_exact_turns():
    assert turns(CLAUDE) == CLAUDE_TURNS


def test_claude_code_records_are_in_line_order_with_malformed_lines_between():
    lines = [r.line for r in parse(CLAUDE)]
    assert lines == sorted(lines) == [4, 8, 10, 11, 12, 17, 19, 22, 24, 26]


def test_claude_code_malformed_and_non_utf8_lines_are_reported_and_parsing_goes_on():
    truncated, not_utf8 = malformed(CLAUDE)
    assert (truncated.file, truncated.line) == (str(CLAUDE), 10)
    assert truncated.reason.startswith("invalid JSON")
    assert (not_utf8.file, not_utf8.line) == (str(CLAUDE), 11)
    assert "not UTF-8" in not_utf8.reason and "ff" in not_utf8.reason
    assert any(t.line > 11 for t in turns(CLAUDE))


def test_claude_code_streamed_lines_merge_into_one_turn_at_the_first_line(tmp_path):
    rows = [json.loads(line) for line in CLAUDE.read_bytes().splitlines()[3:6]]  # lines 4-6: one message
    assert {r["message"]["id"] for r in rows} == {"msg_01AaaaFakeStream"}
    rows[2]["message"]["content"] = [{"type": "text", "text": "Second block."}]  # tool_use -> text
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    [turn] = turns(path)
    assert (
        turn.line == 1
        and turn.assistant_text == "(・_・) Let me look at the failing test first.\n\nSecond block."
    )
    assert turn.user_text is None  # its user line is not in this file, and nothing came before


def test_claude_code_tool_results_summaries_and_injections_are_not_user_text():
    texts = {t.user_text for t in turns(CLAUDE)}
    assert texts == {ASK, WHY, CI}  # never a tool result, a reminder, a command wrapper or "interrupted"
    assert "No response requested." not in {t.assistant_text for t in turns(CLAUDE)}  # <synthetic> model


def test_claude_code_missing_parent_falls_back_to_file_order_on_the_same_side():
    got = [(t.assistant_text, t.user_text, t.sidechain, t.session) for t in turns(RESUMED)]
    assert got == [
        ("(・_・) main answer", "main question", False, "resumed-1"),
        ("side answer", "side question", True, "resumed-1"),
        ("a string content turn", None, False, "resumed-1"),  # a chain root: no user text before it
    ]
    [bad] = malformed(RESUMED)
    assert bad.line == 6 and "content" in bad.reason


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("fix it\n<system-reminder>\nThe user opened a.py\n</system-reminder>", "fix it"),
        (
            "<command-name>/clear</command-name>\n<command-message>clear</command-message>\n<command-args></command-args>",
            "",
        ),
        ("<local-command-stdout>Total cost: $0.42</local-command-stdout>", ""),
        ("<bash-input>ls</bash-input><bash-stdout>a b</bash-stdout><bash-stderr></bash-stderr>", ""),
        ("Contents of /home/alice/proj/CLAUDE.md (project instructions):\n\nAlways test.", ""),
        ("do this\n\nContents of /home/alice/AGENTS.md:\nrules", "do this"),
        ("[Request interrupted by user for tool use]", ""),
        (
            "Caveat: The messages below were generated by the user while running local commands. DO NOT respond.",
            "",
        ),
        ("keep <b>html</b> and <system-reminder>unclosed", "keep <b>html</b> and"),
    ],
)
def test_claude_code_strip_injected(raw, kept):
    assert strip_claude(raw) == kept


# ---- Codex ---------------------------------------------------------------------------------------------

ASK_RETRY = f"Please add a retry to fetch_token(); the key in .env is {KEY}."
ASK_LOG = (
    "Also log failures to /home/alice/proj/logs/auth.log and email bob@example.org when it keeps failing."
)
CODEX_TURNS = [
    partial(
        codex,
        13,
        "(^▽^) Added a retry with exponential backoff to fetch_token().",
        ASK_RETRY,
        "gpt-5-codex",
        "/home/alice/proj",
    ),
    partial(
        codex,
        18,
        "(╥﹏╥) I can't send email from the sandbox, so I only added the logging.",
        ASK_LOG,
        "gpt-5",
        "/home/alice/proj/src",
    ),
    partial(codex, 19, "✨ Logging is in place.", ASK_LOG, "gpt-5", "/home/alice/proj/src"),
]


def test_codex_exact_turns_with_agent_messages_deduplicated():
    # line 12's event repeats line 13's message and line 20's repeats line 19's; line 18's stands alone
    assert turns(CODEX) == [make() for make in CODEX_TURNS]
    assert malformed(CODEX) == []


def test_codex_zstd_equals_plain(tmp_path):
    packed = tmp_path / CODEX.name.replace(".jsonl", ".jsonl.zst")
    data = CODEX.read_bytes()
    half = len(data) // 2
    # two concatenated frames, as an appending writer leaves them
    packed.write_bytes(
        zstandard.ZstdCompressor().compress(data[:half]) + zstandard.ZstdCompressor().compress(data[half:])
    )
    assert detect_format(packed) == "codex"
    assert turns(packed) == [make(file=packed) for make in CODEX_TURNS]
    assert transcript_files(tmp_path) == [packed]


def test_claude_zstd_equals_plain_including_malformed_lines(tmp_path):
    packed = tmp_path / (CLAUDE.name + ".zst")
    packed.write_bytes(zstandard.ZstdCompressor().compress(CLAUDE.read_bytes()))
    plain = [r.__dict__ | {"file": None} for r in parse(CLAUDE)]
    assert [r.__dict__ | {"file": None} for r in parse(packed)] == plain


def test_corrupt_zstd_is_malformed_not_a_crash(tmp_path):
    bad = tmp_path / "rollout-bad.jsonl.zst"
    bad.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00garbage" * 20)
    records = list(parse(bad, format="codex"))
    assert records and all(isinstance(r, Malformed) for r in records)
    assert detect_format(bad) is None


def test_codex_strip_injected_and_developer_messages():
    assert strip_codex("<environment_context>\n<cwd>/x</cwd>\n</environment_context>") == ""
    assert strip_codex("<user_instructions>be nice</user_instructions>\n\nhello") == "hello"
    assert (
        strip_codex("# AGENTS.md instructions for /home/alice/proj\n\n<INSTRUCTIONS>x</INSTRUCTIONS>") == ""
    )
    [turn] = turns(DEVELOPER)
    got = (turn.user_text, turn.session, turn.cwd, turn.model, turn.line)
    assert got == ("real ask", "s9", "/home/alice/w", None, 5)
    [bad] = malformed(DEVELOPER)
    assert bad.line == 6 and "payload" in bad.reason


def test_codex_older_bare_rollout():
    assert detect_format(OLD_ROLLOUT) == "codex"
    [turn] = turns(OLD_ROLLOUT)
    assert (turn.session, turn.user_text, turn.assistant_text, turn.line) == ("old-1", "hi", "(^▽^) hello", 4)


# ---- chat ----------------------------------------------------------------------------------------------


def chat(session, line, text, user, model=None, ts=None, file=CHAT):
    return RawTurn("chat", session, str(file), line, text, user, model=model, timestamp=ts)


def test_chat_conversations_exact_turns():
    assert turns(CHAT) == [
        chat(
            "conv-001",
            1,
            "(^▽^) Hello! Please don't share keys; rotate that one.",
            f"hi! my key is {KEY}, is that safe to share?",
            "gpt-4o-2024-08-06",
            "2025-10-14T10:00:00Z",
        ),
        chat(
            "conv-001",
            1,
            "(・_・) I can't send email, but here are the steps.",
            "Ok. Can you email carol@example.net the steps?",
            "gpt-4o-2024-08-06",
            "2025-10-14T10:00:00Z",
        ),
        chat(
            "conv-002",
            2,
            "✨ It has README.md, src and tests.",
            "List /home/alice/proj please.",
            ts="2025-10-14T11:00:00Z",
        ),
        chat("conversations:3", 3, "Hi, how can I help?", None),
    ]


def test_chat_flat_file_is_one_session():
    assert turns(FLAT) == [
        chat(
            "flat",
            3,
            "(╥﹏╥) Sorry, looking now.",
            "The build broke again.",
            "llama-3.1-8b-instruct",
            "2025-10-14T12:00:05Z",
            file=FLAT,
        ),
        chat("flat", 5, "You're welcome.", "Thanks.", file=FLAT),
    ]


def test_chat_malformed_lines():
    got = [(r.line, type(r).__name__) for r in parse(CHAT_BAD, format="chat")]
    assert got == [(1, "RawTurn"), (2, "Malformed"), (3, "Malformed"), (4, "Malformed"), (5, "RawTurn")]
    assert "not UTF-8" in malformed(CHAT_BAD)[2].reason
    assert turns(CHAT_BAD)[1].session == "5"


# ---- synthetic -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_lines", "seed"), [(1, 0), (37, 1), (5000, 2)])
def test_synthetic_claude_code_parses_to_its_turn_count(tmp_path, n_lines, seed):
    path = tmp_path / "synthetic.jsonl"
    expected = generate_claude_code(path, n_lines, seed=seed)
    assert len(path.read_bytes().splitlines()) == n_lines
    assert detect_format(path) == "claude-code"
    records = list(parse(path))
    assert not [r for r in records if isinstance(r, Malformed)]
    got = [r for r in records if isinstance(r, RawTurn)]
    assert len(got) == expected
    if n_lines >= 5000:
        assert expected > 1000 and any(t.sidechain for t in got) and all(t.user_text for t in got)
        assert not any("system-reminder" in t.user_text or "CLAUDE.md" in t.user_text for t in got)


def test_synthetic_is_deterministic_and_zstd_matches(tmp_path):
    a, b, z = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl.zst"
    assert (
        generate_claude_code(a, 300, seed=7)
        == generate_claude_code(b, 300, seed=7)
        == generate_claude_code(z, 300, 7)
    )
    assert a.read_bytes() == b.read_bytes()
    assert [t.assistant_text for t in turns(z)] == [t.assistant_text for t in turns(a)]
