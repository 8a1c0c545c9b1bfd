"""Story generation: a model writes an emotion corpus under the same constraints as the shipped one.

For every emotion and topic of a source corpus (default: the shipped one) the model is asked for a story that
conveys the emotion through events and behaviour, never naming it. Each reply is checked, and a rejected one is
asked for again with a fresh random stream, up to ``max_attempts`` times:

- ``banned_word``: it uses the emotion's name or one of its banned words (whole words, any case);
- ``cut_off``: it hit the token cap, or it does not end a sentence;
- ``too_short``: fewer than ``min_words`` words.

A story that runs past ``max_words`` stops there and is cut back to its last complete sentence; it is kept if
that leaves at least ``min_words`` (counted as ``trimmed``). The output folder is a corpus (the source's
emotions, topics, neutral dialogues and implicit scenarios, with the new stories) that ``affectlens vectors
--corpus`` reads, plus ``generation.json`` with the counts. Resumes per emotion.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import DynamicCache

from affectlens.config import StoryConfig
from affectlens.errors import AffectlensError
from affectlens.runtime.capture import position_ids
from affectlens.runtime.generate import Sampling, decode, row_seed
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.render import Renderer
from affectlens.runtime.tokens import left_pad
from affectlens.stages.base import Part, Stage
from affectlens.stimuli.corpus import FILES, Corpus, Emotion, Topic, banned_hits, load_corpus
from affectlens.store.atomic import write_json, write_jsonl
from affectlens.store.runs import STORIES

OUTCOMES = ("accepted", "trimmed", "banned_word", "cut_off", "too_short")
INSTRUCTION = "You are a novelist who writes short, concrete scenes."
REQUEST = (
    "Write a story of {min_words} to {max_words} words about {topic}. Its main character feels {emotion}, "
    "but the story must never say so: show the feeling only through what happens and what the character does "
    "and says. Do not use any of these words: {banned}. Reply with the story only, without a title."
)
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")
_FINAL = re.compile(r"[.!?…][\"'”’)\]]*$")


def word_count(text: str) -> int:
    return len(text.split())


def clean_story(reply: str) -> str:
    """The story in a reply: a leading title line dropped, whitespace collapsed to single spaces."""
    lines = [line.strip() for line in reply.strip().splitlines()]
    if len(lines) > 1 and lines[0] and (lines[0].lower().startswith("title") or not _ends_sentence(lines[0])):
        lines = lines[1:]
    return " ".join(" ".join(lines).split()).strip("*# ")


def _ends_sentence(text: str) -> bool:
    return _FINAL.search(text.rstrip()) is not None


def trim_to_sentence(text: str, max_words: int) -> str:
    """``text`` cut back to its last complete sentence within ``max_words`` words ("" if there is none)."""
    kept = ""
    for match in _SENTENCE_END.finditer(text):
        candidate = text[: match.end()]
        if word_count(candidate) > max_words:
            break
        kept = candidate
    return kept


def judge(text: str, stop: str, emotion: Emotion, config: StoryConfig) -> tuple[str, str]:
    """(outcome, the story as kept): one of ``OUTCOMES``; the story is "" unless accepted or trimmed."""
    if banned_hits(text, (emotion.name, *emotion.banned)):
        return "banned_word", ""
    outcome = "accepted"
    if stop == "too_long" or word_count(text) > config.max_words:
        text, outcome = trim_to_sentence(text, config.max_words), "trimmed"
    elif stop != "eos" or not _ends_sentence(text):
        return "cut_off", ""
    if word_count(text) < config.min_words:
        return ("cut_off" if outcome == "trimmed" else "too_short"), ""
    return outcome, text


def request(emotion: Emotion, topic: Topic, config: StoryConfig) -> str:
    banned = ", ".join(dict.fromkeys((emotion.name, *emotion.banned)))
    return REQUEST.format(
        min_words=config.min_words,
        max_words=config.max_words,
        topic=topic.description or topic.id,
        emotion=emotion.name,
        banned=banned,
    )


@torch.inference_mode()
def sample_stories(
    handle: ModelHandle, renderer: Renderer, messages: list[str], seeds: list[int], config: StoryConfig
) -> list[tuple[str, str]]:
    """(cleaned story, stop reason) for each message, sampled in one left-padded batch."""
    ids, mask = left_pad([renderer.encode(m) for m in messages], handle.tokenizer.pad_token_id or 0)
    ids, mask = ids.to(handle.device), mask.to(handle.device)
    cache = DynamicCache(config=handle.model.config)
    out = handle.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids(mask),
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )

    def settled(text: str) -> str | None:
        return "too_long" if word_count(text) > config.max_words else None

    tokens, stops = decode(
        handle,
        out.logits[:, -1, :],
        cache,
        mask,
        [torch.Generator().manual_seed(s) for s in seeds],
        max_new_tokens=config.max_new_tokens,
        sampling=Sampling.of(config),
        settled=settled,
    )
    replies = [handle.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    return [(clean_story(reply), stop) for reply, stop in zip(replies, stops, strict=True)]


class Stories(Stage):
    """One part per emotion: every attempt at every topic's stories."""

    name = STORIES

    def __init__(self, handle: ModelHandle, out: str, source: Corpus, config: StoryConfig, *,
                 quiet: bool = False) -> None:  # fmt: skip
        super().__init__(handle, out, quiet=quiet)
        self.source, self.config = source, config
        self.renderer = Renderer(handle.tokenizer, INSTRUCTION)

    def validate(self) -> None:
        if self.config.min_words > self.config.max_words:
            raise AffectlensError(
                f"need min_words <= max_words, got {self.config.min_words} and {self.config.max_words}"
            )

    def identity(self) -> dict[str, Any]:
        return {
            "model": {"spec": self.handle.spec, "fingerprint": self.handle.fingerprint},
            "source": {"hash": self.source.hash, "path": self.source.source},
            "config": self.config.identity(),
        }

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {"prompting": self.renderer.describe()}

    def keys(self) -> list[str]:
        return [emotion.name for emotion in self.source.emotions]

    def groups(self, pending: Sequence[str]) -> list[list[str]]:
        return [[name] for name in pending]

    def tag(self, group: Sequence[str]) -> str:
        return group[0]

    def compute(self, group: list[str]) -> Part:
        emotion = self.source.emotion(group[0])
        frame = _write_emotion(self.handle, self.renderer, emotion, self.source.topics, self.config)
        return Part(tables={"stories": frame})

    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        attempts = self.store.merged_table(self.name, "stories")
        summary = _write_corpus(self.store.root, self.source, attempts, self.config)
        summary["seconds"] = round(seconds, 1)
        return summary


def generate_stories(handle: ModelHandle, out: str, source: Corpus | None = None,
                     config: StoryConfig | None = None, *, quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write a corpus of model-written stories into ``out``; returns the counts (also in generation.json)."""
    return Stories(handle, out, source or load_corpus(), config or StoryConfig(), quiet=quiet).run()


def _write_emotion(
    handle: ModelHandle, renderer: Renderer, emotion: Emotion, topics: tuple[Topic, ...], config: StoryConfig
) -> pd.DataFrame:
    """Every attempt for one emotion: (emotion, topic, replicate, attempt, outcome, text)."""
    wanted = [(topic, k) for topic in topics for k in range(config.stories_per_topic)]
    rows: list[dict[str, object]] = []
    kept: set[tuple[str, int]] = set()
    for attempt in range(config.max_attempts):
        todo = [(topic, k) for topic, k in wanted if (topic.id, k) not in kept]
        for start in range(0, len(todo), config.batch):
            batch = todo[start : start + config.batch]
            seeds = [row_seed(config.seed, f"{emotion.name}|{topic.id}|{k}", attempt) for topic, k in batch]
            messages = [request(emotion, topic, config) for topic, _ in batch]
            for (topic, k), (text, stop) in zip(
                batch, sample_stories(handle, renderer, messages, seeds, config), strict=True
            ):
                outcome, story = judge(text, stop, emotion, config)
                if story:
                    kept.add((topic.id, k))
                rows.append(
                    {"emotion": emotion.name, "topic": topic.id, "replicate": k, "attempt": attempt,
                     "outcome": outcome, "text": story or text}
                )  # fmt: skip
    return pd.DataFrame(rows, columns=["emotion", "topic", "replicate", "attempt", "outcome", "text"])


def _write_corpus(
    out: Path, source: Corpus, attempts: pd.DataFrame, config: StoryConfig
) -> dict[str, object]:
    """The corpus files and generation.json; fails, after writing, if an emotion got no story at all."""
    good = attempts[attempts["outcome"].isin(["accepted", "trimmed"])]
    stories = [
        {"id": f"{row.emotion}-{row.topic}" + (f"-{row.replicate}" if config.stories_per_topic > 1 else ""),
         "emotion": row.emotion, "topic": row.topic, "text": row.text}
        for row in good.itertuples()
    ]  # fmt: skip
    records = {kind: [_record(kind, item) for item in getattr(source, kind)] for kind in FILES}
    records["stories"] = stories
    for kind in FILES:
        write_jsonl(out / f"{kind}.jsonl", records[kind])
    wanted = len(source.topics) * config.stories_per_topic
    per_emotion = good.groupby("emotion").size().reindex(source.emotion_names, fill_value=0)
    summary: dict[str, object] = {
        "stories": len(stories),
        "wanted": wanted * len(source.emotions),
        "attempts": len(attempts),
        "outcomes": {o: int((attempts["outcome"] == o).sum()) for o in OUTCOMES},
        "short_of_target": {e: wanted - int(n) for e, n in per_emotion.items() if n < wanted},
        "words": {
            "mean": round(float(good["text"].map(word_count).mean()), 1) if len(good) else None,
            "min": config.min_words,
            "max": config.max_words,
        },
    }
    write_json(out / "generation.json", summary)
    empty = [e for e, n in per_emotion.items() if n == 0]
    if empty:
        raise AffectlensError(
            f"no acceptable story for emotion(s) {', '.join(empty)} after {config.max_attempts} attempts; "
            f"see {out / 'generation.json'} (raise --max-attempts, or use a more capable model)"
        )
    load_corpus(out)  # the folder must load as a corpus
    return summary


def _record(kind: str, item: object) -> dict[str, object]:
    record = asdict(item)
    if kind == "emotions":
        record["banned"] = list(record["banned"])
    return record
