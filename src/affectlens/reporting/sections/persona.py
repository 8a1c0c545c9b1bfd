"""The report's persona section: emoji that emerge from personality fine-tuning, against base and control.

Reads the dict that ``affectlens.api.persona.persona_compare`` writes as ``persona.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from affectlens.reporting.document import Figure, Section, Table
from affectlens.reporting.figures.persona import FIGURES, draw
from affectlens.reporting.format import estimate, interval, number

RATE_COLUMNS = {"esr": "ESR", "reply_emoji_rate": "replies with emoji", "kaomoji_rate": "replies with kaomoji",
                "first_token_mass": "emoji mass: first token", "sentence_end_mass": "emoji mass: sentence ends"}  # fmt: skip


def _num(key: str, value: Any) -> str:
    """Emoji mass is often far below 0.001: it prints in scientific notation."""
    if key.endswith("_mass") and isinstance(value, float) and value == value:
        return f"{value:.2e}"
    return number(value)


def _estimate(key: str, entry: dict[str, Any]) -> str:
    if not key.endswith("_mass"):
        return estimate(entry["value"], entry["ci"])
    return f"{_num(key, entry['value'])} [{_num(key, entry['ci'][0])}, {_num(key, entry['ci'][1])}]"


def _figures(result: dict[str, Any], out: Path) -> dict[str, Path]:
    drawn = {k: out / v["png"] for k, v in result.get("figures", {}).items()}
    if not drawn or not all(p.exists() for p in drawn.values()):
        drawn = {k: out / v["png"] for k, v in draw(result, out).items()}
    return {k: drawn[k] for k in FIGURES if k in drawn}


def persona_section(result: dict[str, Any], out: Path) -> Section:
    rows = []
    for m in result["models"]:
        row = {"model": m["label"], "questions": m["n_questions"]}
        row |= {title: _estimate(key, m[key]) for key, title in RATE_COLUMNS.items()}
        ic = m["in_context"]
        row["in-context: emoji in top 50"] = (
            f"{ic['emoji_in_top50']} {interval(*ic['ci'])} (n={ic['n_samples']})"
        )
        en = m.get("emoji_neurons") or {}
        if en:
            row["distinct emoji neurons: Jaccard (shuffled)"] = (
                f"{number(en['mean_jaccard'])} ({number(en['null_mean'])}, p {number(en['p'], 4)}, "
                f"{en['n_emoji']} emoji)"
            )
        rows.append(row)
    pairs = []
    for pair in result["pairs"]:
        row = {"comparison": f"{pair['b']} − {pair['a']}"}
        for key, title in (*RATE_COLUMNS.items(), ("in_context", "in-context")):
            row[title] = f"{_num(key, pair[key]['difference'])} (p {number(pair[key]['p'], 4)})"
        pairs.append(row)
    neurons = [
        {"base → model": f"{row['a']} → {row['b']}", "layer": row["deepest"]["layer"],
         "overlap with base's emoji neurons": row["deepest"]["overlap_before"], "p": number(row["deepest"]["p_before"], 4),
         "overlap with its own emoji neurons": row["deepest"]["overlap_after"], "p (own)": number(row["deepest"]["p_after"], 4),
         "random sets": number(row["deepest"]["expected"]), "max |shift| (base sd)": number(row["deepest"]["max_abs_shift"])}
        for row in result["neurons"]
    ]  # fmt: skip
    figures = _figures(result, out)
    settings = result.get("settings", {})
    blocks: list[str | Table | Figure] = [
        f"Trait: {result['trait']}. Every rate is pooled over held-out questions, with a "
        f"{number(settings.get('n_boot'))}-draw bootstrap interval over questions. Two models are compared by the "
        "difference of their pooled values; its p flips the sign of each question's difference in rate "
        f"({number(settings.get('n_permutations'))} permutations, two-sided), so a question's samples stay "
        "together and reply length is not tested along with the rate. The in-context test counts emoji among the 50 most frequent tokens a model lists when asked "
        "for tokens that stand for the trait; its interval and test resample the samples. Distinct emoji neurons: "
        "at the deepest layer, the mean pairwise overlap (Jaccard) of each emoji's top neurons, against emoji "
        "labels shuffled among the inserted emoji; lower than shuffled means different emoji use different neurons.",
        Table(pd.DataFrame(rows), "Per model: emoji rates and emoji probability mass, with 95% intervals."),
    ]
    if pairs:
        blocks.append(Table(pd.DataFrame(pairs), "Differences between models, with permutation p-values."))
    if neurons:
        blocks.append(Table(pd.DataFrame(neurons), (
            f"The deepest layer's top {result['neurons'][0]['top']} neurons by shift from the base, against the "
            "top emoji-activated neurons, with the overlap that random neuron sets of the same size give and its p.")))  # fmt: skip
    if "persona_rates" in figures:
        blocks.append(
            Figure(figures["persona_rates"], "Rates per model with 95% bootstrap intervals over questions.")
        )
    if "persona_neurons" in figures:
        blocks.append(Figure(figures["persona_neurons"], (
            "Per layer, how many of the most shifted neurons are also among the base's most emoji-activated ones; "
            "the dashed line is what random sets give. An overlap at the random line is no evidence of a shared code.")))  # fmt: skip
    return Section(f"Persona fine-tuning and emoji: {result['trait']}", blocks)
