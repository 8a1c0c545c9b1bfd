"""Hidden-state capture: one forward pass, forward hooks on chosen decoder blocks, reduction inside the hook.

Positions are given per sequence in its own token coordinates (0 = its first real token), so the same request
means the same tokens under left padding, right padding or none. The result is float32 ``[batch, layers, d]``.
:func:`token_states` keeps every position instead: float32 ``[batch, layers, seq, d]``, padding NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from affectlens.runtime.arch import Arch


@dataclass(frozen=True)
class LastToken:
    """The last real token of each sequence (for a prompt, the one whose logits choose the first reply token)."""


@dataclass(frozen=True)
class TokenMean:
    """The mean over tokens ``start[b] <= k < end[b]`` of sequence ``b``, in its own token coordinates."""

    start: torch.Tensor
    end: torch.Tensor


Positions = LastToken | TokenMean


class _StopForward(Exception):
    """Raised by the deepest hook when the caller needs no logits, to skip the remaining blocks."""


@dataclass
class Capture:
    hidden: torch.Tensor  # float32 [batch, len(layers), d_model]
    logits: torch.Tensor | None  # [batch, seq, vocab] when asked for
    cache: object | None


def sequence_bounds(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the first real token, number of real tokens) per row; real tokens must be contiguous."""
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    first = mask.int().argmax(dim=1)
    return first, lengths


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each sequence's first real token, so padding never shifts rotary positions."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def _weights(at: Positions, attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, seq] float weights whose product with a block output gives the requested reduction."""
    first, lengths = sequence_bounds(attention_mask)
    seq = attention_mask.shape[1]
    device = attention_mask.device
    if isinstance(at, LastToken):
        start, end = lengths - 1, lengths
    else:
        start = at.start.to(device).long().clamp(min=0)
        end = torch.minimum(at.end.to(device).long(), lengths)
        if bool((end <= start).any()):
            raise ValueError("every sequence needs at least one token in its capture range")
    index = torch.arange(seq, device=device)[None, :] - first[:, None]
    inside = (index >= start[:, None]) & (index < end[:, None]) & attention_mask.bool()
    weights = inside.float()
    return weights / weights.sum(dim=1, keepdim=True)


def _slots(arch: Arch, layers: Sequence[int]) -> tuple[dict[int, list[int]], int]:
    """({layer: the output slots it fills}, deepest layer), or an error for layers outside the model."""
    layers = list(layers)
    n_blocks = len(arch.blocks)
    if not layers or min(layers) < 0 or max(layers) >= n_blocks:
        raise ValueError(f"layers must lie in 0..{n_blocks - 1}, got {layers}")
    slots: dict[int, list[int]] = {}
    for slot, layer in enumerate(layers):
        slots.setdefault(layer, []).append(slot)
    return slots, max(layers)


@torch.inference_mode()
def capture(
    model: torch.nn.Module,
    arch: Arch,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layers: Sequence[int],
    at: Positions | None = None,
    *,
    need_logits: bool = False,
    cache: object | None = None,
    logits_to_keep: int = 0,
) -> Capture:
    """Run ``model`` once and read the residual stream after each block in ``layers`` at positions ``at``.

    Without ``need_logits`` the pass stops after the deepest requested block. ``logits_to_keep=1`` keeps
    only the last position's logits (what sampling needs).
    """
    at = at or LastToken()
    slots, deepest = _slots(arch, layers)
    device = input_ids.device
    weights = _weights(at, attention_mask.to(device))
    out = torch.zeros(input_ids.shape[0], len(layers), arch_width(model), dtype=torch.float32, device=device)

    def hook_for(layer: int):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            w = weights.to(hidden.device)[:, :, None]
            # Padding positions may hold NaN (fully masked attention rows), and 0 * NaN is NaN: select, then sum.
            reduced = torch.where(w > 0, hidden.float() * w, 0.0).sum(dim=1)
            for slot in slots[layer]:
                out[:, slot] = reduced.to(device)
            if layer == deepest and not need_logits:
                raise _StopForward

        return hook

    handles = [arch.blocks[layer].register_forward_hook(hook_for(layer)) for layer in slots]
    logits = None
    new_cache = None
    try:
        result = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask).to(device),
            cache=cache,
            use_cache=cache is not None,
            logits_to_keep=logits_to_keep if need_logits else 1,
        )
        logits = result.logits if need_logits else None
        new_cache = getattr(result, "cache", None)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return Capture(hidden=out, logits=logits, cache=new_cache)


@torch.inference_mode()
def token_states(
    model: torch.nn.Module,
    arch: Arch,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layers: Sequence[int],
) -> torch.Tensor:
    """The residual stream after each block in ``layers`` at every position: float32 [batch, layers, seq, d].

    One forward pass, no cache, stopped after the deepest requested block. Positions are the padded tensor's
    columns; padding positions are NaN, so that a padded column read by mistake poisons what it touches.
    """
    slots, deepest = _slots(arch, layers)
    device = input_ids.device
    batch, seq = input_ids.shape
    real = attention_mask.to(device).bool()[:, :, None]
    # NaN until a hook writes it: a block that never ran cannot pass for a state.
    out = torch.full(
        (batch, len(layers), seq, arch_width(model)), float("nan"), dtype=torch.float32, device=device
    )

    def hook_for(layer: int):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            states = torch.where(real, hidden.float().to(device), float("nan"))
            for slot in slots[layer]:
                out[:, slot] = states
            if layer == deepest:
                raise _StopForward

        return hook

    handles = [arch.blocks[layer].register_forward_hook(hook_for(layer)) for layer in slots]
    try:
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask).to(device),
            use_cache=False,
            logits_to_keep=1,
        )
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return out


def arch_width(model: torch.nn.Module) -> int:
    config = model.config
    return int(getattr(config, "hidden_size", None) or config.get_text_config().hidden_size)
