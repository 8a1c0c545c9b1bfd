"""What every kaomoji analysis shares: the fixed settings, their descriptions, and small helpers."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from affectlens.cells import CellSet
from affectlens.stats import ClassifierResult, default_estimator, evaluate_classifier

N_SPLITS = 5
TOL = 1e-3  # lbfgs tolerance for every hidden-state fit, observed and null alike (the speed knob)
MIN_PROMPTS = 10  # fewer prompts than this: no classifier, no PCA
MIN_SAMPLES = 10  # fewer samples than this (with a face, or with a seen face): face analyses are thin
MIN_FACES = 3  # fewer faces above the floor than this: per-face analyses are thin
MIN_ALIGN_CELLS = 4  # below 4 cells a configuration has < 6 distances and Procrustes fits almost anything
FACE_PERMUTATION_CAP = 200  # hidden -> face refits a classifier on every sample per permutation
ALIGN_DIMS = 8

CLASSIFIER = (
    f"StandardScaler + multinomial L2 logistic regression (C=1, lbfgs, tol={TOL:g}), both fitted inside "
    "each training fold"
)
CV = f"{N_SPLITS}-fold cross-validation grouped by prompt (stratified by cell where every cell spans enough prompts)"
INTERVAL = "95% percentile bootstrap over prompts"
# The text analysis.json has always carried; affectlens.conventions.headline_layer applies the rule.
LAYER_RULE = "round(2/3 x (n_layers - 1)), fixed before any fit; never chosen on test folds"

# A run without hidden states (an API model): what it says in place of each analysis that reads h_first.
NO_HIDDEN = "no hidden states (API model)"
HIDDEN_ANALYSES = ("hidden_to_cell", "hidden_to_face", "geometry", "face_similarity", "alignment")
SKIPPED_RULE = (
    f"a run without hidden states (an API model) gets only the analyses that read its generations (face_to_cell); "
    f"each run lists under 'skipped' what it did not get and why ({', '.join(HIDDEN_ANALYSES)}), its "
    "hidden-state blocks say the same, and alignment pairs only runs with hidden states"
)

estimator = functools.partial(default_estimator, tol=TOL)  # a partial, so joblib workers can unpickle it


def thin(reason: str, **counts: Any) -> dict[str, Any]:
    """The block that stands in for numbers when there is too little data: why, and the counts."""
    return {"thin": True, "reason": reason, **counts}


def skipped(reason: str) -> dict[str, Any]:
    """The block that stands in for an analysis that was not run: ``thin`` (so no reader takes numbers from
    it), ``skipped``, and why."""
    return {"thin": True, "skipped": True, "reason": reason}


def n_jobs(n_tasks: int, at_least: int = 200) -> int:
    """Worker processes for ``n_tasks`` independent refits: they take seconds to start, so only for many."""
    return min(os.cpu_count() or 1, 8) if n_tasks >= at_least else 1


def memo(fn: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
    """Cache by resample, so several bootstrap_ci calls with one seed compute each resample once."""
    cache: dict[bytes, Any] = {}

    def wrapped(idx: np.ndarray) -> Any:
        key = idx.tobytes()
        if key not in cache:
            cache[key] = fn(idx)
        return cache[key]

    return wrapped


def classifier_summary(result: Any, *, keep_confusion: bool = True) -> dict[str, Any]:
    """A ClassifierResult as a JSON block, optionally without its confusion matrix and labels."""
    d = result.to_dict()
    if not keep_confusion:
        d.pop("confusion")
        d.pop("labels")
    return d


def evaluate_faces(
    X: Any, y: np.ndarray, groups: np.ndarray, labels: list[str], *, n_boot: int, n_permutations: int, seed: int,
    **how: Any,
) -> ClassifierResult:  # fmt: skip
    """``evaluate_classifier`` of the cell over samples with a face (folds, bootstrap, permutations by prompt);
    ``how`` is ``predict=`` or ``make_estimator=``."""
    return evaluate_classifier(X, y, groups, labels=labels, n_splits=N_SPLITS, n_boot=n_boot,
                               n_permutations=n_permutations, seed=seed, n_jobs=n_jobs(n_permutations), **how)  # fmt: skip


def face_block(predictor: str, result: ClassifierResult, **extra: Any) -> dict[str, Any]:
    """The JSON block of a face -> cell estimator: what predicts, the unit, CV, interval, ``extra``, scores."""
    return {
        "thin": False,
        "predictor": predictor,
        "unit": "sample with a face; folds, bootstrap and permutations by prompt",
        "cv": CV,
        "interval": INTERVAL,
        **extra,
        **classifier_summary(result),
    }


def frequent_faces(samples: pd.DataFrame, floor: int) -> tuple[pd.DataFrame, list[str]]:
    """(samples whose face was emitted >= floor times, those faces, most emitted first)."""
    rows = samples[samples["face"].notna()]
    counts = rows["face"].value_counts()
    counts = counts[counts >= floor]
    faces = sorted(counts.index, key=lambda f: (-counts[f], f))
    return rows[rows["face"].isin(faces)], faces


def majority_cell(cells_of_rows: pd.Series, cells: CellSet) -> str:
    """The commonest cell among ``cells_of_rows``; ties go to the cell listed first in ``cells``."""
    counts = cells_of_rows.value_counts()
    top = set(counts[counts == counts.max()].index)
    return next(c for c in cells.codes if c in top)
