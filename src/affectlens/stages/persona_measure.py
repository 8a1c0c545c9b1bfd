"""``persona measure``: emoji that nobody trained in, on the trait corpus's held-out questions.

Keys are ``q:<question id>`` (replies, emoji mass, neurons) and ``ic:<sample>`` (the in-context request).
Per held-out question:
- ``samples`` sampled replies: their sentences, emoji sentences, emoji and kaomoji;
- the emoji mass at the first reply token (from the sampling prefill) and at the sentence ends of the
  question's three corpus answers (high, low, neutral voice), teacher-forced, so every model reads the same text;
- neurons: MLP activations at the last prompt token, and on the neutral answer with an emoji inserted after
  each sentence, averaged over the emoji's tokens and over the other answer tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from affectlens.config import PersonaMeasureConfig
from affectlens.errors import AffectlensError
from affectlens.runtime.generate import Sampling, row_seed
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.persona import (
    emoji_start_ids,
    end_positions,
    reply_tokens,
    sample_replies,
    teacher_forced_pass,
)
from affectlens.runtime.render import Renderer
from affectlens.sentences import has_emoji, has_kaomoji, listed_items, sentence_counts, sentence_spans
from affectlens.stages.base import Part, Stage
from affectlens.stimuli.traits import DESCRIPTIONS, VOICES, TraitCorpus, TraitItem
from affectlens.store.persona import MEASURE, write_measure

# Inserted into the emoji-bearing texts, in turn: positive, negative and neutral faces and symbols.
PROBE_EMOJI = ("😀", "😂", "😊", "😍", "🥳", "🎉", "✨", "🔥", "👍", "💪", "😎", "🤔",
               "😢", "😭", "😡", "😱", "😴", "🙄", "😅", "🙏", "🌟", "🚀", "🌈", "💡")  # fmt: skip
IN_CONTEXT = (
    "List {n} tokens that best stand for a person who is {description}. "
    "Reply with the {n} tokens only, separated by spaces."
)
_IC_BATCH = 16


def with_emoji(text: str, question_id: str) -> tuple[str, list[tuple[int, int]]]:
    """``text`` with an emoji after each sentence, and the emoji's character spans in the new text."""
    start = sum(map(ord, question_id))  # a fixed, per-question rotation through PROBE_EMOJI
    out, spans, last = [], [], 0
    for j, (_, end) in enumerate(sentence_spans(text)):
        out.append(text[last:end] + " ")
        emoji = PROBE_EMOJI[(start + j) % len(PROBE_EMOJI)]
        offset = sum(map(len, out))
        spans.append((offset, offset + len(emoji)))
        out.append(emoji)
        last = end
    out.append(text[last:])
    return "".join(out), spans


class PersonaMeasure(Stage):
    name = MEASURE

    def __init__(self, handle: ModelHandle, out: str, corpus: TraitCorpus, config: PersonaMeasureConfig, *,
                 label: str | None = None, quiet: bool = False) -> None:  # fmt: skip
        super().__init__(handle, out, quiet=quiet)
        self.corpus, self.config, self.label = corpus, config, label
        self.renderer = Renderer(handle.tokenizer, config.instruction)
        self.items: dict[str, TraitItem] = {f"q:{item.id}": item for item in corpus.split("test")}

    def validate(self) -> None:
        if self.corpus.trait != self.config.trait:
            raise AffectlensError(f"corpus is for {self.corpus.trait!r}, config for {self.config.trait!r}")
        if not self.items:
            raise AffectlensError(f"{self.corpus.source}: no held-out (test) questions")

    def identity(self) -> dict[str, Any]:
        return {
            "model": {"spec": self.handle.spec, "fingerprint": self.handle.fingerprint},
            "stimuli": {"trait": self.corpus.trait, "hash": self.corpus.hash, "n": len(self.items)},
            "config": self.config.identity(),
        }

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {"label": self.label, "prompting": self.renderer.describe()}

    def keys(self) -> list[str]:
        return [*self.items, *(f"ic:{i:04d}" for i in range(self.config.in_context_samples))]

    def weight(self) -> int:
        return 1

    def prepare(self, pending: Sequence[str]) -> None:
        self.emoji_ids = emoji_start_ids(self.handle.tokenizer)
        self.sampling = Sampling.of(self.config)

    def groups(self, pending: Sequence[str]) -> list[list[str]]:
        questions = [k for k in pending if k.startswith("q:")]
        requests = [k for k in pending if k.startswith("ic:")]
        size = self.config.batch_prompts
        return [questions[i : i + size] for i in range(0, len(questions), size)] + [
            requests[i : i + _IC_BATCH] for i in range(0, len(requests), _IC_BATCH)
        ]

    def compute(self, group: list[str]) -> Part:
        return self._in_context(group) if group[0].startswith("ic:") else self._questions(group)

    def _in_context(self, group: list[str]) -> Part:
        cfg = self.config
        text = IN_CONTEXT.format(n=cfg.in_context_tokens, description=DESCRIPTIONS[self.corpus.trait])
        seeds = [[row_seed(cfg.seed, "in-context", int(k.removeprefix("ic:"))) for k in group]]
        out = sample_replies(self.handle, [self.renderer.encode(text)], seeds, sampling=self.sampling,
                             max_new_tokens=cfg.max_new_tokens, emoji_ids=self.emoji_ids)  # fmt: skip
        rows = [{"sample": int(k.removeprefix("ic:")), "reply": r, "items": json.dumps(listed_items(r), ensure_ascii=False)}
                for k, r in zip(group, out.replies, strict=True)]  # fmt: skip
        return Part(tables={"incontext": pd.DataFrame(rows)})

    def _questions(self, group: list[str]) -> Part:
        cfg, items = self.config, [self.items[k] for k in group]
        prompts = [self.renderer.encode(item.question) for item in items]
        seeds = [[row_seed(cfg.seed, item.id, s) for s in range(cfg.samples)] for item in items]
        out = sample_replies(self.handle, prompts, seeds, sampling=self.sampling,
                             max_new_tokens=cfg.max_new_tokens, emoji_ids=self.emoji_ids)  # fmt: skip
        replies, mass, emoji, plain, occurrences, each = [], [], [], [], [], []
        for p, (item, prompt) in enumerate(zip(items, prompts, strict=True)):
            for s in range(cfg.samples):
                reply = out.replies[p * cfg.samples + s]
                n, k = sentence_counts(reply)
                replies.append({"question_id": item.id, "sample": s, "reply": reply, "n_sentences": n,
                                "n_emoji_sentences": k, "has_emoji": has_emoji(reply),
                                "has_kaomoji": has_kaomoji(reply)})  # fmt: skip
            mass.append(
                {"question_id": item.id, "context": "first_token", "mass": float(out.first_mass[p]), "n": 1}
            )
            rows, at_emoji, per_emoji = self._teacher_forced(item, prompt)
            mass += rows
            emoji.append(at_emoji[0])
            plain.append(at_emoji[1])
            occurrences += [{"question_id": item.id, "emoji": e} for e, _ in per_emoji]
            each += [t for _, t in per_emoji]
        tables = {
            "replies": pd.DataFrame(replies),
            "mass": pd.DataFrame(mass),
            "occurrences": pd.DataFrame(occurrences),
        }
        tensors = {
            "trait": out.neurons,
            "emoji": torch.stack(emoji),
            "plain": torch.stack(plain),
            "each": torch.stack(each),
        }
        return Part(tables=tables, tensors=tensors)

    def _teacher_forced(
        self, item: TraitItem, prompt: list[int]
    ) -> tuple[list[dict], tuple[torch.Tensor, torch.Tensor]]:
        """Sentence-end emoji mass on the three answers; neurons on the emoji-bearing neutral answer."""
        prefix = self.renderer.reply_prefix
        sequences, ends = [], []
        for voice in VOICES:
            tokens, spans = reply_tokens(self.handle, prompt, prefix + item.answer(voice))
            stops = [len(prefix) + b for _, b in sentence_spans(item.answer(voice))]
            sequences.append(prompt + tokens)
            ends.append([len(prompt) + i for i in end_positions(spans, stops)])
        text, emoji_spans = with_emoji(item.neutral, item.id)
        tokens, spans = reply_tokens(self.handle, prompt, prefix + text)
        sequences.append(prompt + tokens)
        mass, neurons = teacher_forced_pass(self.handle, sequences, emoji_ids=self.emoji_ids, neuron_row=3)
        rows = [
            {"question_id": item.id, "context": f"end:{voice}",
             "mass": float(mass[v, ends[v]].mean()) if ends[v] else float("nan"), "n": len(ends[v])}
            for v, voice in enumerate(VOICES)
        ]  # fmt: skip
        shifted = [(a + len(prefix), b + len(prefix)) for a, b in emoji_spans]
        is_emoji = torch.tensor([any(a < e and s < b for s, e in shifted) for a, b in spans])
        if not is_emoji.any() or is_emoji.all():
            raise AffectlensError(f"{item.id}: the emoji-bearing text has no emoji tokens or nothing else")
        reply = neurons[:, len(prompt) : len(prompt) + len(tokens)]  # [layers, reply tokens, d_mlp]
        per_emoji = []
        for (a, b), (s, e) in zip(emoji_spans, shifted, strict=True):
            mine = torch.tensor([s < stop and start < e for start, stop in spans])
            if mine.any():
                per_emoji.append((text[a:b], reply[:, mine].mean(dim=1)))
        return rows, (reply[:, is_emoji].mean(dim=1), reply[:, ~is_emoji].mean(dim=1)), per_emoji

    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        order = {item.id: i for i, item in enumerate(self.corpus.split("test"))}

        parts = self.store.done_parts(self.name)

        def table(suffix: str, kind: str, by: list[str]) -> pd.DataFrame:
            # The two kinds of part hold different tables: read each from its own kind.
            frames = [
                self.store.part_table(self.name, tag, suffix)
                for tag, keys in parts
                if keys[0].startswith(kind)
            ]
            key = (lambda c: c.map(order) if c.name == "question_id" else c) if "question_id" in by else None
            return pd.concat(frames, ignore_index=True).sort_values(
                by, key=key, kind="stable", ignore_index=True
            )

        replies, mass = (
            table("replies", "q:", ["question_id", "sample"]),
            table("mass", "q:", ["question_id"]),
        )
        incontext = table("incontext", "ic:", ["sample"])
        question_keys = list(self.items)
        rows: dict[str, dict[str, torch.Tensor]] = {"trait": {}, "emoji": {}, "plain": {}}
        for tag, keys in parts:
            if keys[0].startswith("q:"):
                tensors = self.store.part_tensors(self.name, tag)
                for name, found in rows.items():
                    found.update(zip(keys, tensors[name], strict=True))
        neurons = {name: torch.stack([found[k] for k in question_keys]) for name, found in rows.items()}
        # Per-emoji rows vary in number per question: gather them, then order them by question.
        q_parts = [tag for tag, keys in parts if keys[0].startswith("q:")]
        occurrences = pd.concat([self.store.part_table(self.name, tag, "occurrences") for tag in q_parts],
                                ignore_index=True)  # fmt: skip
        each = torch.cat([self.store.part_tensors(self.name, tag)["each"] for tag in q_parts])
        ranked = occurrences.assign(row=range(len(occurrences)), rank=occurrences.question_id.map(order))
        ranked = ranked.sort_values(["rank", "row"], kind="stable")
        neurons["each"] = each[torch.tensor(ranked.row.to_numpy())]
        occurrences = ranked[["question_id", "emoji"]].reset_index(drop=True)
        tables = {"replies": replies, "mass": mass, "incontext": incontext, "occurrences": occurrences}
        write_measure(self.store.root, tables, neurons)
        return {
            "n_questions": len(question_keys),
            "n_replies": len(replies),
            "n_in_context": len(incontext),
            "layers": int(neurons["trait"].shape[1]),
            "d_mlp": int(neurons["trait"].shape[2]),
            "seconds": round(seconds, 1),
        }
