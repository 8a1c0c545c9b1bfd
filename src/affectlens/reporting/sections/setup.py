"""The report's opening sections, read from run manifests: what was run, and how often each model used a face.

``manifests`` maps each run folder to its ``manifest.json`` (as ``affectlens.store.runs.run_folders`` reads
them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from affectlens.cells import get_cell_set
from affectlens.reporting.document import Figure, Section, Table
from affectlens.reporting.format import MISSING, number

Manifests = dict[Path, dict[str, Any]]


def setup_section(manifests: Manifests, timings: dict[str, float] | None = None) -> Section:
    """One row per run and stage: model, fingerprint, dtype, device, stimulus hash, seed, time."""
    rows = []
    for folder, manifest in manifests.items():
        for stage, entry in manifest.get("stages", {}).items():
            identity = entry.get("identity", {})
            model = entry.get("model", {})
            rows.append(
                {
                    "run": str(folder),
                    "stage": stage,
                    "model": identity.get("model", {}).get("spec", ""),
                    "fingerprint": identity.get("model", {}).get("fingerprint", ""),
                    "dtype": model.get("dtype", ""),
                    "device": model.get("device", ""),
                    "stimuli hash": identity.get("stimuli", {}).get("hash", ""),
                    "seed": identity.get("config", {}).get("seed", ""),
                    "prompting": entry.get("prompting", {}).get("variant", ""),
                    "version": entry.get("affectlens_version", ""),
                    "seconds": entry.get("summary", {}).get("seconds", ""),
                }
            )
    blocks: list[str | Table | Figure] = [
        "Every number below comes from the run folders listed here. Layer i is the residual stream after "
        "decoder block i, counting from 0; the embeddings are not a layer. h_first is the state at the last "
        "prompt token, the one whose logits choose the first reply token.",
        Table(
            pd.DataFrame(rows), "Runs: model, content fingerprint, stimulus hash, seed and time per stage."
        ),
    ]
    if timings:
        blocks.append(
            Table(
                pd.DataFrame({"step": list(timings), "seconds": list(timings.values())}),
                "Wall-clock time of each step of this study.",
                float_format="{:.1f}",
            )
        )
    return Section("Setup", blocks)


def face_usage_section(manifests: Manifests) -> Section:
    """Per finished elicitation run: face rate and top faces per cell, in the order of the run's cell set."""
    blocks: list[str | Table | Figure] = [
        "How often each model opened its reply with a face, per affect cell of the prompt, and its most frequent "
        "well-formed faces there. Two rates: a reply that opens with a bracket or an emoji, and a reply that opens with a "
        "well-formed face (balanced brackets, face glyphs, no number or word inside; see the README's face "
        "rules). The analyses count well-formed faces only, unless run with faces='all' (their settings say which). A face tends to appear in contexts of that cell; "
        "this does not show what the model feels."
    ]
    for folder, manifest in manifests.items():
        entry = manifest.get("stages", {}).get("elicit")
        if not entry or not entry.get("finished") or "cells" not in entry.get("summary", {}):
            continue  # unfinished, or written without a per-cell summary: nothing to show
        cells = get_cell_set(entry.get("cells", "pad9"))  # the set the run was elicited with
        summary = entry["summary"]
        rows = []
        for code in cells.codes:
            cell = summary["cells"].get(code)
            if cell is None:
                continue
            top = ", ".join(f"{face} ({count})" for face, count in cell["top_faces"]) or MISSING
            rows.append(
                {"cell": code, "n samples": cell["n"], "opens with a bracket or emoji": cell["face_rate"],
                 "well-formed face": cell.get("well_formed_rate"), "top faces": top}
            )  # fmt: skip
        spec = entry["identity"]["model"]["spec"]
        variant = entry.get("prompting", {}).get("variant", "")
        blocks.append(
            Table(
                pd.DataFrame(rows),
                f"{spec} ({variant}): opens with a bracket or emoji {number(summary['face_rate'])}; "
                f"well-formed face {number(summary.get('well_formed_rate'))}; over {summary['n_samples']} "
                f"samples, {summary['n_distinct_faces']} distinct faces. "
                f"Run: {folder}",
            )
        )
    return Section("Face usage per cell", blocks)
