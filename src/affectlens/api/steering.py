"""``analyze_steer_run``: the steering analysis of one steer run, its figures, and ``steering.json``.

The numbers come from :func:`affectlens.analysis.steering.analyze_steering`; this module reads the run (and
the encoder's face table), draws the figures and writes. ``steering.json``, what the report looks for, is
written last, so a folder that has it holds a finished analysis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from affectlens.analysis.steering import analyze_steering
from affectlens.cells import CellSet, get_cell_set
from affectlens.config import AnalysisConfig
from affectlens.reporting.figures.steering import draw
from affectlens.store.atomic import write_json
from affectlens.store.runs import LIKELIHOOD, STEERING_ANALYSIS, finished_stages, read_face_cells, read_steer

DEFAULT_TOLERANCE = 0.10  # relative change of the mean reply NLL that still counts as coherent


def analyze_steer_run(
    run_path: str | Path,
    out: str | Path,
    *,
    encoder: str | Path | None = None,
    config: AnalysisConfig | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    cells: CellSet | None = None,
) -> dict[str, Any]:
    """Analyse the steer run at ``run_path`` with the face table of the likelihood run ``encoder`` (None:
    only what needs no encoder), draw the figures into ``out`` and write ``out/steering.json``.

    ``config`` gives n_boot and seed; ``cells`` defaults to the cell set the run's manifest names. Returns
    what it wrote: the keys of :class:`affectlens.analysis.steering.SteeringAnalysis`, ``analysis``,
    ``figures`` (paths relative to ``out``) and ``settings.encoder_run`` (the encoder's folder and spec).
    """
    config = config or AnalysisConfig()
    run = read_steer(run_path)
    cells = cells or get_cell_set(run.entry.get("cells", "pad9"))
    face_cells = read_face_cells(encoder) if encoder is not None else None
    analysis = analyze_steering(
        run, face_cells, n_boot=config.n_boot, seed=config.seed, tolerance=tolerance, cells=cells
    )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = analysis.to_json()
    result["settings"]["encoder_run"] = (
        {"run": str(encoder), "spec": finished_stages(encoder)[LIKELIHOOD]["identity"]["model"]["spec"]}
        if encoder is not None
        else None
    )
    result["figures"] = draw(result, out_dir)
    write_json(out_dir / STEERING_ANALYSIS, result)
    return result
