"""``analyze_steering``: what steering along emotion directions did to the faces a model opens with.

Per (direction, alpha) the face rates, the encoder's cell distribution of the faces, the share on the
emotion's target cells, the projection on the emotion and the coherence measures; per direction the
dose-response slope with a cluster bootstrap over prompts (the unit of independence: a prompt's samples
share it, and every alpha reuses the same prompts), inside the emotion's coherent alpha range and over the
full range; and each emotion's and orthogonal direction's slope ranked among the random directions'.
The baseline (direction ``none``, alpha 0) is alpha 0 of every direction. Nothing is drawn or written here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from affectlens.analysis import steering_dose as dose
from affectlens.cells import CellSet, default_cells
from affectlens.errors import AffectlensError
from affectlens.store.atomic import json_ready
from affectlens.store.runs import BASELINE, STEER_COLUMNS, SteerRun, well_formed_mask

COHERENCE = ("reply_nll", "neutral_nll", "first_token_kl")
EXAMPLE_PROMPTS, EXAMPLE_CHARS = 3, 240
SCORE_RULES = {
    "target_share": "the encoder's probability mass on the target emotion's target cells",
    "valence": "the encoder's expected cell valence, sum over cells of P(cell | face) x the cell's valence",
}
FACE_RULE = (
    "rates count every reply; cell distributions and scores count the well-formed faces the encoder knows "
    "(unencoded_share: the well-formed faces it does not know, out of all well-formed faces)"
)
NO_ENCODER = "no encoder (likelihood run) given"
SKIPPED_WITHOUT_ENCODER = (
    "cell distributions", "target shares", "dose-response slopes", "valence slopes",
    "ranking against random directions",
)  # fmt: skip


@dataclass
class SteeringAnalysis:
    """Everything :func:`analyze_steering` found; ``to_json`` is what ``steering.json`` holds."""

    run: str
    model: dict[str, Any]
    settings: dict[str, Any]
    n_prompts: int
    n_replies: int
    directions: list[dict[str, Any]]  # one per direction: kind, emotion, coordinates, layers, norms
    emotions: dict[str, dict[str, Any]]  # by emotion: valence, arousal, cell, targets, coherent_range
    per_alpha: list[dict[str, Any]]  # one per (direction, alpha), alpha 0 the baseline
    slopes: list[dict[str, Any]]  # one per (direction, target emotion, score, range)
    controls: list[dict[str, Any]]  # one per (emotion, emotion | orthogonal direction, range)
    summary: list[dict[str, Any]]  # the report's slope table: controls rows of the primary range
    examples: list[dict[str, Any]]  # first sample of a few fixed prompts, per emotion and alpha
    skipped: list[str] = field(default_factory=list)

    def to_json(self, figures: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
        return json_ready({"analysis": "steering", **asdict(self), "figures": figures or {}})


def _directions(run: SteerRun, present: list[str]) -> pd.DataFrame:
    """One row per direction (the table has one per steered layer), indexed by direction."""
    table = run.directions
    if missing := sorted(set(present) - set(table["direction"]) - {BASELINE}):
        raise AffectlensError(f"{run.path}: directions table lacks {', '.join(missing)}")
    table = table[table["direction"] != BASELINE]
    first = table.groupby("direction", sort=False).first()
    for column in ("layer", "vector_norm", "n_L", "scale"):
        if column in table:
            first[column] = table.groupby("direction", sort=False)[column].agg(list)
    return first


def _encoder(face_cells: pd.DataFrame, cells: CellSet) -> pd.DataFrame:
    if missing := [code for code in cells.codes if code not in face_cells.columns]:
        raise AffectlensError(f"the encoder's face table lacks the {cells.name} cells {', '.join(missing)}")
    table = face_cells[cells.codes].astype(float)
    table = table[~table.index.duplicated()]
    return table.div(table.sum(axis=1), axis=0)  # rows should sum to 1 already; rounding is not trusted


def _with_baseline(frame: pd.DataFrame, direction: str) -> pd.DataFrame:
    """A direction's rows with the baseline's as its alpha 0 (its own alpha-0 rows only without a baseline)."""
    own = frame[frame["direction"] == direction]
    base = frame[frame["direction"] == BASELINE]
    return pd.concat([own[own["alpha"] != 0.0], base]) if len(base) else own


def _per_alpha(rows: pd.DataFrame, probs: np.ndarray | None, targets: dict[str, list[str]], cells: CellSet,
               valences: np.ndarray) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    for alpha, group in rows.groupby("alpha", sort=True):
        wf = group["_wf"].to_numpy()
        entry: dict[str, Any] = {
            "alpha": float(alpha),
            "n": len(group),
            "n_prompts": int(group["prompt_id"].nunique()),
            "well_formed_rate": float(wf.mean()),
            "no_face_rate": float(group["face"].isna().mean()),
            "emoji_rate": float((group["face_kind"] == "emoji").mean()),
            "n_well_formed": int(wf.sum()),
        }
        if probs is not None:
            p = probs[group["_row"].to_numpy()]
            known = ~np.isnan(p[:, 0])
            n_known = int(known.sum())
            entry["n_encoded"] = n_known
            entry["unencoded_share"] = (wf.sum() - n_known) / wf.sum() if wf.sum() else None
            mean = p[known].mean(axis=0) if n_known else np.full(len(cells), np.nan)
            entry["cells"] = dict(zip(cells.codes, mean, strict=True))
            entry["target_share"] = {
                e: float(mean[[cells.index(c) for c in t]].sum()) if n_known and t else None
                for e, t in targets.items()
            }
            entry["expected_valence"] = float(mean @ valences) if n_known else None
        out.append(entry)
    return out


def _coherence(run: SteerRun, direction: str) -> dict[str, dict[float, float]]:
    """Mean of each coherence measure by alpha, the baseline's at alpha 0."""
    rows = _with_baseline(run.coherence, direction)
    if rows.empty:
        return {}
    means = rows.groupby(["measure", "alpha"])["value"].mean()
    return {m: {float(a): float(v) for a, v in means[m].items()} for m in means.index.unique("measure")}


def _projection(run: SteerRun, direction: str, emotion: str) -> dict[float, tuple[float, int]]:
    """(mean projection on the emotion, n) by alpha."""
    table = _with_baseline(run.projections, direction)
    grouped = table[table["emotion"] == emotion].groupby("alpha")["projection"].agg(["mean", "size"])
    return {float(a): (float(r["mean"]), int(r["size"])) for a, r in grouped.iterrows()}


def _spread(prompts: list[str], cell_of: pd.Series) -> list[str]:
    """EXAMPLE_PROMPTS prompts in prompt order, a new cell's first prompt before any cell's second."""
    seen: dict[str, str] = {}
    for p in prompts:
        seen.setdefault(cell_of[p], p)
    firsts = list(seen.values())
    return (firsts + [p for p in prompts if p not in firsts])[:EXAMPLE_PROMPTS]


def _examples(generations: pd.DataFrame, emotions: dict[str, dict[str, Any]], prompts: list[str]
              ) -> list[dict[str, Any]]:  # fmt: skip
    """The first sample of EXAMPLE_PROMPTS fixed prompts, at every alpha of each emotion direction: the
    first prompt of each cell in prompt order, so the examples span cells where the design allows."""
    cell_of = generations.drop_duplicates("prompt_id").set_index("prompt_id")["cell"]
    chosen = _spread(prompts, cell_of)
    out = []
    for emotion, info in emotions.items():
        direction = info["direction"]
        if direction is None:
            continue
        rows = _with_baseline(generations, direction)
        rows = rows[rows["prompt_id"].isin(chosen)].sort_values(["alpha", "sample"])
        for (prompt, alpha), group in rows.groupby(["prompt_id", "alpha"], sort=True):
            first = group.iloc[0]
            reply = str(first["reply"])
            out.append({
                "emotion": emotion, "direction": direction, "prompt_id": prompt, "cell": first["cell"],
                "alpha": float(alpha), "sample": int(first["sample"]), "face": first["face"],
                "reply": reply if len(reply) <= EXAMPLE_CHARS else reply[: EXAMPLE_CHARS - 1] + "…",
            })  # fmt: skip
    return out


def _emotions(run: SteerRun, table: pd.DataFrame, g: pd.DataFrame, cells: CellSet, tolerance: float
              ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """By emotion: its coordinates, cell, direction, target cells and coherent range."""
    emotion_dirs = {table.loc[d, "emotion"]: d for d in table.index if table.loc[d, "kind"] == "emotion"}
    emotions: dict[str, dict[str, Any]] = {}
    for d in table.index[table["kind"].isin(["emotion", "orthogonal"])]:
        e, row = table.loc[d, "emotion"], table.loc[d]
        if e in emotions:
            continue
        direction = emotion_dirs.get(e)
        info = {k: row.get(k) for k in ("valence", "arousal", "cell")}
        info |= {
            "direction": direction,
            "targets": dose.target_cells(info["valence"], info["arousal"], cells),
        }
        grid = sorted(_with_baseline(g, direction)["alpha"].unique()) if direction else []
        curves = _coherence(run, direction) if direction else {}
        info["coherent_range"] = dose.coherent_range(curves, grid, tolerance) if grid else None
        emotions[e] = info
    return emotions


def _encode(g: pd.DataFrame, face_cells: pd.DataFrame, cells: CellSet) -> np.ndarray:
    """[n_replies, n_cells] the encoder's row of each reply's face; NaN where it is not a well-formed face
    the encoder knows."""
    encoder = _encoder(face_cells, cells)
    known = g["_wf"].to_numpy() & g["face"].isin(encoder.index).to_numpy()
    probs = np.full((len(g), len(cells)), np.nan)
    probs[known] = encoder.loc[g["face"][known]].to_numpy()
    return probs


def _direction_rows(run: SteerRun, d: str, kind: str, emotion: str | None, entries: list[dict[str, Any]]
                    ) -> list[dict[str, Any]]:  # fmt: skip
    """The per-alpha entries of a direction with its coherence and projection added."""
    curves = _coherence(run, d)
    projection = _projection(run, d, emotion) if kind != "random" and emotion else {}
    base_nll = curves.get("reply_nll", {}).get(0.0)
    out = []
    for entry in entries:
        a = entry["alpha"]
        row = {"direction": d, "kind": kind, "emotion": emotion, **entry}
        row |= {m: curves.get(m, {}).get(a) for m in COHERENCE}
        row["reply_nll_ratio"] = row["reply_nll"] / base_nll if row["reply_nll"] and base_nll else None
        row["projection"], row["projection_n"] = projection.get(a, (None, 0))
        out.append(row)
    return out


def _slopes(rows: pd.DataFrame, scores: dict[str, np.ndarray], meta: dict[str, Any],
            emotions: dict[str, dict[str, Any]], order: list[str], boot: np.ndarray) -> list[dict[str, Any]]:  # fmt: skip
    """Slopes of each score of a direction's replies (by target emotion, and "valence"), over the full
    alpha range and over the target emotion's coherent range."""
    out = []
    grid_all = sorted(rows["alpha"].unique())
    prompt_ids, alphas = rows["prompt_id"].to_numpy(), rows["alpha"].to_numpy()
    for target, score in scores.items():
        is_valence = target == "valence"
        emotion = meta["emotion"] if is_valence else target
        ranges = {"full": grid_all}
        span = emotions[emotion]["coherent_range"] if emotion in emotions else None
        if span and not (is_valence and meta["kind"] == "random"):
            ranges["coherent"] = [a for a in grid_all if span["lo"] <= a <= span["hi"]]
        for name, grid in ranges.items():
            inside = np.isin(alphas, grid)
            means, counts = dose.prompt_matrix(prompt_ids[inside], alphas[inside], score[inside], order, grid)
            out.append(
                {**meta, "emotion": emotion, "score": "valence" if is_valence else "target_share",
                 "range": name, **dose.slope_summary(means, counts, grid, boot)}
            )  # fmt: skip
    return out


def analyze_steering(
    run: SteerRun,
    face_cells: pd.DataFrame | None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    tolerance: float = 0.10,
    cells: CellSet | None = None,
) -> SteeringAnalysis:
    """Analyse a finished steer run; ``face_cells`` (a likelihood run's face table) maps faces to cells.

    Without ``face_cells`` everything that needs no encoder (rates, projections, coherence, coherent ranges)
    is computed and ``skipped`` says what was not. See the module docstring for what is measured.
    """
    cells = cells or default_cells()
    g = run.generations
    if missing := [c for c in STEER_COLUMNS if c not in g.columns]:
        raise AffectlensError(f"{run.path}: generations lack the columns {', '.join(missing)}")
    g = g.assign(alpha=g["alpha"].astype(float), _wf=well_formed_mask(g).to_numpy(), _row=np.arange(len(g)))
    table = _directions(run, list(g["direction"].unique()))
    emotions = _emotions(run, table, g, cells, tolerance)
    targets = {e: info["targets"] for e, info in emotions.items()}
    valences = np.array([c.valence for c in cells.cells])
    skipped: list[str] = []
    probs = None
    if face_cells is None:
        skipped += [f"{what}: {NO_ENCODER}" for what in SKIPPED_WITHOUT_ENCODER]
    else:
        probs = _encode(g, face_cells, cells)
    if empty := [e for e, t in targets.items() if not t]:
        skipped.append(f"target shares of {', '.join(empty)}: no target cells under the rule")

    listed = list(run.prompts["id"]) if "id" in run.prompts else []
    present = set(g["prompt_id"])
    order = [p for p in listed if p in present] or list(dict.fromkeys(g["prompt_id"]))
    boot = dose.prompt_weights(g.groupby("prompt_id")["cell"].first().loc[order].tolist(), n_boot, seed)

    per_alpha: list[dict[str, Any]] = []
    slopes: list[dict[str, Any]] = []
    for d in table.index:
        kind = table.loc[d, "kind"]
        emotion = table.loc[d, "emotion"] if kind != "random" else None
        rows = _with_baseline(g, d)
        scored = {emotion: targets[emotion]} if emotion in targets else targets
        entries = _per_alpha(rows, probs, scored, cells, valences)
        per_alpha += _direction_rows(run, d, kind, emotion, entries)
        if probs is not None:
            p = probs[rows["_row"].to_numpy()]
            scores = {e: p[:, [cells.index(c) for c in t]].sum(axis=1) for e, t in scored.items() if t}
            scores["valence"] = p @ valences
            slopes += _slopes(rows, scores, {"direction": d, "kind": kind, "emotion": emotion}, emotions,
                              order, boot)  # fmt: skip

    controls = _controls(slopes, emotions)
    summary = [r for r in controls if r["range"] == ("coherent" if r["coherent_range"] else "full")]
    settings = {
        "n_boot": n_boot, "seed": seed, "tolerance": tolerance, "cells": cells.name, "ci_level": 0.95,
        "significance": dose.SIGNIFICANCE, "unit_of_independence": "prompt",
        "target_rule": dose.TARGET_RULE, "coherent_rule": dose.coherent_rule(tolerance),
        "slope_rule": dose.SLOPE_RULE, "control_rule": dose.CONTROL_RULE, "scores": SCORE_RULES,
        "faces": FACE_RULE, "baseline": f"direction {BASELINE!r} at alpha 0, alpha 0 of every direction",
        "encoder": face_cells is not None, "coherence": "mean of the coherence table's value over its items",
        "examples": f"the first sample of {EXAMPLE_PROMPTS} fixed prompts (each cell's first), every alpha",
    }  # fmt: skip
    directions = [{"direction": d, **table.loc[d].to_dict()} for d in table.index]
    return SteeringAnalysis(
        run=run.path, model={"spec": run.spec}, settings=settings, n_prompts=len(order), n_replies=len(g),
        directions=directions, emotions=emotions, per_alpha=per_alpha, slopes=slopes, controls=controls,
        summary=summary, examples=_examples(g, emotions, order), skipped=skipped,
    )  # fmt: skip


def _controls(slopes: list[dict[str, Any]], emotions: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each emotion's and orthogonal direction's target-share slope ranked among the random directions'
    (same targets, same alpha range)."""
    shares = [s for s in slopes if s["score"] == "target_share"]
    kept = ("alpha_lo", "alpha_hi", "n_alphas", "slope", "ci", "n_prompts", "n_replies", "n_boot")
    out = []
    for emotion, info in emotions.items():
        span = info["coherent_range"]
        for name in ("coherent", "full"):
            same = [s for s in shares if s["emotion"] == emotion and s["range"] == name]
            randoms = [s["slope"] for s in same if s["kind"] == "random"]
            for s in same:
                if s["kind"] == "random":
                    continue
                rank = dose.rank_against(s["slope"], randoms)
                lo, p = s["ci"][0], rank["p_value"]
                above = lo is not None and lo > 0
                out.append(
                    {"emotion": emotion, "direction": s["direction"], "kind": s["kind"], "range": name,
                     "coherent_range": [span["lo"], span["hi"]] if span else None, **{k: s[k] for k in kept},
                     **rank, "ci_above_zero": above,
                     "significant": above and p is not None and p <= dose.SIGNIFICANCE,
                     **({"reason": s["reason"]} if "reason" in s else {})}
                )  # fmt: skip
    return out
