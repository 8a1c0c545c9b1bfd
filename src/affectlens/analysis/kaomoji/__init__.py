"""Kaomoji analyses: does the face a model opens with track its hidden state, and where do the cells live?

``analyze_runs`` reads elicitation run folders (never a model) and asks, per run: can the cell of a prompt
be read from ``h_first`` (at every layer, on all layers at once, and at one headline layer fixed in
advance: ``hidden_cell``); can it be read from the face alone, by the face's identity (``face_cell``) or
its characters (``face_chars``); can the face be read from ``h_first``, and beyond the prompt's cell
(``hidden_face``, with a within-cell null); and how are prompts, cells and faces arranged in that space
(``geometry``, with PC-valence/arousal read over cells, ``pc_axes``). Across runs that share prompts it
aligns the cell-centroid configurations (orthogonal Procrustes) and compares their distance matrices (RSA)
on raw and z-scored states (``alignment``; cell relabellings enumerated when few, ``permutations``). Only
well-formed faces count as faces unless ``faces="all"``. It returns a ``KaomojiAnalysis``; figures and prose
live in ``affectlens.reporting``, and ``affectlens.api.kaomoji`` writes ``analysis.json``.

Units: ``h_first`` is one vector per prompt, shared by that prompt's samples, so every fit and every
resample works on prompts: cross-validation is grouped by prompt, bootstraps draw prompts, and permutation
tests shuffle whole prompts; claims about valence and arousal, fixed per cell, resample and shuffle cells. Every fit (scaling, classifier, majority table) happens inside the training
folds. Too little data gives ``{"thin": true, "reason": ..., counts}`` in place of numbers, never an error.
"""

from affectlens.analysis.kaomoji.analyze import analyze_runs
from affectlens.analysis.kaomoji.common import CLASSIFIER, CV, INTERVAL, LAYER_RULE
from affectlens.analysis.kaomoji.result import KaomojiAnalysis, RunAnalysis

__all__ = ["CLASSIFIER", "CV", "INTERVAL", "LAYER_RULE", "KaomojiAnalysis", "RunAnalysis", "analyze_runs"]
