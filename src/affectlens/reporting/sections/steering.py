"""The steering analysis in words: dose-response against random controls, coherence, and example replies.

Reads the dict that ``affectlens.api.steering.analyze_steer_run`` returns and writes as ``steering.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from affectlens.reporting.document import Figure, Section, Table
from affectlens.reporting.figures.steering import FIGURES, draw
from affectlens.reporting.format import MISSING, estimate, interval, number

Blocks = list[str | Table | Figure]


def _figures(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """PNG by figure name: the ones the analysis drew beside its JSON, else drawn there now."""
    drawn = {k: out / v["png"] for k, v in result.get("figures", {}).items()}
    if not drawn or not all(p.exists() for p in drawn.values()):
        drawn = {k: out / v["png"] for k, v in draw(result, out).items()}
    return {k: drawn[k] for k in FIGURES if k in drawn}


def _p(row: dict[str, Any]) -> str:
    """A rank p against the random directions with the smallest p their number allows."""
    p, floor = row.get("p_value"), row.get("min_attainable_p")
    if p is None:
        return "not tested"
    digits = max(3, math.ceil(-math.log10(2 * floor))) if floor else 3
    return f"{number(p, digits)} (min {number(floor, digits)}, {number(row['n_random'])} random)"


def _range(span: list[float] | None) -> str:
    return interval(*span, missing="not measured") if span else "not measured"


def _verdict(result: dict[str, Any]) -> str:
    """Which slopes are significant, said plainly, with the floor the controls put on p."""
    rows, level = result["summary"], result["settings"]["significance"]
    if not rows:
        return "No slope was tested, so nothing here is significant."
    hits = [f"{r['direction']} ({number(r['slope'])})" for r in rows if r["significant"]]
    floors = [r["min_attainable_p"] for r in rows if r.get("min_attainable_p") is not None]
    floor_note = ""
    if floors and min(floors) > level:
        floor_note = (
            f" With {number(max(r['n_random'] for r in rows))} random directions the smallest attainable p is "
            f"{number(min(floors))}, above {number(level)}: no direction can pass the control test here, "
            "however large its slope; a run with more random directions can."
        )
    if untested := sum(r["slope"] is None for r in rows):
        floor_note += (
            f" {number(untested)} of {number(len(rows))} slopes could not be estimated (too few alphas with "
            "an encoded face)."
        )
    if not hits:
        return (
            f"**No steering slope is significant**: no emotion or orthogonal direction has a slope whose 95% "
            f"interval lies above 0 and whose rank among the random directions gives p <= {number(level)}."
            + floor_note
        )
    return (
        f"Significant (95% interval above 0 and p <= {number(level)} against the random directions): "
        f"{', '.join(hits)}. Every other slope is not." + floor_note
    )


def _slope_table(result: dict[str, Any]) -> Table:
    full = {(r["direction"], r["emotion"]): r for r in result["controls"] if r["range"] == "full"}
    rows = []
    for r in result["summary"]:
        whole = full.get((r["direction"], r["emotion"]), {})
        rows.append(
            {
                "emotion": r["emotion"],
                "direction": r["direction"],
                "coherent range": _range(r["coherent_range"]),
                "slope [95% CI]": estimate(r["slope"], r["ci"])
                + (f" ({r['reason']})" if "reason" in r else ""),
                "p vs random": _p(r),
                "n prompts": number(r["n_prompts"]),
                "n replies": number(r["n_replies"]),
                "full-range slope [95% CI]": estimate(whole.get("slope"), whole.get("ci")),
                "significant": "yes" if r["significant"] else "no",
            }
        )
    return Table(
        pd.DataFrame(rows),
        "Target share against alpha: slope per unit alpha inside each emotion's coherent range (the full "
        "range beside it), 95% interval by cluster bootstrap over prompts, stratified by cell; p is the "
        "one-sided rank among the random directions' slopes on the same targets and range, (k + 1) / "
        "(n + 1). n prompts is the number of independent units; replies are samples of them.",
    )


def _per_alpha_table(result: dict[str, Any]) -> Table:
    rows = []
    for r in result["per_alpha"]:
        if r["kind"] != "emotion":
            continue
        share = (r.get("target_share") or {}).get(r["emotion"])
        rows.append(
            {
                "direction": r["direction"],
                "alpha": number(r["alpha"]),
                "n": number(r["n"]),
                "well-formed face": number(r["well_formed_rate"]),
                "no face": number(r["no_face_rate"]),
                "emoji": number(r["emoji_rate"]),
                "unencoded": number(r.get("unencoded_share")),
                "target share": number(share),
                "projection": number(r.get("projection")),
                "reply NLL ratio": number(r.get("reply_nll_ratio")),
                "first-token KL": number(r.get("first_token_kl")),
            }
        )
    return Table(
        pd.DataFrame(rows),
        "Each emotion direction by alpha (alpha 0: the unsteered baseline). Rates count every reply; the "
        "target share counts the well-formed faces the encoder knows, and 'unencoded' is the share of "
        "well-formed faces it does not know (counted, not dropped). Projection: the state at the read layer "
        f"on the emotion's unit vector. {MISSING}: not measured.",
    )


def _valence_table(result: dict[str, Any]) -> Table | None:
    rows = [
        {
            "direction": s["direction"],
            "kind": s["kind"],
            "range": s["range"],
            "alphas": interval(s["alpha_lo"], s["alpha_hi"]),
            "valence slope [95% CI]": estimate(s["slope"], s["ci"]),
            "n prompts": number(s["n_prompts"]),
        }
        for s in result["slopes"]
        if s["score"] == "valence" and s["kind"] != "random"
    ]
    if not rows:
        return None
    return Table(
        pd.DataFrame(rows),
        "Secondary score: the encoder's expected cell valence of the faces against alpha (same bootstrap). "
        "Not ranked against the controls.",
    )


def _examples(result: dict[str, Any], spec: str) -> Section | None:
    examples = result.get("examples") or []
    if not examples:
        return None
    blocks: Blocks = [
        "The first sample of the same few prompts at every alpha of each emotion direction (alpha 0: the "
        "unsteered reply). Replies are cut at a fixed length. They illustrate; they are not evidence."
    ]
    for emotion in dict.fromkeys(e["emotion"] for e in examples):
        # One row per alpha, one column per prompt: reading down a column shows one prompt being steered.
        table: dict[str, dict[str, str]] = {}
        for e in examples:
            if e["emotion"] == emotion:
                table.setdefault(number(e["alpha"]), {"alpha": number(e["alpha"])})[
                    f"{e['prompt_id']} ({e['cell']})"
                ] = e["reply"]
        blocks.append(Table(pd.DataFrame(list(table.values())), f"Steering along {emotion}: first replies."))
    return Section(f"Steering examples: {spec}", blocks, level=3)


def sections(result: dict[str, Any], out: Path | str) -> list[Section]:
    """Report sections for one steering.json result found in folder ``out``."""
    out = Path(out)
    spec = result["model"]["spec"]
    png = _figures(result, out)
    kinds = [d["kind"] for d in result["directions"]]
    settings = result["settings"]
    encoder = settings.get("encoder_run") or {}
    mapped = (
        f"Faces are mapped to cells by the face table of a likelihood run of {encoder['spec']}."
        if encoder
        else "No encoder was given, so no face was mapped to a cell."
    )
    blocks: Blocks = [
        f"Replies elicited while alpha x unit(v) x n_L is added to the residual stream, along "
        f"{kinds.count('emotion')} emotion directions, {kinds.count('orthogonal')} orthogonal ones (each "
        f"emotion with the other steered emotions projected out) and {kinds.count('random')} norm-matched "
        f"random directions; n = {number(result['n_prompts'])} prompts, {number(result['n_replies'])} "
        f"replies. {mapped} Targets: {settings['target_rule']}. Coherent range: {settings['coherent_rule']}.",
        _verdict(result),
    ]
    if result.get("skipped"):
        blocks.append("Not computed: " + "; ".join(result["skipped"]) + ".")
    if "steering_dose" in png:
        blocks.append(
            Figure(
                png["steering_dose"],
                "Share of faces on each emotion's target cells against alpha: the emotion direction (solid), "
                "its orthogonal direction (dashed), the random directions' band, and the coherent range "
                "(shaded). A face that follows a steered direction does not show what the model feels.",
            )
        )
    if result["summary"]:
        blocks.append(_slope_table(result))
    if "steering_coherence" in png:
        blocks.append(
            Figure(
                png["steering_coherence"],
                "Coherence against alpha: mean reply NLL relative to alpha 0, and the KL of the first reply "
                "token from the unsteered model, per direction, with the random directions' band.",
            )
        )
    blocks.append(_per_alpha_table(result))
    if (valence := _valence_table(result)) is not None:
        blocks.append(valence)
    found = [Section(f"Steering: {spec}", blocks)]
    if (examples := _examples(result, spec)) is not None:
        found.append(examples)
    return found
