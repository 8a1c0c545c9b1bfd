"""Assemble the report from whatever a set of folders holds: runs, analyses, comparisons, emotion analyses.

Every path given is searched for ``manifest.json`` (run folders), ``analysis.json`` (kaomoji analyses),
``comparison.json`` (encoder comparisons) and ``emotions.json`` (emotion-vector analyses), so a study folder
and an explicit list of runs both work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from affectlens.cells import default_cells
from affectlens.errors import AffectlensError
from affectlens.report.document import Figure, Section, Table
from affectlens.report.render import format_number, render


def _find(paths: list[Path], name: str) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_file() and path.name == name:
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob(name)))
    return sorted(set(found))


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise AffectlensError(f"{path}: not valid JSON") from None


def setup_section(manifests: dict[Path, dict[str, Any]], timings: dict[str, float] | None) -> Section:
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


def face_usage_section(manifests: dict[Path, dict[str, Any]]) -> Section:
    cells = default_cells()
    blocks: list[str | Table | Figure] = [
        "How often each model opened its reply with a face, per affect cell of the prompt, and its most frequent "
        "faces there. A face tends to appear in contexts of that cell; this does not show what the model feels."
    ]
    for folder, manifest in manifests.items():
        entry = manifest.get("stages", {}).get("elicit")
        if not entry or not entry.get("finished"):
            continue
        summary = entry["summary"]
        rows = []
        for code in cells.codes:
            cell = summary["cells"].get(code)
            if cell is None:
                continue
            top = ", ".join(f"{face} ({count})" for face, count in cell["top_faces"]) or "–"
            rows.append(
                {"cell": code, "n samples": cell["n"], "face rate": cell["face_rate"], "top faces": top}
            )
        spec = entry["identity"]["model"]["spec"]
        variant = entry.get("prompting", {}).get("variant", "")
        blocks.append(
            Table(
                pd.DataFrame(rows),
                f"{spec} ({variant}): face rate {format_number(summary['face_rate'])} over "
                f"{summary['n_samples']} samples, {summary['n_distinct_faces']} distinct faces. "
                f"Run: {folder}",
            )
        )
    return Section("Face usage per cell", blocks)


def similarity_section(comparison: dict[str, Any], folder: Path) -> Section:
    rows = []
    for row in comparison["rows"]:
        rows.append(
            {
                "encoder": row["encoder"],
                "face-uniform": row["face_uniform"],
                "95% CI (uniform)": _interval(row, "face_uniform"),
                "emit-weighted": row["emit_weighted"],
                "95% CI (weighted)": _interval(row, "emit_weighted"),
                "n faces": row["n_faces"],
                "note": row.get("reason") or "",
            }
        )
    blocks: list[str | Table | Figure] = [
        f"Each encoder gives every face a distribution over the nine cells. Similarity to the ground truth "
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
            f"{format_number(best['emit_weighted'])} on {best['n_faces']} faces common to all encoders."
        )
    for figure in comparison.get("figures", []):
        if str(figure).endswith(".png"):
            blocks.append(
                Figure(
                    Path(figure),
                    "Left: pairwise similarity of all encoders on their shared faces. "
                    "Right: each encoder against the emitted faces, with 95% intervals. High "
                    "similarity means two sources read faces into the same contexts, not that "
                    "either reads the model's state.",
                )
            )
    return Section("Likelihood encoders and similarity to the emitted faces", blocks)


def numbers_section(path: Path, data: dict[str, Any]) -> Section:
    """Every number of an analysis file, one row per field: nothing in the JSON is left out of the report."""
    rows = list(_numeric_fields(data))
    return Section(
        f"All numbers: {path.parent.name}/{path.name}",
        [
            f"Each number in `{path.name}`, as the sections above round it (3 decimals), with its field. "
            "Lists are written out in order; intervals are [low, high].",
            Table(pd.DataFrame(rows, columns=["field", "values"])),
        ],
        collapsed=True,
    )


def _numeric_fields(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, formatted values) for every number or list of numbers below ``node``; figures skipped."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "figures":
                yield from _numeric_fields(value, f"{path} › {key}" if path else str(key))
    elif isinstance(node, list):
        if all(not isinstance(v, dict | list) for v in node):
            if any(_is_number(v) for v in node):
                yield path, ", ".join(format_number(v) for v in node)
        else:
            for i, value in enumerate(node):
                yield from _numeric_fields(value, f"{path}[{i}]")
    elif _is_number(node):
        yield path, format_number(node)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _interval(row: dict[str, Any], key: str) -> str:
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    return "–" if lo is None else f"[{format_number(lo)}, {format_number(hi)}]"


def build_report(
    *paths: str | Path,
    out: str | Path | None = None,
    title: str = "affectlens report",
    timings: dict[str, float] | None = None,
) -> Path:
    """Write report.html and report.md into ``out`` (default: ``<first path>/report``); returns the HTML path."""
    roots = [Path(p) for p in paths]
    missing = [str(p) for p in roots if not p.exists()]
    if missing:
        raise AffectlensError(f"no such folder: {', '.join(missing)}")
    out_dir = Path(out) if out is not None else roots[0] / "report"
    manifests = {p.parent: _read(p) for p in _find(roots, "manifest.json")}
    if not manifests:
        raise AffectlensError(f"no run folders (manifest.json) under {', '.join(map(str, roots))}")
    sections = [setup_section(manifests, timings), face_usage_section(manifests)]
    appendices = []
    for path in _find(roots, "analysis.json"):
        from affectlens.analysis.kaomoji import sections as kaomoji_sections

        data = _read(path)
        sections += kaomoji_sections(data, str(path.parent))
        appendices.append(numbers_section(path, data))
    for path in _find(roots, "comparison.json"):
        data = _read(path)
        sections.append(similarity_section(data, path.parent))
        appendices.append(numbers_section(path, data))
    for path in _find(roots, "emotions.json"):
        from affectlens.analysis.emotions import vector_sections

        data = _read(path)
        sections += vector_sections(data, str(path.parent))
        appendices.append(numbers_section(path, data))
    sections += appendices
    html, _ = render(
        sections,
        out_dir,
        title=title,
        subtitle="What a face tends to go with, and what the hidden state holds: numbers with n, "
        "intervals and permutation p-values.",
    )
    return html
