"""Render report sections into one self-contained HTML file and a Markdown file beside it.

The HTML opens offline: CSS is inline and every figure is embedded as a base64 ``data:`` PNG, so the file
can be mailed or archived alone. The Markdown carries the same content and points at the figures by
relative path. ``format_number`` is the one way a float enters the report, and ``numbers_in`` reads the
numbers back out, so a test can check that every number in ``analysis.json`` reached the text.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from affectlens.errors import AffectlensError
from affectlens.report.document import Figure, Section, Table
from affectlens.store.atomic import atomic_path

__all__ = ["embedded_images", "format_number", "numbers_in", "render"]

MISSING = "–"  # en dash: how None/NaN appear in text and tables
MINUS = "−"  # U+2212; read as '-' by numbers_in, never written by format_number
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CSS = """
:root { --fg: #1f2328; --muted: #5f6b7a; --rule: #d8dee4; --zebra: #f6f8fa; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.55; font-size: 16px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 2rem 1.25rem 4rem; }
h1 { font-size: 1.9rem; margin: 0 0 .25rem; line-height: 1.25; }
h2, h3, h4, h5, h6 { line-height: 1.3; margin: 2rem 0 .6rem; }
h2 { font-size: 1.4rem; border-bottom: 1px solid var(--rule); padding-bottom: .3rem; }
h3 { font-size: 1.15rem; }
h4, h5, h6 { font-size: 1rem; }
.subtitle { color: var(--muted); margin: 0 0 1.5rem; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
nav.toc { background: var(--zebra); border: 1px solid var(--rule); border-radius: 6px;
  padding: .75rem 1.25rem; margin: 1.5rem 0 2rem; }
nav.toc .toc-title { font-weight: 600; margin: 0 0 .35rem; }
nav.toc ul { list-style: none; margin: 0; padding: 0; }
nav.toc li { margin: .15rem 0; }
nav.toc li.l3 { padding-left: 1.25rem; } nav.toc li.l4 { padding-left: 2.5rem; }
nav.toc li.l5, nav.toc li.l6 { padding-left: 3.75rem; }
p { margin: .6rem 0; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em;
  background: var(--zebra); padding: .1em .3em; border-radius: 4px; }
.table-wrap { overflow-x: auto; margin: 1rem 0 1.5rem; }
table { border-collapse: collapse; font-size: .92rem; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; color: var(--muted); font-size: .9rem; padding-bottom: .4rem; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { border-bottom: 2px solid var(--rule); font-weight: 600; }
td.num, th.num { text-align: right; }
tbody tr:nth-child(even) { background: var(--zebra); }
figure { margin: 1.25rem 0 1.75rem; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .5rem; }
summary { cursor: pointer; color: var(--muted); }
""".strip()

# One left-to-right pass: a code span wins over bold where both could start; bold may hold code spans.
_INLINE = re.compile(r"`([^`]+)`|\*\*(?=\S)(.+?)(?<=\S)\*\*", re.DOTALL)
_DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")
# A sign counts only where it cannot be a hyphen or a range dash ("3-5", "SmolLM2-135M").
_NUMBER = re.compile(rf"(?<![\w.])[-{MINUS}]\d+(?:\.\d+)?|\d+(?:\.\d+)?")


def format_number(x: object, digits: int = 3) -> str:
    """The one way a number is printed into the report.

    Integers (Python or numpy, not bool) print as integers; other reals as ``f"{x:.{digits}f}"`` with
    trailing zeros kept (0.5 -> "0.500", 0.000999 -> "0.001", plain rounding). None and NaN print as "–",
    infinities as "inf"/"-inf". The minus sign is ASCII '-', and a value that rounds to zero prints without
    one ("-0.0001" -> "0.000"). No thousands separators. Anything else is ``str(x)``.
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
        return _drop_negative_zero(f"{value:.{digits}f}")
    return str(x)


def _drop_negative_zero(text: str) -> str:
    # "-0.000" reads as a signed result; the value is zero at this precision.
    if text.startswith("-") and not any(c in "123456789" for c in text):
        return text[1:]
    return text


def numbers_in(text: str) -> set[str]:
    """The numeric tokens in rendered text, as ``format_number`` would write them.

    Rules: a token is digits with an optional decimal part ("0.812", "45"); text is assumed to carry no
    thousands separators, so "1,234" reads as "1" and "234". A leading '-' or '−' (U+2212) makes the
    token negative, always returned with ASCII '-' ("−0.25" -> "-0.25"), but only where it follows neither
    a word character nor a '.', so "3-5" gives "3" and "5". A trailing '%' is dropped ("45%" -> "45").
    Exponent notation is not read (format_number never writes it).
    """
    return {token.replace(MINUS, "-") for token in _NUMBER.findall(text)}


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
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    _write_text(html_path, _html(sections, anchors, images, title=title, subtitle=subtitle))
    _write_text(md_path, _markdown(sections, out_dir, title=title, subtitle=subtitle))
    return html_path, md_path


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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


def _inline_html(text: str) -> str:
    """Escape text, turning `code` into <code> and **bold** into <strong>; nothing else is interpreted."""
    parts: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        parts.append(html.escape(text[pos : m.start()]))
        if m.group(1) is not None:
            parts.append(f"<code>{html.escape(m.group(1))}</code>")
        else:
            parts.append(f"<strong>{_inline_html(m.group(2))}</strong>")
        pos = m.end()
    parts.append(html.escape(text[pos:]))
    return "".join(parts)


def _plain(text: str) -> str:
    """Text with the inline markers removed, for alt text."""
    return _INLINE.sub(lambda m: m.group(1) if m.group(1) is not None else _plain(m.group(2)), text)


def _cell(value: object, float_format: str) -> tuple[str, bool]:
    """A table cell's text and whether it is numeric (right-aligned)."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return MISSING, True
    if isinstance(value, bool | np.bool_):
        return str(bool(value)), False
    if isinstance(value, numbers.Integral):
        return str(int(value)), True
    if isinstance(value, numbers.Real):
        return _drop_negative_zero(float_format.format(float(value))), True
    return str(value), False


def _label(value: object) -> str:
    if isinstance(value, tuple):  # MultiIndex columns: one header, levels joined
        return " / ".join(str(v) for v in value if str(v))
    return "" if value is None else str(value)


def _grid(table: Table) -> tuple[list[str], list[list[tuple[str, bool]]], int]:
    """Header labels, rows of (text, numeric) cells, and how many leading columns are the index."""
    frame = table.frame
    idx = frame.index
    show_index = not (
        isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1 and idx.name is None
    )
    n_index = idx.nlevels if show_index else 0
    header = ([_label(n) for n in idx.names] if show_index else []) + [_label(c) for c in frame.columns]
    rows = []
    for key, values in zip(idx, frame.itertuples(index=False, name=None), strict=True):
        keys = (key if isinstance(key, tuple) else (key,)) if show_index else ()
        rows.append(
            [(_cell(k, table.float_format)[0], False) for k in keys]
            + [_cell(v, table.float_format) for v in values]
        )
    return header, rows, n_index


def _numeric_columns(rows: list[list[tuple[str, bool]]], width: int) -> list[bool]:
    # A column is right-aligned when every cell in it is a number (or missing).
    return [bool(rows) and all(r[j][1] for r in rows) for j in range(width)]


def _html_table(table: Table) -> str:
    header, rows, n_index = _grid(table)
    numeric = _numeric_columns(rows, len(header))
    numeric[:n_index] = [False] * n_index

    def cls(j: int) -> str:
        return ' class="num"' if numeric[j] else ""

    lines = ['<div class="table-wrap"><table>']
    if table.caption:
        lines.append(f"<caption>{_inline_html(table.caption)}</caption>")
    lines.append("<thead><tr>" + "".join(f"<th{cls(j)}>{html.escape(h)}</th>" for j, h in enumerate(header)))
    lines.append("</tr></thead><tbody>")
    for row in rows:
        cells = [
            f'<th scope="row">{html.escape(t)}</th>' if j < n_index else f"<td{cls(j)}>{html.escape(t)}</td>"
            for j, (t, _) in enumerate(row)
        ]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _html_figure(figure: Figure, data: bytes) -> str:
    alt = _plain(figure.caption) or Path(figure.path).stem
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    caption = f"<figcaption>{_inline_html(figure.caption)}</figcaption>" if figure.caption else ""
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}">{caption}</figure>'


def _html(
    sections: list[Section], anchors: list[str], images: dict[int, bytes], *, title: str, subtitle: str
) -> str:
    toc = "\n".join(
        f'<li class="l{_level(s)}"><a href="#{a}">{_inline_html(s.title)}</a></li>'
        for s, a in zip(sections, anchors, strict=True)
    )
    body: list[str] = []
    for s, a in zip(sections, anchors, strict=True):
        h = _level(s)
        body.append(f'<section id="{a}">\n<h{h}>{_inline_html(s.title)}</h{h}>')
        if s.collapsed:
            body.append("<details><summary>show</summary>")
        for block in s.blocks:
            if isinstance(block, Table):
                body.append(_html_table(block))
            elif isinstance(block, Figure):
                body.append(_html_figure(block, images[id(block)]))
            else:
                body.append(f"<p>{_inline_html(block)}</p>")
        if s.collapsed:
            body.append("</details>")
        body.append("</section>")
    head = f"<h1>{_inline_html(title)}</h1>"
    if subtitle:
        head += f'\n<p class="subtitle">{_inline_html(subtitle)}</p>'
    nav = f'<nav class="toc" aria-label="Contents">\n<p class="toc-title">Contents</p>\n<ul>\n{toc}\n</ul>\n</nav>'
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(_plain(title))}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n<main>\n"
        f"<header>\n{head}\n</header>\n{nav if sections else ''}\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


def _level(section: Section) -> int:
    return min(max(int(section.level), 2), 6)  # h1 is the report title


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    header, rows, n_index = _grid(table)
    numeric = _numeric_columns(rows, len(header))
    numeric[:n_index] = [False] * n_index
    lines = []
    if table.caption:
        lines += [f"*{table.caption.strip()}*", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(_md_cell(t) for t, _ in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_figure(figure: Figure, out_dir: Path) -> str:
    rel = Path(os.path.relpath(Path(figure.path).absolute(), out_dir.absolute())).as_posix()
    target = f"<{rel}>" if re.search(r"[\s()<>]", rel) else rel  # CommonMark: <...> allows spaces/parens
    alt = (_plain(figure.caption) or Path(figure.path).stem).replace("[", "\\[").replace("]", "\\]")
    alt = alt.replace("\n", " ")
    lines = [f"![{alt}]({target})"]
    if figure.caption:
        lines += ["", f"*{figure.caption.strip()}*"]
    return "\n".join(lines)


def _markdown(sections: list[Section], out_dir: Path, *, title: str, subtitle: str) -> str:
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
