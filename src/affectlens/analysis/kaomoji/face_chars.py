"""Face -> cell by characters: read the cell off what a face is made of, not off which face it is.

The identity estimator (``face_cell``) looks a face up in the training folds, so it has nothing to say about
a face that never repeats. This one turns each face into counts of its character 1- to 3-grams (eyes, mouth,
arms, brackets) and fits a multinomial logistic regression on them; the vocabulary and the classifier are
fitted inside each training fold (folds grouped by prompt), the interval resamples prompts, and the
permutation test shuffles cells between prompts and redoes the folds, as for the identity estimator.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from affectlens.analysis.kaomoji.common import MIN_SAMPLES, N_SPLITS, TOL, evaluate_faces, face_block, thin
from affectlens.stats import grouped_folds

NGRAMS = (1, 3)
CHAR_CLASSIFIER = (
    f"character {NGRAMS[0]}- to {NGRAMS[1]}-gram counts of the face (case kept) + multinomial L2 logistic "
    f"regression (C=1, lbfgs, tol={TOL:g}); vocabulary and classifier both fitted inside each training fold"
)


def _vectorizer() -> CountVectorizer:
    return CountVectorizer(analyzer="char", ngram_range=NGRAMS, lowercase=False)


class CharClassifier:
    """Character n-gram counts + logistic regression on an array of face strings.

    Repeated (face, cell) rows are fitted once with their count as sample weight, which leaves the fitted
    model as it would be on the repeated rows (the same weighted loss) and makes a fit cost the number of
    distinct faces, not of samples.
    """

    def fit(self, X: np.ndarray, y: np.ndarray) -> CharClassifier:
        pairs, counts = np.unique(np.stack([np.asarray(X, dtype=str), np.asarray(y, dtype=str)]), axis=1,
                                  return_counts=True)  # fmt: skip
        faces, face_of_pair = np.unique(pairs[0], return_inverse=True)  # each distinct face read once
        self.vectorizer_ = _vectorizer()
        features = self.vectorizer_.fit_transform(faces)[face_of_pair]
        self.model_ = LogisticRegression(C=1.0, tol=TOL, max_iter=5000)
        self.model_.fit(features, pairs[1], sample_weight=counts)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        faces, inverse = np.unique(np.asarray(X, dtype=str), return_inverse=True)
        return self.model_.predict(self.vectorizer_.transform(faces))[inverse]


def _covered(faces: np.ndarray, folds: list) -> np.ndarray:
    """Per row: does its face share at least one character n-gram with the faces of the training folds?"""
    grams = _vectorizer().build_analyzer()
    covered = np.zeros(len(faces), dtype=bool)
    for train, test in folds:
        vocabulary = {g for face in set(faces[train].tolist()) for g in grams(face)}
        covered[test] = [any(g in vocabulary for g in grams(face)) for face in faces[test].tolist()]
    return covered


def by_characters(
    faces: np.ndarray, y: np.ndarray, groups: np.ndarray, labels: list[str], *, n_boot: int,
    n_permutations: int, seed: int,
) -> dict:  # fmt: skip
    """Out-of-fold cell accuracy of the character estimator over samples with a face (``faces``, ``y``: the
    cell of each, ``groups``: its prompt), thin (with why) where too few samples or cells."""
    faces = np.asarray(faces, dtype=str)
    n, n_prompts = len(faces), len(set(groups.tolist()))
    counts = dict(n_with_face=n, n_faces=len(set(faces.tolist())), n_prompts_with_face=n_prompts)
    if n < MIN_SAMPLES or len(labels) < 2 or n_prompts < 2:
        return thin(
            f"{n} samples with a face from {n_prompts} prompts in {len(labels)} cell(s); need >= {MIN_SAMPLES} "
            "samples in >= 2 cells",
            **counts,
        )
    covered = _covered(faces, grouped_folds(y, groups, n_splits=N_SPLITS, seed=seed))
    counts["n_covered"] = int(covered.sum())
    if covered.sum() < MIN_SAMPLES:
        return thin(
            f"only {int(covered.sum())} of {n} faces share a character n-gram with the faces of the other folds' "
            f"prompts (need >= {MIN_SAMPLES}); the score would mostly measure the intercept",
            **counts,
        )
    result = evaluate_faces(faces, y, groups, labels, make_estimator=CharClassifier, n_boot=n_boot,
                            n_permutations=n_permutations, seed=seed)  # fmt: skip
    predictor = "the cell a classifier on the face's characters gives; a face need not occur in training"
    return face_block(
        predictor, result, classifier=CHAR_CLASSIFIER, covered_share=float(covered.mean()), **counts
    )
