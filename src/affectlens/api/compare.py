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
from affectlens.reporting.sections.comparison import FACE_SETS, ensemble_table, markdown_table
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
    (truth, floor, n_boot, seed, encoder_kinds, rows, pairwise with pairwise_n_faces and pairwise_floor, face_sets,
    figures, markdown and, with two or more encoders, best_ensemble and common_rows). Each row names its
    ``face_set`` and carries the ``uniform_*`` and ``marginal_*`` baselines on its faces; best_ensemble
    adds its held-out score (``heldout_*``). ``cells`` defaults to the cell set the truth run's manifest
    names.
    """
    found = compare_runs(truth_run, encoder_runs, floor=floor, n_boot=n_boot, seed=seed, cells=cells)
    folder = Path(out)
    stem = folder / SIMILARITY_FIGURE
    result: dict[str, object] = {
        "truth": found.truth,
        "floor": floor,
        "n_boot": n_boot,
        "seed": seed,
        "encoder_kinds": found.kinds,
        "rows": found.rows,
        "pairwise": found.pairwise.round(4).to_dict(),
        "pairwise_n_faces": found.pairwise.attrs["n_faces"],
        "pairwise_floor": floor,
        "face_sets": FACE_SETS,
        "figures": [str(p) for p in figure_paths(stem)],
    }
    if found.best_ensemble is not None:
        result["best_ensemble"] = found.best_ensemble
    if found.common_rows is not None:
        result["common_rows"] = found.common_rows
    markdown = markdown_table(found.rows)
    if extra := ensemble_table(result):
        markdown += "\n" + extra
    result["markdown"] = markdown
    write_parquet(folder / SIMILARITY_TABLE, pd.DataFrame(found.rows))
    write_text(folder / SIMILARITY_MARKDOWN, markdown)
    similarity_figure(found.pairwise, found.rows, stem)
    if found.ensembles is not None and found.lookup is not None:
        write_parquet(folder / ENSEMBLES, found.ensembles)
        write_parquet(folder / LOOKUP, found.lookup.reset_index())
    write_json(folder / COMPARISON, result)
    return result
