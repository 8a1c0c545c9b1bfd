"""The one decoding loop: batched sampling from a prefilled KV cache, with per-row random streams.

Elicitation, story generation and steering all decode here. Each row draws from its own generator, seeded
from (seed, item, sample) by :func:`row_seed`, so the draws do not depend on batch size, batch order or
resuming (the logits do, in their last bits, since matrix kernels depend on the batch's shape). A row
leaves the batch as soon as its stop rule says it is done. Logits processors (such as the
:class:`Suppressor`) edit each step's logits before sampling.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from affectlens.config import SamplingConfig
from affectlens.errors import AffectlensError
from affectlens.faces import is_emoji_cluster
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.render import Renderer
from affectlens.runtime.tokens import split_continuation, token_bytes


def row_seed(seed: int, prompt_id: str, sample: int) -> int:
    """One RNG stream per (seed, prompt, sample): results do not depend on batching or on resuming."""
    digest = hashlib.sha256(f"{seed}|{prompt_id}|{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class Suppressor:
    """Blocks chosen faces (as the reply's opening tokens) and, optionally, every emoji token."""

    banned_tokens: torch.Tensor  # token ids never allowed
    banned_sequences: list[list[int]] = field(default_factory=list)

    def apply(self, logits: torch.Tensor, generated: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.banned_tokens.numel():
            logits[:, self.banned_tokens] = float("-inf")
        for row, tokens in enumerate(generated):
            for seq in self.banned_sequences:
                # A face is blocked by forbidding its last token after its other tokens opened the reply.
                if len(tokens) == len(seq) - 1 and list(tokens) == seq[:-1]:
                    logits[row, seq[-1]] = float("-inf")
        return logits


def emoji_token_ids(tokenizer) -> torch.Tensor:
    """Ids of tokens that spell an emoji or start a 4-byte UTF-8 emoji sequence (lead bytes F0 9F)."""
    ids = []
    for token_id in range(len(tokenizer)):
        raw = token_bytes(tokenizer, token_id)
        if b"\xf0\x9f" in raw:
            ids.append(token_id)
            continue
        text = raw.decode("utf-8", errors="ignore")
        if any(is_emoji_cluster(ch) for ch in text if ord(ch) > 0x2000):
            ids.append(token_id)
    return torch.tensor(ids, dtype=torch.long)


def build_suppressor(handle: ModelHandle, renderer: Renderer, suppress: Sequence[str]) -> Suppressor | None:
    if not suppress:
        return None
    banned = torch.zeros(0, dtype=torch.long)
    sequences = []
    prefix_text = renderer.render("x")
    prefix_ids = renderer.encode("x")
    for item in suppress:
        if item == "emoji":
            banned = emoji_token_ids(handle.tokenizer)
            continue
        n, tokens = split_continuation(
            handle.tokenizer,
            prefix_ids,
            prefix_text,
            renderer.reply_prefix + item,
            add_special_tokens=not renderer.chat,
        )
        if n != len(prefix_ids) or not tokens:
            raise AffectlensError(f"cannot suppress {item!r}: it merges with the prompt when tokenized")
        sequences.append(tokens)
    return Suppressor(banned, sequences)


@dataclass(frozen=True)
class Sampling:
    """How one token is drawn from a row's logits: temperature, then top-k, then top-p, then min-p (the order
    transformers applies them), then inverse-CDF sampling with the row's own generator.

    ``temperature`` 0 is greedy; ``top_k`` 0, ``top_p`` 1 and ``min_p`` 0 switch those filters off. Each
    filter works on one row's distribution alone, so a row's draw never depends on the other rows.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    @classmethod
    def of(cls, config: SamplingConfig) -> Sampling:
        return cls(config.temperature, config.top_k, config.top_p, config.min_p)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """[rows, vocab] probabilities after the filters (unnormalised: a filtered token gets 0)."""
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if 0 < self.top_k < probs.shape[-1]:
            kth = probs.topk(self.top_k, dim=-1).values[:, -1:]
            probs = torch.where(probs >= kth, probs, 0.0)
        if self.top_p < 1:
            ordered, order = probs.sort(dim=-1, descending=True)
            share = ordered.cumsum(dim=-1) / ordered.sum(dim=-1, keepdim=True)
            # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is short.
            keep = (share - ordered / ordered.sum(dim=-1, keepdim=True)) < self.top_p
            probs = torch.zeros_like(probs).scatter(-1, order, torch.where(keep, ordered, 0.0))
        if self.min_p > 0:
            floor = self.min_p * probs.max(dim=-1, keepdim=True).values
            probs = torch.where(probs >= floor, probs, 0.0)
        return probs

    def draw(self, logits: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """One token per row."""
        if self.temperature <= 0:
            return logits.argmax(dim=-1)
        cdf = self.probabilities(logits).cumsum(dim=-1)
        draws = torch.stack([torch.rand((), generator=g) for g in generators]).to(cdf.device)
        draws = draws * cdf[:, -1]
        # right=True: a draw of exactly 0 must not land on a leading token that a filter set to 0.
        tokens = torch.searchsorted(cdf, draws[:, None], right=True).squeeze(1)
        return tokens.clamp(max=logits.shape[-1] - 1)


def _eos_ids(handle: ModelHandle) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(handle.model, "generation_config", None), handle.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


@torch.inference_mode()
def decode(
    handle: ModelHandle,
    logits: torch.Tensor,
    cache: DynamicCache,
    mask: torch.Tensor,
    generators: Sequence[torch.Generator],
    *,
    max_new_tokens: int,
    sampling: Sampling,
    settled: Callable[[str], str | None],
    suppressor: Suppressor | None = None,
) -> tuple[list[list[int]], list[str]]:
    """Sample every row of a prefilled, left-padded batch until EOS, ``settled``, or the token cap.

    ``logits`` [rows, vocab] are the prefill's last-position logits and ``cache`` its KV cache. ``settled``
    reads a row's reply so far and returns why it is done, or None. A finished row leaves the batch at once.
    Returns each row's new tokens and its stop reason ("eos", "cap" or what ``settled`` said).
    """
    model, tokenizer, device = handle.model, handle.tokenizer, handle.device
    next_position = mask.sum(dim=1)
    tokens: list[list[int]] = [[] for _ in generators]
    stop: list[str] = ["cap"] * len(generators)
    active = list(range(len(generators)))
    eos = _eos_ids(handle)
    for step in range(max_new_tokens):
        if suppressor is not None:
            logits = suppressor.apply(logits, [tokens[r] for r in active])
        chosen = sampling.draw(logits, [generators[r] for r in active]).tolist()
        keep = []
        for j, r in enumerate(active):
            if chosen[j] in eos:
                stop[r] = "eos"
                continue
            tokens[r].append(chosen[j])
            reason = settled(tokenizer.decode(tokens[r], skip_special_tokens=True))
            if reason is not None:
                stop[r] = reason
                continue
            keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, next_position = mask[index], next_position[index]
        active = [active[j] for j in keep]
        step_ids = torch.tensor([[tokens[r][-1]] for r in active], device=device)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=next_position[:, None],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        next_position = next_position + 1
    return tokens, stop
