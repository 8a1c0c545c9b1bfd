"""The transcript corpus end to end: ingest of every fixture format (redacted, counted, deduplicated,
incremental), the corpus folder's commit order, stats, the Hugging Face export, the report section, synthesis
contexts, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from affectlens.api.corpus import export, ingest, stats
from affectlens.cli import app
from affectlens.errors import AffectlensError
from affectlens.store.corpus import read_corpus
from affectlens.transcripts.ingest import TURN_COLUMNS

FIXTURES = Path(__file__).parent / "data" / "transcripts"
PLANTED = ["alice", "FAKEFAKE", "example.com", "example.org", "example.net", "bob@", "carol@"]


@pytest.fixture
def transcripts(tmp_path) -> Path:
    """A copy of the fixtures, so that tests may add and change files."""
    return Path(shutil.copytree(FIXTURES, tmp_path / "transcripts"))


def folder_text(root: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())


def totals(summary) -> dict[str, int]:
    return summary["totals"]


def test_ingest_counts_every_outcome_and_keeps_only_face_turns(transcripts, tmp_path):
    summary = ingest([transcripts], tmp_path / "corpus")
    assert summary["files_read"] == summary["files_found"] == 9
    assert totals(summary) == {"kept": 16, "no_face": 8, "malformed": 8, "duplicate": 0}
    run = read_corpus(tmp_path / "corpus")
    assert list(run.turns.columns) == TURN_COLUMNS and len(run.turns) == 16
    assert set(run.turns["source"]) == {"claude-code", "codex", "chat"}
    assert run.turns["face"].notna().all() and run.turns["turn_id"].is_unique
    assert all(len(s) == 16 for s in run.turns["session"])  # hashed, never the raw id
    by_source = pd.DataFrame(run.entry["counts"]).groupby(["source", "outcome"])["n"].sum()
    assert by_source[("unknown", "malformed")] == 1  # the file of no known format, named at line 0
    assert any(line.endswith(":10: invalid JSON: Unterminated string starting at at column 156")
               for line in summary["malformed"])  # fmt: skip


def test_nothing_planted_survives_in_any_field_or_file(transcripts, tmp_path):
    raw = folder_text(transcripts)
    assert all(planted in raw for planted in PLANTED)  # the fixtures do carry them
    summary = ingest([transcripts], tmp_path / "corpus")
    stored = folder_text(tmp_path / "corpus")
    assert not [p for p in PLANTED if p in stored]
    assert not [p for p in PLANTED if p in json.dumps(summary, ensure_ascii=False)]
    turns = read_corpus(tmp_path / "corpus").turns
    assert turns["cwd"].dropna().str.startswith("<HOME>").all()
    assert turns["user_text"].str.contains("<SECRET:anthropic>", regex=False).any()


def test_a_rerun_reads_only_new_or_changed_files_and_drops_duplicates(transcripts, tmp_path):
    ingest([transcripts], tmp_path / "corpus")
    again = ingest([transcripts], tmp_path / "corpus")
    assert again["files_read"] == 0 and totals(again)["kept"] == 0
    # A copied session with one line more: the file is read again, its old turns are duplicates.
    source = next((transcripts / "chat").glob("conversations.jsonl"))
    copy = transcripts / "copied" / "conversations.jsonl"
    copy.parent.mkdir()
    extra = {"messages": [{"role": "user", "content": "new?"}, {"role": "assistant", "content": "(^_^) new"}]}
    copy.write_text(source.read_text(encoding="utf-8") + json.dumps(extra) + "\n", encoding="utf-8")
    third = ingest([transcripts], tmp_path / "corpus")
    assert third["files_read"] == 1 and totals(third)["kept"] == 1 and totals(third)["duplicate"] >= 3
    run = read_corpus(tmp_path / "corpus")
    assert len(run.turns) == 17 and run.entry["generation"] == 3 and len(run.entry["ingests"]) == 3
    kept = pd.DataFrame(run.entry["counts"]).groupby("outcome")["n"].sum()
    assert kept["kept"] == 17  # cumulative counts agree with the table


def test_the_dry_run_writes_nothing_and_shows_redacted_examples(transcripts, tmp_path):
    summary = ingest([transcripts], tmp_path / "corpus", dry_run=True)
    assert not (tmp_path / "corpus").exists() and summary["written"] is False
    assert len(summary["examples"]) == 3 and totals(summary)["kept"] == 16
    assert not [p for p in PLANTED if p in json.dumps(summary["examples"], ensure_ascii=False)]


def test_a_killed_ingest_leaves_the_corpus_as_it_was(transcripts, tmp_path, monkeypatch):
    ingest([transcripts / "chat"], tmp_path / "corpus")
    before = read_corpus(tmp_path / "corpus")
    import affectlens.store.corpus as store

    real = store.write_json

    def killed(path, data):
        raise KeyboardInterrupt  # after the new tables, before the manifest that commits them

    monkeypatch.setattr(store, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest([transcripts], tmp_path / "corpus")
    monkeypatch.setattr(store, "write_json", real)
    after = read_corpus(tmp_path / "corpus")
    pd.testing.assert_frame_equal(before.turns, after.turns)
    assert after.entry == before.entry
    assert totals(ingest([transcripts], tmp_path / "corpus"))["kept"] == 16 - len(before.turns)


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(AffectlensError, match="no transcript files"):
        ingest([tmp_path], tmp_path / "corpus")
    with pytest.raises(AffectlensError, match="--format 'slack'"):
        ingest([FIXTURES], tmp_path / "corpus", format="slack")
    with pytest.raises(AffectlensError, match="not a corpus folder"):
        stats(tmp_path)


def test_stats_per_model(transcripts, tmp_path):
    ingest([transcripts], tmp_path / "corpus")
    rows = {row["model"]: row for row in stats(tmp_path / "corpus")}
    sonnet = rows["claude-sonnet-4-5-20250929"]
    assert sonnet["turns"] == 7 and sonnet["face_rate"] == pytest.approx(6 / 7)
    assert sonnet["top_faces"][0][1] == 2 and rows["claude-opus-4-1-20250805"]["face_rate"] == 0


def test_the_export_loads_with_datasets_and_carries_its_card(transcripts, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ingest([transcripts], tmp_path / "corpus")
    folder = export(tmp_path / "corpus", tmp_path / "dataset")
    loaded = datasets.load_dataset("parquet", data_dir=str(folder))["train"]
    assert loaded.num_rows == 16 and loaded.column_names == TURN_COLUMNS
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert (
        "license: cc-by-4.0" in card
        and "schema 1" in card
        and "`<EMAIL>`" in card
        and "`assistant_text`" in card
    )
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))
    with pytest.raises(AffectlensError, match="needs your Hugging Face token"):
        export(tmp_path / "corpus", tmp_path / "dataset2", push_to_hub="someone/faces")


def test_the_report_has_a_corpus_section(transcripts, tmp_path):
    from affectlens.reporting.build import build_report

    ingest([transcripts], tmp_path / "corpus")
    html = build_report(tmp_path / "corpus", out=tmp_path / "report").read_text(encoding="utf-8")
    assert "Transcript corpus" in html and "claude-sonnet-4-5-20250929" in html


def test_a_corpus_gives_synthesis_its_redacted_contexts(transcripts, tmp_path):
    from affectlens.stages.synthesize import contexts_of

    ingest([transcripts], tmp_path / "corpus")
    contexts = contexts_of(str(tmp_path / "corpus"), per_face=2, seed=0)
    assert set(contexts) <= set(read_corpus(tmp_path / "corpus").turns["face"]) and contexts
    assert all(len(v) <= 2 for v in contexts.values())
    assert not [p for p in PLANTED if p in json.dumps(contexts, ensure_ascii=False)]


def test_the_cli(transcripts, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["corpus", "ingest", str(transcripts), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "kept 16, no face 8, malformed 8, duplicate 0" in " ".join(result.output.split())
    result = runner.invoke(app, ["corpus", "stats", str(tmp_path / "c")])
    assert result.exit_code == 0 and "claude-sonnet" in result.output
    result = runner.invoke(app, ["corpus", "ingest", str(tmp_path / "none"), "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) <= 2


def test_the_hook_from_the_cli_installs_journals_and_uninstalls(tmp_path):
    settings = tmp_path / "settings.json"
    original = b'{\n  "model": "opus",\n  "hooks": {}\n}\n'
    settings.write_bytes(original)
    journal = tmp_path / "journal.jsonl"
    runner = CliRunner()
    args = ["--settings", str(settings), "--journal", str(journal)]
    assert "installed in" in runner.invoke(app, ["corpus", "hook", "install", *args]).output
    assert "already in" in runner.invoke(app, ["corpus", "hook", "install", *args]).output
    command = json.loads(settings.read_text())["hooks"]["Stop"][0]["hooks"][0]["command"]
    assert command.startswith("affectlens corpus hook run --journal") and str(journal) in command
    transcript = tmp_path / "session.jsonl"
    lines = [
        {"type": "user", "uuid": "u1", "parentUuid": None, "sessionId": "s1", "cwd": "/home/alice/proj",
         "timestamp": "2026-12-01T10:00:00Z", "message": {"role": "user", "content": "mail alice@example.com"}},
        {"type": "assistant", "uuid": "a1", "parentUuid": "u1", "sessionId": "s1", "cwd": "/home/alice/proj",
         "timestamp": "2026-12-01T10:00:05Z", "message": {"id": "m1", "role": "assistant",
         "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "(^▽^) done"}]}},
    ]  # fmt: skip
    transcript.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    payload = json.dumps({"session_id": "s1", "transcript_path": str(transcript), "cwd": "/home/alice/proj",
                          "hook_event_name": "Stop", "last_assistant_message": "(^▽^) done"})  # fmt: skip
    result = runner.invoke(app, ["corpus", "hook", "run", "--journal", str(journal)], input=payload)
    assert result.exit_code == 0
    (row,) = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert row["face"] == "(^▽^)" and row["user_text"] == "mail <EMAIL>" and row["cwd"] == "<HOME>/proj"
    assert (
        runner.invoke(app, ["corpus", "hook", "run", "--journal", str(journal)], input="garbage").exit_code
        == 0
    )
    assert "removed from" in runner.invoke(app, ["corpus", "hook", "uninstall", *args]).output
    assert settings.read_bytes() == original
