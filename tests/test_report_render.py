"""The report renderer: one offline HTML file with embedded figures, a Markdown twin, and number formatting."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from affectlens.errors import AffectlensError
from affectlens.reporting.document import Figure, Section, Table
from affectlens.reporting.render import embedded_images, format_number, numbers_in, render


def tiny_png(path: Path, value: float) -> Path:
    # Different data per figure, so the embedded-bytes check can tell the two figures apart.
    fig, ax = plt.subplots(figsize=(1.5, 1.0), dpi=40)
    ax.plot([0, 1], [0, value])
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


@pytest.fixture
def sections(tmp_path: Path) -> list[Section]:
    figs = tmp_path / "figs"
    figs.mkdir()
    accuracy = pd.DataFrame(
        {"cell": ["HP-D", "LN"], "accuracy": [0.8123, float("nan")], "n": [40, 38]}
    )  # default RangeIndex: not shown
    by_layer = pd.DataFrame({"r": [0.25, -0.5]}, index=pd.Index([3, 7], name="layer"))
    return [
        Section(
            "Faces & <states>",
            [
                "Probe accuracy is **0.812** on `h_first`; a < b & c.",
                Table(accuracy, caption="Accuracy by cell", float_format="{:.2f}"),
                Figure(tiny_png(figs / "first.png", 1.0), caption="First figure: a line."),
            ],
        ),
        Section(
            "Layers",
            [
                "Second section.",
                Table(by_layer, caption="Correlation by layer"),
                Figure(tiny_png(figs / "second.png", 2.0), caption="Second figure."),
            ],
            level=3,
        ),
    ]


def test_html_is_offline_and_embeds_every_figure(tmp_path: Path, sections: list[Section]) -> None:
    out = tmp_path / "report"
    html_path, md_path = render(sections, out, title="Report <b>&", subtitle="tiny model")
    assert (html_path, md_path) == (out / "report.html", out / "report.md")
    text = html_path.read_text(encoding="utf-8")

    for forbidden in ("http://", "https://", "<script", "<link"):
        assert forbidden not in text.lower()
    figures = [b for s in sections for b in s.blocks if isinstance(b, Figure)]
    assert embedded_images(text) == [f.path.read_bytes() for f in figures]
    assert all(f'alt="{f.caption}"' in text for f in figures)

    # Every section has an anchor, and the contents links to it.
    ids = re.findall(r'<section id="([^"]+)">', text)
    assert len(ids) == len(sections) == len(set(ids))
    for anchor in ids:
        assert f'href="#{anchor}"' in text

    assert "Report &lt;b&gt;&amp;" in text and "<b>&" not in text
    assert "Faces &amp; &lt;states&gt;" in text
    assert "a &lt; b &amp; c." in text
    assert "<strong>0.812</strong>" in text and "<code>h_first</code>" in text
    assert "**" not in text and "`" not in text


def test_html_table_formatting(tmp_path: Path, sections: list[Section]) -> None:
    html_path, _ = render(sections, tmp_path, title="t")
    text = html_path.read_text(encoding="utf-8")
    first_table = text[text.index("<table>") : text.index("</table>")]
    assert ">0.81<" in first_table and ">–<" in first_table and ">40<" in first_table
    assert "nan" not in first_table.lower()
    assert ">0<" not in first_table  # default RangeIndex is not shown
    second_table = text[text.rindex("<table>") : text.rindex("</table>")]
    assert ">layer<" in second_table and ">7<" in second_table and ">-0.500<" in second_table


def test_markdown_twin(tmp_path: Path, sections: list[Section]) -> None:
    out = tmp_path / "report"
    _, md_path = render(sections, out, title="Report <b>&")
    md = md_path.read_text(encoding="utf-8")
    assert md.startswith("# Report <b>&\n")
    assert "## Faces & <states>" in md and "### Layers" in md
    assert "Probe accuracy is **0.812** on `h_first`; a < b & c." in md  # inline markers kept as-is
    assert "| cell | accuracy | n |" in md
    assert "| HP-D | 0.81 | 40 |" in md and "| LN | – | 38 |" in md
    assert "| layer | r |" in md and "| 7 | -0.500 |" in md
    assert "](../figs/first.png)" in md and "](../figs/second.png)" in md
    assert not (out / "figs").exists()  # referenced, not copied
    for caption in ("*Accuracy by cell*", "*First figure: a line.*", "*Second figure.*"):
        assert caption in md
    assert "data:" not in md


def test_missing_figure_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "gone.png"
    with pytest.raises(AffectlensError) as err:
        render([Section("S", [Figure(missing, "c")])], tmp_path / "out", title="t")
    message = str(err.value)
    assert str(missing) in message and "\n" not in message
    assert not (tmp_path / "out" / "report.html").exists()


def test_write_is_atomic_and_replaces(tmp_path: Path, sections: list[Section]) -> None:
    (tmp_path / "report.html").write_text("old report", encoding="utf-8")
    (tmp_path / "report.md").write_text("old report", encoding="utf-8")
    render(sections, tmp_path, title="new")
    assert "old report" not in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "old report" not in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs", "report.html", "report.md"]


def test_format_number() -> None:
    assert format_number(0.5) == "0.500"
    assert format_number(12) == "12"
    assert format_number(np.int64(12)) == "12"
    assert format_number(np.float32(0.25)) == "0.250"
    assert format_number(0.000999) == "0.001"
    assert format_number(0.8123, digits=2) == "0.81"
    assert format_number(-0.25) == "-0.250"
    assert format_number(-0.0001) == "0.000"
    assert format_number(1234567.0) == "1234567.000"
    assert format_number(None) == "–"
    assert format_number(float("nan")) == "–"
    assert format_number(np.nan) == "–"
    assert format_number(math.inf) == "inf"


def test_numbers_in() -> None:
    found = numbers_in("acc 0.812 [0.78, 0.84], p = 0.001, −0.25, 45%")
    assert {"0.812", "0.78", "0.84", "0.001", "-0.25", "45"} <= found
    assert "0.25" not in found and "−0.25" not in found  # the sign is kept, always as ASCII '-'
    assert numbers_in("r = -0.5.") == {"-0.5"}
    assert numbers_in("layers 3-5") == {"3", "5"}  # a hyphen between digits is not a sign
    assert numbers_in("n=1234") == {"1234"}


def test_formatted_numbers_are_found_again(tmp_path: Path) -> None:
    values = [0.8123, -0.25, 0.000999, 45, 1234567.5, -3]
    paragraph = "Values: " + ", ".join(format_number(v) for v in values) + "."
    _, md_path = render([Section("S", [paragraph])], tmp_path, title="t")
    found = numbers_in(md_path.read_text(encoding="utf-8"))
    assert {format_number(v) for v in values} <= found


def test_html_escapes_markup_in_text_and_renders_inline_markdown(tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script> <img src=x onerror=y> **bold `a<b`** and `code`'
    table = Table(pd.DataFrame({"face": ["<script>", "(^_^)"], "n": [1, 2]}), caption="`<i>` **cap**")
    html_path, md_path = render(
        [Section("<script>t</script>", [hostile, table])], tmp_path, title="<script>", subtitle="**s**"
    )
    text = html_path.read_text(encoding="utf-8")
    body = text[text.index("<body>") :]
    assert "<script" not in text.lower() and "<img" not in body and "<i>" not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=y&gt;" in body
    assert "<strong>bold <code>a&lt;b</code></strong> and <code>code</code>" in body
    assert "<caption><code>&lt;i&gt;</code> <strong>cap</strong></caption>" in body
    assert '<p class="subtitle"><strong>s</strong></p>' in body
    assert "<title>&lt;script&gt;</title>" in text
    assert "<td>&lt;script&gt;</td>" in body and '<td class="num">2</td>' in body
    assert hostile in md_path.read_text(encoding="utf-8")  # the Markdown twin keeps the source as written


def test_links_and_images_in_text_stay_text(tmp_path: Path) -> None:
    html_path, _ = render(
        [Section("S", ["see [here](https://example.org) ![x](https://example.org/a.png)"])],
        tmp_path,
        title="t",
    )
    text = html_path.read_text(encoding="utf-8")
    assert '<a href="https' not in text and "<img" not in text  # the page never reaches outside itself
    assert "[here](https://example.org)" in text
