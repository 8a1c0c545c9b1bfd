"""``analyze_emotions``: every emotion-vector analysis of a vectors run, its figures, and ``emotions.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from affectlens.analysis.emotions import analyze_run
from affectlens.cells import CellSet
from affectlens.reporting.figures.emotions import draw
from affectlens.store.atomic import write_json
from affectlens.store.runs import EMOTIONS_ANALYSIS


def analyze_emotions(
    run: str,
    out: str,
    *,
    n_permutations: int = 1000,
    n_boot: int = 1000,
    seed: int = 0,
    elicitation_run: str | None = None,
    cells: CellSet | None = None,
    layer: int | None = None,
) -> dict[str, Any]:
    """Analyse ``run`` (with the bridge when ``elicitation_run`` is given), draw the figures into ``out`` and
    write ``out/emotions.json``; returns what it wrote. See :func:`affectlens.analysis.emotions.analyze_run`.
    """
    analysis = analyze_run(
        run,
        layer=layer,
        n_permutations=n_permutations,
        n_boot=n_boot,
        seed=seed,
        elicitation_run=elicitation_run,
        cells=cells,
    )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = analysis.to_json(draw(analysis, out_dir))
    write_json(out_dir / EMOTIONS_ANALYSIS, result)
    return result
