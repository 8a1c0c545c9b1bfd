"""Render report sections into one self-contained HTML file and a Markdown file beside it.

The HTML opens offline: CSS is inline and every figure is embedded as a base64 ``data:`` PNG, so the file
can be mailed or archived alone. The page comes from the jinja2 template ``templates/report.html.j2`` with
autoescape on; the inline markdown of text (`code`, **bold**, *emphasis*) goes through markdown-it with raw
HTML off, so text from a run can never inject markup. The Markdown twin carries the same content and points
at the figures by relative path. Numbers are formatted by :mod:`affectlens.reporting.format`, re-exported here.
"""

from __future__ import annotations

import base64
import numbers
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markdown_it import MarkdownIt
from markupsafe import Markup

from affectlens.errors import AffectlensError
from affectlens.reporting.document import Figure, Section, Table
from affectlens.reporting.format import MISSING, numbers_in, unsigned_zero
from affectlens.reporting.format import number as format_number
from affectlens.store.atomic import write_text

__all__ = ["embedded_images", "format_number", "inline_html", "numbers_in", "plain_text", "render"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


@cache
def _markdown() -> MarkdownIt:
    # Only the inline rules the report's text uses; links and images stay literal text, so a page never
    # points outside itself, and html=False escapes any tag written in the source.
    return MarkdownIt("zero", {"html": False}).enable(["backticks", "emphasis", "escape", "entity"])


def inline_html(text: str) -> Markup:
    """Text as HTML: escaped, with `code`, **bold** and *emphasis* turned into tags; nothing else."""
    return Markup(_markdown().renderInline(str(text)))


def plain_text(text: str) -> str:
    """Text with its inline markers removed (for alt text and the page title)."""
    tokens = _markdown().parseInline(str(text))
    children = tokens[0].children if tokens else None
    return "".join(t.content for t in children or [] if t.type in ("text", "code_inline"))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__ or "affectlens.reporting", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(inline=inline_html, plain=plain_text)
    return env


def embedded_images(html_text: str) -> list[bytes]:
    """The decoded bytes of every ``data:image/png;base64`` URI in the HTML, in document order."""
    return [base64.b64decode(payload) for payload in _DATA_URI.findall(html_text)]


def render(sections: list[Section], out_dir: Path, *, title: str, subtitle: str = "") -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` (self-contained) and ``out_dir/report.md``; return both paths.

    Every figure is read before anything is written, so a missing figure leaves no half-made report.
    """
    out_dir = Path(out_dir)
    images = {
        id(block): _read_png(block.path) for s in sections for block in s.blocks if isinstance(block, Figure)
    }
    anchors = _anchors([s.title for s in sections])
    views = [_section_view(s, a, images) for s, a in zip(sections, anchors, strict=True)]
    template = _environment().get_template("report.html.j2")
    page = template.render(title=title, subtitle=subtitle, sections=views)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    write_text(html_path, page)
    write_text(md_path, _markdown_twin(sections, out_dir, title=title, subtitle=subtitle))
    return html_path, md_path


def _read_png(path: Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise AffectlensError(f"report figure not found: {path}")
    data = path.read_bytes()
    if not data.startswith(PNG_MAGIC):
        raise AffectlensError(f"report figure is not a PNG: {path}")
    return data


def _anchors(titles: list[str]) -> list[str]:
    """ASCII slugs of the section titles, made unique; a title with no ASCII letters gets "section-N"."""
    seen: set[str] = set()
    out = []
    for i, t in enumerate(titles, start=1):
        base = re.sub(r"[^a-z0-9]+", "-", t.lower()).strip("-") or f"section-{i}"
        slug, k = base, 2
        while slug in seen:
            slug, k = f"{base}-{k}", k + 1
        seen.add(slug)
        out.append(slug)
    return out


def _level(section: Section) -> int:
    return min(max(int(section.level), 2), 6)  # h1 is the report title


# ------------------------------------------------------------------------------------------------ tables


@dataclass(frozen=True)
class _Cell:
    text: str
    numeric: bool  # right-aligned
    index: bool = False  # a row label (<th scope="row">)


def _cell(value: object, float_format: str) -> _Cell:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return _Cell(MISSING, True)
    if isinstance(value, bool | np.bool_):
        return _Cell(str(bool(value)), False)
    if isinstance(value, numbers.Integral):
        return _Cell(str(int(value)), True)
    if isinstance(value, numbers.Real):
        return _Cell(unsigned_zero(float_format.format(float(value))), True)
    return _Cell(str(value), False)


def _label(value: object) -> str:
    if isinstance(value, tuple):  # MultiIndex columns: one header, levels joined
        return " / ".join(str(v) for v in value if str(v))
    return "" if value is None else str(value)


def _grid(table: Table) -> tuple[list[_Cell], list[list[_Cell]]]:
    """Header and body cells; a column is numeric (right-aligned) when every body cell in it is a number."""
    frame, idx = table.frame, table.frame.index
    show_index = not (
        isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1 and idx.name is None
    )
    n_index = idx.nlevels if show_index else 0
    labels = ([_label(n) for n in idx.names] if show_index else []) + [_label(c) for c in frame.columns]
    rows = []
    for key, values in zip(idx, frame.itertuples(index=False, name=None), strict=True):
        keys = (key if isinstance(key, tuple) else (key,)) if show_index else ()
        rows.append(
            [_Cell(_cell(k, table.float_format).text, False, True) for k in keys]
            + [_cell(v, table.float_format) for v in values]
        )
    numeric = [j >= n_index and bool(rows) and all(r[j].numeric for r in rows) for j in range(len(labels))]
    header = [_Cell(text, num) for text, num in zip(labels, numeric, strict=True)]
    return header, rows


def _section_view(section: Section, anchor: str, images: dict[int, bytes]) -> dict[str, Any]:
    """What the template needs of a section: plain values, so the template only lays them out."""
    blocks: list[dict[str, Any]] = []
    for block in section.blocks:
        if isinstance(block, Table):
            header, rows = _grid(block)
            blocks.append({"kind": "table", "caption": block.caption, "header": header, "rows": rows})
        elif isinstance(block, Figure):
            uri = "data:image/png;base64," + base64.b64encode(images[id(block)]).decode("ascii")
            alt = plain_text(block.caption) or Path(block.path).stem
            blocks.append({"kind": "figure", "uri": uri, "alt": alt, "caption": block.caption})
        else:
            blocks.append({"kind": "text", "text": block})
    return {
        "anchor": anchor,
        "level": _level(section),
        "title": section.title,
        "collapsed": section.collapsed,
        "blocks": blocks,
    }


# ---------------------------------------------------------------------------------------------- markdown


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    header, rows = _grid(table)
    lines = []
    if table.caption:
        lines += [f"*{table.caption.strip()}*", ""]
    lines.append("| " + " | ".join(_md_cell(h.text) for h in header) + " |")
    lines.append("|" + "|".join("---:" if h.numeric else "---" for h in header) + "|")
    lines += ["| " + " | ".join(_md_cell(c.text) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_figure(figure: Figure, out_dir: Path) -> str:
    rel = Path(os.path.relpath(Path(figure.path).absolute(), out_dir.absolute())).as_posix()
    target = f"<{rel}>" if re.search(r"[\s()<>]", rel) else rel  # CommonMark: <...> allows spaces/parens
    alt = (plain_text(figure.caption) or Path(figure.path).stem).replace("[", "\\[").replace("]", "\\]")
    lines = [f"![{alt.replace(chr(10), ' ')}]({target})"]
    if figure.caption:
        lines += ["", f"*{figure.caption.strip()}*"]
    return "\n".join(lines)


def _markdown_twin(sections: list[Section], out_dir: Path, *, title: str, subtitle: str) -> str:
    # Text blocks are Markdown already: they go in as written, so `code` and **bold** keep their markers.
    parts = [f"# {title}"]
    if subtitle:
        parts.append(subtitle)
    for s in sections:
        parts.append(f"{'#' * _level(s)} {s.title}")
        for block in s.blocks:
            if isinstance(block, Table):
                parts.append(_md_table(block))
            elif isinstance(block, Figure):
                parts.append(_md_figure(block, out_dir))
            else:
                parts.append(block)
    return "\n\n".join(parts) + "\n"
