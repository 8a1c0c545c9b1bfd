"""Validity tests for the statistics core: each plants a known answer in synthetic data.

Noise must look like noise, a planted signal must be found, and identical copies of a prompt must not
leak across folds. The group (the prompt) is the unit everywhere: folds, bootstrap and permutations.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joblib import parallel_config
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from affectlens.stats import (
    bootstrap_ci,
    evaluate_classifier,
    grouped_cv_predict,
    grouped_folds,
    macro_f1,
    pearson_with_ci,
    permutation_test,
)


def _grouped_data(seed: int, n_groups: int, per_group: int, n_classes: int, d: int, shift: float = 0.0):
    """Rows drawn per group, one random label per group; ``shift`` moves each class mean along its own axis.

    The classes hold equal numbers of groups (give or take one), so that chance, 1 / n_classes, is also
    what a classifier reaches by favouring the commonest class.
    """
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = rng.permutation(np.arange(n_groups) % n_classes)[groups]
    X = rng.normal(size=(len(groups), d))
    X[np.arange(len(y)), y] += shift
    return X, y, groups


def _logo_centroid_predict(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """Leave-one-group-out nearest class mean, in closed form: a fast grouped predictor for many permutations."""
    classes, t = np.unique(y, return_inverse=True)
    g = np.unique(groups, return_inverse=True)[1]
    sums = np.zeros((g.max() + 1, len(classes), X.shape[1]))
    counts = np.zeros((g.max() + 1, len(classes)))
    np.add.at(sums, (g, t), X)
    np.add.at(counts, (g, t), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Class means with each row's own group taken out: [groups, classes, d].
        means = (sums.sum(0) - sums) / (counts.sum(0) - counts)[..., None]
    dist = ((X[:, None, :] - means[g]) ** 2).sum(-1)
    return classes[np.argmin(np.nan_to_num(dist, nan=np.inf), axis=1)]


def _one_nn():
    # kd_tree: the brute-force path spreads tiny queries over OpenMP threads, slow on a busy machine.
    return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=1, algorithm="kd_tree"))


# ------------------------------------------------------------------------------ the three validity tests


def test_pure_noise_looks_like_chance():
    contains, non_significant, p_values = 0, 0, []
    default_contains = 0
    for seed in range(5):
        X, y, groups = _grouped_data(seed, n_groups=45, per_group=3, n_classes=3, d=8)
        # The fast grouped predictor carries the permutation test; the default pipeline, the interval.
        r = evaluate_classifier(
            X, y, groups, n_boot=500, n_permutations=99, seed=seed, predict=_logo_centroid_predict
        )
        lo, hi = r.accuracy_ci
        contains += lo <= r.chance <= hi
        non_significant += r.p_value > 0.05
        p_values.append(r.p_value)
        assert hi - lo < 0.4  # an interval this wide would contain chance for free
        assert abs(r.null_mean - r.chance) < 0.05

        d = evaluate_classifier(X, y, groups, n_boot=500, n_permutations=0, seed=seed)
        assert d.accuracy_ci[0] <= d.chance  # never a claim above chance
        default_contains += d.accuracy_ci[0] <= d.chance <= d.accuracy_ci[1]
    assert contains >= 4 and default_contains >= 4
    assert non_significant >= 4
    assert len(set(p_values)) > 1  # p depends on the data, it is not stuck at 1


def test_planted_signal_is_recovered_with_the_smallest_p():
    X, y, groups = _grouped_data(0, n_groups=30, per_group=2, n_classes=3, d=20, shift=4.0)
    r = evaluate_classifier(X, y, groups, n_boot=300, n_permutations=49)
    assert r.accuracy > 0.9 and r.macro_f1 > 0.9
    assert r.accuracy_ci[0] > r.chance
    assert r.p_value == r.min_attainable_p == 1 / 50
    assert r.null_mean < 0.6


def test_identical_copies_leak_under_row_split_but_not_under_grouped_cv():
    copies, grouped_contains = 8, 0
    for seed in range(5):
        # 48 prompts with random (balanced) labels, each prompt's feature row repeated exactly 8 times.
        X, y, groups = _grouped_data(seed, n_groups=48, per_group=1, n_classes=4, d=16)
        X, y, groups = (np.repeat(a, copies, axis=0) for a in (X, y, groups))

        grouped = evaluate_classifier(X, y, groups, n_boot=500, n_permutations=0, seed=seed)
        grouped_contains += grouped.accuracy_ci[0] <= grouped.chance <= grouped.accuracy_ci[1]
        grouped_nn = evaluate_classifier(
            X, y, groups, n_boot=100, n_permutations=0, seed=seed, make_estimator=_one_nn
        )
        assert grouped.accuracy < 0.5 and grouped_nn.accuracy < 0.5

        def row_split(X_, y_, g_, s):
            return cross_val_predict(_one_nn(), X_, y_, cv=KFold(5, shuffle=True, random_state=s))

        # Same 1-NN, rows split at random: a copy of every test row sits in the training folds.
        leaky = evaluate_classifier(X, y, groups, n_boot=500, n_permutations=0, seed=seed, predict=row_split)
        assert leaky.accuracy > 0.9 and leaky.accuracy_ci[0] > 0.9
    assert grouped_contains >= 4


# ---------------------------------------------------------------------------------------------- folds


@pytest.mark.parametrize(
    ("group_labels", "n_splits", "expected_folds"),
    [
        ([0, 1, 2] * 10, 5, 5),  # every class spans >= 5 groups: stratified
        ([0] * 12 + [1] * 10 + [2] * 2, 5, 5),  # class 2 spans 2 groups: GroupKFold fallback
        ([0, 1, 0], 5, 3),  # 3 groups: n_splits cut to 3
    ],
)
def test_grouped_folds_never_split_a_group(group_labels, n_splits, expected_folds):
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 5, len(group_labels))
    groups = np.repeat(np.arange(len(group_labels)), sizes)
    y = np.repeat(group_labels, sizes)
    folds = grouped_folds(y, groups, n_splits=n_splits, seed=3)
    assert len(folds) == expected_folds
    tests = np.concatenate([test for _, test in folds])
    assert np.array_equal(np.sort(tests), np.arange(len(y)))  # test folds partition the rows
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == len(y)


def test_grouped_cv_predict_fits_a_fresh_estimator_per_fold_on_train_groups_only():
    X, y, groups = _grouped_data(2, n_groups=20, per_group=3, n_classes=2, d=3)
    X = np.column_stack([np.arange(len(y)), X])  # column 0: row id, so the spy can see which rows it got
    spies: list[_Spy] = []

    def make():
        spies.append(_Spy())
        return spies[-1]

    pred = grouped_cv_predict(X, y, groups, n_splits=4, seed=0, make_estimator=make)
    assert len(spies) == 4
    seen_test = np.concatenate([s.test_ids for s in spies])
    assert np.array_equal(np.sort(seen_test), np.arange(len(y)))
    for s in spies:
        assert s.n_fits == 1
        assert not set(groups[s.train_ids]) & set(groups[s.test_ids])
    assert np.array_equal(pred, np.zeros(len(y), dtype=y.dtype) + _Spy.answer)


class _Spy(ClassifierMixin, BaseEstimator):
    answer = 1

    def fit(self, X, y):
        self.n_fits = getattr(self, "n_fits", 0) + 1
        self.train_ids = X[:, 0].astype(int)
        return self

    def predict(self, X):
        self.test_ids = X[:, 0].astype(int)
        return np.full(len(X), self.answer)


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_draws_whole_groups():
    sizes = np.arange(1, 9)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    draws = []

    def record(idx):
        draws.append(idx)
        return 0.0

    bootstrap_ci(record, groups, n_boot=200, seed=0)
    lengths = set()
    for idx in draws:
        counts = np.bincount(idx, minlength=len(groups))
        times_drawn = [counts[groups == g] for g in range(len(sizes))]
        assert all(len(set(c)) == 1 for c in times_drawn)  # a group comes in whole, every row equally often
        assert sum(c[0] for c in times_drawn) == len(sizes)  # as many groups drawn as there are
        lengths.add(len(idx))
    assert len(lengths) > 1  # row counts vary with which groups were drawn: rows are not resampled


def test_group_bootstrap_is_wider_than_row_bootstrap_when_rows_are_copies():
    rng = np.random.default_rng(0)
    n_groups, copies = 10, 50
    groups = np.repeat(np.arange(n_groups), copies)
    values = rng.normal(size=n_groups)[groups]

    def mean(idx):
        return values[idx].mean()

    g_lo, g_hi = bootstrap_ci(mean, groups, n_boot=1000, seed=0)
    r_lo, r_hi = bootstrap_ci(mean, np.arange(len(values)), n_boot=1000, seed=0)
    assert g_hi - g_lo > 4 * (r_hi - r_lo)
    # The group interval has the width that 10 independent values give: about 2 * 1.96 * sd / sqrt(10).
    expected = 2 * 1.96 * values[::copies].std() / np.sqrt(n_groups)
    assert 0.6 * expected < g_hi - g_lo < 1.4 * expected


# ---------------------------------------------------------------------------------------- permutation


def _replay(values):
    """A score function that ignores the permuted labels and returns ``values`` in turn."""
    scores = iter(values)
    return lambda _y: next(scores)


def test_p_value_counts_ties_and_adds_one():
    groups = np.arange(10)
    y = np.arange(10) % 2
    for observed, k in [(6.5, 3), (7.0, 3), (6.0, 4), (100.0, 0), (-1.0, 10)]:
        p, null = permutation_test(_replay(np.arange(10.0)), y, groups, observed, n_permutations=10)
        assert np.array_equal(null, np.arange(10.0))
        assert p == (k + 1) / 11


@settings(max_examples=60, deadline=None)
@given(
    null=st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=30),
    observed=st.floats(-20, 20, allow_nan=False) | st.just(np.inf),
)
def test_p_value_formula_and_floor(null, observed):
    n = len(null)
    p, _ = permutation_test(_replay(null), np.zeros(4), np.arange(4), observed, n_permutations=n)
    assert p == (sum(v >= observed for v in null) + 1) / (n + 1)
    assert 1 / (n + 1) <= p <= 1


def test_permutation_result_unpacks_and_carries_its_floor():
    result = permutation_test(_replay(np.arange(7.0)), np.zeros(4), np.arange(4), 100.0, n_permutations=7)
    p, null = result  # still the (p, null) pair callers unpack
    assert p == result.p_value == 1 / 8 and null is result.null
    assert result.n_permutations == 7 and result.min_attainable_p == 1 / 8 == p  # nothing reached 100


def test_permutations_shuffle_group_labels_and_rerun_the_whole_analysis():
    X, y, groups = _grouped_data(3, n_groups=12, per_group=3, n_classes=3, d=4)
    group_labels = sorted(y[np.unique(groups, return_index=True)[1]])
    seen: list[np.ndarray] = []

    def predict(X_, y_, g_, seed):
        seen.append(y_.copy())
        for g in np.unique(g_):
            assert len(set(y_[g_ == g])) == 1  # a group keeps one label
        assert sorted(y_[np.unique(g_, return_index=True)[1]]) == group_labels  # labels move between groups
        return _logo_centroid_predict(X_, y_, g_, seed)

    r = evaluate_classifier(X, y, groups, n_boot=50, n_permutations=20, predict=predict)
    assert len(seen) == 1 + 20  # the observed run, then one full rerun per permutation
    assert np.array_equal(seen[0], y)
    assert sum(not np.array_equal(s, y) for s in seen[1:]) >= 18
    assert r.n_permutations == 20 and r.min_attainable_p == 1 / 21


def test_permutation_rejects_groups_with_several_labels():
    with pytest.raises(ValueError, match="more than one label"):
        permutation_test(lambda _y: 0.0, np.array([0, 1, 1]), np.array([0, 0, 1]), 0.0, n_permutations=5)


def test_permutation_is_seeded_and_parallel_gives_the_same_numbers():
    y = np.repeat(np.arange(6) % 3, 2)
    groups = np.repeat(np.arange(6), 2)

    def score(y_perm):
        return float(np.dot(y_perm, np.arange(len(y_perm))))

    serial = permutation_test(score, y, groups, 30.0, n_permutations=50, seed=7)
    with parallel_config(backend="threading"):
        parallel = permutation_test(score, y, groups, 30.0, n_permutations=50, seed=7, n_jobs=2)
    assert serial[0] == parallel[0]
    assert np.array_equal(serial[1], parallel[1])
    other = permutation_test(score, y, groups, 30.0, n_permutations=50, seed=8)
    assert not np.array_equal(serial[1], other[1])


# ------------------------------------------------------------------------------------ result contents


def test_confusion_matrix_follows_labels_and_sums_to_n():
    y = np.array(list("aabbbcccc"))
    pred = np.array(list("abbbccacc"))
    groups = np.arange(len(y))
    labels = ["c", "a", "b"]
    r = evaluate_classifier(
        np.zeros((len(y), 1)), y, groups, labels=labels, n_boot=50, n_permutations=0,
        predict=lambda *_: pred,
    )  # fmt: skip
    expected = [[3, 1, 0], [0, 1, 1], [1, 0, 2]]  # rows: true c, a, b; columns: predicted c, a, b
    assert r.confusion == expected
    assert sum(map(sum, r.confusion)) == r.n == len(y)
    assert r.accuracy == pytest.approx(6 / 9)
    assert r.macro_f1 == pytest.approx(macro_f1(y, pred)) == pytest.approx(f1_score(y, pred, average="macro"))
    assert r.labels == labels and r.chance == pytest.approx(1 / 3)
    assert r.p_value is None


def test_majority_baseline_is_the_training_folds_majority():
    # Imbalanced: 'a' holds 7 of 10 groups, so every training fold's majority is 'a'.
    groups = np.repeat(np.arange(10), 2)
    y = np.repeat(list("aaaaaaabbb"), 2)
    r = evaluate_classifier(np.zeros((20, 1)), y, groups, n_boot=50, n_permutations=0, predict=lambda *_: y)
    assert r.majority_baseline == pytest.approx(0.7)
    # Balanced, leave one group out: the held-out group's class is always the training minority, so the
    # honest baseline is 0, where the full-data majority would claim 0.5.
    groups = np.arange(4)
    y = np.array(list("aabb"))
    r = evaluate_classifier(
        np.zeros((4, 1)), y, groups, n_splits=4, n_boot=50, n_permutations=0, predict=lambda *_: y
    )
    assert r.majority_baseline == 0.0


def test_to_dict_is_json_ready():
    X, y, groups = _grouped_data(4, n_groups=12, per_group=2, n_classes=3, d=3)
    r = evaluate_classifier(X, y, groups, n_boot=50, n_permutations=5, predict=_logo_centroid_predict)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["labels"] == [0, 1, 2] and d["n"] == 24 and d["n_groups"] == 12
    assert d["min_attainable_p"] == pytest.approx(1 / 6) and d["n_boot"] == 50 and d["seed"] == 0
    assert len(d["accuracy_ci"]) == 2 and d["p_value"] >= d["min_attainable_p"]
    assert "predictions" not in d


def test_labels_must_cover_y():
    with pytest.raises(ValueError, match="lacks classes"):
        evaluate_classifier(np.zeros((4, 1)), list("abab"), [0, 0, 1, 1], labels=["a"], n_permutations=0)


# --------------------------------------------------------------------------------------------- pearson


def test_pearson_recovers_a_planted_correlation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = 0.6 * x + 0.8 * rng.normal(size=300)  # true r = 0.6
    out = pearson_with_ci(x, y, n_boot=500, n_permutations=199)
    assert out["r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert out["lo"] < 0.6 < out["hi"] and out["lo"] < out["r"] < out["hi"]
    assert out["p_value"] == out["min_attainable_p"] == 1 / 200
    assert out["n"] == 300


def test_pearson_on_noise_and_by_groups():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(30), 5)
    x = rng.normal(size=150)
    y = rng.normal(size=30)[groups]  # e.g. a cell's valence, constant within a prompt
    out = pearson_with_ci(x, y, groups=groups, n_boot=500, n_permutations=199)
    assert out["lo"] < 0 < out["hi"]
    assert out["p_value"] > 0.05
    rows = pearson_with_ci(x, y, n_boot=500, n_permutations=0)
    assert rows["p_value"] is None and rows["r"] == out["r"]
