"""``affectlens corpus``: ingest agent transcripts (redacted), stats, export, and the Claude Code journal hook."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from affectlens.cli.common import app, console, user_errors
from affectlens.errors import AffectlensError
from affectlens.reporting.format import number

corpus_app = typer.Typer(help="A corpus of faces from real agent transcripts, redacted before anything is stored.",
                         no_args_is_help=True)  # fmt: skip
hook_app = typer.Typer(
    help="The Claude Code Stop hook that journals new face turns, redacted.", no_args_is_help=True
)
corpus_app.add_typer(hook_app, name="hook")
app.add_typer(corpus_app, name="corpus")

Corpus = Annotated[Path, typer.Argument(help="Corpus folder.")]
Settings = Annotated[
    Path | None, typer.Option(help="Claude Code settings file (default ~/.claude/settings.json).")
]
Journal = Annotated[
    Path | None, typer.Option(help="Journal file (default: under $XDG_DATA_HOME/affectlens).")
]


@corpus_app.command("ingest")
@user_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Transcript files or folders (walked recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Corpus folder (made, or added to).")],
    format: Annotated[str, typer.Option(help="auto, claude-code, codex or chat.")] = "auto",
    dry_run: Annotated[bool, typer.Option(help="Show counts and redacted examples; write nothing.")] = False,
) -> None:
    """Read every assistant turn that opens with a face, with the user text before it; redact; deduplicate."""
    from affectlens.api.corpus import ingest as run

    summary = run(paths, out, format=format, dry_run=dry_run)
    table = Table("source", "model", "outcome", "n")
    for row in summary["counts"]:
        table.add_row(row["source"], str(row["model"]), row["outcome"], str(row["n"]))
    console.print(table)
    totals = summary["totals"]
    console.print(
        f"{summary['files_read']} of {summary['files_found']} files read (the rest unchanged since the last "
        f"ingest); kept {totals['kept']}, no face {totals['no_face']}, malformed {totals['malformed']}, "
        f"duplicate {totals['duplicate']}; {summary['seconds']} s",
        highlight=False,
    )
    for line in summary["malformed"]:
        console.print(f"malformed: {line}", highlight=False)
    if dry_run:
        for row in summary["examples"]:
            console.print(f"example: {row['face']} | user: {str(row['user_text'])[:80]!r} | "
                          f"assistant: {str(row['assistant_text'])[:80]!r}", highlight=False)  # fmt: skip
        console.print("dry run: nothing written", highlight=False)
    else:
        console.print(f"wrote {out} ({summary['n_turns']} turns)", highlight=False)


@corpus_app.command("stats")
@user_errors
def stats(corpus: Corpus) -> None:
    """Per model: turns, face rate, well-formed rate, top faces."""
    from affectlens.api.corpus import stats as run

    table = Table("model", "turns", "face rate", "well-formed", "top faces")
    for row in run(corpus):
        faces = "  ".join(f"{face} ×{n}" for face, n in row["top_faces"])
        table.add_row(str(row["model"]), str(row["turns"]), number(row["face_rate"]),
                      number(row["well_formed_rate"]), faces)  # fmt: skip
    console.print(table)


@corpus_app.command("export")
@user_errors
def export(
    corpus: Corpus,
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder.")],
    license: Annotated[str, typer.Option(help="The dataset card's license.")] = "cc-by-4.0",
    push_to_hub: Annotated[
        str | None, typer.Option(help="Upload to this dataset repo with your own HF token.")
    ] = None,
) -> None:
    """A Hugging Face dataset folder (parquet, a card with fields, license and redaction rules)."""
    from affectlens.api.corpus import export as run

    folder = run(corpus, out, license=license, push_to_hub=push_to_hub)
    console.print(f"wrote {folder}" + (f"; pushed to {push_to_hub}" if push_to_hub else ""), highlight=False)


def _hook_command(journal: Path | None) -> str:
    from affectlens.transcripts.hook import default_journal, hook_command

    return hook_command(journal or default_journal())


@hook_app.command("install")
@user_errors
def hook_install(
    agent: Annotated[str, typer.Option(help="Only claude-code for now.")] = "claude-code",
    settings: Settings = None,
    journal: Journal = None,
) -> None:
    """Add the Stop hook to Claude Code's settings (idempotent)."""
    from affectlens.transcripts.hook import default_settings_path, install

    if agent != "claude-code":
        raise AffectlensError(f"--agent {agent!r}: only claude-code has a hook")
    path = settings or default_settings_path()
    changed = install(path, _hook_command(journal))
    console.print(f"{'installed in' if changed else 'already in'} {path}", highlight=False)


@hook_app.command("uninstall")
@user_errors
def hook_uninstall(settings: Settings = None, journal: Journal = None) -> None:
    """Remove the Stop hook, restoring the settings file as it was."""
    from affectlens.transcripts.hook import default_settings_path, uninstall

    path = settings or default_settings_path()
    changed = uninstall(path, _hook_command(journal))
    console.print(f"{'removed from' if changed else 'not in'} {path}", highlight=False)


@hook_app.command("run")
def hook_run(journal: Journal = None) -> None:
    """What the hook runs: the Stop payload on stdin; appends new face turns to the journal; always exits 0."""
    from affectlens.transcripts.hook import run_hook

    try:
        payload = sys.stdin.read()
    except (OSError, UnicodeDecodeError):
        payload = ""  # run_hook logs the empty payload; the agent is never failed
    raise typer.Exit(run_hook(payload, journal))
