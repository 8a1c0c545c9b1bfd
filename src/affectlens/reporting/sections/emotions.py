"""The emotion-vector analyses in words: one run's sections, and the table that sets several models side by side.

Both read the dict that ``affectlens.api.emotions.analyze_emotions`` returns and writes as ``emotions.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from affectlens.analysis.emotions import EmotionsAnalysis
from affectlens.reporting.document import Figure, Section, Table
from affectlens.reporting.figures.emotions import draw
from affectlens.reporting.figures.umap import CAPTION as UMAP_CAPTION
from affectlens.reporting.format import estimate, number, p_value

Blocks = list[str | Table | Figure]


def _figures(result: dict[str, Any], out: Path | str) -> dict[str, Path]:
    """PNG by figure name: the ones the analysis drew when they lie in ``out``, else drawn there now."""
    drawn = {k: [Path(p) for p in v] for k, v in result.get("figures", {}).items()}
    reusable = drawn and all(
        p.exists() and p.parent.resolve() == Path(out).resolve() for v in drawn.values() for p in v
    )
    paths = drawn if reusable else draw(EmotionsAnalysis.from_json(result), out)
    return {k: v[0] for k, v in paths.items()}


def _r(entry: dict[str, Any]) -> str:
    return estimate(entry["r"], (entry["lo"], entry["hi"]))


def _geometry(result: dict[str, Any], png: dict[str, Path]) -> Section:
    layer, pca, km, den = result["layer"], result["pca"], result["kmeans"], result["denoise"]
    n_e = len(result["emotions"])
    ev = pca["variance_explained"]
    # Results written before the audit fixes say what they did: neutral means from token 0, a fixed PCA.
    old_window = "(offset 0)" in str(result.get("positions"))
    window = "from token 0 (an earlier rule)" if old_window else "over the stories' token window"
    refit = "refitted in each resample" if "interval" in pca["pc1_valence"] else "held fixed"
    blocks: Blocks = [
        f"Emotion vectors are each emotion's mean story activation minus the mean over emotions, cleaned of the "
        f"top principal components of neutral dialogues, each averaged {window} "
        f"({den['n_components_at_layer']} removed at layer "
        f"{layer}, reaching a share {number(den['variance'])} of their variance). Layer {layer} is the headline "
        f"layer ({result['layer_rule']}). {n_e} emotions, {result['n_stories']} stories.",
        Figure(
            png["vectors_similarity"],
            "Cosine similarity between the unit emotion vectors, rows and columns "
            "ordered by hierarchical clustering. Red: vectors point the same way; blue: opposite ways. "
            "Similar directions do not mean the model confuses the emotions.",
        ),
        f"PC1 explains a share {number(ev[0])} and PC2 {number(ev[1])} of the variance between the vectors. "
        f"PC1 against the corpus valence ratings: r = {_r(pca['pc1_valence'])} (95% bootstrap interval over "
        f"emotions with the PCA {refit}, permutation p = {p_value(pca['pc1_valence'])}, "
        f"n = {n_e}); PC2 against arousal: "
        f"r = {_r(pca['pc2_arousal'])} (permutation p = {p_value(pca['pc2_arousal'])}). Each PC's sign is "
        "arbitrary and was flipped to make its r positive; the p-values are two-sided, so the flip does not "
        "lower them.",
        Figure(
            png["vectors_pca"],
            "The emotion vectors on their first two principal components, coloured by "
            "the corpus valence rating. The ratings are the corpus authors' judgement, not the model's.",
        ),
        Table(
            pd.DataFrame(
                {"cluster": range(1, km["k"] + 1), "emotions": [", ".join(c) for c in km["clusters"]]}
            ),
            f"k-means clusters of the unit vectors (k = {km['k']}, chosen by silhouette among "
            f"{km['k_range'][0]}..{km['k_range'][1]}; adjusted Rand index with the corpus's own clusters "
            f"{number(km.get('ari_with_corpus_clusters'))}).",
        ),
    ]
    if "vectors_umap" in png:
        blocks.append(
            Figure(
                png["vectors_umap"],
                f"UMAP of every story's activation at layer {layer}, coloured by the story's emotion. "
                + UMAP_CAPTION,
            )
        )
    return Section("Emotion vectors: geometry", blocks)


def _probe(result: dict[str, Any], png: dict[str, Path]) -> Section:
    head, layer = result["probe"]["headline"], result["layer"]
    stab = result["probe"].get("stability_summary")
    stability = (
        f" Across adjacent stored layers each vector keeps a mean cosine of "
        f"{estimate(stab['mean_cosine'], (stab['lo'], stab['hi']))} with itself (95% bootstrap interval over "
        f"the {stab['n']} emotions, {stab['n_layer_pairs']} layer pairs)."
        if stab and stab.get("mean_cosine") is not None
        else ""
    )
    return Section(
        "Emotion probe",
        [
            f"A logistic-regression probe reads the emotion from a story's activation at layer {layer} with "
            f"accuracy {estimate(head['accuracy'], head['accuracy_ci'])} ({len(result['emotions'])} classes, "
            f"chance {number(head['chance'])}; n = {head['n']} stories; trained on all topics but one and "
            f"tested on the held-out topic, 95% interval by bootstrap over the {head['n_groups']} topics; "
            f"permutation p = {p_value(head)}, labels shuffled within each topic, null mean "
            f"{number(head.get('null_mean'))}).{stability}",
            Figure(
                png["vectors_probe"],
                "Probe accuracy at every stored layer (no intervals except at the headline "
                "layer) and how much each emotion vector keeps its direction from one layer to the next. A probe "
                "that reads an emotion does not show that the model uses it.",
            ),
        ],
    )


def _logit_lens(result: dict[str, Any]) -> Section:
    lens = result["logit_lens"]
    rows = [
        {
            "emotion": e,
            "raises": " ".join(repr(t) for t in d.get("top", [])),
            "lowers": " ".join(repr(t) for t in d.get("bottom", [])),
        }
        for e, d in lens["emotions"].items()
    ]
    return Section(
        "Logit lens",
        [
            f"The tokens whose next-token logits each denoised vector raises and lowers most at layer "
            f"{lens['layer']} ({lens['rule']}). Intermediate layers are not made to be read this way, so odd "
            "tokens are expected.",
            Table(pd.DataFrame(rows), "Top and bottom 10 tokens per emotion vector."),
        ],
    )


def _implicit(result: dict[str, Any]) -> Section:
    imp = result["implicit"]
    # The implicit blocks do not repeat the run's shuffle count; the p formatter wants it beside p.
    top1, top3 = ({**imp[k], "n_permutations": result["n_permutations"]} for k in ("top1", "top3"))
    return Section(
        "Implicit scenarios",
        [
            f"For {imp['n']} scenarios that evoke an emotion without naming it, the emotion whose vector lies "
            f"closest (cosine, after subtracting the corpus mean) is right "
            f"{estimate(top1['accuracy'], (top1['lo'], top1['hi']))} of the time (chance "
            f"{number(imp['chance_top1'])}, permutation p = {p_value(top1)}); the right emotion is among the "
            f"top three {estimate(top3['accuracy'], (top3['lo'], top3['hi']))} (chance "
            f"{number(imp['chance_top3'])}, permutation p = {p_value(top3)}). Intervals: bootstrap over "
            "scenarios.",
            Table(
                pd.DataFrame(
                    [
                        {
                            "scenario": s["id"],
                            "emotion": s["emotion"],
                            "rank": s["rank"],
                            "closest three": ", ".join(s["top3"]),
                        }
                        for s in imp["scenarios"]
                    ]
                )
            ),
        ],
    )


def _bridge(b: dict[str, Any], png: dict[str, Path]) -> Section:
    return Section(
        "Bridge to self-report",
        [
            f"Each elicitation prompt's state at its last token (layer {b['layer']}, centred over prompts) is "
            f"projected on the emotion vectors. The top emotion's cell matches the prompt's cell for "
            f"{estimate(b['match_rate'], (b['lo'], b['hi']))} of {b['n_prompts']} prompts (bootstrap over "
            f"prompts). Chance is {number(b['chance_uniform'])} if the top emotion were drawn uniformly (the "
            f"share of emotions in each prompt's cell, averaged over prompts) and {number(b['null_mean'])} under "
            f"the permutation null that keeps how often each cell is predicted (permutation p = {p_value(b)}, "
            "prompt cells shuffled).",
            Figure(
                png["vectors_bridge"],
                "Mean projection of each cell's prompt states on each emotion vector. "
                "Prompts describe a feeling; the model is not claimed to feel it.",
            ),
        ],
    )


def sections(result: dict[str, Any], out: Path | str) -> list[Section]:
    """Report sections for one emotions.json result.

    The figures the analysis drew are reused when they lie in ``out``; otherwise they are drawn there (the
    story UMAP only from a fresh analysis: the activations are not in the JSON).
    """
    png = _figures(result, out)
    found = [_geometry(result, png), _probe(result, png), _logit_lens(result)]
    if result["implicit"].get("n"):
        found.append(_implicit(result))
    if result.get("bridge"):
        found.append(_bridge(result["bridge"], png))
    return found


def _stability(result: dict[str, Any]) -> tuple[str, int]:
    """(stability with its interval, n emotions); a result from before the interval existed gets none."""
    summary = result["probe"].get("stability_summary")
    if summary:
        return estimate(summary["mean_cosine"], (summary["lo"], summary["hi"])), summary["n"]
    rows = result["probe"]["stability"]
    value = sum(r["mean_cosine"] for r in rows) / len(rows) if rows else None
    return estimate(value), len(result["emotions"])


def cross_model_section(results: dict[str, dict[str, Any]]) -> Section | None:
    """One table, a row per model (``results``: emotions.json dicts by model label); None for fewer than 2."""
    if len(results) < 2:
        return None
    rows = []
    for label, result in results.items():
        head, pca, imp = result["probe"]["headline"], result["pca"], result["implicit"]
        stability, n_stab = _stability(result)
        top3 = imp.get("top3")
        rows.append(
            {
                "model": label,
                "layer": result["layer"],
                "stored layers": len(result["layers"]),
                "probe accuracy [95% CI]": estimate(head["accuracy"], head["accuracy_ci"]),
                "chance": number(head["chance"]),
                "n stories": head["n"],
                "PC1–valence r [95% CI]": _r(pca["pc1_valence"]),
                "PC2–arousal r [95% CI]": _r(pca["pc2_arousal"]),
                "n emotions": pca["pc1_valence"]["n"],
                "implicit top-3 [95% CI]": estimate(top3["accuracy"], (top3["lo"], top3["hi"]))
                if top3
                else "n/a",
                "n scenarios": imp.get("n", 0),
                "cross-layer stability [95% CI]": stability,
                "n (stability)": n_stab,
            }
        )
    caption = (
        "Each model at its own headline layer. 95% bootstrap intervals: the probe over topics (accuracy with "
        "one topic held out per fold), both r over emotions, implicit top-3 over scenarios (chance 3 / number "
        "of emotions), stability over emotions. Stability is the mean cosine of each emotion vector between "
        "adjacent stored layers, so a model stored at fewer, wider-spaced layers is measured over longer "
        "steps. p-values are in each model's own sections."
    )
    return Section(
        "Emotion vectors across models",
        [
            f"The headline emotion-vector numbers of {len(rows)} models side by side.",
            Table(pd.DataFrame(rows), caption),
        ],
    )
