"""Synthesis, the bag-of-lexicon (BoL) encoder: for each face, a judge reads a few of the exchanges in which a
reply opened with it and picks 1-3 words from the locked affect lexicon; the words' cell weights, averaged,
are the face's distribution over cells (``face_cells.parquet``, the likelihood encoder's schema), and the
chosen words are kept beside it (``words.parquet``).

Contexts come from an elicitation run: the user's message and the reply that opened with the face. Which of a
face's contexts are shown is drawn with the recorded seed, so reruns ask the same questions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from affectlens.cells import default_cells
from affectlens.config import ApiConfig, SynthesizeConfig
from affectlens.errors import AffectlensError
from affectlens.runtime.generate import row_seed
from affectlens.runtime.providers import ApiReply, ApiRequest, Provider
from affectlens.runtime.providers.runner import Job, Outcome
from affectlens.stages.api_stage import ApiStage
from affectlens.stages.introspect import face_cell_table
from affectlens.stimuli import content_hash
from affectlens.stimuli.lexicon import Lexicon, load_lexicon
from affectlens.store.corpus import corpus_contexts, is_corpus, read_corpus
from affectlens.store.runs import (
    SYNTHESIZE,
    read_elicit_prompts,
    read_generations,
    well_formed_mask,
    write_judged,
)

WORD_COLUMNS = ["face", "context", "sample", "prompt_id", "ok", "reason", "words"]


def context_table(run: str) -> pd.DataFrame:
    """(face, prompt_id, message, reply) for every well-formed face of an elicitation run or a transcript corpus."""
    if is_corpus(run):
        return corpus_contexts(read_corpus(run))
    generations = read_generations(run)
    texts = read_elicit_prompts(run).set_index("id")["text"]
    kept = generations[well_formed_mask(generations)]
    return pd.DataFrame({"face": kept["face"], "prompt_id": kept["prompt_id"],
                         "message": kept["prompt_id"].map(texts), "reply": kept["reply"]})  # fmt: skip


def contexts_of(run: str, per_face: int, seed: int) -> dict[str, list[dict[str, str]]]:
    """Up to ``per_face`` (prompt id, message, reply) contexts for every well-formed face of ``run``, drawn
    with ``seed`` (per face, so adding a face does not change another's draw)."""
    table = context_table(run)
    if table.empty:
        raise AffectlensError(f"{run} has no well-formed faces with a context: nothing to synthesize from")
    out: dict[str, list[dict[str, str]]] = {}
    # An exchange repeated word for word is one context: asked once, it would be counted twice.
    table = table.drop_duplicates(["face", "message", "reply"])
    for face, rows in table.groupby("face", sort=False):
        order = np.random.default_rng([seed, int(content_hash([str(face)])[:8], 16)]).permutation(len(rows))
        chosen = rows.iloc[order[:per_face]]
        out[str(face)] = [
            {"prompt_id": str(r.prompt_id), "message": str(r.message), "reply": str(r.reply)}
            for r in chosen.itertuples()
        ]
    return out


def synthesis_prompt(lexicon: Lexicon, max_words: int) -> str:
    return (
        "You will read a short exchange: a user's message and a reply that opens with a face (a kaomoji or an "
        f"emoji). Pick 1 to {max_words} words from the list below that best describe the feeling the face "
        "expresses in this reply. Use only words from the list.\nWords: "
        + ", ".join(lexicon.words)
        + '\nAnswer with a JSON object {"words": [...]}.'
    )


def parse_words(reply: ApiReply, lexicon: Lexicon, max_words: int) -> list[str]:
    try:
        data = json.loads(reply.text)
    except ValueError:
        raise ValueError(f"not JSON: {reply.text[:60]!r}") from None
    words = data.get("words") if isinstance(data, dict) else None
    if not isinstance(words, list) or not 1 <= len(words) <= max_words:
        raise ValueError(f"expected 1 to {max_words} words, got {words!r}")
    if unknown := [w for w in words if w not in lexicon.words]:
        raise ValueError(f"not in the lexicon: {', '.join(map(str, unknown))}")
    return [str(w) for w in words]


class Synthesis(ApiStage):
    name = SYNTHESIZE

    def __init__(self, provider: Provider, out: str, contexts_run: str, config: SynthesizeConfig,
                 api: ApiConfig, *, lexicon: Lexicon | None = None, quiet: bool = False) -> None:  # fmt: skip
        super().__init__(provider, out, api, quiet=quiet)
        self.contexts_run, self.config = contexts_run, config
        self.lexicon = lexicon or load_lexicon()
        self.contexts = contexts_of(contexts_run, config.contexts_per_face, config.seed)
        self.cells = default_cells()

    @property
    def system(self) -> str:
        return synthesis_prompt(self.lexicon, self.config.max_words)

    def validate(self) -> None:
        if not self.provider.capabilities.json_schema:
            raise AffectlensError(f"{self.provider.spec} has no structured output, which synthesis needs")
        if list(self.lexicon.cells.codes) != list(self.cells.codes):
            raise AffectlensError("the lexicon's cells are not the default cells")

    def identity(self) -> dict[str, Any]:
        asked = json.dumps(self.contexts, sort_keys=True, ensure_ascii=False)
        return {
            "model": self.model_identity(),
            "stimuli": {"hash": content_hash([asked]), "n": len(self.contexts), "source": self.contexts_run},
            "lexicon": self.lexicon.describe(),
            "config": self.config.identity(),
        }

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {"contexts_run": self.contexts_run, "system": self.system}

    def keys(self) -> list[str]:
        return list(self.contexts)

    def jobs(self, key: str) -> list[Job]:
        config, lexicon = self.config, self.lexicon
        temperature = config.temperature if self.provider.capabilities.temperature else None
        seeds = self.provider.capabilities.seed
        schema = lexicon.json_schema(config.max_words)

        def parse(reply: ApiReply) -> Any:
            return parse_words(reply, lexicon, config.max_words)

        jobs = []
        for i, context in enumerate(self.contexts[key]):
            text = f"Message: {context['message']}\nReply: {context['reply']}\nFace: {key}"
            request = ApiRequest(
                self.system, (("user", text),), config.max_tokens, temperature, schema=schema
            )
            for sample in range(config.samples):
                seeded = (
                    replace(request, seed=row_seed(config.seed, f"{key}#{i}", sample)) if seeds else request
                )
                jobs.append(Job(f"{key}#{i}", seeded, sample, parse))
        return jobs

    def tables(self, key: str, outcomes: Sequence[Outcome]) -> dict[str, pd.DataFrame]:
        rows = []
        for outcome in outcomes:
            context = int(outcome.job.item.rsplit("#", 1)[1])
            rows.append({
                "face": key, "context": context, "sample": outcome.job.sample,
                "prompt_id": self.contexts[key][context]["prompt_id"], "ok": outcome.ok, "reason": outcome.reason,
                "words": ",".join(outcome.value) if outcome.ok else None,
            })  # fmt: skip
        return {"words": pd.DataFrame(rows, columns=WORD_COLUMNS)}

    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        words = self.store.merged_table(self.name, "words")
        order = {face: i for i, face in enumerate(self.keys())}
        words = words.sort_values(["face", "context", "sample"],
                                  key=lambda c: c.map(order) if c.name == "face" else c)  # fmt: skip
        rows = {}
        for face, group in words[words["ok"].astype(bool)].groupby("face", sort=False):
            rows[str(face)] = self.lexicon.distribution([w.split(",") for w in group["words"]])
        rows = {face: rows[face] for face in self.keys() if face in rows}
        write_judged(
            self.store.root, face_cell_table(rows, self.cells), {"words": words.reset_index(drop=True)}
        )
        counts = pd.Series([w for ws in words["words"].dropna() for w in ws.split(",")]).value_counts()
        return {
            "n_faces": len(self.contexts),
            "n_answers": len(words),
            "n_failed_answers": int((~words["ok"].astype(bool)).sum()),
            "faces_without_answer": [face for face in self.keys() if face not in rows],
            "top_words": [[w, int(n)] for w, n in counts.head(10).items()],
            "lexicon": self.lexicon.describe(),
            "seconds": round(seconds, 1),
            "requests": self.write_accounting(),
        }
