"""Steering: add ``alpha * unit(v) * n_L`` to the output of decoder block ``L`` while a context is open.

``n_L`` is the mean residual-stream norm at layer ``L`` over a neutral corpus (:func:`mean_norms`), so alpha
is a fraction of the layer's typical norm (the unit of Anthropic's 2026 emotions paper). ``unit="raw"``
adds ``alpha * v`` as given. Each text's first tokens are left out of ``n_L``: token 0 is an attention sink
whose norm is about a hundred times the others' (24,600 against 215 at SmolLM2's layer 19).

**Positions** are read per batch row from the forward pass itself, never from a padded column index:

- ``all``: every token;
- ``prompt``: tokens of the prompt, i.e. a forward pass that starts from an empty cache (the prefill);
- ``response``: tokens a forward pass appends to a non-empty cache (cached decoding).

A forward pass without a cache that holds prompt *and* reply (uncached generation, teacher forcing) says
where each row's reply starts with :meth:`Steering.reply_starts`, in the row's own token coordinates (its
position ids), so left padding never shifts the boundary. Note that the first reply token is chosen by the
last *prompt* token's logits, so ``response`` steering cannot change it.

The hooks do tensor arithmetic only (no ``.item()``, no host sync), so steering costs one add per block.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch

from affectlens.conventions import story_start
from affectlens.errors import AffectlensError
from affectlens.runtime.capture import position_ids, token_states
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.tokens import right_pad

Position = Literal["all", "prompt", "response"]
Unit = Literal["norm", "raw"]
POSITIONS: tuple[str, ...] = ("all", "prompt", "response")
NORM_RULE = (
    "n_L = mean over tokens of ||h_L|| on the neutral corpus, each text from token story_start(n, offset) "
    "(offset 50; n // 2 for shorter texts), so the attention-sink token 0 is left out"
)


def unit_vector(v: torch.Tensor) -> torch.Tensor:
    norm = v.float().norm()
    if not torch.isfinite(norm) or norm == 0:
        raise AffectlensError("a steering vector must be finite and non-zero")
    return v.float() / norm


@dataclass(frozen=True)
class SteerTerm:
    """What one layer receives: ``delta`` is added at alpha 1 (alpha scales it)."""

    layer: int
    delta: torch.Tensor  # [d] float32: unit(v) * n_L, or v in raw units
    vector_norm: float
    n_l: float | None


def steer_terms(vectors: Mapping[int, torch.Tensor], *, unit: Unit = "norm",
                norms: Mapping[int, float] | None = None) -> list[SteerTerm]:  # fmt: skip
    """One term per layer: ``unit(v) * n_L`` (``unit="norm"``, needs ``norms``) or ``v`` (``unit="raw"``)."""
    terms = []
    for layer, v in sorted(vectors.items()):
        v = torch.as_tensor(v).float().flatten()
        if unit == "raw":
            terms.append(SteerTerm(layer, v, float(v.norm()), norms.get(layer) if norms else None))
            continue
        if norms is None or layer not in norms:
            raise AffectlensError(f"unit 'norm' needs n_L of layer {layer}: pass norms, or use unit='raw'")
        terms.append(
            SteerTerm(layer, unit_vector(v) * float(norms[layer]), float(v.norm()), float(norms[layer]))
        )
    return terms


class Steering:
    """A context manager that steers ``model`` while it is open; several may be open at once (they add).

    ``terms`` come from :func:`steer_terms`. ``alpha`` is a float. Leaving the context removes every hook,
    so nothing of it remains on the model.
    """

    def __init__(self, handle: ModelHandle, terms: Sequence[SteerTerm], alpha: float,
                 position: Position = "all") -> None:  # fmt: skip
        if position not in POSITIONS:
            raise AffectlensError(
                f"unknown steering position {position!r}; choose from {', '.join(POSITIONS)}"
            )
        n_blocks = len(handle.arch.blocks)
        if bad := [t.layer for t in terms if not 0 <= t.layer < n_blocks]:
            raise AffectlensError(
                f"steering layers {bad} out of range: {handle.spec} has layers 0..{n_blocks - 1}"
            )
        self.handle, self.position, self.alpha = handle, position, float(alpha)
        self.terms = list(terms)
        self._deltas: dict[int, torch.Tensor] = {}
        for term in self.terms:
            block = handle.arch.blocks[term.layer]
            param = next(block.parameters())
            delta = (self.alpha * term.delta).to(device=param.device, dtype=param.dtype)
            self._deltas[term.layer] = self._deltas.get(term.layer, 0) + delta
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._mask: torch.Tensor | None = None  # [batch, seq, 1] where to add, for this forward pass
        self._reply_starts: torch.Tensor | None = None

    # -- positions ---------------------------------------------------------------------------------------

    @contextmanager
    def reply_starts(self, starts: torch.Tensor | Sequence[int]) -> Iterator[None]:
        """Inside, a forward pass treats token ``k`` of row ``b`` (its own coordinates) as reply when
        ``k >= starts[b]``: for uncached passes over prompt + reply."""
        self._reply_starts = torch.as_tensor(starts, dtype=torch.long)
        try:
            yield
        finally:
            self._reply_starts = None

    def _before_forward(self, _module, args, kwargs) -> None:
        if self.position == "all":
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        batch, q = ids.shape if ids is not None else embeds.shape[:2]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None else 0
        positions = kwargs.get("position_ids")
        if positions is None:
            mask = kwargs.get("attention_mask")
            if mask is not None and mask.dim() == 2:
                positions = position_ids(mask)[:, -q:]
            else:
                positions = torch.arange(past, past + q)[None, :].expand(batch, q)
        positions = positions.expand(batch, q)
        if self._reply_starts is not None:
            reply = positions >= self._reply_starts.to(positions.device)[:, None]
        else:
            # Without declared starts the cache decides: the prefill is prompt, appended tokens are reply.
            reply = torch.full((batch, q), int(past) > 0, device=positions.device)
        where = reply if self.position == "response" else ~reply
        self._mask = where[:, :, None]

    def _block_hook(self, layer: int):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            delta = self._deltas[layer]
            if self._mask is None:
                steered = hidden + delta
            else:
                steered = hidden + delta * self._mask.to(device=hidden.device, dtype=hidden.dtype)
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        return hook

    # -- the context ---------------------------------------------------------------------------------------

    def __enter__(self) -> Steering:
        if self._handles:
            raise AffectlensError("this steering context is already open")
        model = self.handle.model
        if self.position != "all":
            self._handles.append(model.register_forward_pre_hook(self._before_forward, with_kwargs=True))
        for layer in self._deltas:
            # prepend: every other hook on the block (capture, transformers' hidden-state recorder) sees the
            # steered output, which is what the block now outputs.
            block = self.handle.arch.blocks[layer]
            self._handles.append(block.register_forward_hook(self._block_hook(layer), prepend=True))
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._mask = [], None

    def describe(self) -> dict[str, object]:
        """What a manifest records: alpha, position, and per layer ||v||, n_L and the norm of the addition."""
        return {
            "alpha": self.alpha,
            "position": self.position,
            "layers": [
                {
                    "layer": t.layer,
                    "vector_norm": t.vector_norm,
                    "n_L": t.n_l,
                    "added_norm": abs(self.alpha) * float(t.delta.norm()),
                }
                for t in self.terms
            ],
        }


# ---------------------------------------------------------------------------------------- layer norms


def _norm_sums(handle: ModelHandle, chunk: Sequence[Sequence[int]], layers: Sequence[int],
               offset: int) -> tuple[torch.Tensor, int]:  # fmt: skip
    """(sum of ||h_L|| over the kept tokens, per layer, float64; number of kept tokens) for one batch."""
    ids, mask = right_pad(chunk, handle.tokenizer.pad_token_id)
    keep = torch.zeros_like(mask, dtype=torch.bool)
    for row, seq in enumerate(chunk):
        keep[row, story_start(len(seq), offset) : len(seq)] = True
    device = handle.device
    states = token_states(handle.model, handle.arch, ids.to(device), mask.to(device), layers)
    norms = states.norm(dim=-1)  # [batch, layers, seq]; NaN at padding, which ``keep`` never selects
    kept = keep.to(device)[:, None, :].expand_as(norms)
    return torch.where(kept, norms, 0.0).sum(dim=(0, 2)).double().cpu(), int(keep.sum())


@torch.inference_mode()
def mean_norms(handle: ModelHandle, layers: Sequence[int], texts: Sequence[str], *, offset: int = 50,
               batch_size: int = 8) -> dict[int, float]:  # fmt: skip
    """n_L per layer: the mean residual-stream norm over every token ``k >= story_start(n, offset)`` of each
    text (token 0, the attention sink, left out), pooled over texts (each token counts once)."""
    if not texts:
        raise AffectlensError("measuring n_L needs at least one text")
    layers = sorted(set(layers))
    if bad := [la for la in layers if not 0 <= la < handle.n_layers]:
        raise AffectlensError(f"layers {bad} out of range: {handle.spec} has layers 0..{handle.n_layers - 1}")
    encoded = handle.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    totals = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    for i in range(0, len(encoded), batch_size):
        sums, kept = _norm_sums(handle, encoded[i : i + batch_size], layers, offset)
        totals += sums
        count += kept
    return {layer: float(total) / count for layer, total in zip(layers, totals, strict=True)}
