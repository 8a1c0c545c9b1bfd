"""Emotion-vector analyses: geometry, a topic-held-out probe, implicit scenarios and the bridge to self-report.

Everything reads run folders (a vectors run, optionally an elicitation run of the same model), never a model.
All analyses use one *headline layer*, fixed by a rule stated in the result (``round(2/3 (n_layers - 1))``, or
the stored layer nearest to it) unless the caller names another. Vectors are the *denoised* ones, each
normalised to unit length, unless said otherwise.

* **Similarity.** Cosine similarity of the unit vectors, ordered by average-linkage hierarchical clustering
  on cosine distance.
* **Valence and arousal axes.** PCA of the unit vectors (centred over emotions). PC signs are arbitrary, so
  PC1 is oriented to correlate positively with valence and PC2 with arousal; p-values are two-sided (|r|),
  so the orientation cannot make them smaller. Intervals: bootstrap over emotions with the PCA refitted in
  each resample (its components matched to the original ones, signs aligned), since with 20 emotions the axes
  themselves move and PC2 and PC3 can trade places; the interval a fixed PCA gives is kept beside it. p: labels
  permuted with the PCA fixed (the PCA never sees the labels, so that is a valid null).
* **Clusters.** k-means on the unit vectors for k in 2..8, k chosen by the cosine silhouette.
* **Cross-layer stability.** Cosine of each vector between adjacent stored layers; one summary per run
  (averaged over layer pairs, then emotions) with a bootstrap interval over emotions.
* **Probe.** Logistic regression (StandardScaler + L2, C=1, scikit-learn's objective and L-BFGS settings,
  fitted in the span of the training rows) from each story's activation to its emotion, 20 classes, trained
  on 11 topics and tested on the 12th (12 folds). Interval: bootstrap over topics. p: labels shuffled
  *within* each topic (every topic keeps one story per emotion), the whole cross-validation rerun for each
  shuffle until it can no longer reach the observed accuracy (so p is exact; see ``probe._probe_permutations``).
* **Implicit scenarios.** Each scenario's activation minus the corpus grand mean, ranked against the vectors
  by cosine; top-1 and top-3 accuracy (chance 1/20 and 3/20), bootstrap over scenarios, permutation p.
* **Bridge.** Each elicitation prompt's ``h_first`` (centred by its mean over prompts) projected on the unit
  vectors; the prompt's top emotion maps to a cell, compared with the prompt's cell.

One module per question (``axes``, ``probe``, ``implicit``, ``bridge``); ``analyze`` runs them all on a run
folder. Nothing here draws or writes: figures and prose are ``affectlens.reporting``'s.
"""

from affectlens.analysis.emotions.analyze import EmotionsAnalysis, analyze_run
from affectlens.analysis.emotions.axes import (
    K_RANGE,
    affect_axes,
    kmeans_clusters,
    layer_stability,
    similarity,
    stability_summary,
)
from affectlens.analysis.emotions.bridge import bridge, bridge_from_run, run_cells
from affectlens.analysis.emotions.common import LAYER_RULE, unit
from affectlens.analysis.emotions.implicit import implicit_test
from affectlens.analysis.emotions.probe import (
    SpanProbe,
    probe,
    probe_curve,
    shuffle_within,
    softmax_regression,
)

__all__ = [
    "K_RANGE",
    "LAYER_RULE",
    "EmotionsAnalysis",
    "SpanProbe",
    "affect_axes",
    "analyze_run",
    "bridge",
    "bridge_from_run",
    "implicit_test",
    "kmeans_clusters",
    "layer_stability",
    "probe",
    "probe_curve",
    "run_cells",
    "shuffle_within",
    "similarity",
    "softmax_regression",
    "stability_summary",
    "unit",
]
