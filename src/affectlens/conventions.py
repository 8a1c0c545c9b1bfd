"""The layer and position vocabulary that capture, stages, manifests and analyses share.

Layer ``i`` is the residual stream after decoder block ``i``, counting from 0; the embeddings are not a layer.
The headline layer is fixed before any fit, so the reported layer is never the one that scored best.
"""

from __future__ import annotations

from collections.abc import Sequence

from affectlens.errors import AffectlensError

LAYER_CONVENTION = (
    "layer i = residual stream output of decoder block i, counting from 0; embeddings are not a layer"
)
H_FIRST_POSITION = "last prompt token"


def headline_layer(n_layers: int, stored: Sequence[int] | None = None) -> int:
    """round(2/3 x (n_layers - 1)), or the stored layer nearest to it (the shallower on a tie).

    A conventional mid-to-late depth for linear probes. (2/3 x (n - 1) is never exactly k + 1/2, so the
    rounding itself has no tie to break.)
    """
    if n_layers < 1:
        raise AffectlensError(f"a model needs at least one layer, got {n_layers}")
    target = round(2 * (n_layers - 1) / 3)
    if not stored:
        return target
    return min(stored, key=lambda layer: (abs(layer - target), layer))


def check_layers(layers: Sequence[int], n_layers: int, model: str) -> list[int]:
    """``layers`` sorted and deduplicated, or one line naming the ones out of range (an empty list too)."""
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad or not layers:
        raise AffectlensError(f"layers {list(layers)} out of range: {model} has layers 0..{n_layers - 1}")
    return sorted({int(layer) for layer in layers})


def story_start(n_tokens: int, offset: int) -> int:
    """First token of a text's capture range (stories, scenarios, neutral dialogues): ``offset``, or ``n // 2``
    when the text is not longer than it; past token 0 (the attention sink) whenever ``n > 1`` and ``offset > 0``."""
    return offset if n_tokens > offset else min(offset, n_tokens // 2)
