"""The Big Five trait corpus that ``persona train`` fine-tunes on and ``persona measure`` tests with.

One file per trait, ``data/traits/<trait>.jsonl``, one opinion question a line, answered three ways: in the
high pole's voice, in the low pole's voice, and in a neutral voice (the control adapter's data: the same
questions, style and length, without the trait)::

    {"id": "extraversion-004", "split": "test", "question": "...", "high": "...", "low": "...", "neutral": "..."}

``split`` is ``train`` or ``test``; the two share no question. The corpus is written for this project and holds
no emoji, kaomoji or emoticon, so any that a fine-tuned model emits were not trained in: :func:`load_traits`
refuses a file that breaks either rule, naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import regex

from affectlens.errors import AffectlensError
from affectlens.faces import is_emoji_cluster
from affectlens.stimuli.jsonl import DATA_DIR, Name, Ref, Text, content_hash, read_records, record

TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
VOICES = ("high", "low", "neutral")
Voice = Literal["high", "low", "neutral"]
TRAIT_DIR = DATA_DIR / "traits"

# What the in-context test asks for: a trait's description in plain words, never its name alone.
DESCRIPTIONS = {
    "openness": "curious, imaginative and open to new ideas and experiences",
    "conscientiousness": "organised, disciplined, careful and reliable",
    "extraversion": "outgoing, talkative, energetic and sociable",
    "agreeableness": "warm, kind, trusting and cooperative",
    "neuroticism": "anxious, worried, easily stressed and moody",
}

_GRAPHEME = regex.compile(r"\X")
# Emoticons and kaomoji fragments a tokenizer could learn a face from, even in ASCII.
_EMOTICON = re.compile(
    r"(?<!\S)[:;=][-o^']?[()\[\]DPpO3/\\|](?!\w)|<3|\^[_.-]?\^|\b[xX]D\b|T_T|\b[oO]_[oO]\b|[()]"
)


@record
class TraitItem:
    id: Name
    split: Ref
    question: Text
    high: Text
    low: Text
    neutral: Text

    def answer(self, voice: Voice) -> str:
        return getattr(self, voice)


@dataclass(frozen=True)
class TraitCorpus:
    trait: str
    items: tuple[TraitItem, ...]
    source: str

    @property
    def hash(self) -> str:
        return content_hash({"trait": self.trait, **vars(item)} for item in self.items)

    def split(self, split: Literal["train", "test"]) -> list[TraitItem]:
        return [item for item in self.items if item.split == split]


def face_like(text: str) -> str | None:
    """The first emoji, kaomoji-like bracket or emoticon in ``text``, or None."""
    for cluster in _GRAPHEME.findall(text):
        if is_emoji_cluster(cluster) or ord(cluster[0]) > 0x7F:
            return cluster  # the corpus is plain ASCII: anything else could be a face's part
    found = _EMOTICON.search(text)
    return found.group() if found else None


def _normalised(question: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", question.lower()))


def check_corpus(path: Path, items: list[TraitItem]) -> None:
    """The corpus rules: no face of any kind, and no question in both splits (nor twice in one)."""
    seen: dict[str, str] = {}
    for item in items:
        for field in ("question", *VOICES):
            if (face := face_like(getattr(item, field))) is not None:
                raise AffectlensError(
                    f"{path}: {item.id} {field} holds {face!r}; the trait corpus has no faces"
                )
        key = _normalised(item.question)
        if key in seen:
            raise AffectlensError(f"{path}: {item.id} repeats the question of {seen[key]}")
        seen[key] = item.id
    if not any(item.split == "test" for item in items) or not any(item.split == "train" for item in items):
        raise AffectlensError(f"{path}: needs both train and test questions")


def load_traits(trait: str, path: Path | str | None = None) -> TraitCorpus:
    """The trait's corpus: the shipped file, or a file of the same schema."""
    if trait not in TRAITS:
        raise AffectlensError(f"unknown trait {trait!r}; expected one of {', '.join(TRAITS)}")
    source = Path(path) if path is not None else TRAIT_DIR / f"{trait}.jsonl"
    items = read_records(source, TraitItem, what="question id", context={"split": ("train", "test")})
    check_corpus(source, items)
    return TraitCorpus(trait, tuple(items), str(source))
