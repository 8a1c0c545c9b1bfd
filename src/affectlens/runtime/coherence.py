"""Coherence without a judge: teacher-forced NLL of fixed text, and the next-token distribution at a prompt's end.

Both run in right-padded batches with per-sequence positions, and read each sequence in its own coordinates:
token ``k`` of a row is predicted by the logits at its ``k - 1``. Log-softmax is taken one batch at a time,
so memory stays at ``batch x length x vocab`` floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from affectlens.runtime.capture import position_ids
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.steer import Steering
from affectlens.runtime.tokens import left_pad, right_pad


@dataclass(frozen=True)
class Scored:
    nll_sum: float  # sum over scored tokens of -log p(token | everything before it)
    n_tokens: int
    last_prompt_logp: (
        torch.Tensor | None
    )  # [vocab] log-probs at token start - 1 (the first target's predictor)


@torch.inference_mode()
def teacher_forced(handle: ModelHandle, sequences: Sequence[Sequence[int]], starts: Sequence[int], *,
                   keep_first: bool = False, steering: Steering | None = None,
                   batch_size: int = 8) -> list[Scored]:  # fmt: skip
    """Per sequence, the NLL of its tokens ``k >= starts[i]`` (``starts[i] >= 1``) given the tokens before.

    ``keep_first`` also returns the log-probs at token ``starts[i] - 1``: for a prompt followed by a reply,
    the distribution the first reply token was drawn from. ``steering`` (open) is told that each row's reply
    starts at ``starts[i]``, so its prompt/response positions apply to the right tokens.
    """
    out: list[Scored] = []
    device = handle.device
    for i in range(0, len(sequences), batch_size):
        chunk = [list(s) for s in sequences[i : i + batch_size]]
        first = [int(s) for s in starts[i : i + batch_size]]
        ids, mask = right_pad(chunk, handle.tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        with steering.reply_starts(first) if steering is not None else nullcontext():
            logits = handle.model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                                  use_cache=False).logits  # fmt: skip
        logp = torch.log_softmax(logits.float(), dim=-1)
        for row, seq in enumerate(chunk):
            start = max(first[row], 1)
            targets = torch.tensor(seq[start:], device=device, dtype=torch.long)
            picked = logp[row, start - 1 : len(seq) - 1].gather(-1, targets[:, None]).squeeze(-1)
            last = logp[row, start - 1].cpu() if keep_first else None
            out.append(Scored(float(-picked.sum()), len(targets), last))
    return out


@torch.inference_mode()
def next_token_logp(
    handle: ModelHandle, prompts: Sequence[Sequence[int]], *, batch_size: int = 16
) -> torch.Tensor:
    """[n, vocab] float32 log-probs of the token after each prompt (left-padded batches)."""
    rows = []
    device = handle.device
    for i in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[i : i + batch_size], handle.tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        out = handle.model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                           use_cache=False, logits_to_keep=1)  # fmt: skip
        rows.append(torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu())
    return torch.cat(rows)


def kl_divergence(reference_logp: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(reference || other) in nats, per row, from log-probs (0 where both give a token no mass)."""
    p = reference_logp.exp()
    terms = torch.where(p > 0, p * (reference_logp - logp), torch.zeros_like(p))
    return terms.sum(dim=-1)
