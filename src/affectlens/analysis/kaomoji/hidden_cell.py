"""Hidden state -> cell: can a prompt's cell be read off h_first, at each layer, all layers, the headline?"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from affectlens.analysis.kaomoji.common import (
    CLASSIFIER,
    CV,
    INTERVAL,
    MIN_PROMPTS,
    N_SPLITS,
    classifier_summary,
    estimator,
    n_jobs,
    thin,
)
from affectlens.analysis.kaomoji.loading import Run
from affectlens.cells import CellSet
from affectlens.stats import evaluate_classifier


def hidden_to_cell(
    run: Run, cells: CellSet, *, n_boot: int, n_permutations: int, seed: int, tick: Callable[[], Any]
) -> dict:
    """Out-of-fold cell accuracy from h_first per stored layer, on all layers concatenated, and at the
    headline layer, which alone carries a permutation test. ``tick`` is called once per fit."""
    y = run.prompts["cell"].to_numpy(dtype=str)
    groups = run.prompts["id"].to_numpy(dtype=str)
    labels = [c for c in cells.codes if c in set(y)]
    counts = {c: int(np.sum(y == c)) for c in labels}
    if len(labels) < 2 or len(y) < MIN_PROMPTS:
        return thin(
            f"{len(y)} prompts in {len(labels)} cell(s); a classifier needs >= {MIN_PROMPTS} prompts in >= 2 cells",
            n_prompts=len(y),
            prompts_per_cell=counts,
        )
    common = dict(labels=labels, n_splits=N_SPLITS, n_boot=n_boot, seed=seed, make_estimator=estimator)
    curve = Parallel(n_jobs=n_jobs(len(run.layers), at_least=8))(
        delayed(evaluate_classifier)(run.hidden[:, i], y, groups, n_permutations=0, **common)
        for i in range(len(run.layers))
    )
    by_layer = []
    for layer, result in zip(run.layers, curve, strict=True):
        by_layer.append({"layer": layer, **classifier_summary(result, keep_confusion=False)})
        tick()
    flat = run.hidden.reshape(len(y), -1)
    concat = evaluate_classifier(flat, y, groups, n_permutations=0, **common)
    tick()
    headline = evaluate_classifier(
        run.hidden[:, run.index],
        y,
        groups,
        n_permutations=n_permutations,
        n_jobs=n_jobs(n_permutations),
        **common,
    )
    tick()
    return {
        "thin": False,
        "unit": "prompt (its samples share one h_first)",
        "classifier": CLASSIFIER,
        "cv": CV,
        "interval": INTERVAL,
        "prompts_per_cell": counts,
        "by_layer": by_layer,
        "by_layer_note": "no permutation test per layer (descriptive curve); the headline layer carries the test",
        "all_layers": {
            "layers": run.layers,
            "n_features": int(flat.shape[1]),
            "note": "all stored layers concatenated; no permutation test",
            **classifier_summary(concat),
        },
        "headline": {"layer": run.layer, "layer_rule": run.layer_rule, **classifier_summary(headline)},
    }
