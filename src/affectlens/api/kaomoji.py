"""``analyze_kaomoji``: the kaomoji analyses of elicitation runs, their figures and ``analysis.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from affectlens.analysis.kaomoji import analyze_runs
from affectlens.cells import CellSet
from affectlens.reporting.figures.kaomoji import draw
from affectlens.store.atomic import write_json
from affectlens.store.runs import KAOMOJI_ANALYSIS


def analyze_kaomoji(runs: list[str], out: str | Path, *, cells: CellSet | None = None,
                    n_permutations: int = 1000, n_boot: int = 1000, seed: int = 0, layer: int | None = None,
                    floor: int = 3, faces: str = "well_formed", quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Analyze elicitation run folders (see ``affectlens.analysis.kaomoji.analyze_runs``); writes
    ``out/analysis.json`` and ``out/figures/``, with figure paths relative to ``out``. Returns what it wrote."""
    analysis = analyze_runs(runs, cells=cells, n_permutations=n_permutations, n_boot=n_boot, seed=seed,
                            layer=layer, floor=floor, faces=faces, quiet=quiet)  # fmt: skip
    out_dir = Path(out)
    figures, alignment_figures = draw(analysis, out_dir)
    result = analysis.to_json(figures, alignment_figures)
    write_json(out_dir / KAOMOJI_ANALYSIS, result)
    return result
