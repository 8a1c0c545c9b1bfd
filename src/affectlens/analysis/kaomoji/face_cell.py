"""Face -> cell: does the face alone tell which kind of prompt it followed?

Two estimators: by identity (the face's majority cell in the training folds; the top-level keys, which the
CLI headline reads) and by characters (``by_characters``, see ``face_chars``), which still works when faces
never repeat.
"""

from __future__ import annotations

import math

import numpy as np

from affectlens.analysis.kaomoji.common import (
    INTERVAL,
    MIN_SAMPLES,
    N_SPLITS,
    evaluate_faces,
    face_block,
    thin,
)
from affectlens.analysis.kaomoji.face_chars import by_characters
from affectlens.analysis.kaomoji.loading import Run
from affectlens.cells import CellSet
from affectlens.stats import bootstrap_ci, grouped_folds


def _face_majority(
    face_codes: np.ndarray, cell_codes: np.ndarray, folds: list, n_faces: int, n_cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold (predicted cell code, face seen in training) per row: each face's majority training cell,
    the training folds' majority cell for a face the training folds never saw. Ties: the lower cell code."""
    pred = np.empty(len(cell_codes), dtype=np.int64)
    seen = np.zeros(len(cell_codes), dtype=bool)
    for train, test in folds:
        table = np.bincount(
            face_codes[train] * n_cells + cell_codes[train], minlength=n_faces * n_cells
        ).reshape(n_faces, n_cells)
        known = table.sum(axis=1) > 0
        fallback = np.bincount(cell_codes[train], minlength=n_cells).argmax()
        seen[test] = known[face_codes[test]]
        pred[test] = np.where(seen[test], table.argmax(axis=1)[face_codes[test]], fallback)
    return pred, seen


def _coverage(run: Run, has_face: np.ndarray, *, n_boot: int, seed: int) -> dict:
    """Share of all samples that carry a face, with its interval over prompts."""
    n_samples, n_with = len(run.samples), int(has_face.sum())
    coverage_ci = (
        bootstrap_ci(
            lambda idx: float(has_face[idx].mean()),
            run.samples["prompt_id"].to_numpy(),
            n_boot=n_boot,
            seed=seed,
        )
        if n_samples
        else (math.nan, math.nan)
    )
    return {
        "coverage": n_with / n_samples if n_samples else math.nan,
        "coverage_ci": list(coverage_ci),
        "n_samples": n_samples,
        "n_with_face": n_with,
        "interval": INTERVAL,
    }


def face_to_cell(run: Run, cells: CellSet, *, n_boot: int, n_permutations: int, seed: int) -> dict:
    """Out-of-fold cell accuracy of "the face's majority cell in the training folds", over samples with a
    face, with the coverage of faces; thin (with counts) where too few samples carry a face seen in training.
    ``by_characters`` holds the character estimator, thin or not on its own terms."""
    has_face = run.samples["face"].notna().to_numpy()
    coverage = _coverage(run, has_face, n_boot=n_boot, seed=seed)
    n_with = coverage["n_with_face"]
    rows = run.samples[has_face]
    y = rows["cell"].to_numpy(dtype=str)
    groups = rows["prompt_id"].to_numpy(dtype=str)
    labels = [c for c in cells.codes if c in set(y)]
    faces, face_codes = np.unique(rows["face"].to_numpy(dtype=str), return_inverse=True)
    counts = dict(
        n_with_face=n_with,
        n_faces=len(faces),
        n_faces_repeated=int(np.sum(np.bincount(face_codes) >= 2)) if n_with else 0,
        n_prompts_with_face=len(set(groups)),
        n_cells_with_face=len(labels),
    )
    chars = by_characters(rows["face"].to_numpy(dtype=str), y, groups, labels, n_boot=n_boot,
                          n_permutations=n_permutations, seed=seed)  # fmt: skip
    base = {
        "estimator": "face identity (by_characters: the face's characters)",
        "fallback": "a face never seen in the training folds gets the training folds' majority cell",
        **coverage,
        "by_characters": chars,
    }
    if n_with < MIN_SAMPLES or len(labels) < 2 or len(set(groups)) < 2:
        return {
            **base,
            **thin(
                f"{n_with} samples with a face from {len(set(groups))} prompts in {len(labels)} cell(s); "
                f"need >= {MIN_SAMPLES} samples in >= 2 cells",
                **counts,
            ),
        }
    index = {c: i for i, c in enumerate(labels)}
    folds = grouped_folds(y, groups, n_splits=N_SPLITS, seed=seed)
    _, seen = _face_majority(face_codes, np.array([index[c] for c in y]), folds, len(faces), len(labels))
    counts["n_seen"] = int(seen.sum())
    if seen.sum() < MIN_SAMPLES:
        return {
            **base,
            **thin(
                f"only {int(seen.sum())} of {n_with} samples with a face carry a face that also occurs in the "
                f"other folds' prompts (need >= {MIN_SAMPLES}); the score would mostly measure the fallback",
                **counts,
            ),
        }
    label_array = np.asarray(labels)

    def predict(X: np.ndarray, y_: np.ndarray, g_: np.ndarray, s_: int) -> np.ndarray:
        codes = np.array([index[c] for c in y_])
        pred, _ = _face_majority(
            X, codes, grouped_folds(y_, g_, n_splits=N_SPLITS, seed=s_), len(faces), len(labels)
        )
        return label_array[pred]

    result = evaluate_faces(face_codes, y, groups, labels, predict=predict, n_boot=n_boot,
                            n_permutations=n_permutations, seed=seed)  # fmt: skip
    predictor = "the majority cell of the face in the training folds (ties: the cell listed first)"
    return {**base, **face_block(predictor, result, seen_share=float(seen.mean()), **counts)}
