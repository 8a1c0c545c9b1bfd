"""The report's corpus section: what each model's real agent turns open with."""

from __future__ import annotations

import pandas as pd

from affectlens.analysis.corpus import corpus_stats
from affectlens.reporting.document import Section, Table
from affectlens.store.corpus import CorpusRun


def corpus_section(run: CorpusRun) -> Section:
    counts = pd.DataFrame(run.entry.get("counts", []), columns=["source", "model", "outcome", "n"])
    totals = counts.groupby("outcome")["n"].sum().to_dict()
    rows = [
        {"model": r["model"], "turns": r["turns"], "face rate": r["face_rate"], "well-formed": r["well_formed_rate"],
         "top faces": "  ".join(f"{face} ×{n}" for face, n in r["top_faces"])}
        for r in corpus_stats(run)
    ]  # fmt: skip
    return Section(
        f"Transcript corpus: {run.path}",
        [
            f"Faces from real agent transcripts, redacted at ingest: {len(run.turns)} face turns kept from "
            f"{len(run.files)} files; {totals.get('no_face', 0)} turns opened with no face, "
            f"{totals.get('malformed', 0)} lines were malformed and {totals.get('duplicate', 0)} turns were "
            "duplicates. A turn is one assistant message; the rates are over kept and faceless turns.",
            Table(
                pd.DataFrame(rows),
                "Per model: assistant turns, the share that open with a face, the share "
                "with a well-formed face, and the most frequent well-formed faces.",
            ),
            Table(counts, "Counts per source, model and outcome, over every ingest."),
        ],
    )
