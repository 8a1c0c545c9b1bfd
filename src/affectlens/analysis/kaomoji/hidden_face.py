"""Hidden state -> face: can the face a sample opens with be read off its prompt's h_first?"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.dummy import DummyClassifier

from affectlens.analysis.kaomoji.common import (
    CLASSIFIER,
    CV,
    FACE_PERMUTATION_CAP,
    INTERVAL,
    MIN_FACES,
    MIN_SAMPLES,
    N_SPLITS,
    classifier_summary,
    estimator,
    frequent_faces,
    n_jobs,
    thin,
)
from affectlens.analysis.kaomoji.loading import Run
from affectlens.analysis.kaomoji.permutations import within_strata_test
from affectlens.stats import bootstrap_ci, evaluate_classifier, grouped_cv_predict, permutation_test

UNCONDITIONAL = "does the state predict the face?"
CONDITIONAL = "does the state predict the face beyond the prompt's cell?"


def hidden_to_face(run: Run, *, floor: int, n_boot: int, n_permutations: int, seed: int) -> dict:
    """Out-of-fold top-1 face accuracy at the headline layer over samples whose face was emitted >= floor
    times, its gain over always predicting the commonest training face, and a permutation test."""
    rows, faces = frequent_faces(run.samples, floor)
    y = rows["face"].to_numpy(dtype=str)
    groups = rows["prompt_id"].to_numpy(dtype=str)
    counts = dict(n_faces=len(faces), n_samples=len(rows), n_prompts=len(set(groups)), floor=floor)
    if len(faces) < MIN_FACES or len(rows) < MIN_SAMPLES or len(set(groups)) < 2:
        return thin(
            f"{len(faces)} face(s) emitted >= {floor} times, {len(rows)} samples from {len(set(groups))} "
            f"prompts; need >= {MIN_FACES} faces and >= {MIN_SAMPLES} samples",
            **counts,
        )
    X = run.hidden[rows["row"].to_numpy(), run.index]
    result = evaluate_classifier(
        X,
        y,
        groups,
        labels=faces,
        n_splits=N_SPLITS,
        n_boot=n_boot,
        n_permutations=0,
        seed=seed,
        make_estimator=estimator,
    )
    correct = result.predictions == y
    dummy = grouped_cv_predict(
        np.zeros((len(y), 1)), y, groups, n_splits=N_SPLITS, seed=seed, make_estimator=DummyClassifier
    )
    gain = correct.astype(float) - (dummy == y)
    gain_ci = bootstrap_ci(lambda idx: float(gain[idx].mean()), groups, n_boot=n_boot, seed=seed)
    out = {
        "thin": False,
        "question": UNCONDITIONAL,
        "layer": run.layer,
        "unit": "sample whose face was emitted >= floor times; folds, bootstrap and permutations by prompt",
        "classifier": CLASSIFIER,
        "cv": CV,
        "interval": INTERVAL,
        **counts,
        **classifier_summary(result),
        "gain_over_majority": float(gain.mean()),
        "gain_over_majority_ci": list(gain_ci),
    }
    # A prompt's samples carry different faces, so labels cannot be shuffled between prompts; the nulls shuffle
    # instead which prompt's hidden state each prompt's samples carry (faces and folds stay put): between all
    # prompts, and only between prompts of the same cell (the state beyond what the cell fixes).
    n_perm = min(n_permutations, FACE_PERMUTATION_CAP)
    if n_perm > 0:
        prompt_codes = np.unique(groups, return_inverse=True)[1]
        per_prompt = np.zeros((prompt_codes.max() + 1, X.shape[1]), dtype=X.dtype)
        per_prompt[prompt_codes] = X
        prompt_cell = np.empty(len(per_prompt), dtype=object)
        prompt_cell[prompt_codes] = rows["cell"].to_numpy()

        def null_accuracy(perm: np.ndarray) -> float:
            """Accuracy when prompt i's samples carry the hidden state of prompt perm[i]."""
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = grouped_cv_predict(
                    per_prompt[perm[prompt_codes]], y, groups, n_splits=N_SPLITS, seed=seed,
                    make_estimator=estimator,
                )  # fmt: skip
            return float(np.mean(pred == y))

        prompt_ids = np.arange(len(per_prompt))
        test = permutation_test(
            null_accuracy, prompt_ids, prompt_ids, result.accuracy, n_permutations=n_perm, seed=seed,
            n_jobs=n_jobs(n_perm),
        )  # fmt: skip
        within, within_floor = within_strata_test(
            null_accuracy, prompt_cell.astype(str), result.accuracy, n_permutations=n_perm, seed=seed,
            n_jobs=n_jobs(n_perm),
        )  # fmt: skip
        out.update(
            n_permutations=n_perm,
            p_value=test.p_value,
            min_attainable_p=test.min_attainable_p,
            null_mean=float(test.null.mean()),
            permutation="hidden states shuffled between all prompts; "
            f"at most {FACE_PERMUTATION_CAP} permutations, since each refits on every sample",
            within_cell={
                "question": CONDITIONAL,
                "n_permutations": n_perm,
                "p_value": within.p_value,
                "min_attainable_p": within_floor,
                "null_mean": float(within.null.mean()),
                "permutation": "hidden states shuffled only between prompts of the same cell (a prompt's samples "
                "stay together); the null keeps what the cell says about the face, so a small p means the "
                "state predicts the face beyond the prompt's cell",
            },
        )
    return out
