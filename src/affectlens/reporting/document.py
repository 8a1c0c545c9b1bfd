"""The report's building blocks: sections made of paragraphs, tables and figures.

Analyses describe what they found as ``Section`` objects; ``affectlens.reporting.render`` turns a list of them
into one self-contained HTML file (figures embedded) and a Markdown file beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Figure:
    """A PNG (embedded in the HTML) with a plain-language caption: what it shows, and what it does not."""

    path: Path
    caption: str


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""
    float_format: str = "{:.3f}"


@dataclass
class Section:
    title: str
    blocks: list[str | Table | Figure] = field(default_factory=list)  # str: one paragraph of plain text
    level: int = 2
    collapsed: bool = False  # HTML: the blocks fold under a "show" toggle (long appendices)
