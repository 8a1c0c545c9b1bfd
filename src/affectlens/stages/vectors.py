"""Emotion vectors: the mean residual stream of emotion stories, minus the grand mean, cleaned of neutral noise.

The recipe (Anthropic 2026, "emotion vectors"), done with per-sequence positions:

* **Story activation.** For a story of ``n`` tokens, the mean residual stream over its own tokens
  ``start <= k < n`` with ``start = offset`` (default 50), or ``start = n // 2`` when ``n <= offset``.
  Token coordinates count from the sequence's first token as the tokenizer encodes the text
  (``add_special_tokens=True``, so a BOS token, where the tokenizer adds one, is token 0). The range is
  applied to each sequence in its own coordinates by :class:`~affectlens.runtime.capture.TokenMean`, so
  padding never shifts it. Implicit scenarios use the same rule.
* **Neutral activation.** The same rule, the same window: the mean over ``story_start(n, offset) <= k < n``.
  Not from token 0: the first token's residual stream is an attention-sink state (at layer 19 of SmolLM2-135M
  its norm is about 24,600 against about 215 for the others), so a mean from token 0 carries it with weight
  ``1 / n`` and the neutral PCA then mostly finds dialogue length (its first PC correlated -0.93 with
  ``1 / n_tokens`` over the 40 dialogues; from token 50, 0.26). The story rule starts past the sink for
  every sequence longer than one token, unless ``offset`` is 0, which then includes it everywhere.
* **Vectors.** Per layer, each emotion's mean story activation minus the grand mean (the mean over
  emotions of those means): ``raw``, shape ``[n_emotions, n_layers, d]``.
* **Denoising.** Per layer, PCA of the neutral activations; the top components that together reach
  ``denoise_variance`` of the neutral variance (the fewest such) are projected out of every vector:
  ``denoised``. How many were removed is recorded per layer.
* **Logit lens** (headline layer only; see :func:`logit_lens`).

Stories, dialogues and scenarios are batched together in length-sorted buckets of at most ``batch_tokens``
padded tokens, the forward pass stops after the deepest requested layer (no LM head), and each bucket is a
RunStore part, so an interrupted run resumes where it stopped. The run folder then holds everything the
analyses need (``analysis/emotions.py``), so they never load the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from affectlens.config import VectorsConfig
from affectlens.conventions import LAYER_CONVENTION, check_layers, headline_layer, story_start
from affectlens.errors import AffectlensError
from affectlens.runtime.capture import TokenMean, capture
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.tokens import right_pad
from affectlens.stages.base import Part, Stage
from affectlens.stimuli.corpus import Corpus, load_corpus
from affectlens.store.runs import VECTORS, write_vectors

ALL_LAYERS_UP_TO = 2_000_000_000  # parameters; larger models get DEFAULT_SPREAD evenly spaced layers
DEFAULT_SPREAD = 12
LOGIT_LENS_K = 10
POSITION_RULE = (
    "story/scenario: mean residual stream over its own tokens [start, n) with start = offset if n > offset "
    "else n // 2 (token 0 = the first token of the encoded text, BOS included where the tokenizer adds one); "
    "neutral dialogue: the same rule and offset (not from token 0, whose attention-sink state would dominate "
    "the neutral PCA)"
)
NEUTRAL_START = "story_start(n, offset)"  # in the identity; runs before it averaged neutral text from token 0
HEADLINE_RULE = "round(2/3 * (n_layers - 1)), or the stored layer nearest to it"
LOGIT_LENS_RULE = (
    "logits(v) = lm_head(final_norm(mu + v)) - lm_head(final_norm(mu)), mu = grand mean of story activations at "
    "the layer: the change in next-token logits when the mean story state moves to the emotion's mean (final "
    "norm applied as the model's own module; no logit soft-capping)"
)


def default_layers(handle: ModelHandle) -> list[int]:
    """Every layer for models up to 2B parameters, else about 12 evenly spaced ones (first and last included)."""
    n_params = sum(p.numel() for p in handle.model.parameters())
    if n_params <= ALL_LAYERS_UP_TO or handle.n_layers <= DEFAULT_SPREAD:
        return list(range(handle.n_layers))
    return sorted({round(float(x)) for x in np.linspace(0, handle.n_layers - 1, DEFAULT_SPREAD)})


# ------------------------------------------------------------------------------------- pure computations


def emotion_vectors(activations: np.ndarray, labels: Sequence[str], emotions: Sequence[str]) -> np.ndarray:
    """Each emotion's mean activation minus the grand mean (the mean over emotions of those means).

    ``activations``: [n_stories, n_layers, d]; ``labels``: the emotion of each story. Returns float64
    ``[n_emotions, n_layers, d]`` in the order of ``emotions``; every emotion needs at least one story.
    """
    acts = np.asarray(activations, dtype=np.float64)
    labels = np.asarray(labels)
    means = []
    for name in emotions:
        rows = labels == name
        if not rows.any():
            raise AffectlensError(f"no story for emotion {name!r}")
        means.append(acts[rows].mean(axis=0))
    means = np.stack(means)
    return means - means.mean(axis=0, keepdims=True)


def grand_mean(activations: np.ndarray, labels: Sequence[str], emotions: Sequence[str]) -> np.ndarray:
    """[n_layers, d]: the mean over emotions of each emotion's mean activation (the vectors' zero)."""
    acts = np.asarray(activations, dtype=np.float64)
    labels = np.asarray(labels)
    return np.stack([acts[labels == name].mean(axis=0) for name in emotions]).mean(axis=0)


def nuisance_basis(neutral: np.ndarray, variance: float) -> tuple[np.ndarray, float]:
    """(components [k, d], variance fraction they explain) of neutral activations ``[n, d]`` at one layer.

    ``k`` is the fewest top principal components whose explained variance reaches ``variance``; 0 when
    ``variance`` is 0.
    """
    x = np.asarray(neutral, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    power = s**2
    total = power.sum()
    if variance <= 0 or total <= 0:
        return vt[:0], 0.0
    ratio = np.cumsum(power) / total
    k = int(np.searchsorted(ratio, variance - 1e-12) + 1)
    k = min(k, len(s))
    return vt[:k], float(ratio[k - 1])


def denoise(
    vectors: np.ndarray, neutral: np.ndarray, variance: float = 0.5
) -> tuple[np.ndarray, list[int], list[float]]:
    """Project each layer's top neutral principal components out of the vectors.

    ``vectors``: [n_emotions, n_layers, d]; ``neutral``: [n_dialogues, n_layers, d]. Returns the denoised
    vectors (same shape, float64), and per layer the number of components removed and the neutral variance
    fraction they explain.
    """
    v = np.asarray(vectors, dtype=np.float64).copy()
    counts, explained = [], []
    for layer in range(v.shape[1]):
        basis, frac = nuisance_basis(neutral[:, layer], variance)
        if len(basis):
            v[:, layer] -= (v[:, layer] @ basis.T) @ basis
        counts.append(len(basis))
        explained.append(frac)
    return v, counts, explained


@torch.inference_mode()
def logit_lens(handle: ModelHandle, mu: np.ndarray, vectors: np.ndarray, k: int = LOGIT_LENS_K) -> list[dict]:
    """Top and bottom ``k`` tokens of each vector through the final norm and the unembedding.

    ``mu``: [d] the grand mean of story activations at the layer; ``vectors``: [n, d] at that layer. A
    direction has no norm of its own (RMSNorm divides by the state's scale), so the final norm is applied
    as the model applies it, to a state: ``lm_head(final_norm(mu + v)) - lm_head(final_norm(mu))``, the
    change in next-token logits when the mean story state moves to the emotion's mean state. Rows:
    ``index, direction (top|bottom), rank, token_id, token, logit_delta``.
    """
    norm, head = handle.arch.final_norm, handle.arch.lm_head
    # Under device_map="auto" the final norm and the LM head may sit on other devices than block 0.
    norm_device = next(norm.parameters()).device
    head_device = next(head.parameters()).device
    dtype = handle.dtype
    base = torch.as_tensor(mu, dtype=dtype, device=norm_device)[None, None, :]
    states = base + torch.as_tensor(vectors, dtype=dtype, device=norm_device)[:, None, :]
    logits = [head(norm(x).to(head_device)).float() for x in (states, base)]
    delta = (logits[0] - logits[1])[:, 0, :].cpu()
    rows = []
    for index in range(delta.shape[0]):
        for direction, largest in (("top", True), ("bottom", False)):
            values, ids = torch.topk(delta[index], k, largest=largest)
            for rank, (value, token_id) in enumerate(zip(values.tolist(), ids.tolist(), strict=True)):
                rows.append(
                    {
                        "index": index,
                        "direction": direction,
                        "rank": rank,
                        "token_id": token_id,
                        "token": handle.tokenizer.decode([token_id]),
                        "logit_delta": value,
                    }
                )
    return rows


# ----------------------------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class _Item:
    key: str  # "story:<id>", "neutral:<id>" or "implicit:<id>"
    ids: tuple[int, ...]
    start: int


def _items(handle: ModelHandle, corpus: Corpus, offset: int) -> list[_Item]:
    """Every story, neutral dialogue and implicit scenario, each with its capture start by :func:`story_start`."""
    texts = [(f"story:{s.id}", s.text) for s in corpus.stories]
    texts += [(f"neutral:{d.id}", d.text) for d in corpus.neutral]
    texts += [(f"implicit:{s.id}", s.text) for s in corpus.implicit]
    encoded = handle.tokenizer([t for _, t in texts], add_special_tokens=True)["input_ids"]
    return [
        _Item(key, tuple(ids), story_start(len(ids), offset))
        for (key, _), ids in zip(texts, encoded, strict=True)
    ]


def buckets(items: Sequence[_Item], batch_tokens: int) -> list[list[_Item]]:
    """Length-sorted batches whose padded size (rows x longest) stays within ``batch_tokens``."""
    out: list[list[_Item]] = []
    for item in sorted(items, key=lambda i: (len(i.ids), i.key)):
        if out and (len(out[-1]) + 1) * len(item.ids) <= batch_tokens:
            out[-1].append(item)
        else:
            out.append([item])
    return out


def run_bucket(handle: ModelHandle, bucket: Sequence[_Item], layers: Sequence[int]) -> torch.Tensor:
    """[len(bucket), len(layers), d] float32 token means of one bucket, right-padded."""
    ids, mask = right_pad([list(i.ids) for i in bucket], handle.tokenizer.pad_token_id)
    device = handle.device
    at = TokenMean(torch.tensor([i.start for i in bucket]), torch.tensor([len(i.ids) for i in bucket]))
    return capture(handle.model, handle.arch, ids.to(device), mask.to(device), layers, at).hidden.cpu()


class Vectors(Stage):
    """Stories, neutral dialogues and implicit scenarios in length-sorted buckets, each bucket one part."""

    name = VECTORS

    def __init__(self, handle: ModelHandle, out: str, corpus: Corpus, config: VectorsConfig, *,
                 quiet: bool = False) -> None:  # fmt: skip
        super().__init__(handle, out, quiet=quiet)
        self.corpus, self.config = corpus, config

    def validate(self) -> None:
        if len(self.corpus.neutral) < 2:
            raise AffectlensError("denoising needs at least 2 neutral dialogues")
        layers = self.config.layers
        self.layers = (
            default_layers(self.handle)
            if layers is None
            else check_layers(layers, self.handle.n_layers, self.handle.spec)
        )
        self.head = headline_layer(self.handle.n_layers, self.layers)
        self.items = {item.key: item for item in _items(self.handle, self.corpus, self.config.offset)}

    def identity(self) -> dict[str, Any]:
        corpus = self.corpus
        return {
            "model": {"spec": self.handle.spec, "fingerprint": self.handle.fingerprint},
            "stimuli": {
                "hash": corpus.hash,
                "n_stories": len(corpus.stories),
                "n_neutral": len(corpus.neutral),
                "n_implicit": len(corpus.implicit),
            },
            "config": {
                "layers": self.layers,
                "offset": self.config.offset,
                "denoise_variance": self.config.denoise_variance,
            },
            # A folder written under the earlier rule (neutral dialogues from token 0) must not resume.
            "neutral_start": NEUTRAL_START,
        }

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {
            "layers": self.layers,
            "layer_convention": LAYER_CONVENTION,
            "positions": POSITION_RULE,
            "headline_layer": self.head,
            "headline_rule": HEADLINE_RULE,
            "logit_lens": LOGIT_LENS_RULE,
            "stimuli_source": self.corpus.source,
        }

    def keys(self) -> list[str]:
        return list(self.items)

    def groups(self, pending: Sequence[str]) -> list[list[str]]:
        return [
            [i.key for i in b] for b in buckets([self.items[k] for k in pending], self.config.batch_tokens)
        ]

    def compute(self, group: list[str]) -> Part:
        return Part(tensors={"hidden": run_bucket(self.handle, [self.items[k] for k in group], self.layers)})

    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        corpus, layers, head = self.corpus, self.layers, self.head
        rows = self.store.merged_rows(self.name, "hidden", self.items)
        width = next(iter(rows.values())).shape
        acts = {}
        for kind in ("story", "neutral", "implicit"):
            picked = [rows[k] for k in self.items if k.startswith(f"{kind}:")]
            acts[kind] = torch.stack(picked) if picked else torch.zeros((0, *width))
        stories = acts["story"]
        emotions = corpus.emotion_names
        labels = [s.emotion for s in corpus.stories]
        raw = emotion_vectors(stories.numpy(), labels, emotions)
        clean, counts, explained = denoise(raw, acts["neutral"].numpy(), self.config.denoise_variance)
        mu = grand_mean(stories.numpy(), labels, emotions)
        h = layers.index(head)
        lens = []
        for kind, vecs in (("denoised", clean), ("raw", raw)):
            for row in logit_lens(self.handle, mu[h], vecs[:, h]):
                lens.append({"vector": kind, "emotion": emotions[row.pop("index")], "layer": head, **row})

        def table(kind: str, source: str) -> pd.DataFrame:
            frame = corpus.frame(source).drop(columns="text")
            items = [self.items[f"{kind}:{i}"] for i in frame["id"]]
            return frame.assign(n_tokens=[len(i.ids) for i in items], start=[i.start for i in items])

        tables = {
            "stories": table("story", "stories"),
            "neutral": table("neutral", "neutral"),
            "implicit": table("implicit", "implicit"),
            "emotions": corpus.frame("emotions"),
            "denoise": pd.DataFrame({"layer": layers, "n_components": counts, "variance_removed": explained}),
            "logit_lens": pd.DataFrame(lens),
        }
        metadata = {"layers": ",".join(map(str, layers)), "layer_convention": LAYER_CONVENTION,
                    "positions": POSITION_RULE, "emotions": ",".join(emotions)}  # fmt: skip
        vectors = {"raw": torch.from_numpy(raw).float(), "denoised": torch.from_numpy(clean).float()}
        write_vectors(self.store.root, tables, {"stories": stories, **{k: acts[k] for k in ("neutral", "implicit")}},
                      vectors, metadata)  # fmt: skip
        n_tokens = sum(len(self.items[k].ids) for k in self.items)
        # From ``self.pending``, not counted in ``prepare``: on the Ray executor the copy of the stage that
        # merges may not have prepared, and one that did saw only its own shards.
        pending_tokens = sum(len(self.items[k].ids) for k in self.pending)
        return {
            "n_stories": len(corpus.stories),
            "n_neutral": len(corpus.neutral),
            "n_implicit": len(corpus.implicit),
            "n_emotions": len(emotions),
            "n_layers": len(layers),
            "headline_layer": head,
            "denoise_components_at_headline": counts[h],
            "n_tokens": int(n_tokens),
            "seconds": round(seconds, 1),
            "tokens_per_second": round(pending_tokens / max(seconds, 1e-9), 1),
        }


def vectors(handle: ModelHandle, out: str, corpus: Corpus | None = None, config: VectorsConfig | None = None,
            *, quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Extract (or resume) emotion vectors into run folder ``out``; returns the summary in the manifest.

    Writes ``activations.safetensors`` (float32 ``stories`` [n_stories, n_layers, d], ``neutral``,
    ``implicit``; rows in the order of ``stories.parquet``, ``neutral.parquet``, ``implicit.parquet``),
    ``vectors.safetensors`` (``raw``, ``denoised``: [n_emotions, n_layers, d], emotions in the order of
    ``emotions.parquet``, layers as in the manifest), ``denoise.parquet`` and ``logit_lens.parquet``.
    """
    corpus = load_corpus() if corpus is None else corpus
    return Vectors(handle, out, corpus, config or VectorsConfig(), quiet=quiet).run()
