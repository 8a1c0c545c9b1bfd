"""The encoder comparison in words: the Markdown table ``compare`` prints and saves, and its report section.

Both read the dict that ``affectlens.api.compare.compare`` returns and writes as ``comparison.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from affectlens.reporting.document import Figure, Section, Table
from affectlens.reporting.format import MISSING, estimate, interval, number

NO_INTERVAL = "[n/a]"  # a thin row in the Markdown table: too few faces for an interval


def _estimate(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    value = None if value is None else float(value)  # a whole-number score still prints with decimals
    return estimate(value, (row.get(f"{key}_lo"), row.get(f"{key}_hi")), missing=NO_INTERVAL)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table: encoder, face_uniform [lo, hi], emit_weighted [lo, hi], n_faces.

    Rows are ``compare_to_truth`` results with an ``"encoder"`` name; intervals are 95%, and a thin row
    shows ``[n/a]`` in place of its interval.
    """
    lines = [
        "| encoder | face_uniform [95% CI] | emit_weighted [95% CI] | n_faces |",
        "|---|---|---|---|",
    ]
    for row in rows:
        name = str(row.get("encoder", "")).replace("|", "\\|")
        uniform, weighted = _estimate(row, "face_uniform"), _estimate(row, "emit_weighted")
        lines.append(f"| {name} | {uniform} | {weighted} | {row.get('n_faces', 0)} |")
    return "\n".join(lines) + "\n"


def _interval(row: dict[str, Any], key: str) -> str:
    return interval(row.get(f"{key}_lo"), row.get(f"{key}_hi"), missing=MISSING)


def _figure_path(figure: str, folder: Path) -> Path:
    # comparison.json records the paths as written; a relative one was relative to where compare ran.
    path = Path(figure)
    return path if path.is_file() else folder / path.name


def similarity_section(comparison: dict[str, Any], folder: Path | str) -> Section:
    """The comparison as a report section; ``folder`` holds ``comparison.json`` and its figures."""
    rows = [
        {
            "encoder": row["encoder"],
            "face-uniform": row["face_uniform"],
            "95% CI (uniform)": _interval(row, "face_uniform"),
            "emit-weighted": row["emit_weighted"],
            "95% CI (weighted)": _interval(row, "emit_weighted"),
            "n faces": row["n_faces"],
            "note": row.get("reason") or "",
        }
        for row in comparison["rows"]
    ]
    blocks: list[str | Table | Figure] = [
        f"Each encoder gives every face a distribution over the affect cells. Similarity to the ground truth "
        f"({comparison['truth']}: the cells in which the model actually emitted each face) is 1 minus the "
        f"Jensen-Shannon divergence in bits, averaged over shared faces either uniformly or weighted by how "
        f"often each face was emitted. Faces emitted at least {comparison['floor']} time(s); intervals are 95% "
        f"bootstrap intervals over faces ({comparison['n_boot']} resamples, seed {comparison['seed']}).",
        Table(pd.DataFrame(rows), "Encoders against the emitted faces."),
    ]
    best = comparison.get("best_ensemble")
    if best and not best.get("thin"):
        blocks.append(
            f"Best ensemble by exhaustive subset search: {best['members']}, emit-weighted "
            f"{number(best['emit_weighted'])} on {best['n_faces']} faces common to all encoders."
        )
    for figure in comparison.get("figures", []):
        if str(figure).endswith(".png"):
            blocks.append(
                Figure(
                    _figure_path(figure, Path(folder)),
                    "Left: pairwise similarity of all encoders on their shared faces. "
                    "Right: each encoder against the emitted faces, with 95% intervals. High "
                    "similarity means two sources read faces into the same contexts, not that "
                    "either reads the model's state.",
                )
            )
    return Section("Likelihood encoders and similarity to the emitted faces", blocks)
