"""``affectlens.compare``: encoders against the faces a model emitted, written into one output folder.

The numbers come from :func:`affectlens.analysis.encoders.compare_runs`; this module only writes them. Every
file goes through :mod:`affectlens.store.atomic`, and ``comparison.json`` (what the report looks for) is
written last, so a folder that has it holds a finished comparison.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from affectlens.analysis.encoders import compare_runs
from affectlens.cells import CellSet
from affectlens.reporting.figures.similarity import figure_paths, similarity_figure
from affectlens.reporting.sections.comparison import markdown_table
from affectlens.store.atomic import write_json, write_parquet, write_text
from affectlens.store.runs import (
    COMPARISON,
    ENSEMBLES,
    LOOKUP,
    SIMILARITY_FIGURE,
    SIMILARITY_MARKDOWN,
    SIMILARITY_TABLE,
)


def compare(
    truth_run: str,
    encoder_runs: list[str],
    out: str,
    *,
    floor: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    cells: CellSet | None = None,
) -> dict[str, object]:
    """Each encoder run against the faces ``truth_run`` emitted, pairwise similarity, and the best ensemble.

    Writes ``similarity.parquet``, ``similarity.md``, ``similarity.png``/``.svg``, with two or more encoders
    ``ensembles.parquet`` and ``lookup.parquet``, and last ``comparison.json``, which holds the returned dict
    (truth, floor, n_boot, seed, rows, pairwise, figures, markdown and, with two or more encoders,
    best_ensemble). ``cells`` defaults to the cell set the truth run's manifest names.
    """
    found = compare_runs(truth_run, encoder_runs, floor=floor, n_boot=n_boot, seed=seed, cells=cells)
    folder = Path(out)
    stem = folder / SIMILARITY_FIGURE
    markdown = markdown_table(found.rows)
    result: dict[str, object] = {
        "truth": found.truth,
        "floor": floor,
        "n_boot": n_boot,
        "seed": seed,
        "rows": found.rows,
        "pairwise": found.pairwise.round(4).to_dict(),
        "figures": [str(p) for p in figure_paths(stem)],
        "markdown": markdown,
    }
    if found.best_ensemble is not None:
        result["best_ensemble"] = found.best_ensemble
    write_parquet(folder / SIMILARITY_TABLE, pd.DataFrame(found.rows))
    write_text(folder / SIMILARITY_MARKDOWN, markdown)
    similarity_figure(found.pairwise, found.rows, stem)
    if found.ensembles is not None and found.lookup is not None:
        write_parquet(folder / ENSEMBLES, found.ensembles)
        write_parquet(folder / LOOKUP, found.lookup.reset_index())
    write_json(folder / COMPARISON, result)
    return result
