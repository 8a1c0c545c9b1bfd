"""Kaomoji analyses: does the face a model opens with track its hidden state, and where do the cells live?

``analyze_runs`` reads elicitation run folders (never a model) and asks, per run: can the cell of a prompt
be read from ``h_first`` (at every layer, on all layers at once, and at one headline layer fixed in
advance: ``hidden_cell``); can it be read from the face alone (``face_cell``); can the face be read from
``h_first`` (``hidden_face``); and how are prompts, cells and faces arranged in that space (``geometry``).
Across runs that share prompts it aligns the cell-centroid configurations (orthogonal Procrustes) and
compares their distance matrices (RSA) (``alignment``). It returns a ``KaomojiAnalysis``; figures and prose
live in ``affectlens.reporting``, and ``affectlens.api.kaomoji`` writes ``analysis.json``.

Units: ``h_first`` is one vector per prompt, shared by that prompt's samples, so every fit and every
resample works on prompts: cross-validation is grouped by prompt, bootstraps draw prompts, and permutation
tests shuffle whole prompts. Every fit (scaling, classifier, majority table) happens inside the training
folds. Too little data gives ``{"thin": true, "reason": ..., counts}`` in place of numbers, never an error.
"""

from affectlens.analysis.kaomoji.analyze import analyze_runs
from affectlens.analysis.kaomoji.common import CLASSIFIER, CV, INTERVAL, LAYER_RULE
from affectlens.analysis.kaomoji.result import KaomojiAnalysis, RunAnalysis

__all__ = ["CLASSIFIER", "CV", "INTERVAL", "LAYER_RULE", "KaomojiAnalysis", "RunAnalysis", "analyze_runs"]
