"""What a transcript corpus shows per model: how often turns open with a face, how often a well-formed one,
and which faces lead."""

from __future__ import annotations

from typing import Any

import pandas as pd

from affectlens.store.corpus import CorpusRun


def corpus_stats(run: CorpusRun, top: int = 5) -> list[dict[str, Any]]:
    """Per model: turns seen (kept + no face), the face rate, the well-formed rate and the top well-formed faces.

    Turns without a face are counted at ingest but not kept, so the rates come from the manifest's counts.
    """
    counts = pd.DataFrame(run.entry.get("counts", []), columns=["source", "model", "outcome", "n"])
    counts = counts[counts["outcome"].isin(["kept", "no_face"])]
    rows = []
    for model, group in counts.groupby("model"):
        kept, seen = int(group.loc[group["outcome"] == "kept", "n"].sum()), int(group["n"].sum())
        turns = run.turns[run.turns["model"].fillna("unknown") == model]
        well = turns[turns["well_formed"].astype(bool)]
        rows.append({
            "model": model, "turns": seen, "face_rate": kept / seen if seen else None,
            "well_formed_rate": len(well) / seen if seen else None,
            "top_faces": [[f, int(n)] for f, n in well["face"].value_counts().head(top).items()],
        })  # fmt: skip
    return rows
