"""The one way a number enters the report or the terminal: a value, an interval, a p-value, an n.

``numbers_in`` reads the numbers back out of rendered text, so a test can check that every number of an
analysis reached the report.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

MISSING = "–"  # en dash: how None/NaN appear in text and tables
MINUS = "−"  # U+2212; read as '-' by numbers_in, never written by number()
NO_INTERVAL = "[no interval]"
# A sign counts only where it cannot be a hyphen or a range dash ("3-5", "SmolLM2-135M").
_NUMBER = re.compile(rf"(?<![\w.])[-{MINUS}]\d+(?:\.\d+)?|\d+(?:\.\d+)?")


def number(x: object, digits: int = 3) -> str:
    """Integers (Python or numpy, not bool) as integers; other reals as ``f"{x:.{digits}f}"``.

    Trailing zeros are kept (0.5 -> "0.500"); None and NaN print as "–", infinities as "inf"/"-inf"; the
    minus sign is ASCII '-', and a value that rounds to zero prints without one. No thousands separators.
    Anything else is ``str(x)``.
    """
    if x is None or x is pd.NA:
        return MISSING
    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        value = float(x)
        if math.isnan(value):
            return MISSING
        return unsigned_zero(f"{value:.{digits}f}")
    return str(x)


def unsigned_zero(text: str) -> str:
    """``text`` without its minus sign when every digit is 0: "-0.000" would read as a signed result."""
    return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def interval(lo: object, hi: object, digits: int = 3, *, missing: str = NO_INTERVAL) -> str:
    """``[lo, hi]``, or ``missing`` (default ``[no interval]``) when either end is missing."""
    if _missing(lo) or _missing(hi):
        return missing
    return f"[{number(lo, digits)}, {number(hi, digits)}]"


def estimate(
    value: object, ci: Sequence[object] | None = None, digits: int = 3, *, missing: str = NO_INTERVAL
) -> str:
    """``value [lo, hi]``: a point estimate with its 95% interval (``ci`` = (lo, hi)); "n/a" without a value.

    ``missing`` stands in for an interval that is absent (see :func:`interval`).
    """
    if _missing(value):
        return "n/a"
    lo, hi = (ci[0], ci[1]) if ci is not None and len(ci) == 2 else (None, None)
    return f"{number(value, digits)} {interval(lo, hi, digits, missing=missing)}"


def p_value(result: Mapping[str, Any], key: str = "p_value") -> str:
    """A permutation p with the smallest p its number of shuffles could give, or "not tested"."""
    p = result.get(key)
    if p is None:
        return "not tested"
    floor = result.get("min_attainable_p")
    # Enough decimals that the smallest attainable p never prints as 0 (2,000 shuffles: 0.0005).
    digits = max(3, math.ceil(-math.log10(2 * floor))) if isinstance(floor, float) and floor > 0 else 3
    return f"{number(p, digits)} (min {number(floor, digits)}, {number(result.get('n_permutations'))} perms)"


def headline(result: Mapping[str, Any], value: str = "accuracy") -> str:
    """One terminal cell: ``value [lo, hi] p=… n=…``, or why the result is thin."""
    if not result or result.get("thin"):
        return f"thin: {result.get('reason', 'no data')}" if result else MISSING
    lo, hi = result.get(f"{value}_ci", (None, None))
    return f"{number(result[value])} [{number(lo)}, {number(hi)}] p={number(result.get('p_value'))} n={result.get('n')}"


def numbers_in(text: str) -> set[str]:
    """The numeric tokens in rendered text, as :func:`number` would write them.

    A token is digits with an optional decimal part; text carries no thousands separators, so "1,234" reads
    as "1" and "234". A leading '-' or '−' makes it negative (returned with ASCII '-'), but only where it
    follows neither a word character nor a '.', so "3-5" gives "3" and "5". Exponents are not read.
    """
    return {token.replace(MINUS, "-") for token in _NUMBER.findall(text)}
