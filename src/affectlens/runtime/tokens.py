"""Token-level helpers: padding, joint tokenization at a prefix/continuation boundary, token bytes.

A face must be tokenized as it would be in the joined text: "Assistant:" + " (^_^)" may not split where the
two strings meet. ``split_continuation`` tokenizes the joined text and returns the longest shared prefix with
the prefix's own tokens, plus the tokens after it, so that scoring and suppression see the real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), left-padded: every sequence ends at the last column."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded: every sequence starts at column 0."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def split_continuation(
    tokenizer, prefix_ids: Sequence[int], prefix_text: str, continuation: str, add_special_tokens: bool
) -> tuple[int, list[int]]:
    """(n, tokens): the joined text's tokens are ``prefix_ids[:n] + tokens``.

    ``n`` is ``len(prefix_ids)`` unless the tokenizer merges across the boundary, in which case the merged
    tokens move into ``tokens`` (they are teacher-forced with the continuation).
    """
    joined = tokenizer(prefix_text + continuation, add_special_tokens=add_special_tokens)["input_ids"]
    n = 0
    limit = min(len(prefix_ids), len(joined))
    while n < limit and prefix_ids[n] == joined[n]:
        n += 1
    return n, list(joined[n:])


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """The inverse of the GPT-2 byte-to-unicode table used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {char: b for b, char in table.items()}


def token_bytes(tokenizer, token_id: int) -> bytes:
    """The raw bytes a token stands for (byte-level BPE, SentencePiece byte fallback, or plain text)."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if piece is None:
        return b""
    if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
        return bytes([int(piece[3:5], 16)])
    decoder = _byte_level_decoder()
    if all(ch in decoder for ch in piece):
        return bytes(decoder[ch] for ch in piece)
    return piece.replace("\u2581", " ").encode("utf-8")
