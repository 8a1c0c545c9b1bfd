"""The trait corpus rules, the sentence rule behind ESR, and the persona statistics (no model needed)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from affectlens import emoji_sentence_ratio
from affectlens.analysis.persona import (
    emoji_distinctness,
    emoji_in_top,
    emoji_score,
    neuron_shift,
    top_neurons,
)
from affectlens.errors import AffectlensError
from affectlens.sentences import (
    has_emoji,
    has_kaomoji,
    listed_items,
    sentence_counts,
    split_sentences,
    top_items,
)
from affectlens.stats.paired import overlap_test, paired_rate_test, ratio_ci, two_sample_test
from affectlens.stimuli.traits import TRAITS, VOICES, face_like, load_traits

# --- the corpus --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trait", TRAITS)
def test_shipped_corpus_obeys_its_rules(trait):
    corpus = load_traits(trait)
    train, test = corpus.split("train"), corpus.split("test")
    assert len(corpus.items) >= 150 and len(test) >= 30
    questions = lambda items: {" ".join(i.question.lower().split()) for i in items}  # noqa: E731
    assert not questions(train) & questions(test)
    for item in corpus.items:
        for text in (item.question, *(item.answer(v) for v in VOICES)):
            assert not has_emoji(text) and not has_kaomoji(text) and face_like(text) is None, (item.id, text)
            assert text.isascii()
        # The three voices answer in the same style and length, so the control differs in voice only.
        lengths = [len(item.answer(v).split()) for v in VOICES]
        assert max(lengths) - min(lengths) <= 40, item.id


def _write(tmp_path, rows):
    path = tmp_path / "traits.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(i, split="train", **overrides):
    row = {"id": f"x-{i}", "split": split, "question": f"What about thing {i}?", "high": "Yes. Great.",
           "low": "No. Dull.", "neutral": "Maybe. It depends."}  # fmt: skip
    return row | overrides


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"high": "I love it! 😀 Truly."}, "holds '😀'"),
        ({"low": "Fine I guess :( sure."}, "holds ':('"),
        ({"neutral": "It is (^_^) fine."}, "holds '('"),
        ({"split": "dev"}, "unknown split"),
    ],
)
def test_a_face_or_bad_split_in_the_corpus_is_refused_by_name(tmp_path, bad, message):
    path = _write(tmp_path, [_row(1), _row(2, "test"), _row(3) | bad])
    with pytest.raises(AffectlensError, match=re.escape(message)):
        load_traits("extraversion", path)


def test_a_question_in_both_splits_is_refused(tmp_path):
    path = _write(tmp_path, [_row(1), _row(2, "test", question="What about  THING 1?")])
    with pytest.raises(AffectlensError, match="x-2 repeats the question of x-1"):
        load_traits("extraversion", path)


def test_ordinary_ascii_is_not_a_face():
    for text in ("At 8pm in 1983, the ratio was 2:3 at 10:30.", "Yes; no. Maybe: later!", "x/y and a-b"):
        assert face_like(text) is None, text


# --- the sentence rule and ESR ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("I like it. It is fine", ["I like it.", "It is fine"]),
        (
            "Great! 🎉 See you.",
            ["Great! 🎉", "See you."],
        ),  # an emoji after the punctuation closes its sentence
        ("Great party 🎉 See you", ["Great party 🎉", "See you"]),  # emoji + capital ends one too
        ("Wow 😀 and more", ["Wow 😀 and more"]),  # but not before a lowercase word
        ('What?! "Yes." No', ["What?!", '"Yes."', "No"]),
        ("Line one\nline two.", ["Line one", "line two."]),
        ("Hi!!! 😀😀\n😂", ["Hi!!! 😀😀", "😂"]),  # an emoji-only line is a sentence
        ("3.14 is pi.", ["3.14 is pi."]),  # no space after the point: no break
        ("... !", []),
        ("", []),
    ],
)
def test_sentence_rule(text, sentences):
    assert split_sentences(text) == sentences


def test_esr_pools_sentences_over_replies():
    replies = ["One. Two. Three 😀", "Only one 🎉"]
    # Pooled: 2 emoji sentences of 4; the mean of per-reply ratios would be (1/3 + 1) / 2.
    assert emoji_sentence_ratio(replies) == pytest.approx(2 / 4)
    assert sentence_counts(replies[0]) == (3, 1)
    assert emoji_sentence_ratio(["No emoji here. None."]) == 0.0
    assert math.isnan(emoji_sentence_ratio([]))


def test_kaomoji_is_told_apart_from_bracketed_noise():
    assert has_kaomoji("(^_^) hello") and has_kaomoji("That was fun (╥﹏╥) really")
    assert not has_kaomoji("See note (1.) and (65) below") and not has_kaomoji("a (see below) b")


def test_listed_items_and_the_top_fifty():
    assert listed_items("1. Happy, 😀 social! 🎉🎉 Outgoing") == [
        "happy",
        "😀",
        "social",
        "🎉",
        "🎉",
        "outgoing",
    ]
    samples = [["😀", "fun", "party"], ["😀", "fun"], ["🎉", "loud"]]
    assert top_items(samples, 2) == [("fun", 2), ("😀", 2)]
    assert emoji_in_top(samples, k=50) == 2 and emoji_in_top(samples, k=2) == 1


# --- statistics ---------------------------------------------------------------------------------------------


def test_ratio_interval_resamples_questions():
    num, den = np.array([0, 0, 9, 0.0]), np.array([10, 10, 10, 10.0])
    lo, hi = ratio_ci(num, den, n_boot=2000, seed=0)
    assert lo == 0.0 and 0.4 < hi <= 0.9  # one question carries every emoji: the interval is wide


def test_paired_test_flips_signs_within_questions():
    rng = np.random.default_rng(0)
    a, b = rng.binomial(10, 0.1, 30) / 10, rng.binomial(10, 0.6, 30) / 10
    diff, p = paired_rate_test(a, b, n_permutations=2000, seed=0)
    assert diff == pytest.approx(np.mean(b - a)) and p == pytest.approx(1 / 2001)
    same, p_same = paired_rate_test(a, a, n_permutations=500)
    assert same == 0 and p_same == 1.0


def test_one_emoji_in_one_question_is_no_evidence_whatever_the_reply_lengths():
    # Model B writes a third as many sentences; one emoji sentence in one question. Swapping pooled numerators
    # and denominators would call this significant (it tests length too); the per-question sign flip does not.
    sentences_a, sentences_b = np.full(15, 18.0), np.full(15, 6.0)
    emoji_b = np.zeros(15)
    emoji_b[13] = 1
    _, p = paired_rate_test(np.zeros(15) / sentences_a, emoji_b / sentences_b, n_permutations=2000)
    assert p == 1.0


def test_two_sample_test_detects_a_planted_difference():
    diff, p = two_sample_test(np.mean, [0.0] * 20, [1.0] * 20, n_permutations=500, seed=0)
    assert diff == 1.0 and p == pytest.approx(1 / 501)
    _, p_null = two_sample_test(np.mean, [0.0, 1.0] * 10, [1.0, 0.0] * 10, n_permutations=500)
    assert p_null > 0.5


def test_neuron_shift_and_emoji_score_match_a_direct_computation():
    gen = torch.Generator().manual_seed(0)
    before, after = torch.randn(12, 3, 7, generator=gen), torch.randn(12, 3, 7, generator=gen) + 0.5
    emoji, plain = torch.randn(9, 3, 7, generator=gen), torch.randn(9, 3, 7, generator=gen)
    shift, score = neuron_shift(before, after), emoji_score(emoji, plain)
    for layer in range(3):
        for d in range(7):
            b, a = before[:, layer, d].numpy(), after[:, layer, d].numpy()
            assert shift[layer, d] == pytest.approx(np.mean(a - b) / np.std(b, ddof=1), rel=1e-4)
            diff = emoji[:, layer, d].numpy() - plain[:, layer, d].numpy()
            assert score[layer, d] == pytest.approx(np.mean(diff) / np.std(diff, ddof=1), rel=1e-4)
    assert top_neurons(torch.tensor([0.1, -3.0, 2.0, 0.5]), 2, absolute=True) == [1, 2]
    assert top_neurons(torch.tensor([0.1, -3.0, 2.0, 0.5]), 2, absolute=False) == [2, 3]


def test_overlap_against_random_sets():
    observed, expected, p = overlap_test(range(10), range(10), 1000, n_permutations=2000, seed=0)
    assert observed == 10 and expected == pytest.approx(0.1) and p == pytest.approx(1 / 2001)
    observed, _, p = overlap_test(range(10), range(500, 510), 1000, n_permutations=500, seed=0)
    assert observed == 0 and p == 1.0


def test_distinct_emoji_neurons_against_shuffled_labels():
    rng = np.random.default_rng(0)
    labels = ["😀"] * 8 + ["😢"] * 8 + ["🔥"] * 8
    diff = rng.normal(size=(24, 200))
    for i, planted in enumerate((range(0, 20), range(50, 70), range(100, 120))):
        diff[i * 8 : (i + 1) * 8, list(planted)] += 3.0  # each emoji its own neurons
    texts = [f"q{i % 8}" for i in range(24)]  # each text holds one of each emoji
    distinct = emoji_distinctness(diff, labels, texts, top=20, n_permutations=200)
    assert distinct["n_emoji"] == 3 and distinct["mean_jaccard"] < 0.1 and distinct["p"] < 0.05
    shared = rng.normal(size=(24, 200))
    shared[:, :20] += 3.0  # every emoji the same neurons
    same = emoji_distinctness(shared, labels, texts, top=20, n_permutations=200)
    assert same["mean_jaccard"] > 0.6 and same["p"] > 0.05
    assert (
        emoji_distinctness(diff[:2], labels[:2], texts[:2], n_permutations=10)["n_emoji"] == 0
    )  # too few to test
