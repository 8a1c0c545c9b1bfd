"""Story generation: the acceptance rules, retries with counts, the corpus it writes, resume, and sampling."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import tiny_handle

import affectlens.stages.stories as stories_module
from affectlens.config import StoryConfig
from affectlens.errors import AffectlensError
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.render import Renderer
from affectlens.stages.stories import (
    clean_story,
    generate_stories,
    judge,
    request,
    sample_stories,
    trim_to_sentence,
    word_count,
)
from affectlens.stimuli.corpus import banned_hits, load_corpus

CONFIG = StoryConfig(min_words=8, max_words=20, max_attempts=3)


def sentence(n_words: int, word: str = "stone") -> str:
    return " ".join([word] * n_words) + "."


@pytest.fixture(scope="module")
def source():
    """The shipped corpus cut to two emotions and three topics."""
    full = load_corpus()
    emotions = full.emotions[:2]
    names = {e.name for e in emotions}
    return dataclasses.replace(
        full,
        emotions=emotions,
        topics=full.topics[:3],
        stories=tuple(s for s in full.stories if s.emotion in names),
        implicit=tuple(s for s in full.implicit if s.emotion in names),
    )


def test_judge_applies_every_rule(source):
    emotion = source.emotions[0]
    good = sentence(10)
    assert judge(good, "eos", emotion, CONFIG) == ("accepted", good)
    assert judge(f"{good} She was {emotion.name}.", "eos", emotion, CONFIG)[0] == "banned_word"
    assert judge(good.upper().replace(".", f" {emotion.banned[0].upper()}."), "eos", emotion, CONFIG)[0] == (
        "banned_word"
    )
    assert judge(good, "cap", emotion, CONFIG) == ("cut_off", "")  # the token cap: no real ending
    assert judge(good[:-1], "eos", emotion, CONFIG) == ("cut_off", "")  # no sentence end
    assert judge(sentence(5), "eos", emotion, CONFIG) == ("too_short", "")
    long = sentence(12) + " " + sentence(12)
    outcome, kept = judge(long, "too_long", emotion, CONFIG)
    assert outcome == "trimmed" and kept == sentence(12)
    assert judge(sentence(30), "too_long", emotion, CONFIG) == ("cut_off", "")  # no sentence fits


def test_trim_and_clean():
    text = "One two three. Four five six! Seven eight nine ten?"
    assert trim_to_sentence(text, 6) == "One two three. Four five six!"
    assert trim_to_sentence(text, 2) == ""
    assert (
        clean_story("Title: The Jar\n\nShe lifted the lid.\nIt was empty.")
        == "She lifted the lid. It was empty."
    )
    assert clean_story("  She lifted   the lid.\n\nIt was empty. ") == "She lifted the lid. It was empty."


def test_request_names_the_constraints(source):
    emotion, topic = source.emotions[0], source.topics[0]
    text = request(emotion, topic, CONFIG)
    assert topic.description in text and "8 to 20 words" in text
    assert all(word in text for word in (emotion.name, *emotion.banned))


def test_rejections_are_retried_counted_and_the_corpus_loads(source, tiny, tmp_path, monkeypatch):
    """Scripted replies: a first attempt is short, cut off or fine by topic; a retry is always fine."""
    calls = []

    def scripted(handle, renderer, messages, seeds, config):
        calls.append(len(messages))
        if len(messages) == len(source.topics):  # a first attempt: every topic of an emotion
            return [(sentence(3), "eos"), (sentence(10)[:-1], "cap"), (sentence(10), "eos")]
        return [(sentence(10, word="pebble"), "eos")] * len(messages)

    monkeypatch.setattr(stories_module, "sample_stories", scripted)
    summary = generate_stories(tiny, str(tmp_path / "gen"), source, CONFIG, quiet=True)
    assert calls == [3, 2, 3, 2]  # per emotion: three topics, then only the two rejected ones again
    assert summary["outcomes"] == {
        "accepted": 6,
        "trimmed": 0,
        "banned_word": 0,
        "cut_off": 2,
        "too_short": 2,
    }
    assert summary["stories"] == summary["wanted"] == 6 and summary["attempts"] == 10
    assert summary["short_of_target"] == {}
    written = load_corpus(tmp_path / "gen")
    assert len(written.stories) == 6 and written.emotion_names == source.emotion_names
    assert written.neutral == source.neutral and written.implicit == source.implicit
    assert all(not banned_hits(s.text, written.emotion(s.emotion).banned) for s in written.stories)
    assert json.loads((tmp_path / "gen" / "generation.json").read_text())["attempts"] == 10
    assert generate_stories(tiny, str(tmp_path / "gen"), source, CONFIG, quiet=True) == summary  # resumed
    assert len(calls) == 4


def test_an_emotion_with_no_acceptable_story_fails_after_writing_counts(source, tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(
        stories_module, "sample_stories", lambda h, r, messages, s, c: [(sentence(2), "eos")] * len(messages)
    )
    with pytest.raises(AffectlensError, match="no acceptable story for emotion"):
        generate_stories(tiny, str(tmp_path / "gen"), source, CONFIG, quiet=True)
    counts = json.loads((tmp_path / "gen" / "generation.json").read_text())
    assert counts["outcomes"]["too_short"] == 2 * 3 * CONFIG.max_attempts and counts["stories"] == 0


def test_bad_settings_are_refused(source, tiny, tmp_path):
    with pytest.raises(AffectlensError, match="min_words"):
        generate_stories(tiny, str(tmp_path / "x"), source, StoryConfig(min_words=50, max_words=10))


@pytest.fixture(scope="module")
def tiny(tokenizer) -> ModelHandle:
    """A random 2-block llama with the tiny byte-level BPE and its chat template (conftest)."""
    return tiny_handle(tokenizer, "llama", num_hidden_layers=2)


def test_sampling_a_model_is_seeded_and_bounded(source, tiny):
    handle = tiny
    renderer = Renderer(handle.tokenizer, stories_module.INSTRUCTION)
    config = StoryConfig(min_words=2, max_words=6, max_new_tokens=12)
    messages = [request(source.emotions[0], topic, config) for topic in source.topics]
    first = sample_stories(handle, renderer, messages, [1, 2, 3], config)
    again = sample_stories(handle, renderer, messages[:1], [1], config)
    assert first[0] == again[0]  # a story depends on its seed, not on its batch
    assert first[0] != first[1]
    for text, stop in first:
        assert stop in ("eos", "cap", "too_long")
        if stop != "too_long":  # a reply stops as soon as it runs past max_words
            assert word_count(text) <= config.max_words
