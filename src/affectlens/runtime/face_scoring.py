"""Teacher-forced face scoring: log P(face | prompt) for a whole face vocabulary in a few batched passes.

For prompt p and face f, log P(f | p) is the summed log-probability of f's tokens, teacher-forced right after
the exact prefix elicitation uses. Faces are tokenized as they would be in the joined text; where the tokenizer
merges across the boundary, the merged tokens are scored too and the probability of the prompt tail they
replaced is divided out: P(f | p) = P(tail + f | head) / P(tail | head).

Speed: the head that all prompts share (template, instruction, primer) runs once per run, and each prompt's
own text once after it, into a KV cache. The faces' tokens then go through as tries (tree attention), so
shared prefixes are computed once; the tries are short rows batched over copies of that cache, so each token
attends over the head and its own row rather than over every face.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from affectlens.errors import AffectlensError
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.render import Renderer
from affectlens.runtime.tokens import split_continuation

ROW_NODES = 64  # tree-attention row length: short rows keep attention cheap, see bench/likelihood.py
HEAD_BLOCK = 2048  # vocabulary entries per block of the LM head


@dataclass
class _Continuation:
    face: str | None  # None for the prompt tail whose probability is divided out
    n_prefix: int  # the joined tokenization shares prefix_ids[:n_prefix]
    forced: list[int]  # tokens fed after the cache: prefix_ids[n_min:n_prefix] + scored
    n_scored: int  # the last n_scored of ``forced`` are scored


def _plan(
    renderer: Renderer, prefix_ids: list[int], prefix_text: str, faces: Sequence[str]
) -> tuple[int, list[_Continuation]]:
    """The shared cache length and the continuation of every face (plus the tails that merges need)."""
    tokenizer = renderer.tokenizer
    splits = [
        split_continuation(
            tokenizer,
            prefix_ids,
            prefix_text,
            renderer.reply_prefix + face,
            add_special_tokens=not renderer.chat,
        )
        for face in faces
    ]
    n_min = min(n for n, _ in splits)
    if n_min == 0:
        raise AffectlensError("a face merged with the very first prompt token; cannot score it")
    plan = []
    for face, (n, tokens) in zip(faces, splits, strict=True):
        if not tokens:
            raise AffectlensError(f"face {face!r} tokenizes to nothing")
        plan.append(_Continuation(face, n, prefix_ids[n_min:n] + tokens, len(tokens)))
    for n in sorted({n for n, _ in splits if n < len(prefix_ids)}):
        tail = prefix_ids[n:]
        plan.append(_Continuation(None, n, prefix_ids[n_min:n] + tail, len(tail)))
    return n_min, plan


@dataclass
class _Trie:
    """Unique token prefixes of a set of continuations: one row of tree attention."""

    tokens: list[int]
    parents: list[int]  # -1 for a child of the cached head
    depths: list[int]
    paths: list[list[int]]  # per continuation: the node of each of its proper prefixes (length 1..k-1)

    @classmethod
    def build(cls, continuations: Sequence[Sequence[int]]) -> _Trie:
        index: dict[tuple[int, ...], int] = {}
        tokens, parents, depths, paths = [], [], [], []
        for seq in continuations:
            path, parent = [], -1
            for depth in range(len(seq) - 1):  # the last token is only scored, never fed
                key = tuple(seq[: depth + 1])
                if key not in index:
                    index[key] = len(tokens)
                    tokens.append(seq[depth])
                    parents.append(parent)
                    depths.append(depth)
                parent = index[key]
                path.append(parent)
            paths.append(path)
        return cls(tokens, parents, depths, paths)

    def ancestry(self) -> torch.Tensor:
        """[n_nodes, n_nodes] bool: each node sees its ancestors and itself."""
        n = len(self.tokens)
        seen = torch.zeros(n, n, dtype=torch.bool)
        for node in range(n):
            ancestor = node
            while ancestor >= 0:
                seen[node, ancestor] = True
                ancestor = self.parents[ancestor]
        return seen


def _rows(continuations: Sequence[Sequence[int]], row_nodes: int) -> list[list[int]]:
    """Split sorted continuations into consecutive rows of at most ~``row_nodes`` trie nodes each.

    In sorted order a sequence shares the longest prefix with its predecessor, so the nodes it adds to its row's
    trie are its fed length minus that common prefix.
    """
    rows: list[list[int]] = []
    size, previous = 0, None
    for i, seq in enumerate(continuations):
        fed = len(seq) - 1
        shared = 0
        if previous is not None:
            while shared < min(fed, len(previous)) and seq[shared] == previous[shared]:
                shared += 1
        added = fed - shared
        if not rows or size + added > row_nodes:
            rows.append([])
            size, added = 0, fed
        rows[-1].append(i)
        size += added
        previous = seq
    return rows


def _layer_windows(model: torch.nn.Module) -> dict[str, int | None]:
    """Attention span per layer type: None for full attention, else the sliding window (as transformers masks it)."""
    config = model.config.get_text_config()
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or ["sliding_attention" if window else "full_attention"]
    return {kind: window if kind == "sliding_attention" else None for kind in dict.fromkeys(types)}


def _tree_mask(tries: Sequence[_Trie], n_head: int, width: int, window: int | None) -> torch.Tensor:
    """[rows, 1, width, n_head + width] bool: a node sees the cached head and its own ancestors (and, with a
    sliding window, only keys less than ``window`` positions back). Padding sees only itself."""
    allowed = torch.zeros(len(tries), width, n_head + width, dtype=torch.bool)
    allowed[:, :, :n_head] = True
    for row, trie in enumerate(tries):
        n = len(trie.tokens)
        allowed[row, :n, n_head : n_head + n] = trie.ancestry()
        allowed[row, n:, :n_head] = False
        allowed[row, range(n, width), range(n_head + n, n_head + width)] = True
    if window is not None:
        depths = torch.zeros(len(tries), width, dtype=torch.long)
        for row, trie in enumerate(tries):
            depths[row, : len(trie.depths)] = torch.tensor(trie.depths, dtype=torch.long)
        query = n_head + depths  # [rows, width]
        key = torch.cat([torch.arange(n_head).expand(len(tries), -1), n_head + depths], dim=1)
        allowed &= (query[:, :, None] - key[:, None, :]) < window
    return allowed[:, None]


def _attention_masks(
    tries: Sequence[_Trie], n_head: int, width: int, model: torch.nn.Module
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The tree masks in the form the model's attention expects: one tensor, or one per layer type."""
    masks = {kind: _tree_mask(tries, n_head, width, window) for kind, window in _layer_windows(model).items()}
    if getattr(model.config, "_attn_implementation", "sdpa") == "eager":
        dtype = next(model.parameters()).dtype
        masks = {
            kind: torch.zeros(m.shape, dtype=dtype).masked_fill(~m, torch.finfo(dtype).min)
            for kind, m in masks.items()
        }
    return next(iter(masks.values())) if len(masks) == 1 else masks


@contextmanager
def _head_inputs(lm_head: torch.nn.Module, keep: torch.Tensor) -> Iterator[list[torch.Tensor]]:
    """For one pass, the LM head only records its input at the positions ``keep`` selects, and returns no
    logits; :func:`_token_logp` then reads the log-probabilities it needs from that input, block by block."""
    captured: list[torch.Tensor] = []

    def record(hidden: torch.Tensor) -> torch.Tensor:
        captured.append(hidden[keep])
        return hidden.new_zeros(*hidden.shape[:-1], 0)

    lm_head.forward = record
    try:
        yield captured
    finally:
        del lm_head.forward


def _logit_transform(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the causal LM does to the LM head's output (the families in runtime/arch.py): softcapping, scaling."""
    config = model.config.get_text_config()
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logits_scaling", None)

    def transform(logits: torch.Tensor) -> torch.Tensor:
        if scale:
            logits = logits / scale
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform


def _token_logp(
    hidden: torch.Tensor,
    lm_head: torch.nn.Module,
    transform: Callable[[torch.Tensor], torch.Tensor],
    rows: torch.Tensor,
    tokens: torch.Tensor,
    block: int = HEAD_BLOCK,
) -> torch.Tensor:
    """log P(tokens[i] | hidden[rows[i]]) in float64, without materialising the [positions, vocab] logits.

    The normaliser is accumulated over vocabulary blocks (a block's log-sum-exp in float32, the blocks combined
    in float64), and each wanted logit is read from its block, so it is the same float32 number a full head gives.
    """
    weight, bias = lm_head.weight, lm_head.bias
    parts = []
    picked = torch.zeros(len(tokens), dtype=torch.float64, device=hidden.device)
    for start in range(0, weight.shape[0], block):
        stop = start + block
        logits = transform(
            F.linear(hidden, weight[start:stop], None if bias is None else bias[start:stop])
        ).float()
        parts.append(torch.logsumexp(logits, dim=-1).double())
        inside = ((tokens >= start) & (tokens < stop)).nonzero().squeeze(1)
        picked[inside] = logits[rows[inside], tokens[inside] - start].double()
    return picked - torch.logsumexp(torch.stack(parts, dim=-1), dim=-1)[rows]


def max_nodes(handle: ModelHandle, memory_mb: int) -> int:
    """Tokens per pass such that its largest activations fit ``memory_mb``: per token, a float32 block of
    logits and its exponentials, and the MLP's intermediate activations (about four of them)."""
    config = handle.model.config.get_text_config()
    intermediate = int(getattr(config, "intermediate_size", None) or 4 * config.hidden_size)
    per_token = 4 * (2 * HEAD_BLOCK + 4 * intermediate)
    return int(min(1024, max(16, memory_mb * 2**20 // per_token)))


@torch.inference_mode()
def score_prompt(
    handle: ModelHandle,
    renderer: Renderer,
    message: str,
    faces: Sequence[str],
    max_nodes: int = 768,
    row_nodes: int = ROW_NODES,
    shared: SharedHead | None = None,
) -> np.ndarray:
    """log P(face | prompt) for every face, in nats, float64 [n_faces].

    The prompt's head runs once. The faces' token prefixes form tries, so a prefix that many faces share ("(",
    "(^") is computed once. The tries are rows of about ``row_nodes`` tokens, batched over one copy of the head's
    cache per row: the rows fill the matrix multiplies as one long sequence would, while each node's attention
    spans only the head and its own row. A pass holds at most ``max_nodes`` tokens, which bounds its memory.
    ``shared`` (from :func:`shared_head`) holds the KV cache of the tokens that every prompt's head starts with.
    """
    prefix_ids = renderer.encode(message)
    n_min, plan = _plan(renderer, prefix_ids, renderer.render(message), faces)
    transform = _logit_transform(handle.model)
    first_tokens = torch.tensor(sorted({c.forced[0] for c in plan}))
    cache, done = DynamicCache(), 0  # every layer keeps the whole head; the masks apply any sliding window
    if shared is not None and len(shared.ids) < n_min and prefix_ids[: len(shared.ids)] == shared.ids:
        cache, done = copy.deepcopy(shared.cache), len(shared.ids)
    head_logp = _head_pass(handle, cache, prefix_ids[:n_min], done, first_tokens, transform)
    first_logp = dict(zip(first_tokens.tolist(), head_logp, strict=True))
    # Sorting by tokens puts continuations that share prefixes next to each other, in the same row.
    order = sorted(range(len(plan)), key=lambda i: plan[i].forced)
    rows = [[order[k] for k in row] for row in _rows([plan[i].forced for i in order], row_nodes)]
    tries = [_Trie.build([plan[j].forced for j in row]) for row in rows]
    scores = np.zeros(len(plan))
    start = 0
    while start < len(rows):
        stop, total = start, 0
        while stop < len(rows) and (stop == start or total + len(tries[stop].tokens) <= max_nodes):
            total += len(tries[stop].tokens)
            stop += 1
        nodes, tokens, owners = [], [], []
        offset = 0
        for row, trie in zip(rows[start:stop], tries[start:stop], strict=True):
            for j, path in zip(row, trie.paths, strict=True):
                # Token t > 0 is predicted at the node of its prefix; only the last n_scored tokens are the face
                # (earlier forced tokens are the prompt tail that a boundary merge replaced).
                seq = plan[j].forced
                first = len(seq) - plan[j].n_scored
                if first == 0:
                    scores[j] += first_logp[seq[0]]
                for t in range(max(first, 1), len(seq)):
                    nodes.append(offset + path[t - 1])
                    tokens.append(seq[t])
                    owners.append(j)
            offset += len(trie.tokens)
        if nodes:
            logp = _forward_rows(handle, cache, n_min, tries[start:stop], nodes, tokens, transform)
            np.add.at(scores, owners, logp.numpy())
        start = stop
    tails = {c.n_prefix: scores[i] for i, c in enumerate(plan) if c.face is None}
    return np.array(
        [scores[i] - tails.get(c.n_prefix, 0.0) for i, c in enumerate(plan) if c.face is not None]
    )


@dataclass
class SharedHead:
    """The token ids that every prompt's rendered head starts with (template, instruction, primer), and their
    KV cache: computed once per run rather than once per prompt."""

    ids: list[int]
    cache: DynamicCache


@torch.inference_mode()
def shared_head(handle: ModelHandle, renderer: Renderer, messages: Sequence[str]) -> SharedHead | None:
    """The longest common token prefix of the rendered ``messages`` (less one token), run once; None if empty."""
    encoded = [renderer.encode(m) for m in messages]
    common = encoded[0]
    for ids in encoded[1:]:
        n = 0
        while n < min(len(common), len(ids)) and common[n] == ids[n]:
            n += 1
        common = common[:n]
    common = common[: min(len(ids) for ids in encoded) - 1]
    if not common:
        return None
    cache = DynamicCache()
    ids = torch.tensor([common], device=handle.device)
    handle.model(
        input_ids=ids, attention_mask=torch.ones_like(ids), cache=cache, use_cache=True, logits_to_keep=1
    )
    return SharedHead(common, cache)


def _head_pass(
    handle: ModelHandle,
    cache: DynamicCache,
    head_ids: list[int],
    done: int,
    tokens: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor],
) -> list[float]:
    """Run ``head_ids[done:]`` into ``cache`` (which holds the first ``done``); log P(token | head) for
    ``tokens``, checked against the model's own logits."""
    model, device = handle.model, handle.device
    head = torch.tensor([head_ids[done:]], device=device)
    captured: list[torch.Tensor] = []
    hook = handle.arch.lm_head.register_forward_pre_hook(lambda _m, args: captured.append(args[0][0, -1:]))
    try:
        out = model(
            input_ids=head,
            attention_mask=torch.ones(1, len(head_ids), dtype=torch.long, device=device),
            position_ids=torch.arange(done, len(head_ids), device=device)[None],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    finally:
        hook.remove()
    ours = _token_logp(
        captured[0], handle.arch.lm_head, transform, torch.zeros_like(tokens), tokens.to(device)
    )
    theirs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)[tokens.to(device)].double()
    # The blocked head must be the model's own head: a family that transforms its logits in a way
    # _logit_transform does not know would fail here, not silently. Half precision rounds its logits coarsely.
    tolerance = 1e-3 if out.logits.dtype == torch.float32 else 0.25
    if (ours - theirs).abs().max().item() > tolerance:
        raise AffectlensError(
            f"{getattr(model.config, 'model_type', '?')}: the LM head's output differs from a plain linear head "
            "(an unknown logit transform); face likelihood cannot be computed for this model"
        )
    return ours.cpu().tolist()


def _forward_rows(
    handle: ModelHandle,
    cache: DynamicCache,
    n_head: int,
    tries: Sequence[_Trie],
    nodes: list[int],
    tokens: list[int],
    transform: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """log P(tokens[i] | node nodes[i]) in float64, nodes numbered through the rows of ``tries`` in order."""
    model, device = handle.model, handle.device
    width = max(len(t.tokens) for t in tries)
    ids = torch.zeros(len(tries), width, dtype=torch.long)
    positions = torch.full((len(tries), width), n_head, dtype=torch.long)
    keep = torch.zeros(len(tries), width, dtype=torch.bool)
    for row, trie in enumerate(tries):
        n = len(trie.tokens)
        ids[row, :n] = torch.tensor(trie.tokens)
        positions[row, :n] += torch.tensor(trie.depths)
        keep[row, :n] = True
    masks = _attention_masks(tries, n_head, width, model)
    masks = {k: m.to(device) for k, m in masks.items()} if isinstance(masks, dict) else masks.to(device)
    # A copy per row keeps the head's cache pristine for the next pass.
    rows_cache = copy.deepcopy(cache)
    rows_cache.batch_repeat_interleave(len(tries))
    with _head_inputs(handle.arch.lm_head, keep.to(device)) as hidden:
        model(
            input_ids=ids.to(device),
            attention_mask=masks,
            position_ids=positions.to(device),
            cache=rows_cache,
            use_cache=True,
        )
    index = torch.tensor(nodes, device=device)
    return _token_logp(
        hidden[0], handle.arch.lm_head, transform, index, torch.tensor(tokens, device=device)
    ).cpu()
