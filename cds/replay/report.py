"""Self-contained HTML report pages: sections of bar charts and tables, nothing to load.

The small API `cds report` (the population report) and `cds impact` render through:

    page = Page("Population report", subtitle="104 inputs, as of 2026-11-23")
    page.add_section(
        "Cards per topic and indicator",
        BarChart(["workup", "tbs"], {"info": [80, 2], "warning": [3, 0]}, stacked=True),
        note="one card per topic and input",
    )
    page.add_section("Slowest inputs", Table(["input", "seconds"], [["a.json", "0.12"]]))
    html_text = page.render()

Charts are drawn by matplotlib (the Agg backend, no display) as SVG and inlined in the
page: no script, no web font, no image file, no request when the page is opened, and a
few kilobytes per chart (text stays text: `svg.fonttype` none). Every data bar carries an
id with `mark` in it (`<chart id>-mark-<n>`), so tests and tools can count what a chart
shows; each chart also has its numbers in a collapsed table under it. Output is
deterministic for the same data (no timestamps, fixed SVG id salt).
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Colours of the series (a colour-blind-safe palette, Okabe-Ito), then matplotlib's cycle.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
)
#: Colours of CDS Hooks indicators when a chart's series are indicators.
INDICATOR_COLOURS = {"info": "#0072B2", "warning": "#E69F00", "critical": "#D55E00"}


@dataclass
class BarChart:
    """Bars, one per label; several series side by side or stacked.

    `series` maps a series name to one value per label (same order as `labels`).
    `horizontal` (the default) suits long labels such as rule ids; `colours` names a
    colour per series (else the palette). `value_format` formats the numbers of the data
    table (and the bar ends when `annotate`)."""

    labels: Sequence[str]
    series: dict[str, Sequence[float]]
    stacked: bool = False
    horizontal: bool = True
    xlabel: str = ""
    ylabel: str = ""
    colours: dict[str, str] = field(default_factory=dict)
    value_format: str = "{:g}"
    annotate: bool = False

    def __post_init__(self) -> None:
        for name, values in self.series.items():
            if len(values) != len(self.labels):
                raise ValueError(
                    f"series {name!r} has {len(values)} values for {len(self.labels)} labels"
                )

    @property
    def marks(self) -> int:
        """How many bars with a value other than 0 the chart draws."""
        return sum(1 for values in self.series.values() for v in values if v)


@dataclass
class Table:
    """A table of text cells (numbers formatted by the caller)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    #: Columns (by index) whose cells are right-aligned numbers.
    numeric: Sequence[int] = ()


Content = BarChart | Table


@dataclass
class Section:
    title: str
    content: list[Content]
    note: str = ""


_STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 0 auto; max-width: 1100px; padding: 24px; color: #1b1f24; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
.subtitle { color: #57606a; margin: 0 0 12px; }
.facts { display: flex; flex-wrap: wrap; gap: 8px; margin: 12px 0 20px; padding: 0; }
.facts li { list-style: none; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 12px; }
.facts b { display: block; font-size: 18px; }
nav ol { columns: 2; margin: 0 0 16px; }
section { border-top: 1px solid #d0d7de; padding: 12px 0 8px; }
h2 { font-size: 18px; margin: 4px 0 6px; }
.note { color: #57606a; margin: 0 0 8px; }
figure.chart { margin: 0 0 8px; }
figure.chart svg { max-width: 100%; height: auto; }
.empty { color: #57606a; font-style: italic; }
table { border-collapse: collapse; margin: 4px 0 12px; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
details summary { cursor: pointer; color: #57606a; }
footer { color: #57606a; border-top: 1px solid #d0d7de; margin-top: 16px; padding-top: 8px; }
"""


class Page:
    """A report page: a title, key figures, and sections of charts and tables."""

    def __init__(self, title: str, *, subtitle: str = "", footer: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.footer = footer
        self.facts: list[tuple[str, str]] = []
        self.sections: list[Section] = []

    def add_fact(self, label: str, value: object) -> None:
        """A key figure shown under the title (e.g. "inputs", 104)."""
        self.facts.append((label, str(value)))

    def add_section(self, title: str, *content: Content, note: str = "") -> Section:
        """A section of charts and tables, in the order given; `note` is plain text."""
        section = Section(title, list(content), note)
        self.sections.append(section)
        return section

    def render(self) -> str:
        """The page as one HTML document with everything inline."""
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            # nothing may load: the page is one file, opened offline
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'; img-src data:\">",
            f"<title>{_text(self.title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head><body>",
            f"<h1>{_text(self.title)}</h1>",
        ]
        if self.subtitle:
            out.append(f'<p class="subtitle">{_text(self.subtitle)}</p>')
        if self.facts:
            items = "".join(f"<li><b>{_text(v)}</b>{_text(k)}</li>" for k, v in self.facts)
            out.append(f'<ul class="facts">{items}</ul>')
        if len(self.sections) > 1:
            links = "".join(
                f'<li><a href="#s{i}">{_text(s.title)}</a></li>'
                for i, s in enumerate(self.sections, 1)
            )
            out.append(f"<nav><ol>{links}</ol></nav>")
        chart_number = 0
        for index, section in enumerate(self.sections, 1):
            out.append(f'<section id="s{index}" data-title="{_text(section.title)}">')
            out.append(f"<h2>{_text(section.title)}</h2>")
            if section.note:
                out.append(f'<p class="note">{_text(section.note)}</p>')
            for content in section.content:
                if isinstance(content, BarChart):
                    chart_number += 1
                    out.append(_chart_html(content, f"c{chart_number}"))
                else:
                    out.append(_table_html(content))
            out.append("</section>")
        if self.footer:
            out.append(f"<footer>{_text(self.footer)}</footer>")
        out.append("</body></html>\n")
        return "\n".join(out)


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table_html(table: Table) -> str:
    if not table.rows:
        return '<p class="empty">(nothing to show)</p>'
    numeric = set(table.numeric)
    head = "".join(f"<th>{_text(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_text(cell)}</td>' if i in numeric else f"<td>{_text(cell)}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chart_html(chart: BarChart, chart_id: str) -> str:
    if not chart.labels or chart.marks == 0:
        return f'<p class="empty" data-chart="{chart_id}">(nothing to show)</p>'
    svg = _svg(chart, chart_id)
    names = list(chart.series)
    data = Table(
        ["", *names],
        [
            [label, *(chart.value_format.format(chart.series[n][i]) for n in names)]
            for i, label in enumerate(chart.labels)
        ],
        numeric=range(1, len(names) + 1),
    )
    return (
        f'<figure class="chart" id="{chart_id}" data-marks="{chart.marks}">{svg}'
        f"<details><summary>data</summary>{_table_html(data)}</details></figure>"
    )


_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r"(url\(#|xlink:href=\"#|href=\"#)([^\")]+)")


def _scoped_ids(svg: str, prefix: str) -> str:
    """Every id of one chart's SVG prefixed, so charts inlined in one page never share one."""
    svg = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    return _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)


def _svg(chart: BarChart, chart_id: str) -> str:
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no backend, no display, no global state

    names = list(chart.series)
    count = len(chart.labels)
    groups = 1 if chart.stacked else max(1, len(names))
    longest = max((len(str(label)) for label in chart.labels), default=1)
    if chart.horizontal:
        width = 9.0
        height = min(40.0, 0.9 + 0.24 * count * (1 if chart.stacked else max(1, groups * 0.7)))
    else:
        width = min(11.0, max(5.0, 1.2 + 0.32 * count * groups))
        height = 2.8 + min(2.5, 0.055 * longest)
    rc: dict[Any, Any] = {
        "svg.fonttype": "none",  # text as <text>, not glyph outlines: small and searchable
        "svg.hashsalt": "osteohooks-report",  # deterministic clip-path ids
        "font.size": 9,
        "font.family": ["DejaVu Sans", "sans-serif"],
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    with matplotlib.rc_context(rc):
        figure = Figure(figsize=(width, height), layout="constrained")
        axes = figure.subplots()
        positions = [float(p) for p in range(count)]
        base = [0.0] * count
        thickness = 0.8 if chart.stacked else 0.8 / groups
        mark = 0
        for index, name in enumerate(names):
            values = [float(v) for v in chart.series[name]]
            colour = chart.colours.get(name) or PALETTE[index % len(PALETTE)]
            if chart.stacked:
                where = positions
            else:
                where = [p - 0.4 + thickness * (index + 0.5) for p in positions]
            if chart.horizontal:
                bars = axes.barh(
                    where, values, height=thickness, left=base, color=colour, label=name
                )
            else:
                bars = axes.bar(
                    where, values, width=thickness, bottom=base, color=colour, label=name
                )
            for bar, value in zip(bars, values, strict=True):
                if value:
                    bar.set_gid(f"mark-{mark}")
                    mark += 1
            if chart.annotate:
                labels = [chart.value_format.format(v) if v else "" for v in values]
                axes.bar_label(bars, labels=labels, padding=2, fontsize=8)
            if chart.stacked:
                base = [b + v for b, v in zip(base, values, strict=True)]
        top = max(base) if chart.stacked else max(max(v) for v in chart.series.values())
        headroom = float(top) * (1.15 if chart.annotate else 1.04) or 1.0
        if chart.horizontal:
            axes.set_xlim(0, headroom)
            axes.set_yticks(positions, [str(label) for label in chart.labels])
            axes.invert_yaxis()
            axes.set_ylim(count - 0.5, -0.5)
            axes.grid(axis="x", color="#e5e7eb")
        else:
            axes.set_ylim(0, headroom)
            axes.set_xticks(positions, [str(label) for label in chart.labels])
            rotate = longest > 6 or count > 12
            if rotate:
                axes.tick_params(axis="x", labelrotation=60)
                for tick in axes.get_xticklabels():
                    tick.set_horizontalalignment("right")
                    tick.set_rotation_mode("anchor")
            axes.grid(axis="y", color="#e5e7eb")
        axes.set_axisbelow(True)
        if chart.xlabel:
            axes.set_xlabel(chart.xlabel)
        if chart.ylabel:
            axes.set_ylabel(chart.ylabel)
        if len(names) > 1:
            axes.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # drop the XML declaration and doctype
    text = _METADATA.sub("", text, count=1)  # the RDF block: names of vocabularies, no data
    return _scoped_ids(text, chart_id)
