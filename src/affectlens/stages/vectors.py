"""Emotion vectors: the mean residual stream of emotion stories, minus the grand mean, cleaned of neutral noise.

The recipe (Anthropic 2026, "emotion vectors"), done with per-sequence positions:

* **Story activation.** For a story of ``n`` tokens, the mean residual stream over its own tokens
  ``start <= k < n`` with ``start = offset`` (default 50), or ``start = n // 2`` when ``n <= offset``.
  Token coordinates count from the sequence's first token as the tokenizer encodes the text
  (``add_special_tokens=True``, so a BOS token, where the tokenizer adds one, is token 0). The range is
  applied to each sequence in its own coordinates by :class:`~affectlens.runtime.capture.TokenMean`, so
  padding never shifts it. Implicit scenarios use the same rule.
* **Neutral activation.** The same mean over the whole dialogue (offset 0: every token, BOS included).
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

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from affectlens.conventions import LAYER_CONVENTION
from affectlens.errors import AffectlensError
from affectlens.progress import progress
from affectlens.runtime.capture import TokenMean, capture
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.tokens import right_pad
from affectlens.stimuli.corpus import Corpus, load_corpus
from affectlens.store.atomic import write_parquet, write_tensors
from affectlens.store.manifest import RunStore, part_tag
from affectlens.store.read import read_parquet, read_tensors

STAGE = "vectors"
ALL_LAYERS_UP_TO = 2_000_000_000  # parameters; larger models get DEFAULT_SPREAD evenly spaced layers
DEFAULT_SPREAD = 12
LOGIT_LENS_K = 10
# Padded tokens per batch: about 13 stories of ~150 tokens. Not tuned; bench/vectors.py --batch-tokens compares.
DEFAULT_BATCH_TOKENS = 2048
POSITION_RULE = (
    "story/scenario: mean residual stream over its own tokens [start, n) with start = offset if n > offset "
    "else n // 2 (token 0 = the first token of the encoded text, BOS included where the tokenizer adds one); "
    "neutral dialogue: mean over all its tokens (offset 0)"
)
HEADLINE_RULE = "round(2/3 * (n_layers - 1)), or the stored layer nearest to it"
LOGIT_LENS_RULE = (
    "logits(v) = lm_head(final_norm(mu + v)) - lm_head(final_norm(mu)), mu = grand mean of story activations at "
    "the layer: the change in next-token logits when the mean story state moves to the emotion's mean (final "
    "norm applied as the model's own module; no logit soft-capping)"
)


def story_start(n_tokens: int, offset: int) -> int:
    """First token of a story's capture range: ``offset``, or ``n // 2`` when the story is not longer than it."""
    return offset if n_tokens > offset else min(offset, n_tokens // 2)


def headline_layer(n_layers: int, layers: Sequence[int]) -> int:
    """The fixed rule: ``round(2/3 (n_layers - 1))``, or the nearest stored layer (the shallower on a tie)."""
    target = round(2 * (n_layers - 1) / 3)
    return min(layers, key=lambda layer: (abs(layer - target), layer))


def default_layers(handle: ModelHandle) -> list[int]:
    """Every layer for models up to 2B parameters, else about 12 evenly spaced ones (first and last included)."""
    n_params = sum(p.numel() for p in handle.model.parameters())
    if n_params <= ALL_LAYERS_UP_TO or handle.n_layers <= DEFAULT_SPREAD:
        return list(range(handle.n_layers))
    return sorted({round(float(x)) for x in np.linspace(0, handle.n_layers - 1, DEFAULT_SPREAD)})


def _resolve_layers(handle: ModelHandle, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return default_layers(handle)
    bad = [layer for layer in layers if not 0 <= layer < handle.n_layers]
    if bad or not layers:
        raise AffectlensError(
            f"layers {list(layers)} out of range: {handle.spec} has layers 0..{handle.n_layers - 1}"
        )
    return sorted(set(int(layer) for layer in layers))


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
    texts = [(f"story:{s.id}", s.text, offset) for s in corpus.stories]
    texts += [(f"neutral:{d.id}", d.text, 0) for d in corpus.neutral]
    texts += [(f"implicit:{s.id}", s.text, offset) for s in corpus.implicit]
    encoded = handle.tokenizer([t for _, t, _ in texts], add_special_tokens=True)["input_ids"]
    return [
        _Item(key, tuple(ids), story_start(len(ids), off) if off else 0)
        for (key, _, off), ids in zip(texts, encoded, strict=True)
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


def vectors(
    handle: ModelHandle,
    out: str,
    corpus: Corpus | None = None,
    *,
    layers: Sequence[int] | None = None,
    offset: int = 50,
    denoise_variance: float = 0.5,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    quiet: bool = False,
) -> dict[str, object]:
    """Extract (or resume) emotion vectors into run folder ``out``; returns the summary in the manifest.

    Writes ``activations.safetensors`` (float32 ``stories`` [n_stories, n_layers, d], ``neutral``,
    ``implicit``; rows in the order of ``stories.parquet``, ``neutral.parquet``, ``implicit.parquet``),
    ``vectors.safetensors`` (``raw``, ``denoised``: [n_emotions, n_layers, d], emotions in the order of
    ``emotions.parquet``, layers as in the manifest), ``denoise.parquet`` and ``logit_lens.parquet``.
    """
    corpus = load_corpus() if corpus is None else corpus
    if offset < 0:
        raise AffectlensError(f"offset must be >= 0, got {offset}")
    if not 0 <= denoise_variance < 1:
        raise AffectlensError(f"denoise_variance must lie in [0, 1), got {denoise_variance}")
    if batch_tokens < 1:
        raise AffectlensError(f"batch_tokens must be >= 1, got {batch_tokens}")
    if len(corpus.neutral) < 2:
        raise AffectlensError("denoising needs at least 2 neutral dialogues")
    layer_list = _resolve_layers(handle, layers)
    head = headline_layer(handle.n_layers, layer_list)
    store = RunStore(out)
    identity = {
        "model": {"spec": handle.spec, "fingerprint": handle.fingerprint},
        "stimuli": {
            "hash": corpus.hash,
            "n_stories": len(corpus.stories),
            "n_neutral": len(corpus.neutral),
            "n_implicit": len(corpus.implicit),
        },
        "config": {"layers": layer_list, "offset": offset, "denoise_variance": denoise_variance},
    }
    extra = {
        "model": handle.describe(),
        "layers": layer_list,
        "layer_convention": LAYER_CONVENTION,
        "positions": POSITION_RULE,
        "headline_layer": head,
        "headline_rule": HEADLINE_RULE,
        "logit_lens": LOGIT_LENS_RULE,
        "stimuli_source": corpus.source,
    }
    if store.begin(STAGE, identity, extra):
        return store.stage(STAGE)["summary"]

    items = _items(handle, corpus, offset)
    done = {key for _, keys in store.done_parts(STAGE) for key in keys}
    pending = [i for i in items if i.key not in done]
    n_tokens = sum(len(i.ids) for i in pending)
    started = time.perf_counter()
    with progress(quiet) as bar:
        task = bar.add_task(f"vectors {handle.spec}", total=len(items), completed=len(items) - len(pending))
        for bucket in buckets(pending, batch_tokens):
            hidden = run_bucket(handle, bucket, layer_list)
            store.write_part(
                STAGE, part_tag(i.key for i in bucket), [i.key for i in bucket], tensors={"hidden": hidden}
            )
            bar.advance(task, len(bucket))
    elapsed = time.perf_counter() - started

    acts = _merge(store, [i.key for i in items])
    stories = acts["story"]
    emotions = corpus.emotion_names
    labels = [s.emotion for s in corpus.stories]
    raw = emotion_vectors(stories.numpy(), labels, emotions)
    clean, counts, explained = denoise(raw, acts["neutral"].numpy(), denoise_variance)
    mu = grand_mean(stories.numpy(), labels, emotions)

    length = {i.key: len(i.ids) for i in items}
    start = {i.key: i.start for i in items}

    def table(kind: str, frame: pd.DataFrame) -> pd.DataFrame:
        keys = [f"{kind}:{i}" for i in frame["id"]]
        return frame.assign(n_tokens=[length[k] for k in keys], start=[start[k] for k in keys])

    root = store.root
    write_parquet(root / "stories.parquet", table("story", corpus.frame("stories").drop(columns="text")))
    write_parquet(root / "neutral.parquet", table("neutral", corpus.frame("neutral").drop(columns="text")))
    write_parquet(root / "implicit.parquet", table("implicit", corpus.frame("implicit").drop(columns="text")))
    write_parquet(root / "emotions.parquet", corpus.frame("emotions"))
    metadata = {"layers": ",".join(map(str, layer_list)), "layer_convention": LAYER_CONVENTION}
    write_tensors(
        root / "activations.safetensors",
        {"stories": stories, "neutral": acts["neutral"], "implicit": acts["implicit"]},
        metadata={**metadata, "positions": POSITION_RULE},
    )
    write_tensors(
        root / "vectors.safetensors",
        {"raw": torch.from_numpy(raw).float(), "denoised": torch.from_numpy(clean).float()},
        metadata={**metadata, "emotions": ",".join(emotions)},
    )
    write_parquet(
        root / "denoise.parquet",
        pd.DataFrame({"layer": layer_list, "n_components": counts, "variance_removed": explained}),
    )
    h = layer_list.index(head)
    lens = []
    for kind, vecs in (("denoised", clean), ("raw", raw)):
        for row in logit_lens(handle, mu[h], vecs[:, h]):
            lens.append({"vector": kind, "emotion": emotions[row.pop("index")], "layer": head, **row})
    write_parquet(root / "logit_lens.parquet", pd.DataFrame(lens))

    summary = {
        "n_stories": len(corpus.stories),
        "n_neutral": len(corpus.neutral),
        "n_implicit": len(corpus.implicit),
        "n_emotions": len(emotions),
        "n_layers": len(layer_list),
        "headline_layer": head,
        "denoise_components_at_headline": counts[h],
        "n_tokens": int(sum(length.values())),
        "seconds": round(elapsed, 1),
        "tokens_per_second": round(n_tokens / max(elapsed, 1e-9), 1),
    }
    store.finish(STAGE, summary=summary)
    return summary


def _merge(store: RunStore, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Gather the parts into {"story", "neutral", "implicit"}: [n, n_layers, d] in corpus order."""
    rows: dict[str, torch.Tensor] = {}
    for tag, part_keys in store.done_parts(STAGE):
        hidden = store.part_tensors(STAGE, tag)["hidden"]
        rows.update({key: hidden[i] for i, key in enumerate(part_keys)})
    if missing := [k for k in keys if k not in rows]:
        raise AffectlensError(
            f"{store.root}: parts lack {len(missing)} item(s), e.g. {missing[0]}; rerun the stage"
        )
    width = next(iter(rows.values())).shape
    out = {}
    for kind in ("story", "neutral", "implicit"):
        picked = [rows[k] for k in keys if k.startswith(f"{kind}:")]
        out[kind] = torch.stack(picked) if picked else torch.zeros((0, *width))
    return out


@dataclass
class VectorRun:
    """What a finished vectors stage left in its run folder (see :func:`load_vectors`)."""

    stories: pd.DataFrame
    neutral: pd.DataFrame
    implicit: pd.DataFrame
    emotions: pd.DataFrame
    activations: dict[str, np.ndarray]  # stories / neutral / implicit: float32 [n, n_layers, d]
    raw: np.ndarray  # [n_emotions, n_layers, d]
    denoised: np.ndarray
    denoise: pd.DataFrame
    logit_lens: pd.DataFrame
    layers: list[int]
    entry: dict[str, object]  # the manifest's stage entry
    layer_convention: str


def load_vectors(run: str) -> VectorRun:
    """Read a finished vectors run folder (no model needed)."""
    store = RunStore(run)
    entry = store.require(STAGE)
    root = store.root
    acts = read_tensors(root / "activations.safetensors")
    vecs = read_tensors(root / "vectors.safetensors")
    return VectorRun(
        stories=read_parquet(root / "stories.parquet"),
        neutral=read_parquet(root / "neutral.parquet"),
        implicit=read_parquet(root / "implicit.parquet"),
        emotions=read_parquet(root / "emotions.parquet"),
        activations={k: v.numpy() for k, v in acts.items()},
        raw=vecs["raw"].numpy(),
        denoised=vecs["denoised"].numpy(),
        denoise=read_parquet(root / "denoise.parquet"),
        logit_lens=read_parquet(root / "logit_lens.parquet"),
        layers=[int(x) for x in entry["layers"]],
        entry=entry,
        layer_convention=str(store.manifest().get("layer_convention", "")),
    )
