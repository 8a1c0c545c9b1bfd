"""Estimated cost from token counts and a price table (USD per million tokens) that the user can override.

Prices change; the table below is what the vendors listed when it was written, matched by model-name prefix
(longest first), each entry one model version, so that a newer version gets no estimate rather than an old
price. A JSON file ``{"MODEL_PREFIX": [input, output], ...}`` given with ``--prices`` replaces
entries. A model with no entry has no estimate, and says so, rather than a guessed one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from affectlens.errors import AffectlensError

PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4-0": (15.0, 75.0),
    "claude-opus-4-2025": (15.0, 75.0),  # the dated id of Opus 4
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-0": (3.0, 15.0),
    "claude-sonnet-4-2025": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4o": (2.5, 10.0),
}
CACHE_READ, BATCH = 0.1, 0.5  # multipliers of the input price for cache reads, and of both for batches


def load_prices(path: Path | str | None = None) -> dict[str, tuple[float, float]]:
    table = dict(PRICES)
    if path is None:
        return table
    try:
        extra = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(extra, dict) or not all(_is_price(v) for v in extra.values()):
            raise ValueError("an entry is not [input, output]")
        table.update({str(k): (float(v[0]), float(v[1])) for k, v in extra.items()})
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise AffectlensError(
            f"{path}: not a price table {{model: [input, output]}} ({type(exc).__name__})"
        ) from None
    return table


def _is_price(value: object) -> bool:
    """Two non-negative numbers (a string, a mapping or a bool would index or convert without complaint)."""
    return (isinstance(value, list) and len(value) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in value))  # fmt: skip


def price_of(model: str, table: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    for prefix in sorted(table, key=len, reverse=True):
        if model.startswith(prefix):
            return table[prefix]
    return None


def estimate_cost(model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0, *,
                  batch: bool = False, table: Mapping[str, tuple[float, float]] | None = None) -> float | None:  # fmt: skip
    """USD for the given usage, or None when the table has no price for ``model``."""
    price = price_of(model, PRICES if table is None else table)
    if price is None:
        return None
    fresh = max(input_tokens - cached_tokens, 0)
    usd = (fresh * price[0] + cached_tokens * price[0] * CACHE_READ + output_tokens * price[1]) / 1e6
    return usd * (BATCH if batch else 1.0)
