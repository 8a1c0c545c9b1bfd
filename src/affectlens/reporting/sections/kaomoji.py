"""Report sections for the kaomoji analyses, read from the ``analysis.json`` dict: what each question found,
in tables, sentences and captioned figures that say what they show and what they do not."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from affectlens.analysis.kaomoji import CLASSIFIER, CV, INTERVAL, LAYER_RULE
from affectlens.reporting.document import Section, Table
from affectlens.reporting.figures.umap import CAPTION as UMAP_CAPTION
from affectlens.reporting.format import estimate, number, p_value
from affectlens.reporting.sections.kaomoji_blocks import (
    Blocks,
    alignment_blocks,
    block_of,
    figure,
    skipped_note,
    table,
    tested,
    thin_text,
    with_numbers,
)


def _hidden_to_cell_rows(runs: dict) -> list[dict]:
    rows: list[dict] = []
    for label, h2c in with_numbers(runs, "hidden_to_cell", rows, "accuracy [95% CI]", what="—"):
        for what, d in (
            ("headline layer " + number(h2c["headline"]["layer"]), h2c["headline"]),
            ("all layers concatenated", h2c["all_layers"]),
        ):
            rows.append(
                {
                    "run": label,
                    "what": what,
                    "accuracy [95% CI]": estimate(d["accuracy"], d["accuracy_ci"]),
                    "macro-F1 [95% CI]": estimate(d["macro_f1"], d["macro_f1_ci"]),
                    "chance": number(d["chance"]),
                    "majority baseline": number(d["majority_baseline"]),
                    "p (permutation)": p_value(d),
                    "n prompts": number(d["n"]),
                }
            )
    return rows


def _hidden_to_cell(runs: dict, settings: dict, out: Path) -> Section:
    blocks: Blocks = [
        "Can the affect cell of a prompt be read off the model's hidden state at the last prompt token "
        f"(h_first)? One row per prompt; {settings.get('cv', CV)}; classifier: {settings.get('classifier', CLASSIFIER)}. "
        f"The headline layer is fixed in advance ({settings.get('layer_rule', LAYER_RULE)}), and only it "
        "carries a permutation test (cell labels shuffled between prompts, the whole cross-validation redone). "
        f"Intervals: {INTERVAL}. A high score says the prompts' cells are linearly separable in the hidden "
        "state; it does not say the model feels anything, nor that the separation is about emotion rather "
        "than other differences between the prompt sets.",
        *skipped_note(runs),
        *table(_hidden_to_cell_rows(runs), "Cell from hidden state, out-of-fold."),
    ]
    for label, run in runs.items():
        h2c, figures = block_of(run, "hidden_to_cell"), run.get("figures", {})
        if h2c["thin"]:
            continue
        head = h2c["headline"]
        blocks.append(
            f"{label}: at layer {number(head['layer'])} the cell is recovered for {number(head['accuracy'])} of "
            f"{number(head['n'])} prompts (95% CI {number(head['accuracy_ci'][0])} to {number(head['accuracy_ci'][1])}), "
            f"against chance {number(head['chance'])} and a majority baseline of {number(head['majority_baseline'])}; "
            f"permutation p = {p_value(head)}. Layer rule: {head['layer_rule']}."
        )
        blocks += figure(
            out,
            figures,
            "depth",
            f"{label}: out-of-fold cell accuracy from h_first at each layer, with 95% bootstrap bands, chance, "
            "the majority baseline and the all-layers score. It shows where in depth the prompt sets are most "
            "linearly separable; the curve has no permutation test per layer and its peak was not used to pick "
            "the headline layer. It does not show what the features are, or that the model is in any state.",
        )
        blocks += figure(
            out,
            figures,
            "confusion",
            f"{label}: out-of-fold confusion matrices (rows: the prompt's cell; columns: predicted). Counts are "
            "printed; colour is the share of the row. It shows which cells the hidden state (and, where shown, "
            "the face, by identity and by characters) confuses with which; it does not show why.",
        )
    return Section("Hidden state → cell", blocks)


def _face_to_cell_rows(runs: dict) -> list[dict]:
    """One row per run and estimator: face identity (the top-level block), face characters (by_characters)."""
    rows = []
    for label, run in runs.items():
        f2c = run.get("face_to_cell")
        if not f2c:
            continue
        shared = {
            "coverage [95% CI]": estimate(f2c["coverage"], f2c["coverage_ci"]),
            "samples (with face / all)": f"{number(f2c['n_with_face'])} / {number(f2c['n_samples'])}",
            "distinct faces": number(f2c.get("n_faces", 0)),
        }
        estimators = [("face identity", f2c, "seen_share")]
        if "by_characters" in f2c:
            estimators.append(("face characters", f2c["by_characters"], "covered_share"))
        for name, block, usable in estimators:
            row = {"run": label, "estimator": name, **shared}
            if block["thin"]:
                row["accuracy [95% CI]"] = thin_text(block)
            else:
                row.update(
                    {
                        "accuracy [95% CI]": estimate(block["accuracy"], block["accuracy_ci"]),
                        "chance": number(block["chance"]),
                        "majority baseline": number(block["majority_baseline"]),
                        "usable in test folds": number(block[usable]),
                        "p (permutation)": tested(block),
                    }
                )
            rows.append(row)
    return rows


def _hidden_to_face_rows(runs: dict) -> list[dict]:
    rows: list[dict] = []
    for label, h2f in with_numbers(runs, "hidden_to_face", rows, "accuracy [95% CI]"):
        rows.append(
            {
                "run": label,
                "accuracy [95% CI]": estimate(h2f["accuracy"], h2f["accuracy_ci"]),
                "majority-face baseline": number(h2f["majority_baseline"]),
                "gain over baseline [95% CI]": estimate(
                    h2f["gain_over_majority"], h2f["gain_over_majority_ci"]
                ),
                "p: state → face?": tested(h2f),
                "p: beyond the cell?": tested(h2f["within_cell"]) if "within_cell" in h2f else "not tested",
                "faces": number(h2f["n_faces"]),
                "samples / prompts": f"{number(h2f['n_samples'])} / {number(h2f['n_prompts'])}",
            }
        )
    return rows


def _face_to_cell(runs: dict, settings: dict, out: Path) -> Section:
    confusion: Blocks = []  # a run without hidden states shows its face confusion here, not under hidden → cell
    for label, run in runs.items():
        if block_of(run, "hidden_to_cell").get("skipped"):
            confusion += figure(
                out,
                run.get("figures", {}),
                "confusion",
                f"{label}: out-of-fold confusion of face → cell, by identity and by characters (rows: the "
                "prompt's cell; columns: predicted; colour: share of the row). It shows which cells the face "
                "confuses with which; it does not show why.",
            )
    return Section(
        "Face → cell",
        [
            "Does the face alone tell which kind of prompt it followed? Two estimators, side by side. By face "
            "identity: each sample's face predicts the majority cell of that face in the training folds (folds "
            "grouped by prompt); a face never seen in training gets the training folds' majority cell, so this "
            "one says nothing about faces that do not repeat. By face characters: each face becomes counts of "
            "its character 1- to 3-grams (eyes, mouth, arms, brackets) and a logistic regression predicts the "
            "cell, vocabulary and classifier fitted inside each training fold; it reads a face never seen "
            "before through the characters it shares with others. 'Usable in test folds' is the share of "
            "samples whose face was seen in training (identity) or shares an n-gram with the training faces "
            "(characters). Accuracy is over samples that carry a face; coverage is the share of all samples "
            "that carry one. Both permutation tests shuffle cells between prompts and redo the folds. This "
            "measures whether faces are used in consistent contexts, not what the model feels.",
            Table(pd.DataFrame(_face_to_cell_rows(runs)), caption="Cell from face alone, out-of-fold."),
            "Can the face be read off h_first? Among samples whose face was emitted at least "
            f"{number(settings.get('floor', 3))} times, a classifier on h_first at the headline layer predicts the face "
            "(top-1), compared with always predicting the training folds' commonest face. Two questions, two "
            "nulls. 'Does the state predict the face?' shuffles hidden states between all prompts: a face that "
            "depends only on the prompt's cell passes it, since the state carries the cell. 'Does the state "
            "predict the face beyond the prompt's cell?' shuffles hidden states only between prompts of the same "
            "cell (a prompt's samples stay together), so its null keeps what the cell says about the face, and "
            "its null mean is the accuracy the cell alone buys. Only a small p on the second says that the face "
            "tracks the state rather than both tracking the prompt's cell. Faces vary between samples of one "
            "prompt, so even a perfect reading of the hidden state cannot reach accuracy 1.",
            *table(_hidden_to_face_rows(runs), "Face from hidden state, out-of-fold."),
            *confusion,
        ],
    )


def _geometry_tables(runs: dict) -> Blocks:
    var_rows: list[dict] = []
    cor_rows: list[dict] = []
    for label, geo in with_numbers(runs, "geometry", var_rows, "PC1 [95% CI]"):
        var_rows.append(
            {"run": label, "layer": number(geo["layer"]), "n prompts": number(geo["n_prompts"])}
            | {
                f"PC{v['pc']} variance [95% CI]": estimate(v["ratio"], v["ci"])
                for v in geo["explained_variance"]
            }
        )
        for c in geo["correlations"]:
            cor_rows.append(
                {
                    "run": label,
                    "PC": f"PC{c['pc']}",
                    "axis": c["axis"] + (" (paired)" if c.get("paired") else ""),
                    "r over cells [95% CI]": thin_text(c)
                    if c.get("thin")
                    else estimate(c["r"], [c["lo"], c["hi"]]),
                    "p (cells relabelled)": "n/a" if c.get("thin") else tested(c),
                    "n cells / prompts": f"{number(c.get('n', c.get('n_cells')))} / {number(geo['n_prompts'])}",
                }
            )
        if (test := geo.get("pairing_test")) is not None:
            pairing = geo["pairing"]
            cor_rows.append(
                {
                    "run": label,
                    "PC": "PC1 + PC2",
                    "axis": f"pairing test (PC1–{pairing['PC1']}, PC2–{pairing['PC2']})",
                    "r over cells [95% CI]": thin_text(test)
                    if test["thin"]
                    else f"summed |r| {number(test['observed'])} [no interval]",
                    "p (cells relabelled)": "n/a" if test["thin"] else tested(test),
                    "n cells / prompts": f"{number(test['n_cells'])} / {number(geo['n_prompts'])}",
                }
            )
    blocks: Blocks = table(
        var_rows,
        "Share of variance of the first principal components, with 95% bootstrap intervals over prompts "
        "(repeated prompts in a resample push the interval upward).",
    )
    if cor_rows:
        blocks.append(
            Table(
                pd.DataFrame(cor_rows),
                caption="Pearson r of the cells' mean PC scores with the cells' valence and arousal (one point "
                "per cell).",
            )
        )
    return blocks


def _geometry(runs: dict, alignment: list[dict], out: Path) -> Section:
    blocks: Blocks = [
        "Where do prompts and faces sit in the hidden state? Per run, h_first at the headline layer, each "
        "feature standardised over prompts, then PCA. Valence and arousal are fixed per cell, so a cell is one "
        "independent point however many prompts it holds: each correlation is taken between the cells' mean "
        "PC scores and their coordinates (n = cells), its interval resamples cells (coarse with so few), and "
        "its p relabels cells: all k! relabellings when k! is at most the number of permutations, else random "
        "ones; either way p is never below the exact floor (relabellings that swap cells with equal "
        "coordinates tie with the truth whatever the data, so with repeated coordinates the floor is above "
        "1/k!). PCs have no inherent sign or order of meaning: PC1 and PC2 are paired with valence or arousal "
        "(whichever pairing has the larger summed |r|) and flipped to correlate positively; all four "
        "correlations are listed. The pairing is chosen on these data, so each row's p tests its PC-axis pair "
        "alone, and the pairing test asks whether the chosen pairing beats chance with a null that redoes the "
        "choice on every relabelling (the better of the two pairings).",
        *_geometry_tables(runs),
    ]
    for label, run in runs.items():
        figures = run.get("figures", {})
        blocks += figure(
            out,
            figures,
            "pca",
            f"{label}: each prompt's h_first projected on the first two principal components, coloured by the "
            "prompt's cell, with cell centroids. It shows how the prompt sets spread along the two directions "
            "of largest variance; it does not show emotion directions (large-variance axes may track length, "
            "topic or format), and distances in two PCs understate those in the full space.",
        )
        blocks += figure(
            out,
            figures,
            "umap",
            f"{label}: each prompt's h_first at the headline layer, embedded in two dimensions by UMAP and "
            f"coloured by the prompt's cell. It does not show how far apart the cells are. {UMAP_CAPTION}",
        )
        blocks += figure(
            out,
            figures,
            "faces_pca",
            f"{label}: each frequent face placed at the mean hidden state of the prompts it followed, coloured "
            "by the cell it most often followed. A face near the sad prompts is a face that tends to appear in "
            "contexts the model's state places near sad prompts; it does not mean the model is sad when it "
            "uses it.",
        )
    return Section("Geometry and alignment", blocks + alignment_blocks(alignment, out))


def _face_similarity(runs: dict, settings: dict, out: Path) -> Section:
    blocks: Blocks = [
        "Which faces appear in similar hidden states? For faces emitted at least "
        f"{number(settings.get('floor', 3))} times: the mean standardised h_first of each face's samples, centred "
        "across faces, compared by cosine similarity and ordered by average-linkage clustering. Tick labels "
        "take the colour of the cell each face most often followed."
    ]
    for label, run in runs.items():
        sim = block_of(run, "face_similarity")
        if sim.get("skipped"):
            continue
        if sim["thin"]:
            blocks.append(f"{label}: {thin_text(sim)} ({number(sim.get('n_samples', 0))} samples).")
            continue
        blocks += figure(
            out,
            run.get("figures", {}),
            "face_similarity",
            f"{label}: similarity of the contexts in which faces appear ({number(sim['n_faces'])} faces, "
            f"{number(sim['n_samples'])} samples). Faces in one block tend to appear after prompts whose hidden states "
            "resemble each other; it does not show that the faces mean the same thing, or that the model feels "
            "what a face depicts.",
        )
    return Section("Face similarity heat maps", blocks)


def sections(analysis: dict, out: str) -> list[Section]:
    """Report sections for an ``analysis.json`` dict: hidden -> cell, face -> cell (and hidden -> face),
    geometry and alignment, face similarity heat maps. ``out`` is the folder the analysis was written into."""
    out_dir = Path(out)
    runs = analysis.get("runs", {})
    settings = analysis.get("settings", {})
    return [
        _hidden_to_cell(runs, settings, out_dir),
        _face_to_cell(runs, settings, out_dir),
        _geometry(runs, analysis.get("alignment", []), out_dir),
        _face_similarity(runs, settings, out_dir),
    ]
