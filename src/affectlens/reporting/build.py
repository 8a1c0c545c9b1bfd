"""Assemble the report from whatever a set of folders holds: runs, analyses, comparisons, emotion analyses.

Every path given is searched for ``manifest.json`` (run folders), ``analysis.json`` (kaomoji analyses),
``comparison.json`` (encoder comparisons), ``emotions.json`` (emotion-vector analyses), ``steering.json``
(steering analyses) and ``persona.json`` (persona comparisons), so a study folder and an explicit list of runs both work. The sections themselves are made in ``affectlens.reporting.sections``;
this module only finds the files and puts the sections in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from affectlens.errors import AffectlensError
from affectlens.reporting.document import Section
from affectlens.reporting.render import render
from affectlens.reporting.sections.comparison import similarity_section
from affectlens.reporting.sections.numbers import numbers_section
from affectlens.reporting.sections.setup import face_usage_section, setup_section
from affectlens.store.corpus import CORPUS, read_corpus
from affectlens.store.persona import PERSONA_ANALYSIS
from affectlens.store.read import read_json
from affectlens.store.runs import (
    COMPARISON,
    EMOTIONS_ANALYSIS,
    KAOMOJI_ANALYSIS,
    STEERING_ANALYSIS,
    find,
    run_folders,
)

SUBTITLE = (
    "What a face tends to go with, and what the hidden state holds: numbers with n, "
    "intervals and permutation p-values."
)


def _model_label(result: dict[str, Any], path: Path, taken: set[str]) -> str:
    """The model an emotion analysis is of (its spec), made unique among the labels already taken."""
    model = result.get("model")
    label = str(model.get("spec") or "") if isinstance(model, dict) else ""
    label = label or path.parent.name
    unique, k = label, 2
    while unique in taken:
        unique, k = f"{label} #{k}", k + 1
    return unique


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
    manifests = run_folders(roots)
    if not manifests:
        raise AffectlensError(f"no run folders (manifest.json) under {', '.join(map(str, roots))}")
    sections: list[Section] = [setup_section(manifests, timings), face_usage_section(manifests)]
    appendices: list[Section] = []

    def read(path: Path) -> dict[str, Any]:
        data = read_json(path)
        appendices.append(numbers_section(path, data))
        return data

    kaomoji = find(roots, KAOMOJI_ANALYSIS)
    if kaomoji:
        from affectlens.reporting.sections import kaomoji as kaomoji_sections

        for path in kaomoji:
            sections += kaomoji_sections.sections(read(path), str(path.parent))
    for path in find(roots, COMPARISON):
        sections.append(similarity_section(read(path), path.parent))
    emotions = find(roots, EMOTIONS_ANALYSIS)
    if emotions:
        from affectlens.reporting.sections import emotions as emotion_sections

        results: dict[str, dict[str, Any]] = {}
        for path in emotions:
            data = read(path)
            sections += emotion_sections.sections(data, path.parent)
            results[_model_label(data, path, set(results))] = data
        if len(results) >= 2 and (cross := emotion_sections.cross_model_section(results)) is not None:
            sections.append(cross)
    steering = find(roots, STEERING_ANALYSIS)
    if steering:
        from affectlens.reporting.sections import steering as steering_sections

        for path in steering:
            sections += steering_sections.sections(read(path), path.parent)
    for path in find(roots, PERSONA_ANALYSIS):
        from affectlens.reporting.sections.persona import persona_section

        sections.append(persona_section(read(path), path.parent))
    corpora = [folder for folder, manifest in manifests.items() if manifest.get("kind") == CORPUS]
    if corpora:
        from affectlens.reporting.sections.corpus import corpus_section

        sections += [corpus_section(read_corpus(folder)) for folder in corpora]
    html, _ = render(sections + appendices, out_dir, title=title, subtitle=SUBTITLE)
    return html
