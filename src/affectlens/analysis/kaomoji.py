"""Kaomoji analyses: does the face a model opens with track its hidden state, and where do the cells live?

``analyze`` reads elicitation run folders (never a model) and asks, per run: can the cell of a prompt be
read from ``h_first`` (at every layer, on all layers at once, and at one headline layer fixed in advance);
can it be read from the face alone; can the face be read from ``h_first``; and how are prompts, cells and
faces arranged in that space. Across runs that share prompts it aligns the cell-centroid configurations
(orthogonal Procrustes) and compares their distance matrices (RSA).

Units: ``h_first`` is one vector per prompt, shared by that prompt's samples, so every fit and every
resample works on prompts: cross-validation is grouped by prompt, bootstraps draw prompts, and permutation
tests shuffle whole prompts. Every fit (scaling, classifier, majority table) happens inside the training
folds. Too little data gives ``{"thin": true, "reason": ..., counts}`` in place of numbers, never an error.
Figure paths in the result are relative to ``out``.
"""

from __future__ import annotations

import functools
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
from joblib import Parallel, delayed
from matplotlib import rc_context
from matplotlib.figure import Figure as MplFigure
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.dummy import DummyClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from affectlens.cells import CellSet, default_cells
from affectlens.errors import AffectlensError
from affectlens.progress import progress
from affectlens.report.document import Figure, Section, Table
from affectlens.report.render import format_number
from affectlens.stages.elicit import load_elicitation
from affectlens.stats import (
    bootstrap_ci,
    default_estimator,
    evaluate_classifier,
    grouped_cv_predict,
    grouped_folds,
    pearson_with_ci,
    permutation_test,
)
from affectlens.store.atomic import atomic_path, json_ready, write_json

__all__ = ["analyze", "headline_layer", "sections"]

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
LAYER_RULE = "round(2/3 x (n_layers - 1)), fixed before any fit; never chosen on test folds"

_estimator = functools.partial(default_estimator, tol=TOL)  # a partial, so joblib workers can unpickle it


def headline_layer(n_layers: int) -> int:
    """The headline layer of a model with ``n_layers`` decoder blocks: round(2/3 x (n_layers - 1)).

    A conventional mid-to-late depth for linear probes, fixed in advance so that the reported layer is never
    the one that happened to score best on the test folds. (2/3 x (n - 1) is never exactly k + 1/2, so
    rounding has no tie to break.)
    """
    if n_layers < 1:
        raise AffectlensError(f"a model needs at least one layer, got {n_layers}")
    return round(2 * (n_layers - 1) / 3)


# -------------------------------------------------------------------------------------------- loading


@dataclass
class _Run:
    label: str
    path: str
    spec: str
    prompts: pd.DataFrame  # id, cell, ... in h_first row order
    samples: pd.DataFrame  # prompt_id, cell (of the prompt), face (None where none), row (prompt row)
    hidden: np.ndarray  # [n_prompts, n_stored_layers, d] float32
    layers: list[int]  # model layer number of each stored layer
    index: int  # stored-layer index of the headline layer
    layer_rule: str

    @property
    def layer(self) -> int:
        return self.layers[self.index]


def _load(path: str, layer: int | None, cells: CellSet) -> _Run:
    generations, prompts, h_first, entry = load_elicitation(path)
    hidden = h_first.detach().cpu().float().numpy()
    if hidden.ndim != 3 or hidden.shape[0] != len(prompts):
        raise AffectlensError(
            f"{path}: h_first has shape {tuple(hidden.shape)}, expected [{len(prompts)} prompts, layers, d]"
        )
    layers = [int(v) for v in (entry.get("layers") or range(hidden.shape[1]))]
    if len(layers) != hidden.shape[1]:
        raise AffectlensError(
            f"{path}: the manifest lists {len(layers)} layers but h_first holds {hidden.shape[1]}"
        )
    model = entry.get("model") or {}
    spec = str(model.get("spec") or entry.get("identity", {}).get("model", {}).get("spec") or Path(path).name)
    if unknown := sorted(set(prompts["cell"]) - set(cells.codes)):
        raise AffectlensError(
            f"{path}: prompts name cells outside the {cells.name} set: {', '.join(unknown)}"
        )
    if layer is None:
        n_model_layers = int(model.get("n_layers") or max(layers) + 1)
        target = headline_layer(n_model_layers)
        index = int(np.argmin(np.abs(np.asarray(layers) - target)))  # nearest stored layer, lower on a tie
        rule = f"{LAYER_RULE}: n_layers = {n_model_layers} gives layer {target}"
        if layers[index] != target:
            rule += f"; layer {target} is not stored, so the nearest stored layer {layers[index]} is used"
    else:
        if layer not in layers:
            raise AffectlensError(
                f"{path}: layer {layer} is not stored; stored layers are {layers[0]}..{layers[-1]}"
            )
        index, rule = layers.index(layer), f"layer {layer}, set by the caller"
    row = {pid: i for i, pid in enumerate(prompts["id"])}
    if missing := sorted(set(generations["prompt_id"]) - set(row)):
        raise AffectlensError(f"{path}: generations name prompts missing from prompts.parquet: {missing[:3]}")
    face = generations["face"].astype(object)
    face = face.where(face.notna() & (face.astype(str) != ""), None)
    samples = pd.DataFrame(
        {
            "prompt_id": generations["prompt_id"].astype(str).to_numpy(),
            "row": generations["prompt_id"].map(row).to_numpy(dtype=np.int64),
            "face": face.to_numpy(dtype=object),
        }
    )
    samples["cell"] = prompts["cell"].to_numpy()[samples["row"].to_numpy()]
    return _Run(
        label=spec,
        path=str(path),
        spec=spec,
        prompts=prompts.reset_index(drop=True),
        samples=samples,
        hidden=hidden,
        layers=layers,
        index=index,
        layer_rule=rule,
    )


def _unique_labels(runs: list[_Run]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.spec] = seen.get(run.spec, 0) + 1
        run.label = run.spec if seen[run.spec] == 1 else f"{run.spec}#{seen[run.spec]}"


# -------------------------------------------------------------------------------------------- helpers


def _thin(reason: str, **counts: Any) -> dict[str, Any]:
    return {"thin": True, "reason": reason, **counts}


def _n_jobs(n_tasks: int, at_least: int = 200) -> int:
    """Worker processes for ``n_tasks`` independent refits: they take seconds to start, so only for many."""
    return min(os.cpu_count() or 1, 8) if n_tasks >= at_least else 1


def _memo(fn: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
    """Cache by resample, so several bootstrap_ci calls with one seed compute each resample once."""
    cache: dict[bytes, Any] = {}

    def wrapped(idx: np.ndarray) -> Any:
        key = idx.tobytes()
        if key not in cache:
            cache[key] = fn(idx)
        return cache[key]

    return wrapped


# ------------------------------------------------------------------------------------ hidden -> cell


def _classifier_summary(result: Any, *, keep_confusion: bool = True) -> dict[str, Any]:
    d = result.to_dict()
    if not keep_confusion:
        d.pop("confusion")
        d.pop("labels")
    return d


def _hidden_to_cell(
    run: _Run, cells: CellSet, *, n_boot: int, n_permutations: int, seed: int, tick: Callable[[], Any]
) -> dict:
    y = run.prompts["cell"].to_numpy(dtype=str)
    groups = run.prompts["id"].to_numpy(dtype=str)
    labels = [c for c in cells.codes if c in set(y)]
    counts = {c: int(np.sum(y == c)) for c in labels}
    if len(labels) < 2 or len(y) < MIN_PROMPTS:
        return _thin(
            f"{len(y)} prompts in {len(labels)} cell(s); a classifier needs >= {MIN_PROMPTS} prompts in >= 2 cells",
            n_prompts=len(y),
            prompts_per_cell=counts,
        )
    common = dict(labels=labels, n_splits=N_SPLITS, n_boot=n_boot, seed=seed, make_estimator=_estimator)
    curve = Parallel(n_jobs=_n_jobs(len(run.layers), at_least=8))(
        delayed(evaluate_classifier)(run.hidden[:, i], y, groups, n_permutations=0, **common)
        for i in range(len(run.layers))
    )
    by_layer = []
    for layer, result in zip(run.layers, curve, strict=True):
        by_layer.append({"layer": layer, **_classifier_summary(result, keep_confusion=False)})
        tick()
    flat = run.hidden.reshape(len(y), -1)
    concat = evaluate_classifier(flat, y, groups, n_permutations=0, **common)
    tick()
    headline = evaluate_classifier(
        run.hidden[:, run.index],
        y,
        groups,
        n_permutations=n_permutations,
        n_jobs=_n_jobs(n_permutations),
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
            **_classifier_summary(concat),
        },
        "headline": {"layer": run.layer, "layer_rule": run.layer_rule, **_classifier_summary(headline)},
    }


# -------------------------------------------------------------------------------------- face -> cell


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


def _face_to_cell(run: _Run, cells: CellSet, *, n_boot: int, n_permutations: int, seed: int) -> dict:
    samples = run.samples
    has_face = samples["face"].notna().to_numpy()
    n_samples, n_with = len(samples), int(has_face.sum())
    coverage_ci = (
        bootstrap_ci(
            lambda idx: float(has_face[idx].mean()), samples["prompt_id"].to_numpy(), n_boot=n_boot, seed=seed
        )
        if n_samples
        else (math.nan, math.nan)
    )
    coverage = {
        "coverage": n_with / n_samples if n_samples else math.nan,
        "coverage_ci": list(coverage_ci),
        "n_samples": n_samples,
        "n_with_face": n_with,
        "interval": INTERVAL,
    }
    rows = samples[has_face]
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
    base = {
        "fallback": "a face never seen in the training folds gets the training folds' majority cell",
        **coverage,
    }
    if n_with < MIN_SAMPLES or len(labels) < 2 or len(set(groups)) < 2:
        return {
            **base,
            **_thin(
                f"{n_with} samples with a face from {len(set(groups))} prompts in {len(labels)} cell(s); "
                f"need >= {MIN_SAMPLES} samples in >= 2 cells",
                **counts,
            ),
        }
    index = {c: i for i, c in enumerate(labels)}
    cell_codes = np.array([index[c] for c in y])
    folds = grouped_folds(y, groups, n_splits=N_SPLITS, seed=seed)
    _, seen = _face_majority(face_codes, cell_codes, folds, len(faces), len(labels))
    counts["n_seen"] = int(seen.sum())
    if seen.sum() < MIN_SAMPLES:
        return {
            **base,
            **_thin(
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

    result = evaluate_classifier(
        face_codes,
        y,
        groups,
        labels=labels,
        n_splits=N_SPLITS,
        n_boot=n_boot,
        n_permutations=n_permutations,
        seed=seed,
        predict=predict,
        n_jobs=_n_jobs(n_permutations),
    )
    return {
        **base,
        "thin": False,
        "predictor": "the majority cell of the face in the training folds (ties: the cell listed first)",
        "unit": "sample with a face; folds, bootstrap and permutations by prompt",
        "cv": CV,
        "interval": INTERVAL,
        "seen_share": float(seen.mean()),
        **counts,
        **_classifier_summary(result),
    }


# ------------------------------------------------------------------------------------ hidden -> face


def _frequent_faces(run: _Run, floor: int) -> tuple[pd.DataFrame, list[str]]:
    """(samples whose face was emitted >= floor times, those faces, most emitted first)."""
    rows = run.samples[run.samples["face"].notna()]
    counts = rows["face"].value_counts()
    counts = counts[counts >= floor]
    faces = sorted(counts.index, key=lambda f: (-counts[f], f))
    return rows[rows["face"].isin(faces)], faces


def _hidden_to_face(run: _Run, *, floor: int, n_boot: int, n_permutations: int, seed: int) -> dict:
    rows, faces = _frequent_faces(run, floor)
    y = rows["face"].to_numpy(dtype=str)
    groups = rows["prompt_id"].to_numpy(dtype=str)
    counts = dict(n_faces=len(faces), n_samples=len(rows), n_prompts=len(set(groups)), floor=floor)
    if len(faces) < MIN_FACES or len(rows) < MIN_SAMPLES or len(set(groups)) < 2:
        return _thin(
            f"{len(faces)} face(s) emitted >= {floor} times, {len(rows)} samples from {len(set(groups))} "
            f"prompts; need >= {MIN_FACES} faces and >= {MIN_SAMPLES} samples",
            **counts,
        )
    X = run.hidden[rows["row"].to_numpy(), run.index]
    result = evaluate_classifier(
        X,
        y,
        groups,
        labels=faces,
        n_splits=N_SPLITS,
        n_boot=n_boot,
        n_permutations=0,
        seed=seed,
        make_estimator=_estimator,
    )
    correct = result.predictions == y
    dummy = grouped_cv_predict(
        np.zeros((len(y), 1)), y, groups, n_splits=N_SPLITS, seed=seed, make_estimator=DummyClassifier
    )
    gain = correct.astype(float) - (dummy == y)
    gain_ci = bootstrap_ci(lambda idx: float(gain[idx].mean()), groups, n_boot=n_boot, seed=seed)
    out = {
        "thin": False,
        "layer": run.layer,
        "unit": "sample whose face was emitted >= floor times; folds, bootstrap and permutations by prompt",
        "classifier": CLASSIFIER,
        "cv": CV,
        "interval": INTERVAL,
        **counts,
        **_classifier_summary(result),
        "gain_over_majority": float(gain.mean()),
        "gain_over_majority_ci": list(gain_ci),
    }
    # A prompt's samples carry different faces, so labels cannot be shuffled between prompts; the null
    # shuffles instead which prompt's hidden state each prompt's samples carry (faces and folds stay put).
    n_perm = min(n_permutations, FACE_PERMUTATION_CAP)
    if n_perm > 0:
        prompt_codes = np.unique(groups, return_inverse=True)[1]
        per_prompt = np.zeros((prompt_codes.max() + 1, X.shape[1]), dtype=X.dtype)
        per_prompt[prompt_codes] = X

        def null_accuracy(perm_codes: np.ndarray) -> float:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = grouped_cv_predict(
                    per_prompt[perm_codes], y, groups, n_splits=N_SPLITS, seed=seed, make_estimator=_estimator
                )
            return float(np.mean(pred == y))

        p, null = permutation_test(
            null_accuracy,
            prompt_codes,
            prompt_codes,
            result.accuracy,
            n_permutations=n_perm,
            seed=seed,
            n_jobs=_n_jobs(n_perm),
        )
        out.update(
            n_permutations=n_perm,
            p_value=p,
            min_attainable_p=1.0 / (n_perm + 1),
            null_mean=float(null.mean()),
            permutation="hidden states shuffled between prompts; "
            f"at most {FACE_PERMUTATION_CAP} permutations, since each refits on every sample",
        )
    return out


# ---------------------------------------------------------------------------------------------- geometry


def _explained_ratios(X: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Share of total variance of the top-k principal components of the rows ``idx`` of X (repeats allowed),
    each feature standardised over those rows. Repeated rows enter once, weighted by their count, which
    leaves the spectrum unchanged and shrinks the eigenproblem to the distinct rows."""
    rows, counts = np.unique(idx, return_counts=True)
    w = counts / counts.sum()
    Xu = X[rows]
    Z = Xu - w @ Xu
    sd = np.sqrt(w @ (Z * Z))
    Z = Z / np.where(sd > 0, sd, 1.0)
    A = np.sqrt(w)[:, None] * Z
    total = float(np.sum(A * A))
    small = A @ A.T if A.shape[0] <= A.shape[1] else A.T @ A
    m = small.shape[0]
    top = scipy.linalg.eigh(small, eigvals_only=True, subset_by_index=[max(m - k, 0), m - 1])[::-1]
    ratios = np.full(k, np.nan)
    if total > 0:
        ratios[: len(top)] = np.maximum(top, 0.0) / total
    return ratios


def _geometry(run: _Run, cells: CellSet, *, floor: int, n_boot: int, n_permutations: int, seed: int) -> dict:
    X = run.hidden[:, run.index].astype(np.float64)
    y = run.prompts["cell"].to_numpy(dtype=str)
    n, d = X.shape
    labels = [c for c in cells.codes if c in set(y)]
    if n < MIN_PROMPTS or d < 2 or len(labels) < 2:
        return _thin(
            f"{n} prompts, d = {d}, {len(labels)} cell(s); PCA needs >= {MIN_PROMPTS} prompts in >= 2 cells",
            n_prompts=n,
            d=d,
        )
    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)
    n_comp = min(10, n, d)
    pca = PCA(n_components=n_comp, svd_solver="full").fit(Z)
    scores = pca.transform(Z)
    k = min(3, n_comp)
    groups = run.prompts["id"].to_numpy(dtype=str)
    ratios = _memo(lambda idx: _explained_ratios(X, idx, k))
    variance = []
    for j in range(k):
        lo, hi = bootstrap_ci(lambda idx, j=j: float(ratios(idx)[j]), groups, n_boot=n_boot, seed=seed)
        variance.append({"pc": j + 1, "ratio": float(pca.explained_variance_ratio_[j]), "ci": [lo, hi]})

    coords = cells.coordinates()
    axes = {
        "valence": np.array([coords[c][0] for c in y], dtype=float),
        "arousal": np.array([coords[c][1] for c in y], dtype=float),
    }
    pc = scores[:, :2]
    raw = {
        (j, a): float(np.corrcoef(pc[:, j], v)[0, 1]) if np.std(v) > 0 else math.nan
        for j in range(2)
        for a, v in axes.items()
    }
    # The PCs' signs and order are arbitrary: pair each of PC1, PC2 with one axis (the pairing with the larger
    # summed |r|), then flip each PC so its paired r is positive. All four r are reported after the flip.
    pairings = [("valence", "arousal"), ("arousal", "valence")]
    best = max(pairings, key=lambda pr: np.nansum([abs(raw[(0, pr[0])]), abs(raw[(1, pr[1])])]))
    signs = [1.0 if not raw[(j, best[j])] < 0 else -1.0 for j in range(2)]
    scores[:, :2] *= signs
    correlations = []
    for j in range(2):
        for a, v in axes.items():
            if np.std(v) == 0:
                correlations.append(
                    {"pc": j + 1, "axis": a, **_thin(f"every prompt's cell has the same {a}")}
                )
                continue
            r = pearson_with_ci(scores[:, j], v, n_boot=n_boot, n_permutations=n_permutations, seed=seed)
            correlations.append({"pc": j + 1, "axis": a, "paired": best[j] == a, **r})
    centroids = {c: scores[y == c, :2].mean(axis=0).tolist() for c in labels}
    out = {
        "thin": False,
        "layer": run.layer,
        "preprocessing": "each feature standardised (z-scored) over prompts, then PCA; one point per prompt",
        "n_prompts": n,
        "d": d,
        "explained_variance": variance,
        "explained_variance_interval": f"{INTERVAL} (standardisation and PCA refitted per resample); repeated "
        "prompts in a resample lower its effective rank, so the interval leans above the estimate",
        "correlations": correlations,
        "correlation_note": "Pearson r per prompt of a PC score with its cell's coordinate; the interval keeps "
        "the PCA fixed; p is a two-sided permutation p shuffling coordinates between prompts. The pairing "
        "was picked on these data, so its p is not corrected for that choice.",
        "pairing": {"PC1": best[0], "PC2": best[1], "signs": signs},
        "cell_centroids": centroids,
        "_scores": scores[:, :2],
    }
    out["faces"] = _face_centroids(run, cells, scores[:, :2], floor)
    out["_standardised"] = Z
    return out


def _face_centroids(run: _Run, cells: CellSet, scores: np.ndarray, floor: int) -> dict:
    rows, faces = _frequent_faces(run, floor)
    if len(faces) < MIN_FACES:
        return _thin(
            f"{len(faces)} face(s) emitted >= {floor} times; need >= {MIN_FACES}",
            n_faces=len(faces),
            n_samples=len(rows),
            floor=floor,
        )
    out = []
    for face in faces:
        group = rows[rows["face"] == face]
        xy = scores[group["row"].to_numpy()].mean(axis=0)
        out.append(
            {
                "face": face,
                "n": len(group),
                "n_prompts": int(group["prompt_id"].nunique()),
                "majority_cell": _majority_cell(group["cell"], cells),
                "pc1": float(xy[0]),
                "pc2": float(xy[1]),
            }
        )
    return {"thin": False, "floor": floor, "n_faces": len(faces), "faces": out}


def _majority_cell(cells_of_rows: pd.Series, cells: CellSet) -> str:
    counts = cells_of_rows.value_counts()
    top = set(counts[counts == counts.max()].index)
    return next(c for c in cells.codes if c in top)


# ---------------------------------------------------------------------------------- face similarity


def _face_similarity(run: _Run, cells: CellSet, standardised: np.ndarray | None, floor: int) -> dict:
    rows, faces = _frequent_faces(run, floor)
    counts = dict(n_faces=len(faces), n_samples=len(rows), floor=floor)
    if len(faces) < MIN_FACES or standardised is None:
        return _thin(f"{len(faces)} face(s) emitted >= {floor} times; need >= {MIN_FACES}", **counts)
    means = np.stack(
        [standardised[rows.loc[rows["face"] == f, "row"].to_numpy()].mean(axis=0) for f in faces]
    )
    means -= means.mean(axis=0)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    unit = means / np.where(norms > 0, norms, 1.0)
    cos = np.clip(unit @ unit.T, -1.0, 1.0)
    dist = np.clip(1.0 - cos, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    order = leaves_list(linkage(squareform(dist, checks=False), method="average"))
    ordered = [faces[i] for i in order]
    majority = {f: _majority_cell(rows.loc[rows["face"] == f, "cell"], cells) for f in faces}
    return {
        "thin": False,
        "layer": run.layer,
        "representation": "per-face mean of h_first (features standardised over prompts), centred across faces",
        "similarity": "cosine",
        "order": "average-linkage clustering on 1 - cosine",
        **counts,
        "faces": ordered,
        "n": [int(np.sum(rows["face"] == f)) for f in ordered],
        "majority_cell": [majority[f] for f in ordered],
        "matrix": cos[np.ix_(order, order)],
    }


# ------------------------------------------------------------------------------------------ alignment


def _configuration(X: np.ndarray, codes: np.ndarray, n_cells: int, k: int) -> np.ndarray | None:
    """Cell centroids [n_cells, k]: centred, in their own PCA coordinates, unit Frobenius norm."""
    counts = np.bincount(codes, minlength=n_cells)
    if (counts == 0).any():
        return None
    onehot = np.zeros((n_cells, len(codes)))
    onehot[codes, np.arange(len(codes))] = 1.0
    centroids = (onehot @ X) / counts[:, None]
    centroids -= centroids.mean(axis=0)
    u, s, _ = np.linalg.svd(centroids, full_matrices=False)
    coords = np.zeros((n_cells, k))
    m = min(k, len(s))
    coords[:, :m] = u[:, :m] * s[:m]
    norm = np.linalg.norm(coords)
    return coords / norm if norm > 0 else None


def _procrustes(ref: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, float]:
    """(other rotated onto ref, disparity = sum of squared differences); both centred, unit norm."""
    rotation, _ = scipy.linalg.orthogonal_procrustes(other, ref)
    aligned = other @ rotation
    return aligned, float(np.sum((ref - aligned) ** 2))


def _rsa(ref: np.ndarray, other: np.ndarray) -> float:
    return float(spearmanr(pdist(ref), pdist(other)).statistic)


def _align(a: _Run, b: _Run, cells: CellSet, *, n_boot: int, n_permutations: int, seed: int) -> dict:
    pair = {"reference": a.label, "other": b.label, "reference_layer": a.layer, "other_layer": b.layer}
    rows_b = {pid: i for i, pid in enumerate(b.prompts["id"])}
    shared = [pid for pid in a.prompts["id"] if pid in rows_b]
    if not shared:
        return {**pair, "skipped": True, "reason": "the runs share no prompt ids"}
    rows_a = {pid: i for i, pid in enumerate(a.prompts["id"])}
    ia = np.array([rows_a[pid] for pid in shared])
    ib = np.array([rows_b[pid] for pid in shared])
    cell_a = a.prompts["cell"].to_numpy(dtype=str)[ia]
    if (cell_a != b.prompts["cell"].to_numpy(dtype=str)[ib]).any():
        return {**pair, "skipped": True, "reason": "shared prompt ids carry different cells in the two runs"}
    labels = [c for c in cells.codes if c in set(cell_a)]
    k = min(ALIGN_DIMS, len(labels) - 1)
    counts = dict(n_prompts=len(shared), n_cells=len(labels))
    if len(labels) < MIN_ALIGN_CELLS:
        return {
            **pair,
            **_thin(f"{len(labels)} cells on shared prompts; need >= {MIN_ALIGN_CELLS}", **counts),
        }
    index = {c: i for i, c in enumerate(labels)}
    codes = np.array([index[c] for c in cell_a])
    Xa = a.hidden[ia, a.index].astype(np.float64)
    Xb = b.hidden[ib, b.index].astype(np.float64)
    ref = _configuration(Xa, codes, len(labels), k)
    other = _configuration(Xb, codes, len(labels), k)
    if ref is None or other is None:
        return {**pair, **_thin("a run's cell centroids coincide (no spread to align)", **counts)}
    aligned, disparity = _procrustes(ref, other)
    rsa = _rsa(ref, other)

    def per_resample(idx: np.ndarray) -> tuple[float, float]:
        r, o = (
            _configuration(Xa[idx], codes[idx], len(labels), k),
            _configuration(Xb[idx], codes[idx], len(labels), k),
        )
        if r is None or o is None:
            return math.nan, math.nan
        return _procrustes(r, o)[1], _rsa(r, o)

    stats_of = _memo(per_resample)
    groups = np.asarray(shared)
    disparity_ci = bootstrap_ci(lambda idx: stats_of(idx)[0], groups, n_boot=n_boot, seed=seed)
    rsa_ci = bootstrap_ci(lambda idx: stats_of(idx)[1], groups, n_boot=n_boot, seed=seed)
    out = {
        **pair,
        "thin": False,
        **counts,
        "cells": labels,
        "k": k,
        "preprocessing": "cell centroids of raw h_first, centred, projected on their own top-k principal "
        "axes, scaled to unit Frobenius norm (rotation- and scale-invariant, unlike per-feature z-scoring)",
        "disparity": disparity,
        "disparity_ci": list(disparity_ci),
        "disparity_note": "sum of squared differences after orthogonal Procrustes (rotation and reflection, "
        "no scaling) of the other run onto the reference; 0 = identical arrangement, 2 = maximal",
        "rsa": rsa,
        "rsa_ci": list(rsa_ci),
        "rsa_method": "Spearman correlation of the upper triangles of the two Euclidean cell-distance matrices",
        "interval": f"{INTERVAL} (shared prompts, centroids recomputed per resample); resampling adds noise "
        "to the centroids, so these intervals lean toward worse agreement than the estimate",
        "reference_coords": ref,
        "aligned_coords": aligned,
    }
    if n_permutations > 0:
        cell_ids = np.arange(len(labels))
        out["rsa_p_value"], _ = permutation_test(
            lambda perm: _rsa(ref, other[perm]),
            cell_ids,
            cell_ids,
            rsa,
            n_permutations=n_permutations,
            seed=seed,
        )
        out["disparity_p_value"], _ = permutation_test(
            lambda perm: -_procrustes(ref, other[perm])[1],
            cell_ids,
            cell_ids,
            -disparity,
            n_permutations=n_permutations,
            seed=seed,
        )
        out.update(
            n_permutations=n_permutations,
            min_attainable_p=1.0 / (n_permutations + 1),
            permutation="cell labels of the other run shuffled (RSA: r >= observed; disparity: <= observed)",
        )
    return out


# -------------------------------------------------------------------------------------------- figures


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def _save(fig: MplFigure, out: Path, stem: str) -> dict[str, str]:
    """Write figures/<stem>.png and .svg under ``out`` atomically; paths come back relative to ``out``."""
    paths = {}
    with rc_context({"svg.hashsalt": "affectlens"}), warnings.catch_warnings():
        # Kaomoji use glyphs the bundled fonts may lack; a box in a figure is fine, a warning per glyph is not.
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)
        warnings.filterwarnings(
            "ignore", message=r"Matplotlib currently does not support", category=UserWarning
        )
        for ext in ("png", "svg"):
            rel = f"figures/{stem}.{ext}"
            with atomic_path(out / rel) as tmp:
                kwargs = {"dpi": 150} if ext == "png" else {"metadata": {"Date": None}}
                fig.savefig(tmp, format=ext, **kwargs)
            paths[ext] = rel
    return paths


def _fig_depth(label: str, h2c: dict) -> MplFigure:
    fig = MplFigure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.subplots()
    curve = h2c["by_layer"]
    x = [row["layer"] for row in curve]
    acc = np.array([row["accuracy"] for row in curve])
    lo = np.array([row["accuracy_ci"][0] for row in curve])
    hi = np.array([row["accuracy_ci"][1] for row in curve])
    ax.fill_between(x, lo, hi, color="#5194da", alpha=0.25, linewidth=0, label="95% bootstrap interval")
    ax.plot(x, acc, color="#5194da", marker="o", markersize=3, label="accuracy (out-of-fold)")
    ax.axhline(curve[0]["chance"], color="#919191", linestyle=":", label="chance (1 / cells)")
    ax.axhline(curve[0]["majority_baseline"], color="#919191", linestyle="--", label="majority baseline")
    ax.axhline(
        h2c["all_layers"]["accuracy"], color="#c87f55", linestyle="-.", label="all layers concatenated"
    )
    ax.axvline(h2c["headline"]["layer"], color="black", linewidth=0.8, label="headline layer")
    ax.set_xlabel("layer (residual stream after decoder block i)")
    ax.set_ylabel("cell accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(f"{label}: cell from h_first, by depth (n = {curve[0]['n']} prompts)")
    ax.legend(fontsize=7, loc="best")
    return fig


def _confusion_panel(fig: MplFigure, ax: Any, result: dict, cells: CellSet, title: str) -> None:
    labels = result["labels"]
    conf = np.asarray(result["confusion"], dtype=float)
    share = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1.0)
    image = ax.imshow(share, vmin=0.0, vmax=1.0, cmap="Blues")
    for (i, j), count in np.ndenumerate(conf):
        if count:
            ax.text(
                j,
                i,
                f"{int(count)}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for tick, code in zip(ax.get_xticklabels(), labels, strict=True):
        tick.set_color(cells.colours[code])
    for tick, code in zip(ax.get_yticklabels(), labels, strict=True):
        tick.set_color(cells.colours[code])
    ax.set_xlabel("predicted cell")
    ax.set_ylabel("true cell")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the true cell's rows", shrink=0.8)


def _fig_confusion(label: str, h2c: dict, f2c: dict, cells: CellSet) -> MplFigure:
    panels = [
        (
            h2c["headline"],
            f"hidden state → cell, layer {h2c['headline']['layer']} (n = {h2c['headline']['n']} prompts)",
        )
    ]
    if not f2c.get("thin", True):
        panels.append((f2c, f"face → cell (n = {f2c['n']} samples with a face)"))
    fig = MplFigure(figsize=(5.2 * len(panels), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (result, title) in zip(axes, panels, strict=True):
        _confusion_panel(fig, ax, result, cells, title)
    fig.suptitle(f"{label}: out-of-fold confusion (counts; colour = row share)", fontsize=10)
    return fig


def _fig_pca(label: str, geo: dict, prompts: pd.DataFrame, cells: CellSet) -> MplFigure:
    fig = MplFigure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    scores = np.asarray(geo["_scores"])
    y = prompts["cell"].to_numpy(dtype=str)
    for code in geo["cell_centroids"]:
        pts = scores[y == code]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=14,
            alpha=0.55,
            color=cells.colours[code],
            linewidths=0,
            label=f"{code} ({cells[code].name}, n = {len(pts)})",
        )
    for code, xy in geo["cell_centroids"].items():
        ax.scatter(
            [xy[0]], [xy[1]], s=140, color=cells.colours[code], edgecolors="black", linewidths=1.2, zorder=3
        )
        ax.annotate(code, xy, xytext=(5, 5), textcoords="offset points", fontsize=8, weight="bold")
    ev = geo["explained_variance"]
    ax.set_xlabel(f"PC1 ({100 * ev[0]['ratio']:.1f}% of variance; sign-aligned with {geo['pairing']['PC1']})")
    ax.set_ylabel(f"PC2 ({100 * ev[1]['ratio']:.1f}%; sign-aligned with {geo['pairing']['PC2']})")
    ax.set_title(
        f"{label}: prompts at layer {geo['layer']} (standardised h_first; large dots = cell centroids)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="best", markerscale=1.5)
    return fig


def _fig_faces(label: str, geo: dict, cells: CellSet) -> MplFigure:
    fig = MplFigure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    scores = np.asarray(geo["_scores"])
    ax.scatter(scores[:, 0], scores[:, 1], s=8, color="#d9d9d9", linewidths=0, label="prompts")
    faces = geo["faces"]["faces"]
    for f in faces:
        ax.scatter(
            [f["pc1"]],
            [f["pc2"]],
            s=20 + 8 * math.sqrt(f["n"]),
            color=cells.colours[f["majority_cell"]],
            edgecolors="black",
            linewidths=0.5,
            zorder=3,
        )
        ax.annotate(f["face"], (f["pc1"], f["pc2"]), xytext=(4, 4), textcoords="offset points", fontsize=7)
    shown = {f["majority_cell"] for f in faces}
    for code in (c for c in cells.codes if c in shown):
        ax.scatter([], [], color=cells.colours[code], label=f"majority cell {code}")
    ax.set_xlabel("PC1 (same axes as the prompt scatter)")
    ax.set_ylabel("PC2")
    ax.set_title(
        f"{label}: faces at the mean h_first of their samples (faces with n >= {geo['faces']['floor']})",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="best")
    return fig


def _fig_heatmap(label: str, sim: dict, cells: CellSet) -> MplFigure:
    n = len(sim["faces"])
    size = min(4.0 + 0.28 * n, 16.0)
    fig = MplFigure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.asarray(sim["matrix"], dtype=float), vmin=-1.0, vmax=1.0, cmap="RdBu_r")
    ticks = [f"{f} (n={c})" for f, c in zip(sim["faces"], sim["n"], strict=True)]
    ax.set_xticks(range(n), ticks, rotation=90, fontsize=7)
    ax.set_yticks(range(n), ticks, fontsize=7)
    for axis_ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, code in zip(axis_ticks, sim["majority_cell"], strict=True):
            tick.set_color(cells.colours[code])
    fig.colorbar(image, ax=ax, label="cosine similarity of centred per-face mean h_first", shrink=0.8)
    ax.set_title(
        f"{label}: face similarity at layer {sim['layer']} (labels coloured by majority cell)", fontsize=9
    )
    return fig


def _fig_alignment(al: dict, cells: CellSet) -> MplFigure:
    fig = MplFigure(figsize=(6.0, 5.2), layout="constrained")
    ax = fig.subplots()
    ref, aligned = np.asarray(al["reference_coords"]), np.asarray(al["aligned_coords"])
    for i, code in enumerate(al["cells"]):
        colour = cells.colours[code]
        ax.plot([ref[i, 0], aligned[i, 0]], [ref[i, 1], aligned[i, 1]], color=colour, linewidth=1)
        ax.scatter([ref[i, 0]], [ref[i, 1]], s=90, color=colour, edgecolors="black", zorder=3)
        ax.scatter(
            [aligned[i, 0]],
            [aligned[i, 1]],
            s=90,
            marker="^",
            facecolors="white",
            edgecolors=colour,
            linewidths=1.5,
            zorder=3,
        )
        ax.annotate(code, (ref[i, 0], ref[i, 1]), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.scatter([], [], s=60, color="#919191", edgecolors="black", label=f"{al['reference']} (reference)")
    ax.scatter(
        [], [], s=60, marker="^", facecolors="white", edgecolors="#919191", label=f"{al['other']} (aligned)"
    )
    ax.set_xlabel("centroid axis 1 (reference run)")
    ax.set_ylabel("centroid axis 2")
    ax.set_title(
        f"cell centroids after Procrustes ({al['n_prompts']} shared prompts, {al['n_cells']} cells)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="best")
    return fig


# ------------------------------------------------------------------------------------------- analyze


def analyze(
    runs: list[str],
    out: str,
    *,
    n_permutations: int = 1000,
    n_boot: int = 1000,
    seed: int = 0,
    layer: int | None = None,
    floor: int = 3,
    quiet: bool = False,
) -> dict:
    """Kaomoji analyses of elicitation run folders; writes ``out/analysis.json`` and ``out/figures/``.

    Per run (keyed by its model spec, made unique with ``#2``, ``#3``): ``hidden_to_cell`` (every stored
    layer, all layers concatenated, and the headline layer with a permutation test; ``layer`` overrides the
    fixed rule round(2/3 x (n_layers - 1))), ``face_to_cell``, ``hidden_to_face`` (faces emitted >= ``floor``
    times; at most 200 permutations), ``geometry`` (standardised PCA, PC-valence/arousal correlations, face
    centroids) and ``face_similarity``. ``alignment`` holds every pair of runs (the earlier run is the
    reference). Intervals are 95% bootstrap percentile intervals (``n_boot`` resamples of prompts); p-values
    are (k + 1) / (n_permutations + 1). Figure paths are relative to ``out``. Returns what it writes.
    """
    if not runs:
        raise AffectlensError("analyze needs at least one run folder")
    if n_boot < 1 or n_permutations < 0:
        raise AffectlensError("n_boot must be >= 1 and n_permutations >= 0")
    floor = max(int(floor), 1)
    cells = default_cells()
    out_dir = Path(out)
    loaded = [_load(path, layer, cells) for path in runs]
    _unique_labels(loaded)
    stems: dict[str, str] = {}  # file-name stems, unique even where two labels slugify alike
    for i, run in enumerate(loaded):
        stem = _slug(run.label)
        stems[run.label] = stem if stem not in stems.values() else f"{stem}-{i + 1}"
    result: dict[str, Any] = {
        "analysis": "kaomoji",
        "settings": {
            "n_permutations": n_permutations,
            "n_boot": n_boot,
            "seed": seed,
            "floor": floor,
            "layer": layer,
            "layer_rule": LAYER_RULE if layer is None else f"layer {layer}, set by the caller",
            "classifier": CLASSIFIER,
            "cv": CV,
            "interval": INTERVAL,
            "p_value": "(k + 1) / (n_permutations + 1), k = null scores at least as extreme",
            "thin_thresholds": {
                "min_prompts": MIN_PROMPTS,
                "min_samples": MIN_SAMPLES,
                "min_faces": MIN_FACES,
                "min_alignment_cells": MIN_ALIGN_CELLS,
            },
            "cells": cells.name,
        },
        "runs": {},
        "alignment": [],
    }
    # Every array here is small: BLAS threads cost more in hand-offs than they save (see stats.py).
    with progress(quiet) as bar, threadpool_limits(limits=1):
        for run in loaded:
            task = bar.add_task(f"kaomoji {run.label}", total=len(run.layers) + 6)
            tick = functools.partial(bar.advance, task, 1)
            stem = stems[run.label]
            entry: dict[str, Any] = {
                "path": run.path,
                "spec": run.spec,
                "n_prompts": len(run.prompts),
                "n_samples": len(run.samples),
                "layers": run.layers,
                "headline_layer": run.layer,
                "layer_rule": run.layer_rule,
            }
            h2c = _hidden_to_cell(
                run, cells, n_boot=n_boot, n_permutations=n_permutations, seed=seed, tick=tick
            )
            f2c = _face_to_cell(run, cells, n_boot=n_boot, n_permutations=n_permutations, seed=seed)
            tick()
            h2f = _hidden_to_face(run, floor=floor, n_boot=n_boot, n_permutations=n_permutations, seed=seed)
            tick()
            geo = _geometry(run, cells, floor=floor, n_boot=n_boot, n_permutations=n_permutations, seed=seed)
            sim = _face_similarity(run, cells, geo.pop("_standardised", None), floor)
            tick()
            figures: dict[str, dict[str, str]] = {}
            if not h2c["thin"]:
                figures["depth"] = _save(_fig_depth(run.label, h2c), out_dir, f"{stem}-depth")
                figures["confusion"] = _save(
                    _fig_confusion(run.label, h2c, f2c, cells), out_dir, f"{stem}-confusion"
                )
            if not geo["thin"]:
                figures["pca"] = _save(_fig_pca(run.label, geo, run.prompts, cells), out_dir, f"{stem}-pca")
                if not geo["faces"]["thin"]:
                    figures["faces_pca"] = _save(
                        _fig_faces(run.label, geo, cells), out_dir, f"{stem}-faces-pca"
                    )
                geo.pop("_scores")
            if not sim["thin"]:
                figures["face_similarity"] = _save(
                    _fig_heatmap(run.label, sim, cells), out_dir, f"{stem}-face-similarity"
                )
            tick()
            entry.update(
                hidden_to_cell=h2c,
                face_to_cell=f2c,
                hidden_to_face=h2f,
                geometry=geo,
                face_similarity=sim,
                figures=figures,
            )
            result["runs"][run.label] = entry
        for i, a in enumerate(loaded):
            for b in loaded[i + 1 :]:
                al = _align(a, b, cells, n_boot=n_boot, n_permutations=n_permutations, seed=seed)
                if not al.get("skipped") and not al.get("thin"):
                    stem = f"align-{stems[a.label]}--{stems[b.label]}"
                    al["figures"] = {"alignment": _save(_fig_alignment(al, cells), out_dir, stem)}
                result["alignment"].append(al)
    result = json_ready(result)
    write_json(out_dir / "analysis.json", result)
    return result


# ------------------------------------------------------------------------------------------- sections


def _with_ci(value: Any, ci: Any) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return f"{format_number(value)} [no interval]"
    return f"{format_number(value)} [{format_number(ci[0])}, {format_number(ci[1])}]"


def _p(d: dict, key: str = "p_value") -> str:
    p = d.get(key)
    if p is None:
        return "not tested"
    return f"{format_number(p)} (min {format_number(d.get('min_attainable_p'))}, {format_number(d.get('n_permutations'))} perms)"


def _thin_text(d: dict) -> str:
    return f"thin data: {d.get('reason', 'too little data')}"


def _figure(out: Path, figures: dict, key: str, caption: str) -> list[Figure]:
    return [Figure(out / figures[key]["png"], caption)] if key in figures else []


def sections(analysis: dict, out: str) -> list[Section]:
    """Report sections for an ``analyze`` result: hidden -> cell, face -> cell (and hidden -> face),
    geometry and alignment, face similarity heat maps. ``out`` is the folder ``analyze`` wrote into."""
    out_dir = Path(out)
    runs = analysis.get("runs", {})
    settings = analysis.get("settings", {})

    # ---- hidden -> cell
    h2c_blocks: list[str | Table | Figure] = [
        "Can the affect cell of a prompt be read off the model's hidden state at the last prompt token "
        f"(h_first)? One row per prompt; {settings.get('cv', CV)}; classifier: {settings.get('classifier', CLASSIFIER)}. "
        f"The headline layer is fixed in advance ({settings.get('layer_rule', LAYER_RULE)}), and only it "
        "carries a permutation test (cell labels shuffled between prompts, the whole cross-validation redone). "
        f"Intervals: {INTERVAL}. A high score says the prompts' cells are linearly separable in the hidden "
        "state; it does not say the model feels anything, nor that the separation is about emotion rather "
        "than other differences between the prompt sets.",
    ]
    rows = []
    for label, run in runs.items():
        h2c = run["hidden_to_cell"]
        if h2c["thin"]:
            rows.append({"run": label, "what": "—", "accuracy [95% CI]": _thin_text(h2c)})
            continue
        for what, d in (
            ("headline layer " + format_number(h2c["headline"]["layer"]), h2c["headline"]),
            ("all layers concatenated", h2c["all_layers"]),
        ):
            rows.append(
                {
                    "run": label,
                    "what": what,
                    "accuracy [95% CI]": _with_ci(d["accuracy"], d["accuracy_ci"]),
                    "macro-F1 [95% CI]": _with_ci(d["macro_f1"], d["macro_f1_ci"]),
                    "chance": format_number(d["chance"]),
                    "majority baseline": format_number(d["majority_baseline"]),
                    "p (permutation)": _p(d),
                    "n prompts": format_number(d["n"]),
                }
            )
    h2c_blocks.append(Table(pd.DataFrame(rows), caption="Cell from hidden state, out-of-fold."))
    for label, run in runs.items():
        h2c, figures = run["hidden_to_cell"], run.get("figures", {})
        if h2c["thin"]:
            continue
        head = h2c["headline"]
        h2c_blocks.append(
            f"{label}: at layer {format_number(head['layer'])} the cell is recovered for {format_number(head['accuracy'])} of "
            f"{format_number(head['n'])} prompts (95% CI {format_number(head['accuracy_ci'][0])} to {format_number(head['accuracy_ci'][1])}), "
            f"against chance {format_number(head['chance'])} and a majority baseline of {format_number(head['majority_baseline'])}; "
            f"permutation p = {_p(head)}. Layer rule: {head['layer_rule']}."
        )
        h2c_blocks += _figure(
            out_dir,
            figures,
            "depth",
            f"{label}: out-of-fold cell accuracy from h_first at each layer, with 95% bootstrap bands, chance, "
            "the majority baseline and the all-layers score. It shows where in depth the prompt sets are most "
            "linearly separable; the curve has no permutation test per layer and its peak was not used to pick "
            "the headline layer. It does not show what the features are, or that the model is in any state.",
        )
        h2c_blocks += _figure(
            out_dir,
            figures,
            "confusion",
            f"{label}: out-of-fold confusion matrices (rows: the prompt's cell; columns: predicted). Counts are "
            "printed; colour is the share of the row. It shows which cells the hidden state (and, where shown, "
            "the face) confuses with which; it does not show why.",
        )
    out_sections = [Section("Hidden state → cell", h2c_blocks)]

    # ---- face -> cell, hidden -> face
    f2c_blocks: list[str | Table | Figure] = [
        "Does the face alone tell which kind of prompt it followed? Each sample's face predicts the majority "
        "cell of that face in the training folds (folds grouped by prompt); a face never seen in training gets "
        "the training folds' majority cell. Accuracy is over samples that carry a face; coverage is the share "
        "of all samples that carry one. The permutation test shuffles cells between prompts and redoes the "
        "folds. This measures whether faces are used in consistent contexts, not what the model feels.",
    ]
    rows = []
    for label, run in runs.items():
        f2c = run["face_to_cell"]
        row = {
            "run": label,
            "coverage [95% CI]": _with_ci(f2c["coverage"], f2c["coverage_ci"]),
            "samples (with face / all)": f"{format_number(f2c['n_with_face'])} / {format_number(f2c['n_samples'])}",
            "distinct faces": format_number(f2c.get("n_faces", 0)),
        }
        if f2c["thin"]:
            row["accuracy [95% CI]"] = _thin_text(f2c)
        else:
            row.update(
                {
                    "accuracy [95% CI]": _with_ci(f2c["accuracy"], f2c["accuracy_ci"]),
                    "chance": format_number(f2c["chance"]),
                    "majority baseline": format_number(f2c["majority_baseline"]),
                    "seen-face share": format_number(f2c["seen_share"]),
                    "p (permutation)": _p(f2c),
                }
            )
        rows.append(row)
    f2c_blocks.append(Table(pd.DataFrame(rows), caption="Cell from face alone, out-of-fold."))
    f2c_blocks.append(
        "Can the face be read off h_first? Among samples whose face was emitted at least "
        f"{format_number(settings.get('floor', 3))} times, a classifier on h_first at the headline layer predicts the face "
        "(top-1), compared with always predicting the training folds' commonest face. The permutation test "
        "shuffles hidden states between prompts. Faces vary between samples of one prompt, so even a perfect "
        "reading of the hidden state cannot reach accuracy 1."
    )
    rows = []
    for label, run in runs.items():
        h2f = run["hidden_to_face"]
        if h2f["thin"]:
            rows.append({"run": label, "accuracy [95% CI]": _thin_text(h2f)})
            continue
        rows.append(
            {
                "run": label,
                "accuracy [95% CI]": _with_ci(h2f["accuracy"], h2f["accuracy_ci"]),
                "majority-face baseline": format_number(h2f["majority_baseline"]),
                "gain over baseline [95% CI]": _with_ci(
                    h2f["gain_over_majority"], h2f["gain_over_majority_ci"]
                ),
                "p (permutation)": _p(h2f),
                "faces": format_number(h2f["n_faces"]),
                "samples / prompts": f"{format_number(h2f['n_samples'])} / {format_number(h2f['n_prompts'])}",
            }
        )
    f2c_blocks.append(Table(pd.DataFrame(rows), caption="Face from hidden state, out-of-fold."))
    out_sections.append(Section("Face → cell", f2c_blocks))

    # ---- geometry and alignment
    geo_blocks: list[str | Table | Figure] = [
        "Where do prompts and faces sit in the hidden state? Per run, h_first at the headline layer, each "
        "feature standardised over prompts, then PCA. PCs have no inherent sign or order of meaning: PC1 and "
        "PC2 are paired with valence or arousal (whichever pairing correlates more) and flipped to correlate "
        "positively; all four correlations are listed. The pairing was chosen on these data."
    ]
    var_rows, cor_rows = [], []
    for label, run in runs.items():
        geo = run["geometry"]
        if geo["thin"]:
            var_rows.append({"run": label, "PC1 [95% CI]": _thin_text(geo)})
            continue
        var_rows.append(
            {"run": label, "layer": format_number(geo["layer"]), "n prompts": format_number(geo["n_prompts"])}
            | {
                f"PC{v['pc']} variance [95% CI]": _with_ci(v["ratio"], v["ci"])
                for v in geo["explained_variance"]
            }
        )
        for c in geo["correlations"]:
            cor_rows.append(
                {
                    "run": label,
                    "PC": f"PC{c['pc']}",
                    "axis": c["axis"] + (" (paired)" if c.get("paired") else ""),
                    "r [95% CI]": _thin_text(c) if c.get("thin") else _with_ci(c["r"], [c["lo"], c["hi"]]),
                    "p (permutation)": "n/a" if c.get("thin") else _p(c),
                    "n prompts": format_number(c.get("n", geo["n_prompts"])),
                }
            )
    geo_blocks.append(
        Table(
            pd.DataFrame(var_rows),
            caption="Share of variance of the first principal components, with 95% bootstrap intervals over prompts "
            "(repeated prompts in a resample push the interval upward).",
        )
    )
    if cor_rows:
        geo_blocks.append(
            Table(
                pd.DataFrame(cor_rows), caption="Pearson r of PC scores with the cells' valence and arousal."
            )
        )
    for label, run in runs.items():
        figures = run.get("figures", {})
        geo_blocks += _figure(
            out_dir,
            figures,
            "pca",
            f"{label}: each prompt's h_first projected on the first two principal components, coloured by the "
            "prompt's cell, with cell centroids. It shows how the prompt sets spread along the two directions "
            "of largest variance; it does not show emotion directions (large-variance axes may track length, "
            "topic or format), and distances in two PCs understate those in the full space.",
        )
        geo_blocks += _figure(
            out_dir,
            figures,
            "faces_pca",
            f"{label}: each frequent face placed at the mean hidden state of the prompts it followed, coloured "
            "by the cell it most often followed. A face near the sad prompts is a face that tends to appear in "
            "contexts the model's state places near sad prompts; it does not mean the model is sad when it "
            "uses it.",
        )
    align_rows = []
    for al in analysis.get("alignment", []):
        row = {"reference": al["reference"], "other": al["other"]}
        if al.get("skipped"):
            row["disparity [95% CI]"] = f"skipped: {al['reason']}"
        elif al.get("thin"):
            row["disparity [95% CI]"] = _thin_text(al)
        else:
            row.update(
                {
                    "disparity [95% CI]": _with_ci(al["disparity"], al["disparity_ci"]),
                    "disparity p": _p(al, "disparity_p_value"),
                    "RSA Spearman r [95% CI]": _with_ci(al["rsa"], al["rsa_ci"]),
                    "RSA p": _p(al, "rsa_p_value"),
                    "shared prompts / cells": f"{format_number(al['n_prompts'])} / {format_number(al['n_cells'])}",
                }
            )
        align_rows.append(row)
    if align_rows:
        geo_blocks.append(
            "Across runs on the same prompts: the cell centroids of each run are centred, put in their own "
            "principal axes and scaled to unit size; the other run is rotated onto the reference (orthogonal "
            "Procrustes, no scaling), and the disparity is the remaining squared mismatch (0 = same "
            "arrangement). RSA is the Spearman correlation of the two runs' cell-to-cell distances; both carry a "
            "permutation test that shuffles the other run's cell labels. Bootstrap intervals resample shared "
            "prompts; the extra centroid noise makes them lean toward worse agreement than the estimate."
        )
        geo_blocks.append(Table(pd.DataFrame(align_rows), caption="Cross-model alignment of cell centroids."))
    for al in analysis.get("alignment", []):
        if "figures" in al:
            geo_blocks += _figure(
                out_dir,
                al["figures"],
                "alignment",
                f"{al['other']} cell centroids rotated onto {al['reference']}'s (first two axes of the "
                "reference's centroid space; lines join the same cell). It shows whether the two models arrange "
                "the cells alike relative to each other; it does not show that they use the same features, and "
                "two axes hide part of the mismatch.",
            )
    out_sections.append(Section("Geometry and alignment", geo_blocks))

    # ---- heat maps
    heat_blocks: list[str | Table | Figure] = [
        "Which faces appear in similar hidden states? For faces emitted at least "
        f"{format_number(settings.get('floor', 3))} times: the mean standardised h_first of each face's samples, centred "
        "across faces, compared by cosine similarity and ordered by average-linkage clustering. Tick labels "
        "take the colour of the cell each face most often followed."
    ]
    for label, run in runs.items():
        sim = run["face_similarity"]
        if sim["thin"]:
            heat_blocks.append(
                f"{label}: {_thin_text(sim)} ({format_number(sim.get('n_samples', 0))} samples)."
            )
            continue
        heat_blocks += _figure(
            out_dir,
            run.get("figures", {}),
            "face_similarity",
            f"{label}: similarity of the contexts in which faces appear ({format_number(sim['n_faces'])} faces, "
            f"{format_number(sim['n_samples'])} samples). Faces in one block tend to appear after prompts whose hidden states "
            "resemble each other; it does not show that the faces mean the same thing, or that the model feels "
            "what a face depicts.",
        )
    out_sections.append(Section("Face similarity heat maps", heat_blocks))
    return out_sections
