"""Persona measure runs compared: emoji rates, emoji mass, the in-context test and the neurons, with statistics.

The unit of independence is the held-out question: a question's samples share its prompt, so every rate is
pooled per question, its interval resamples questions, and two models are compared by swapping their values
within questions. The in-context test's unit is the sample (one prompt, independent draws).

Neurons, per layer: the **shift** of neuron ``d`` from model A (before) to B (after) is the mean over questions
of B − A at the last prompt token, in units of A's standard deviation over questions. The **emoji score** is
the mean over emoji-bearing texts of (activation on the emoji's tokens − on the other tokens), over that
difference's standard deviation. The overlap of the ``top`` most shifted (by |shift|) and the ``top`` most
emoji-activated neurons is tested against random neuron sets of the same size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affectlens.errors import AffectlensError
from affectlens.sentences import is_emoji_item, top_items
from affectlens.stats.paired import overlap_test, paired_rate_test, pooled, ratio_ci, two_sample_test
from affectlens.store.persona import MeasureRun, read_measure

EPS = 1e-6
TOP_ITEMS = 50

# measure -> (numerator, denominator) columns of the per-question table
MEASURES = {
    "esr": ("emoji_sentences", "sentences"),
    "reply_emoji_rate": ("emoji_replies", "replies"),
    "kaomoji_rate": ("kaomoji_replies", "replies"),
    "first_token_mass": ("first_token", "one"),
    "sentence_end_mass": ("sentence_end", "one"),
}


def per_question(run: MeasureRun) -> dict[str, np.ndarray]:
    """Each measure's numerator and denominator per held-out question, in the run's question order."""
    replies = run.replies.groupby("question_id", sort=False)
    order = list(replies.groups)
    mass = run.mass.copy()
    first = mass[mass.context == "first_token"].set_index("question_id")["mass"]
    ends = mass[mass.context.str.startswith("end:") & (mass.n > 0)].copy()
    ends["weighted"] = ends["mass"] * ends["n"]
    end_sums = ends.groupby("question_id")[["weighted", "n"]].sum()
    end_mean = end_sums["weighted"] / end_sums["n"]
    return {
        "question_id": np.array(order),
        "sentences": replies["n_sentences"].sum().loc[order].to_numpy(float),
        "emoji_sentences": replies["n_emoji_sentences"].sum().loc[order].to_numpy(float),
        "replies": replies.size().loc[order].to_numpy(float),
        "emoji_replies": replies["has_emoji"].sum().loc[order].to_numpy(float),
        "kaomoji_replies": replies["has_kaomoji"].sum().loc[order].to_numpy(float),
        "first_token": first.loc[order].to_numpy(float),
        "sentence_end": end_mean.reindex(order).to_numpy(float),
        "one": np.ones(len(order)),
    }


def _finite(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(num) & np.isfinite(den)
    return num[keep], den[keep]


def incontext_items(run: MeasureRun) -> list[list[str]]:
    return [json.loads(items) for items in run.incontext["items"]]


def emoji_in_top(samples: Sequence[Sequence[str]], k: int = TOP_ITEMS) -> int:
    """How many of the ``k`` most frequent listed items are emoji."""
    return sum(is_emoji_item(item) for item, _ in top_items(samples, k))


def _interval_over_samples(samples: list[list[str]], n_boot: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    stats = [
        emoji_in_top([samples[i] for i in rng.integers(0, len(samples), len(samples))]) for _ in range(n_boot)
    ]
    lo, hi = np.quantile(stats, [0.025, 0.975])
    return float(lo), float(hi)


def model_rates(
    run: MeasureRun, *, n_boot: int = 1000, n_permutations: int = 1000, seed: int = 0
) -> dict[str, Any]:
    table = per_question(run)
    out: dict[str, Any] = {
        "label": run.label,
        "spec": run.entry["model"]["spec"],
        "n_questions": len(table["one"]),
    }
    for name, (num, den) in MEASURES.items():
        n, d = _finite(table[num], table[den])
        out[name] = {"value": pooled(n, d), "ci": ratio_ci(n, d, n_boot=n_boot, seed=seed), "n": len(n)}
    samples = incontext_items(run)
    listed = sum(len(s) for s in samples)
    diff, labels = per_emoji_differences(run, -1)
    out["emoji_neurons"] = emoji_distinctness(diff, labels, list(run.occurrences.question_id),
                                              n_permutations=n_permutations, seed=seed)  # fmt: skip
    out["in_context"] = {
        "emoji_in_top50": emoji_in_top(samples),
        "ci": _interval_over_samples(samples, n_boot, seed),
        "n_samples": len(samples),
        "emoji_share_of_items": sum(is_emoji_item(i) for s in samples for i in s) / listed
        if listed
        else float("nan"),
        "top10": [item for item, _ in top_items(samples, 10)],
    }
    return out


def compare_pair(
    a: MeasureRun, b: MeasureRun, *, n_permutations: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """B − A on every measure: the mean over questions of the difference in rate, whose p sign-flips each
    question's difference (``pooled_difference``, of the pooled values, is descriptive); and the in-context
    test unpaired over samples."""
    ta, tb = per_question(a), per_question(b)
    if list(ta["question_id"]) != list(tb["question_id"]):
        raise AffectlensError(
            f"{a.root} and {b.root} measured different questions; measure both on one corpus"
        )
    out: dict[str, Any] = {"a": a.label, "b": b.label}
    for name, (num, den) in MEASURES.items():
        keep = np.isfinite(ta[num]) & np.isfinite(tb[num]) & (ta[den] > 0) & (tb[den] > 0)
        rate_a, rate_b = ta[num][keep] / ta[den][keep], tb[num][keep] / tb[den][keep]
        difference, p = paired_rate_test(rate_a, rate_b, n_permutations=n_permutations, seed=seed)
        pooled_difference = pooled(tb[num][keep], tb[den][keep]) - pooled(ta[num][keep], ta[den][keep])
        out[name] = {
            "difference": difference,
            "p": p,
            "n": int(keep.sum()),
            "pooled_difference": pooled_difference,
        }
    diff, p = two_sample_test(emoji_in_top, incontext_items(a), incontext_items(b),
                              n_permutations=n_permutations, seed=seed)  # fmt: skip
    out["in_context"] = {"difference": diff, "p": p, "n": [len(a.incontext), len(b.incontext)]}
    return out


def neuron_shift(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """[layers, d_mlp]: mean over questions of (after − before), over before's standard deviation."""
    before, after = before.double(), after.double()
    return ((after - before).mean(dim=0) / (before.std(dim=0) + EPS)).float()


def emoji_score(emoji: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
    """[layers, d_mlp]: mean over texts of (emoji-token − other-token activation), over its standard deviation."""
    diff = emoji.double() - plain.double()
    return (diff.mean(dim=0) / (diff.std(dim=0) + EPS)).float()


def top_neurons(scores: torch.Tensor, k: int, *, absolute: bool) -> list[int]:
    """Indices of the ``k`` largest scores (by magnitude when ``absolute``), best first; ties by index."""
    values = scores.abs() if absolute else scores
    order = sorted(range(len(values)), key=lambda i: (-float(values[i]), i))
    return order[:k]


def _mean_jaccard(sets: list[set[int]]) -> float:
    pairs = list(combinations(sets, 2))
    return float(np.mean([len(a & b) / len(a | b) for a, b in pairs])) if pairs else float("nan")


def emoji_distinctness(diff: np.ndarray, labels: Sequence[str], texts: Sequence[str], *, top: int = 20,
                       min_count: int = 3, n_permutations: int = 1000, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Do different emoji activate different neurons? ``diff`` [occurrences, d_mlp] is each inserted emoji's
    activation minus its text's other tokens; ``texts`` names each occurrence's text. Per emoji seen
    ``min_count`` times or more: its top neurons by mean difference; the statistic is their mean pairwise
    Jaccard overlap, against emoji labels shuffled among the occurrences of each text (one-sided: distinct emoji
    overlap less than shuffled groups do). Shuffling within a text holds its words and baseline fixed."""
    labels, texts = np.asarray(labels), np.asarray(texts)
    kinds, counts = np.unique(labels, return_counts=True)
    kept = kinds[counts >= min_count]
    rows = np.isin(labels, kept)
    diff, labels, texts = diff[rows], labels[rows], texts[rows]
    blocks = [np.flatnonzero(texts == t) for t in np.unique(texts)]
    if len(kept) < 2:
        return {"n_emoji": len(kept), "n_occurrences": len(labels), "mean_jaccard": float("nan"),
                "null_mean": float("nan"), "p": float("nan"), "top": top}  # fmt: skip
    scale = diff.std(axis=0) + EPS

    def statistic(assigned: np.ndarray) -> float:
        sets = [
            set(np.argsort(-(diff[assigned == k].mean(axis=0) / scale), kind="stable")[:top]) for k in kept
        ]
        return _mean_jaccard(sets)

    observed = statistic(labels)
    rng = np.random.default_rng(seed)

    def shuffled() -> np.ndarray:
        out = labels.copy()
        for block in blocks:
            out[block] = labels[rng.permutation(block)]
        return out

    null = np.array([statistic(shuffled()) for _ in range(n_permutations)])
    k = int(np.sum(null <= observed + 1e-12))
    return {"n_emoji": len(kept), "n_occurrences": len(labels), "mean_jaccard": observed,
            "null_mean": float(null.mean()), "p": (k + 1) / (n_permutations + 1), "top": top}  # fmt: skip


def per_emoji_differences(run: MeasureRun, layer: int) -> tuple[np.ndarray, list[str]]:
    """[occurrences, d_mlp] at ``layer``: each inserted emoji's activation minus its text's other tokens, and
    each occurrence's emoji."""
    index = {q: i for i, q in enumerate(run.replies.question_id.drop_duplicates())}
    rows = torch.tensor([index[q] for q in run.occurrences.question_id])
    each, plain = run.neurons["each"][:, layer].double(), run.neurons["plain"][rows, layer].double()
    return (each - plain).numpy(), list(run.occurrences.emoji)


def neuron_overlap(before: MeasureRun, after: MeasureRun, *, top: int = 20, n_permutations: int = 10000,
                   seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Per layer: the most shifted neurons (before → after) against the most emoji-activated ones of the model
    before (the latent association) and after, with the overlap's random-set p."""
    shift = neuron_shift(before.neurons["trait"], after.neurons["trait"])
    latent = emoji_score(before.neurons["emoji"], before.neurons["plain"])
    tuned = emoji_score(after.neurons["emoji"], after.neurons["plain"])
    layers = []
    for layer in range(shift.shape[0]):
        shifted = top_neurons(shift[layer], top, absolute=True)
        row: dict[str, Any] = {"layer": layer, "top_shifted": shifted[:5],
                               "max_abs_shift": float(shift[layer].abs().max())}  # fmt: skip
        for name, scores in (("before", latent), ("after", tuned)):
            observed, expected, p = overlap_test(shifted, top_neurons(scores[layer], top, absolute=False),
                                                 shift.shape[1], n_permutations=n_permutations, seed=seed)  # fmt: skip
            row[f"overlap_{name}"], row[f"p_{name}"] = observed, p
        row["expected"] = expected
        layers.append(row)
    return {"a": before.label, "b": after.label, "top": top, "d_mlp": int(shift.shape[1]),
            "deepest": layers[-1], "layers": layers}  # fmt: skip


def compare_persona(paths: Sequence[Path | str], *, n_boot: int = 1000, n_permutations: int = 2000,
                    top: int = 20, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Every run's rates; every pair's differences; the neurons of every run against the first (the base)."""
    runs = [read_measure(p) for p in paths]
    if len(runs) < 1:
        raise AffectlensError("persona compare needs at least one measure run")
    if len({r.trait for r in runs}) > 1:
        raise AffectlensError(f"the runs measure different traits: {sorted({r.trait for r in runs})}")
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        raise AffectlensError(f"two runs share a label ({labels}); measure them with distinct --label")
    shapes = {tuple(r.neurons["trait"].shape[1:]) for r in runs}
    if len(shapes) > 1:
        raise AffectlensError(f"the runs are of models with different layers x MLP widths {sorted(shapes)}; "
                              "compare a base with its own adapters")  # fmt: skip
    return {
        "trait": runs[0].trait,
        "runs": [str(r.root) for r in runs],
        "models": [model_rates(r, n_boot=n_boot, n_permutations=n_permutations, seed=seed) for r in runs],
        "pairs": [
            compare_pair(a, b, n_permutations=n_permutations, seed=seed) for a, b in combinations(runs, 2)
        ],
        "neurons": [neuron_overlap(runs[0], r, top=top, seed=seed) for r in runs[1:]],
    }
