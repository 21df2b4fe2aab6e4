"""Charts as inline SVG, made on the server: strips (a row of squares per series, one per run),
lines (values per run) and step bars (runs per bisection step).

Why a helper of our own, not a plotting library: the site has no JavaScript framework and loads
nothing from elsewhere (its Content-Security-Policy allows no external source), pages must be
byte-identical when their inputs are (so no timestamps or random ids, which matplotlib's SVG
has), and what we draw is three simple shapes. Inline SVG in the page needs no file, works from
file://, prints, and its ``<title>`` elements are the tooltips that carry the detail. Colours come
from the stylesheet through class names, never from inline styles (the CSP forbids them).

Every text that comes from the store goes through ``fragments.text`` (escaped, control and
bidirectional characters shown as escapes); numbers are formatted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from kbisect.browser.fragments import text

LABEL_W = 230
"""Width of the series labels left of a strip."""
NOTE_W = 330
"""Width of the notes right of a strip."""
ROW_H = 16
PLOT_W = 560
PLOT_H = 140


def _num(value: float) -> str:
    """A coordinate: at most one decimal, no trailing zeros (stable bytes for equal inputs)."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _svg(width: float, height: float, label: str, body: list[str]) -> Markup:
    return Markup(  # noqa: S704 (escaped parts)
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" '
        f'height="{_num(height)}" viewBox="0 0 {_num(width)} {_num(height)}" role="img" '
        f'aria-label="{text(label)}">\n' + "".join(body) + "</svg>\n"
    )


# -- strips --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """One series of a strip chart: per x a square (a CSS class and its tooltip) or None (no
    result there), a note to its right, and the x where something started (marked)."""

    label: str
    squares: Sequence[tuple[str, str] | None]
    note: str = ""
    mark: int | None = None


def strip_chart(x_labels: Sequence[str], bands: Sequence[Band], label: str) -> Markup:
    """Squares in rows: a series per row, an x (a run) per column; columns labelled below every
    few squares; a mark is a dark outline around the square where the note says it started."""
    n = max(1, len(x_labels))
    step = max(3.0, min(14.0, 640 / n))
    side = max(2.0, step - 1)
    width = LABEL_W + n * step + 8 + NOTE_W
    height = len(bands) * ROW_H + 26
    body = []
    for row, band in enumerate(bands):
        y = row * ROW_H + 2
        body.append(
            f'<text class="lbl" x="{LABEL_W - 6}" y="{_num(y + 11)}" text-anchor="end">'
            f"{text(band.label)}</text>\n"
        )
        for i, square in enumerate(band.squares):
            if square is None:
                continue
            css, tip = square
            x = LABEL_W + i * step
            mark = " mark" if band.mark == i else ""
            body.append(
                f'<rect class="{css}{mark}" x="{_num(x)}" y="{y}" width="{_num(side)}" '
                f'height="{ROW_H - 3}"><title>{text(tip)}</title></rect>'
            )
        body.append(
            f'\n<text class="note" x="{_num(LABEL_W + n * step + 8)}" y="{_num(y + 11)}">'
            f"{text(band.note)}</text>\n"
        )
    body += _x_axis(x_labels, LABEL_W, step, len(bands) * ROW_H + 16)
    return _svg(width, height, label, body)


def _x_axis(x_labels: Sequence[str], left: float, step: float, y: float) -> list[str]:
    """Labels under every few columns (about one per 60 pixels), the last always."""
    n = len(x_labels)
    every = max(1, int(60 // step) + 1)
    shown = [i for i in range(n) if i % every == 0 and n - 1 - i >= every / 2] + [n - 1]
    return [
        f'<text class="axis" x="{_num(left + i * step + step / 2)}" y="{_num(y)}" '
        f'text-anchor="middle">{text(x_labels[i])}</text>'
        for i in shown
        if i >= 0
    ] + ["\n"]


# -- lines ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One series of a line chart: a value per x (None: no value there)."""

    label: str
    values: Sequence[float | None]


def _ceiling(value: float) -> float:
    """A round top for an axis at or above ``value`` (1, 2, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    scale = 10 ** len(str(int(value)))
    for top in (scale / 10, scale / 5, scale / 2, scale):
        if top >= value:
            return float(top)
    return float(scale)


def line_chart(x_labels: Sequence[str], lines: Sequence[Line], unit: str, label: str) -> Markup:
    """Values per x as lines (up to 6 series, classes s0..s5), the y axis from 0 with grid
    lines at 0, half and the top, a legend above; hovering over a column shows every series'
    value there."""
    n = max(1, len(x_labels))
    left, top = 50, 22
    step = PLOT_W / n
    peak = max((v for line in lines for v in line.values if v is not None), default=0.0)
    y_top = _ceiling(peak)

    def y_of(value: float) -> float:
        return top + PLOT_H - value / y_top * PLOT_H

    body = []
    for k in range(3):
        value = y_top * k / 2
        y = y_of(value)
        body.append(
            f'<line class="grid" x1="{left}" x2="{left + PLOT_W}" y1="{_num(y)}" y2="{_num(y)}"/>'
            f'<text class="axis" x="{left - 4}" y="{_num(y + 4)}" text-anchor="end">'
            f"{_num(value)} {text(unit)}</text>\n"
        )
    x_legend = left
    for s, line in enumerate(lines[:6]):
        body.append(
            f'<rect class="s{s}" x="{_num(x_legend)}" y="4" width="10" height="10"/>'
            f'<text class="lbl" x="{_num(x_legend + 14)}" y="13">{text(line.label)}</text>\n'
        )
        x_legend += 24 + 7 * len(line.label)
        segments: list[list[str]] = [[]]
        for i, v in enumerate(line.values):
            if v is None:
                segments.append([])
                continue
            segments[-1].append(f"{_num(left + i * step + step / 2)},{_num(y_of(v))}")
        for points in segments:
            if len(points) == 1:
                cx, cy = points[0].split(",")
                body.append(f'<circle class="s{s}" cx="{cx}" cy="{cy}" r="2"/>')
            elif points:
                body.append(f'<polyline class="s{s}" points="{" ".join(points)}"/>\n')
    for i, x_label in enumerate(x_labels):
        shown = [
            f"{line.label} {_num(line.values[i] or 0)} {unit}"
            for line in lines[:6]
            if i < len(line.values) and line.values[i] is not None
        ]
        tip = f"{x_label}: " + ("; ".join(shown) if shown else "no value")
        body.append(
            f'<rect class="hover" x="{_num(left + i * step)}" y="{top}" width="{_num(step)}" '
            f'height="{PLOT_H}"><title>{text(tip)}</title></rect>'
        )
    body += _x_axis(x_labels, left, step, top + PLOT_H + 14)
    return _svg(left + PLOT_W + 10, top + PLOT_H + 22, label, body)


# -- bisection steps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a bisection: a commit tested (label), why (note: the phase), its runs by
    outcome, and, when the report has the engine's posterior, the probability it then gave its
    likeliest culprit (posterior, 0 to 1)."""

    label: str
    note: str
    passes: int
    fails: int
    skips: int = 0
    errors: int = 0
    posterior: float | None = None
    highlight: bool = False


def step_chart(steps: Sequence[Step], label: str) -> Markup:
    """Runs per step as stacked bars (pass, fail, skip, error), the commit and phase below each,
    the culprit's bar outlined; a posterior, where given, as a line on a 0 to 1 axis."""
    n = max(1, len(steps))
    left, top, height = 40, 10, 120
    step = max(56.0, min(80.0, 900 / n))
    most = max((s.passes + s.fails + s.skips + s.errors for s in steps), default=1) or 1
    y_top = _ceiling(most)
    unit = height / y_top
    body = [
        f'<text class="axis" x="{left - 4}" y="{top + 4}" text-anchor="end">{_num(y_top)}</text>'
        f'<text class="axis" x="{left - 4}" y="{top + height}" text-anchor="end">0</text>'
        f'<line class="grid" x1="{left}" x2="{_num(left + n * step)}" y1="{top + height}" '
        f'y2="{top + height}"/>\n'
    ]
    points = []
    for i, s in enumerate(steps):
        x = left + i * step + 3
        y = float(top + height)
        for css, count in (
            ("pass", s.passes),
            ("fail", s.fails),
            ("skip", s.skips),
            ("error", s.errors),
        ):
            if not count:
                continue
            y -= count * unit
            body.append(
                f'<rect class="{css}" x="{_num(x)}" y="{_num(y)}" width="{_num(step - 6)}" '
                f'height="{_num(count * unit)}"/>'
            )
        tip = (
            f"step {i + 1}: {s.label} ({s.note}): {s.passes} pass, {s.fails} fail"
            + (f", {s.skips} skip" if s.skips else "")
            + (f", {s.errors} error" if s.errors else "")
            + (f"; posterior {s.posterior:.3f}" if s.posterior is not None else "")
        )
        outline = " culprit" if s.highlight else ""
        body.append(
            f'<rect class="hover{outline}" x="{_num(x - 2)}" y="{top}" width="{_num(step - 2)}" '
            f'height="{height}"><title>{text(tip)}</title></rect>\n'
            f'<text class="axis" x="{_num(x + step / 2 - 3)}" y="{top + height + 12}" '
            f'text-anchor="middle">{text(s.label)}</text>'
            f'<text class="axis" x="{_num(x + step / 2 - 3)}" y="{top + height + 24}" '
            f'text-anchor="middle">{text(s.note)}</text>\n'
        )
        if s.posterior is not None:
            py = top + height - max(0.0, min(1.0, s.posterior)) * height
            points.append(f"{_num(x + step / 2 - 3)},{_num(py)}")
    if points:
        body.append(f'<polyline class="posterior" points="{" ".join(points)}"/>\n')
    return _svg(left + n * step + 10, top + height + 30, label, body)
