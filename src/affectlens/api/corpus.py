"""The transcript corpus: ingest (redacted, deduplicated, incremental), stats per model, and export as a
Hugging Face dataset with its card."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from affectlens.analysis.corpus import corpus_stats
from affectlens.errors import AffectlensError
from affectlens.store.atomic import write_parquet, write_text
from affectlens.store.corpus import SCHEMA_VERSION, is_corpus, read_corpus, write_corpus
from affectlens.transcripts.ingest import OUTCOMES, TURN_COLUMNS, collect, ingest_files
from affectlens.transcripts.redact import redaction_rules

FORMATS = ("auto", "claude-code", "codex", "chat")
EXAMPLES = 3


def _count_rows(counts: Counter[tuple[str, str, str]]) -> list[dict[str, Any]]:
    return [{"source": s, "model": m, "outcome": o, "n": n} for (s, m, o), n in sorted(counts.items())]


def ingest(paths: Sequence[str | Path], out: str | Path, *, format: str = "auto", dry_run: bool = False
           ) -> dict[str, Any]:  # fmt: skip
    """Add the face turns of the transcripts under ``paths`` to the corpus ``out`` (made if missing).

    Files already ingested unchanged are skipped, and a turn already in the corpus is a duplicate. With
    ``dry_run`` nothing is written: the counts and a few redacted example rows are returned.
    """
    if format not in FORMATS:
        raise AffectlensError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    if missing := [str(p) for p in paths if not Path(p).exists()]:
        raise AffectlensError(f"no such file or folder: {', '.join(missing)}")
    files = collect(paths)
    if not files:
        raise AffectlensError(
            f"no transcript files (*.jsonl, *.jsonl.zst) under {', '.join(map(str, paths))}"
        )
    root = Path(out)
    earlier = read_corpus(root) if is_corpus(root) else None
    started = time.perf_counter()
    found = ingest_files(
        files, format=format,
        seen_turns=set(earlier.turns["turn_id"]) if earlier else None,
        seen_files=set(earlier.files["sha256"]) if earlier else None,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    counts = Counter(
        {
            (r["source"], r["model"], r["outcome"]): r["n"]
            for r in (earlier.entry["counts"] if earlier else [])
        }
    )
    this_run = found.counts
    summary = {
        "files_found": len(files),
        "files_read": len(found.files),
        "counts": _count_rows(this_run),
        "totals": {o: sum(n for (_, _, outcome), n in this_run.items() if outcome == o) for o in OUTCOMES},
        "malformed": found.malformed[:20],
        "seconds": round(seconds, 2),
    }
    if dry_run:
        return summary | {"examples": found.rows[:EXAMPLES], "written": False}
    new = pd.DataFrame(found.rows, columns=TURN_COLUMNS)
    turns = pd.concat([earlier.turns, new], ignore_index=True) if earlier is not None else new
    read = pd.DataFrame(found.files, columns=["file", "sha256", "format"])
    all_files = pd.concat([earlier.files, read], ignore_index=True) if earlier is not None else read
    counts.update(this_run)
    ingests = [*(earlier.entry.get("ingests", []) if earlier else []),
               {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **{k: summary[k] for k in ("files_read", "totals")}}]  # fmt: skip
    write_corpus(
        root, turns, all_files, {"counts": _count_rows(counts), "ingests": ingests, "n_turns": len(turns)}
    )
    return summary | {"n_turns": len(turns), "written": True}


def stats(corpus: str | Path, top: int = 5) -> list[dict[str, Any]]:
    """Per model: turns seen, the face rate (kept among kept + no face), the well-formed rate, the top faces."""
    return corpus_stats(read_corpus(corpus), top)


CARD = """---
license: {license}
pretty_name: affectlens transcript faces
tags: [kaomoji, affect, agents]
---
# affectlens transcript faces (schema {schema})

The faces (kaomoji and emoji) that AI agents opened their messages with in real sessions, with the user turn
before each, ingested by `affectlens corpus ingest` from {n_files} transcript files. {n_turns} turns.
Every text field and every path went through the redactor before it was stored; no unredacted text is here.

## Fields
{fields}

## Redaction rules
| kind | placeholder | what |
|---|---|---|
{rules}

Counts per source, model and outcome (kept, no_face, malformed, duplicate) are in `affectlens_manifest.json`.
"""
FIELDS = {
    "turn_id": "sha256 (16 hex) of the unredacted turn: the deduplication key",
    "source": "claude-code, codex or chat",
    "session": "sha256 (16 hex) of the source and session id",
    "file": "the transcript's path, redacted", "line": "1-based line of the assistant turn",
    "model": "the model the transcript names", "timestamp": "ISO 8601, as the transcript wrote it",
    "cwd": "the working directory, redacted", "sidechain": "a Claude Code subagent's turn",
    "user_text": "the last real user text before the turn (tool results and injected text skipped), redacted",
    "assistant_text": "the assistant's text, redacted", "face": "the face it opens with",
    "face_kind": "kaomoji or emoji", "well_formed": "whether the face is well-formed (affectlens.faces)",
}  # fmt: skip


def export(corpus: str | Path, out: str | Path, *, license: str = "cc-by-4.0", push_to_hub: str | None = None
           ) -> Path:  # fmt: skip
    """A folder that ``datasets.load_dataset("parquet", data_dir=out)`` loads: the turns, a dataset card (the
    fields, the license, the redaction rules) and the counts. ``push_to_hub`` uploads it to that dataset repo
    with the user's own Hugging Face token (``HF_TOKEN`` or ``huggingface-cli login``); none is shipped."""
    run = read_corpus(corpus)
    root = Path(out)
    write_parquet(root / "data" / "train-00000-of-00001.parquet", run.turns[TURN_COLUMNS])
    rules = "\n".join(
        f"| {kind} | `{placeholder}` | {what} |" for kind, placeholder, what in redaction_rules()
    )
    card = CARD.format(license=license, schema=SCHEMA_VERSION, n_files=len(run.files), n_turns=len(run.turns),
                       fields="\n".join(f"- `{k}`: {v}" for k, v in FIELDS.items()), rules=rules)  # fmt: skip
    write_text(root / "README.md", card)
    write_text(root / "affectlens_manifest.json", pd.Series(run.entry).to_json(indent=2, force_ascii=False))
    if push_to_hub:
        _push(root, push_to_hub)
    return root


def _push(folder: Path, repo: str) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import get_token

    if not get_token():
        raise AffectlensError(
            "--push-to-hub needs your Hugging Face token: set HF_TOKEN or run huggingface-cli login"
        )
    api = HfApi()
    try:
        api.create_repo(repo, repo_type="dataset", exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="dataset")
    except (HfHubHTTPError, OSError) as exc:
        raise AffectlensError(f"push to {repo} failed: {str(exc).splitlines()[0]}") from None
