"""What the kaomoji report sections share: reading a block that may be thin, skipped or absent, small
tables, captioned figures, permutation p-values, and the cross-run alignment blocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from affectlens.reporting.document import Figure, Table
from affectlens.reporting.format import estimate, number, p_value

Blocks = list[str | Table | Figure]
# A block an analysis file lacks reads as skipped, so a section never fails on a missing key.
ABSENT = {"thin": True, "skipped": True, "reason": "not in this analysis file"}
NAMES = {
    "hidden_to_cell": "hidden → cell",
    "hidden_to_face": "hidden → face",
    "geometry": "geometry",
    "face_similarity": "face similarity",
    "alignment": "cross-run alignment",
}


def thin_text(d: dict) -> str:
    return f"thin data: {d.get('reason', 'too little data')}"


def block_of(run: dict, key: str) -> dict:
    return run.get(key) or ABSENT


def skipped_note(runs: dict) -> list[str]:
    """One sentence per run that skipped analyses (a run without hidden states): which, and why."""
    notes = []
    for label, run in runs.items():
        if skipped := run.get("skipped"):
            names = ", ".join(NAMES.get(key, key) for key in skipped)
            notes.append(f"{label}: {names} skipped ({next(iter(skipped.values()))}); face → cell is below.")
    return notes


def table(rows: list[dict], caption: str) -> Blocks:
    return [Table(pd.DataFrame(rows), caption=caption)] if rows else []


def figure(out: Path, figures: dict, key: str, caption: str) -> list[Figure]:
    return [Figure(out / figures[key]["png"], caption)] if key in figures else []


def with_numbers(
    runs: dict, key: str, rows: list[dict], column: str, **extra: str
) -> Iterator[tuple[str, dict]]:
    """(label, ``key`` block) of each run whose block has numbers; a thin block puts its reason in ``rows``,
    a skipped one nothing (the section says what was skipped)."""
    for label, run in runs.items():
        block = block_of(run, key)
        if block.get("skipped"):
            continue
        if block["thin"]:
            rows.append({"run": label, **extra, column: thin_text(block)})
        else:
            yield label, block


def tested(block: dict, key: str = "p_value", null: str = "null_mean") -> str:
    """A permutation p with its floor and, where there is one, the mean of its null scores."""
    text = p_value(block, key)
    return text if block.get(null) is None else f"{text}; null mean {number(block[null])}"


def alignment_row(block: dict) -> dict[str, str]:
    return {
        "disparity [95% CI]": estimate(block["disparity"], block["disparity_ci"]),
        "disparity p": tested(block, "disparity_p_value", "disparity_null_mean"),
        "RSA Spearman r [95% CI]": estimate(block["rsa"], block["rsa_ci"]),
        "RSA p": tested(block, "rsa_p_value", "rsa_null_mean"),
    }


def alignment_blocks(alignment: list[dict], out: Path) -> Blocks:
    rows = []
    for al in alignment:
        row = {"reference": al["reference"], "other": al["other"]}
        if al.get("skipped") or al.get("thin"):
            row["features"] = "—"
            row["disparity [95% CI]"] = f"skipped: {al['reason']}" if al.get("skipped") else thin_text(al)
            rows.append(row)
            continue
        counts = {"shared prompts / cells": f"{number(al['n_prompts'])} / {number(al['n_cells'])}"}
        rows.append({**row, "features": "raw", **alignment_row(al), **counts})
        if (std := al.get("standardised")) is not None:
            std_row = {"disparity [95% CI]": thin_text(std)} if std["thin"] else alignment_row(std)
            rows.append({**row, "features": "z-scored", **std_row, **counts})
    blocks: Blocks = []
    if rows:
        blocks.append(
            "Across runs on the same prompts: the cell centroids of each run are centred, put in their own "
            "principal axes and scaled to unit size; the other run is rotated onto the reference (orthogonal "
            "Procrustes, no scaling), and the disparity is the remaining squared mismatch (0 = same "
            "arrangement). RSA is the Spearman correlation of the two runs' cell-to-cell distances. Each is "
            "computed twice. Raw: centroids of h_first as the model has it, so distances follow the model's own "
            "metric, in which a few high-variance features can dominate. Z-scored: every feature standardised "
            "over the shared prompts first (as for the PCA), so every feature weighs alike; unlike raw, it is not "
            "rotation-invariant, so two runs that differ only by a rotation agree exactly raw but not z-scored. "
            "Where the two rows of a pair disagree, the conclusion depends on that choice rather than on the "
            "models. Both "
            "statistics carry a permutation test that relabels the other run's cells; with k cells there are "
            "only k! relabellings, so all are enumerated when k! is at most the number of permutations (p = "
            "share at least as extreme, the identity included) and no p goes below 1/k!. Bootstrap intervals "
            "resample shared prompts; the extra centroid noise makes them lean toward worse agreement than the "
            "estimate."
        )
        blocks.append(Table(pd.DataFrame(rows), caption="Cross-model alignment of cell centroids."))
    for al in alignment:
        if "figures" in al:
            blocks += figure(
                out,
                al["figures"],
                "alignment",
                f"{al['other']} cell centroids rotated onto {al['reference']}'s (first two axes of the "
                "reference's centroid space; lines join the same cell). It shows whether the two models arrange "
                "the cells alike relative to each other; it does not show that they use the same features, and "
                "two axes hide part of the mismatch.",
            )
    return blocks
