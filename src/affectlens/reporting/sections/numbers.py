"""The "every number" appendix: each number of an analysis file, one row per field, so none is left out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from affectlens.reporting.document import Section, Table
from affectlens.reporting.format import number


def numbers_section(path: Path, data: dict[str, Any]) -> Section:
    """Every number of the analysis file at ``path`` (already read as ``data``), folded under a toggle."""
    rows = list(_numeric_fields(data))
    return Section(
        f"All numbers: {path.parent.name}/{path.name}",
        [
            f"Each number in `{path.name}`, as the sections above round it (3 decimals), with its field. "
            "Lists are written out in order; intervals are [low, high].",
            Table(pd.DataFrame(rows, columns=["field", "values"])),
        ],
        collapsed=True,
    )


def _numeric_fields(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, formatted values) for every number or list of numbers below ``node``; figures skipped."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "figures":
                yield from _numeric_fields(value, f"{path} › {key}" if path else str(key))
    elif isinstance(node, list):
        if all(not isinstance(v, dict | list) for v in node):
            if any(_is_number(v) for v in node):
                yield path, ", ".join(number(v) for v in node)
        else:
            for i, value in enumerate(node):
                yield from _numeric_fields(value, f"{path}[{i}]")
    elif _is_number(node):
        yield path, number(node)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
