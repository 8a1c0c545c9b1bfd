"""Audit findings on the emotion vectors: the neutral PCA must not be a token-0 (attention sink) length artifact,
and the PCA-axis intervals must refit the PCA in every bootstrap resample."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_model

from affectlens.analysis.emotions import affect_axes, unit
from affectlens.config import VectorsConfig
from affectlens.runtime.arch import resolve
from affectlens.stages.vectors import (
    NEUTRAL_START,
    Vectors,
    _items,
    buckets,
    nuisance_basis,
    run_bucket,
    story_start,
)
from affectlens.stats import pearson_with_ci

# ------------------------------------------------------------------------- (1) neutral means and the sink

OFFSET = 12
SINK = 1e4  # token 0 of SmolLM2 at layer 19 is ~115x the other tokens; here far more


def _text(n_words: int, seed: int) -> str:
    return " ".join(f"w{(seed * 7919 + k * 104729) % 997}" for k in range(n_words))


class _WordTokenizer:
    """One token per word (id from the word), no special tokens: token 0 is the text's first word."""

    pad_token_id = 0

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[3 + int(w[1:]) % 120 for w in t.split()] for t in texts]}


def _sink_corpus(n_neutral: int = 30):
    rng = np.random.default_rng(0)
    neutral = tuple(
        SimpleNamespace(id=f"n{i}", text=_text(int(n), i))
        for i, n in enumerate(rng.integers(16, 96, n_neutral))
    )
    stories = tuple(SimpleNamespace(id=f"s{i}", text=_text(40 + i, 100 + i)) for i in range(4))
    return SimpleNamespace(stories=stories, neutral=neutral, implicit=())


def _neutral_means(handle, items, layer: int, *, sink: bool, from_zero: bool = False) -> np.ndarray:
    """[n_neutral, d] through the stage's own path (buckets, run_bucket), token 0 given a huge state if ``sink``."""
    neutral = [i for i in items if i.key.startswith("neutral:")]
    if from_zero:  # the rule before the fix
        neutral = [type(i)(i.key, i.ids, 0) for i in neutral]
    direction = torch.ones(handle.model.config.hidden_size) / handle.model.config.hidden_size**0.5

    def plant(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[:, 0] += SINK * direction  # right padding: column 0 is every row's token 0
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    hook = handle.arch.blocks[layer].register_forward_hook(plant) if sink else None
    try:
        got = {}
        for bucket in buckets(neutral, 512):
            hidden = run_bucket(handle, bucket, [layer])
            got.update({item.key: hidden[j, 0] for j, item in enumerate(bucket)})
    finally:
        if hook is not None:
            hook.remove()
    return torch.stack([got[i.key] for i in neutral]).double().numpy()


def _pc1_vs_inverse_length(means: np.ndarray, lengths: np.ndarray) -> float:
    basis, _ = nuisance_basis(means, 0.5)
    scores = (means - means.mean(axis=0)) @ basis[0]
    return float(np.corrcoef(scores, 1.0 / lengths)[0, 1])


def test_neutral_dialogues_use_the_story_window():
    corpus = _sink_corpus()
    items = _items(SimpleNamespace(tokenizer=_WordTokenizer()), corpus, OFFSET)
    for item in items:
        assert item.start == story_start(len(item.ids), OFFSET) > 0


def test_neutral_pca_is_not_a_token0_length_artifact():
    model = tiny_model("llama", max_position_embeddings=256)
    handle = SimpleNamespace(
        model=model, arch=resolve(model), tokenizer=_WordTokenizer(), device=torch.device("cpu")
    )
    items = _items(handle, _sink_corpus(), OFFSET)
    lengths = np.array([len(i.ids) for i in items if i.key.startswith("neutral:")])
    layer = 2
    clean = _neutral_means(handle, items, layer, sink=False)
    planted = _neutral_means(handle, items, layer, sink=True)
    # The sink never enters a neutral mean, so the components denoising removes cannot be made of it.
    np.testing.assert_allclose(planted, clean, atol=1e-4)
    r_after = _pc1_vs_inverse_length(planted, lengths)
    # The rule before: means from token 0 carry SINK / n, and the first neutral PC is then 1 / n_tokens.
    r_before = _pc1_vs_inverse_length(
        _neutral_means(handle, items, layer, sink=True, from_zero=True), lengths
    )
    assert abs(r_before) > 0.99
    assert abs(r_after) < 0.5


def test_identity_names_the_neutral_window(tmp_path):
    """A run folder written when neutral text was averaged from token 0 must refuse to resume."""
    stage = Vectors(SimpleNamespace(spec="m", fingerprint="f"), str(tmp_path), SimpleNamespace(hash="h", stories=(),
                    neutral=(), implicit=()), VectorsConfig())  # fmt: skip
    stage.layers = [0]
    assert stage.identity()["neutral_start"] == NEUTRAL_START


@pytest.mark.slow
def test_smollm2_first_neutral_pc_is_not_dialogue_length(smollm2):
    """At layer 19 the first neutral PC was dialogue length (from token 0); from the story window it is not."""
    from affectlens.stimuli.corpus import load_corpus

    corpus = load_corpus()
    items = _items(smollm2, SimpleNamespace(stories=(), neutral=corpus.neutral, implicit=()), 50)
    lengths = np.array([len(i.ids) for i in items])
    after = _neutral_means(smollm2, items, 19, sink=False)
    before = _neutral_means(smollm2, items, 19, sink=False, from_zero=True)
    r_before, r_after = _pc1_vs_inverse_length(before, lengths), _pc1_vs_inverse_length(after, lengths)
    print(
        f"r(first neutral PC, 1/n_tokens), n = {len(lengths)}: from token 0 {r_before:.3f}, story window {r_after:.3f}"
    )
    assert abs(r_before) > 0.8
    assert abs(r_after) < 0.5


# --------------------------------------------------------------------------- (2) intervals refit the PCA


def _population(rng, n: int, sds=(3.0, 1.5, 1.4), d: int = 16):
    """Vectors = valence, arousal and a third factor along fixed axes; arousal's and the third's variances
    nearly equal, so which of them is a sample's PC2 is itself uncertain."""
    axes = np.linalg.qr(np.random.default_rng(99).normal(size=(d, d)))[0][:, :3].T
    latent = rng.normal(size=(n, 3))
    return (latent * np.array(sds)) @ axes + 0.3 * rng.normal(size=(n, d)), latent[:, 0], latent[:, 1]


def test_axes_interval_matches_the_sampling_spread_when_pc2_and_pc3_are_close():
    n_emotions = 20
    # The sampling distribution of r(PC2, arousal) over fresh sets of emotions: what the interval must reflect.
    fresh = [
        affect_axes(*_population(np.random.default_rng(1000 + s), n_emotions), n_boot=1, n_permutations=0)
        for s in range(200)
    ]
    lo_true, median, hi_true = np.quantile([a["pc2_arousal"]["r"] for a in fresh], [0.025, 0.5, 0.975])
    spread = hi_true - lo_true
    refit, fixed = [], []
    for seed in range(10):
        vecs, valence, arousal = _population(np.random.default_rng(seed), n_emotions)
        entry = affect_axes(vecs, valence, arousal, n_boot=200, n_permutations=0, seed=seed)["pc2_arousal"]
        x = unit(vecs) - unit(vecs).mean(axis=0)
        scores = x @ np.linalg.svd(x, full_matrices=False)[2][1]  # PC2, the PCA held fixed
        held = pearson_with_ci(
            scores * np.sign(scores @ arousal), arousal, n_boot=200, n_permutations=0, seed=seed
        )
        assert held["r"] == pytest.approx(entry["r"])
        refit.append((entry["lo"], entry["hi"]))
        fixed.append((held["lo"], held["hi"]))
    refit, fixed = np.array(refit), np.array(fixed)
    width_refit, width_fixed = np.mean(refit[:, 1] - refit[:, 0]), np.mean(fixed[:, 1] - fixed[:, 0])
    assert width_fixed < 0.65 * spread  # about half the real spread: too sure of itself
    assert 0.8 * spread < width_refit < 1.2 * spread
    covers = lambda iv: np.mean((iv[:, 0] <= median) & (median <= iv[:, 1]))  # noqa: E731
    assert covers(refit) >= 0.8 > 0.5 >= covers(fixed)


def test_axes_interval_stays_high_when_the_axes_are_well_separated():
    """Refitting widens an interval only as far as the axes move: here PC1 and PC2 barely do."""
    rng = np.random.default_rng(3)
    basis, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    latent = rng.normal(size=(20, 3)) * np.array([3, 1, 0.3])
    vecs = 10 * basis[:, 3] + latent @ basis[:, :3].T + 0.05 * rng.normal(size=(20, 32))
    axes = affect_axes(vecs, latent[:, 0], latent[:, 1], n_boot=200, n_permutations=0)
    assert axes["variance_explained"][1] > 5 * axes["variance_explained"][2]
    for key, floor in (("pc1_valence", 0.99), ("pc2_arousal", 0.8)):
        entry = axes[key]
        assert floor < entry["lo"] <= entry["lo_fixed_pca"] <= entry["r"] <= entry["hi"]
