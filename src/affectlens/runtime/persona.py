"""The model side of ``persona measure``: replies to held-out questions, emoji probability mass, MLP neurons.

- **Emoji mass** at a position is the probability that the next token starts an emoji: a token that spells
  an emoji or carries the lead bytes F0 9F of a 4-byte emoji (the set ``--suppress emoji`` blocks), or, in a
  vocabulary that keeps those bytes apart, the lone F0 byte (optionally after a space), which starts every
  4-byte character (nearly all of them emoji in practice). At the first reply token it is read from the prefill that sampling
  starts from; at sentence ends it is teacher-forced on fixed replies, at the last token of each sentence,
  so that models are compared on the same text.
- **Neurons** are the inputs of each block's MLP down-projection (the activations after the gate), one value
  per intermediate unit and layer. They are read at the last prompt token of each question, and, on
  emoji-bearing text, averaged over the emoji's tokens and over the other reply tokens separately.
Offsets and positions are computed per sequence, never from a padded batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from affectlens.errors import AffectlensError
from affectlens.runtime.capture import position_ids
from affectlens.runtime.generate import Sampling, decode, emoji_token_ids
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.tokens import left_pad, right_pad, token_bytes

_DOWN = ("mlp.down_proj", "mlp.c_proj", "mlp.fc2", "mlp.dense_4h_to_h")


def emoji_start_ids(tokenizer) -> torch.Tensor:
    """Token ids whose emission starts an emoji (see the module docstring)."""
    lone = [
        i for i in range(len(tokenizer)) if token_bytes(tokenizer, i).lstrip(b" ") in (b"\xf0", b"\xf0\x9f")
    ]
    return torch.unique(torch.cat([emoji_token_ids(tokenizer), torch.tensor(lone, dtype=torch.long)]))


def down_projections(handle: ModelHandle) -> list[torch.nn.Module]:
    """Each block's MLP down-projection, whose input is that block's neuron activations."""
    found = []
    for block in handle.arch.blocks:
        for path in _DOWN:
            module = block
            for part in path.split("."):
                module = getattr(module, part, None)
                if module is None:
                    break
            if module is not None and hasattr(module, "weight"):
                found.append(module)
                break
        else:
            raise AffectlensError(
                f"{handle.spec}: no dense MLP down-projection in its blocks; neurons need one"
            )
    return found


@contextmanager
def mlp_inputs(handle: ModelHandle, select: Callable[[torch.Tensor], torch.Tensor] = lambda x: x):
    """Within the block, ``store[layer]`` holds ``select`` of the last forward pass's MLP activations
    [batch, seq, d_mlp]: select inside the hook, so a large model never holds every position of every layer."""
    store: dict[int, torch.Tensor] = {}

    def hook_for(layer: int) -> Callable:
        def hook(_module, inputs):
            store[layer] = select(inputs[0].detach()).float().cpu()

        return hook

    handles = [m.register_forward_pre_hook(hook_for(i)) for i, m in enumerate(down_projections(handle))]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def _stack(store: dict[int, torch.Tensor]) -> torch.Tensor:
    """[batch, layers, seq, d_mlp]."""
    return torch.stack([store[i] for i in sorted(store)], dim=1)


@dataclass
class Prefilled:
    replies: list[str]
    first_mass: torch.Tensor  # [prompts] emoji mass of the first reply token
    neurons: torch.Tensor  # [prompts, layers, d_mlp] at the last prompt token


@torch.inference_mode()
def sample_replies(handle: ModelHandle, prompts: Sequence[list[int]], seeds: Sequence[Sequence[int]], *,
                   sampling: Sampling, max_new_tokens: int, emoji_ids: torch.Tensor) -> Prefilled:  # fmt: skip
    """One reply per seed of ``seeds[p]`` for each prompt ``p`` (rows in that order; every prompt the same
    number of seeds); and, from the same prefill, each prompt's first-token emoji mass and its neurons at the
    last prompt token."""
    model, tokenizer, device = handle.model, handle.tokenizer, handle.device
    samples = len(seeds[0])
    if any(len(row) != samples for row in seeds):
        raise ValueError("every prompt needs the same number of seeds")
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    ids, mask = ids.to(device), mask.to(device)
    cache = DynamicCache(config=model.config)
    with mlp_inputs(handle, lambda x: x[:, -1:]) as store:
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), cache=cache,
                    use_cache=True, logits_to_keep=1)  # fmt: skip
        neurons = _stack(store)[
            :, :, -1, :
        ].cpu()  # left padding: the last position is every row's last token
    logits = out.logits[:, -1, :]
    first_mass = emoji_mass(logits, emoji_ids)
    cache.batch_repeat_interleave(samples)
    generators = [torch.Generator().manual_seed(seed) for row in seeds for seed in row]
    tokens, _ = decode(handle, logits.repeat_interleave(samples, dim=0), cache, mask.repeat_interleave(samples, dim=0),
                       generators, max_new_tokens=max_new_tokens, sampling=sampling, settled=lambda text: None)  # fmt: skip
    replies = [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    return Prefilled(replies, first_mass, neurons)


def emoji_mass(logits: torch.Tensor, emoji_ids: torch.Tensor) -> torch.Tensor:
    """P(next token is an emoji token) for each row of ``logits`` [..., vocab], float32 on the CPU."""
    probs = torch.softmax(logits.float(), dim=-1)
    return probs[..., emoji_ids.to(probs.device)].sum(dim=-1).cpu()


def reply_tokens(
    handle: ModelHandle, prompt: list[int], reply_text: str
) -> tuple[list[int], list[tuple[int, int]]]:
    """The reply's tokens after ``prompt`` and each token's character span in ``reply_text``."""
    encoded = handle.tokenizer(reply_text, add_special_tokens=False, return_offsets_mapping=True)
    if "offset_mapping" not in encoded:
        raise AffectlensError(
            f"{handle.spec}: its tokenizer gives no character offsets (a fast tokenizer is needed)"
        )
    return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]


def end_positions(spans: Sequence[tuple[int, int]], ends: Sequence[int]) -> list[int]:
    """Indices of the reply tokens whose span ends exactly at a sentence end (a merged end is skipped)."""
    wanted = set(ends)
    return [i for i, (_, stop) in enumerate(spans) if stop in wanted]


@torch.inference_mode()
def teacher_forced_pass(handle: ModelHandle, sequences: Sequence[list[int]], *, emoji_ids: torch.Tensor,
                        neuron_row: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """(emoji mass after every position [batch, seq], row ``neuron_row``'s MLP activations [layers, seq, d_mlp]
    or None) of a right-padded batch; row ``i``'s positions beyond ``len(sequences[i])`` are padding."""
    ids, mask = right_pad(sequences, handle.tokenizer.pad_token_id)
    ids, mask = ids.to(handle.device), mask.to(handle.device)
    row = 0 if neuron_row is None else neuron_row
    with mlp_inputs(handle, lambda x: x[row : row + 1]) as store:
        logits = handle.model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False
        ).logits
        neurons = _stack(store)[0] if neuron_row is not None else None
    return emoji_mass(logits, emoji_ids), neurons
