"""Ensembles of encoders: the average of several, the lookup table of the best, and the search for it.

An ensemble averages its members' per-face distributions. :func:`subset_search` ranks every subset of the
encoders on the faces all of them and the truth share, and scores the best one honestly: a held-out score
from repeated cross-fitting over faces (:func:`affectlens.analysis.selection.crossfit`) beside the in-sample
one, and the two know-nothing baselines (:func:`affectlens.analysis.similarity.baselines`) on the same faces.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from affectlens.analysis import selection
from affectlens.analysis.similarity import (
    COMMON,
    INTERVAL_KEYS,
    MIN_FACES,
    N_SPLITS,
    _check_names,
    _encoder_frame,
    _matrix,
    _summarise,
    baselines,
    check_encoder,
    js_similarity,
)
from affectlens.cells import CellSet, default_cells
from affectlens.errors import AffectlensError

HELDOUT_KEYS = tuple(f"heldout_{key}" for key in ("face_uniform", "emit_weighted", *INTERVAL_KEYS))
CHUNK_VALUES = 1 << 22  # subset averages built at once (floats): about 32 MB


def average_encoders(encoders: Sequence[pd.DataFrame], cells: CellSet | None = None) -> pd.DataFrame:
    """The ensemble: the mean of the members' distributions on the faces every member scores.

    Faces keep the first member's order; n is the members' summed n (all the emits behind the face).
    """
    cells = cells or default_cells()
    if not encoders:
        raise AffectlensError("average_encoders needs at least one encoder")
    for frame in encoders:
        check_encoder(frame, cells)
    common = encoders[0].index
    for frame in encoders[1:]:
        common = common[common.isin(frame.index)]
    faces = list(common)
    matrix = np.mean([_matrix(frame.loc[faces], cells) for frame in encoders], axis=0)
    n = np.sum([frame.loc[faces, "n"].to_numpy() for frame in encoders], axis=0)
    return _encoder_frame(faces, matrix.reshape(len(faces), len(cells)), n, cells)


def lookup_table(encoders: dict[str, pd.DataFrame], cells: CellSet | None = None) -> pd.DataFrame:
    """Every face any member scores, with its distribution averaged over the members that scored it.

    Faces come in order of first appearance (members in dict order); ``members`` names the members that
    scored the face, comma-joined; n is their summed n.
    """
    cells = cells or default_cells()
    if not encoders:
        raise AffectlensError("lookup_table needs at least one encoder")
    _check_names(list(encoders))
    for frame in encoders.values():
        check_encoder(frame, cells)
    faces = list(dict.fromkeys(face for frame in encoders.values() for face in frame.index))
    # NaN marks "not scored" so nanmean averages over exactly the members that scored each face.
    stacked = np.stack([_matrix(frame.reindex(faces), cells) for frame in encoders.values()])
    matrix = np.nanmean(stacked, axis=0) if faces else np.empty((0, len(cells)))
    n = sum(frame["n"].reindex(faces, fill_value=0).to_numpy() for frame in encoders.values())
    table = _encoder_frame(faces, matrix, n, cells)
    table["members"] = [",".join(name for name, f in encoders.items() if face in f.index) for face in faces]
    return table


def _subset_sims(mats: np.ndarray, subsets: list[tuple[int, ...]], target: np.ndarray) -> np.ndarray:
    """Similarity to ``target`` of every subset's average, shape (subsets, faces); ``mats`` is (k, faces, cells)."""
    k, n_faces, n_cells = mats.shape
    weights = np.zeros((len(subsets), k))
    for row, subset in enumerate(subsets):
        weights[row, list(subset)] = 1.0 / len(subset)
    flat, sims = mats.reshape(k, -1), np.empty((len(subsets), n_faces))
    step = max(1, CHUNK_VALUES // max(1, flat.shape[1]))
    for start in range(0, len(subsets), step):
        block = weights[start : start + step]
        averages = (block @ flat).reshape(-1, n_cells)
        targets = np.broadcast_to(target, (len(block), n_faces, n_cells)).reshape(-1, n_cells)
        sims[start : start + len(block)] = np.asarray(js_similarity(averages, targets)).reshape(-1, n_faces)
    return sims


def _heldout(
    sims: np.ndarray, weights: np.ndarray, size: np.ndarray, best: int, members: list[str], **options: Any
) -> tuple[dict[str, float], dict[str, Any]]:
    """(the best row's held-out columns, the held-out facts for ``attrs``) from repeated cross-fitting."""
    n_faces, n_splits, seed = sims.shape[1], options["n_splits"], options["seed"]
    meta: dict[str, Any] = {
        "heldout_method": (
            f"repeated {selection.N_FOLDS}-fold cross-fitting over faces: {n_splits} seeded random halvings "
            f"(seed {seed}); in each, the subset ranked best on one half scores the faces of the other, and "
            "each face's held-out score is averaged over the halvings. It estimates choosing on half the "
            "faces, so it leans conservative. The interval is a bootstrap over faces that repeats the "
            "choosing in every resample."
        ),
        "heldout_splits": n_splits,
        "heldout_folds": selection.N_FOLDS,
        "heldout_seed": seed,
        "heldout_n_select": n_faces // 2,
        "heldout_n_score": n_faces,
        "heldout_choices": {},
        "heldout_thin": n_faces < selection.N_FOLDS * MIN_FACES,
        "heldout_reason": None,
    }
    values = dict.fromkeys((*HELDOUT_KEYS, "heldout_agree"), math.nan)
    if meta["heldout_thin"]:
        meta["heldout_reason"] = (
            f"only {n_faces} face(s) common to every encoder and the truth at floor {options['floor']}; "
            f"held-out scoring needs {selection.N_FOLDS * MIN_FACES}"
        )
        return values, meta
    found = selection.heldout_estimate(
        sims, weights, size, n_splits=n_splits, n_boot=options["n_boot"], seed=seed
    )
    for key in HELDOUT_KEYS:
        value = found[key.removeprefix("heldout_")]
        values[key] = math.nan if value is None else value
    picks = found["picks"]
    values["heldout_agree"] = float(np.mean(picks == best))
    meta["heldout_choices"] = {members[i]: count for i, count in Counter(picks.tolist()).most_common()}
    return values, meta


def subset_search(
    encoders: dict[str, pd.DataFrame],
    truth: pd.DataFrame,
    *,
    floor: int = 1,
    max_members: int = 12,
    n_boot: int = 1000,
    seed: int = 0,
    n_splits: int = N_SPLITS,
    cells: CellSet | None = None,
) -> pd.DataFrame:
    """Rank every non-empty subset of encoders, as an averaged ensemble, by emit-weighted similarity.

    All subsets, singles included, are scored on the same faces: those every encoder and the truth
    (n >= ``floor``) share (``face_set`` ``"common"``), so rows differ only by their members. Columns:
    members (comma-joined), size, face_uniform, emit_weighted, n_faces, n_emits, the 95% interval
    columns, face_set, and the :func:`baselines` on these faces (``uniform_*``, ``marginal_*``, the same in
    every row). Sorted best first (ties: higher face_uniform, then fewer members).

    Only the best row gets intervals, and they are in-sample: the subset was picked on these very faces,
    so its score and interval flatter it (the maximum of many noisy means). The best row's ``heldout_*``
    columns are the honest number: repeated 2-fold cross-fitting, each face scored by the subset chosen
    on the other half (see :func:`affectlens.analysis.selection.crossfit`), with ``heldout_agree`` the share
    of folds that chose this row's members. ``attrs`` say how: heldout_method, heldout_splits,
    heldout_folds, heldout_seed, heldout_n_select (faces each choice saw), heldout_n_score (faces scored
    held out), heldout_choices (members -> folds that chose them), heldout_thin and heldout_reason (fewer
    than 6 common faces: no held-out score).
    """
    cells = cells or default_cells()
    names = list(encoders)
    if not names:
        raise AffectlensError("subset_search needs at least one encoder")
    if len(names) > max_members:
        raise AffectlensError(
            f"subset_search over {len(names)} encoders would score {2 ** len(names) - 1} subsets; "
            f"the limit is {max_members} encoders"
        )
    if n_splits < 1:
        raise AffectlensError(f"n_splits must be at least 1, got {n_splits}")
    _check_names(names)
    check_encoder(truth, cells)
    for frame in encoders.values():
        check_encoder(frame, cells)
    faces = truth.index[truth["n"].to_numpy() >= floor]
    for frame in encoders.values():
        faces = faces[faces.isin(frame.index)]
    if len(faces) == 0:
        raise AffectlensError(f"no face is scored by every encoder and by the truth at floor {floor}")
    weights = truth.loc[faces, "n"].to_numpy(dtype=np.float64)
    subsets = [s for k in range(1, len(names) + 1) for s in itertools.combinations(range(len(names)), k)]
    size = np.array([len(s) for s in subsets])
    mats = np.stack([_matrix(encoders[name].loc[faces], cells) for name in names])
    sims = _subset_sims(mats, subsets, _matrix(truth.loc[faces], cells))
    emit = sims @ weights / weights.sum() if weights.sum() > 0 else np.full(len(subsets), math.nan)
    order = selection.rank_order(emit, sims.mean(axis=1), size)
    members = [",".join(names[i] for i in subset) for subset in subsets]
    table = pd.DataFrame(
        {
            "members": members,
            "size": size,
            "face_uniform": sims.mean(axis=1),
            "emit_weighted": emit,
            "n_faces": len(faces),
            "n_emits": int(weights.sum()),
        }
    ).iloc[order]
    table = table.reset_index(drop=True)
    options = {"n_boot": n_boot, "seed": seed, "floor": floor}
    best = _summarise(sims[order[0]], weights, **options)
    heldout, meta = _heldout(sims, weights, size, int(order[0]), members, n_splits=n_splits, **options)
    for key, value in {**{key: best[key] for key in INTERVAL_KEYS}, **heldout}.items():
        table[key] = np.nan
        table.loc[0, key] = np.nan if value is None else value
    table["face_set"] = COMMON
    for key, value in baselines(truth, faces, cells).items():
        table[key] = np.nan if value is None else value
    table.attrs.update({**options, "thin": best["thin"], "face_set": COMMON, **meta})
    return table
