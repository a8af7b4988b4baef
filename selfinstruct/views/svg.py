"""Small, dependency-free SVG charts for the HTML report: lines, histograms, horizontal bars, a sunburst.

Each function returns one ``<svg>`` element as a string, sized by its ``viewBox`` so the page can scale
it, with every piece of text escaped (labels come from pool data, which is untrusted) and a ``<title>``
for screen readers. Colours are the colour-blind-safe qualitative palette of Paul Tol. Inline SVG keeps
the report one self-contained file that needs no network and no plotting library.

Scope: drawing only; the numbers are computed in :mod:`selfinstruct.views.report`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB")
INK = "#222222"
GRID = "#e4e4e4"
AXIS = "#888888"
FONT = 11


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _f(x: float) -> str:
    """A coordinate with at most one decimal."""
    return f"{x:.1f}".rstrip("0").rstrip(".") if math.isfinite(x) else "0"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: ``nice_ticks(0, 0.83) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]``."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value < hi + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def number(x: float) -> str:
    """A short tick label: 1200 → "1.2k", 0.25 → "0.25", 3 → "3"."""
    if abs(x) >= 1_000_000:
        return f"{x / 1_000_000:g}M"
    if abs(x) >= 1000:
        return f"{x / 1000:g}k"
    if x == int(x):
        return str(int(x))
    return f"{x:.3g}"


def percent(x: float) -> str:
    return f"{x * 100:.0f}%"


def count(x: float) -> str:
    """A value printed beside a bar, at one precision for all bars: 35217 → "35,217", 0.5 → "0.5"."""
    return f"{int(x):,}" if x == int(x) else f"{x:,.3g}"


def share(x: float) -> str:
    """A share beside a bar, one decimal: 0.1234 → "12.3%"."""
    return f"{x * 100:.1f}%"


def integer_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Whole-number ticks covering [lo, hi] (rounds, runs): never 2.5."""
    ticks = [t for t in nice_ticks(lo, hi, count) if t == int(t)]
    if len(ticks) < 2:
        ticks = [float(t) for t in range(math.floor(lo), math.ceil(hi) + 1)]
    return ticks


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]  # y values (bars, histogram counts) or, for lines, flattened in points
    color: str = PALETTE[0]
    points: Sequence[tuple[float, float]] = ()


class _Frame:
    """A plot area inside a viewBox, with linear x and y scales."""

    def __init__(self, width: int, height: int, left: int, right: int, top: int, bottom: int) -> None:
        self.width, self.height = width, height
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, top  # y grows downwards in SVG

    def sx(self, x: float, lo: float, hi: float) -> float:
        return self.x0 + (x - lo) / (hi - lo or 1) * (self.x1 - self.x0)

    def sy(self, y: float, lo: float, hi: float) -> float:
        return self.y0 - (y - lo) / (hi - lo or 1) * (self.y0 - self.y1)


def _open(width: int, height: int, title: str, kind: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" class="chart" data-chart="{_e(kind)}" font-size="{FONT}">',
        f"<title>{_e(title)}</title>",
    ]


def _y_axis(frame: _Frame, ticks: Sequence[float], fmt: Callable[[float], str], label: str) -> list[str]:
    parts = []
    lo, hi = ticks[0], ticks[-1]
    for t in ticks:
        y = frame.sy(t, lo, hi)
        parts.append(f'<line x1="{frame.x0}" x2="{frame.x1}" y1="{_f(y)}" y2="{_f(y)}" stroke="{GRID}"/>')
        parts.append(f'<text x="{frame.x0 - 5}" y="{_f(y + 3.5)}" text-anchor="end" fill="{INK}">{_e(fmt(t))}</text>')
    if label:
        mid = (frame.y0 + frame.y1) / 2
        parts.append(
            f'<text transform="translate(12 {_f(mid)}) rotate(-90)" text-anchor="middle" fill="{INK}">'
            f"{_e(label)}</text>"
        )
    return parts


def _x_label(frame: _Frame, label: str) -> str:
    return (
        f'<text x="{_f((frame.x0 + frame.x1) / 2)}" y="{frame.height - 4}" text-anchor="middle" '
        f'fill="{INK}">{_e(label)}</text>'
    )


def _legend(frame: _Frame, series: Sequence[Series]) -> list[str]:
    if len(series) < 2:
        return []
    parts = []
    x: float = frame.x0 + 6
    for s in series:
        parts.append(f'<rect x="{_f(x)}" y="{frame.y1 - 13}" width="10" height="10" fill="{s.color}"/>')
        parts.append(f'<text x="{_f(x + 14)}" y="{frame.y1 - 4}" fill="{INK}">{_e(s.name)}</text>')
        x += 22 + 6.2 * len(s.name)
    return parts


def empty_chart(title: str, message: str, *, width: int = 460, height: int = 120) -> str:
    """A framed placeholder saying why there is nothing to draw (e.g. no runs recorded)."""
    parts = _open(width, height, title, "empty")
    parts.append(f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="none" stroke="{GRID}"/>')
    parts.append(
        f'<text x="{width / 2}" y="{height / 2 + 4}" text-anchor="middle" fill="{AXIS}">{_e(message)}</text></svg>'
    )
    return "".join(parts)


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "",
    x_format: Callable[[float], str] = number,
    y_format: Callable[[float], str] = number,
    y_range: tuple[float, float] | None = None,
    x_ticks: Sequence[float] | None = None,
    integer_x: bool = False,
    markers: Sequence[float] = (),
    width: int = 460,
    height: int = 250,
) -> str:
    """One polyline (with dots when sparse) per series of ``points``; ``markers`` are x positions drawn as
    dashed vertical lines (the start of each run)."""
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    if not xs:
        return empty_chart(title, "no data")
    frame = _Frame(width, height, 52, 14, 22, 34)
    y_ticks = nice_ticks(*(y_range or (0.0, max(ys) if max(ys) > 0 else 1.0)))
    xlo, xhi = min(xs), max(xs)
    if xhi == xlo:
        xlo, xhi = xlo - 0.5, xhi + 0.5
    parts = _open(width, height, title, "line")
    parts += _y_axis(frame, y_ticks, y_format, y_label)
    ylo, yhi = y_ticks[0], y_ticks[-1]
    if x_ticks is None:
        x_ticks = integer_ticks(xlo, xhi) if integer_x else nice_ticks(xlo, xhi, 5)
    for t in x_ticks:
        if xlo <= t <= xhi:
            x = frame.sx(t, xlo, xhi)
            parts.append(f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{frame.y0}" y2="{frame.y0 + 4}" stroke="{AXIS}"/>')
            parts.append(
                f'<text x="{_f(x)}" y="{frame.y0 + 15}" text-anchor="middle" fill="{INK}">{_e(x_format(t))}</text>'
            )
    for m in markers:
        if xlo <= m <= xhi:
            x = frame.sx(m, xlo, xhi)
            parts.append(
                f'<line class="marker" x1="{_f(x)}" x2="{_f(x)}" y1="{frame.y0}" y2="{frame.y1}" stroke="#555555" '
                'stroke-width="1.2" stroke-dasharray="4 3"/>'
            )
    parts.append(f'<line x1="{frame.x0}" x2="{frame.x1}" y1="{frame.y0}" y2="{frame.y0}" stroke="{AXIS}"/>')
    for s in series:
        if not s.points:
            continue
        coords = " ".join(f"{_f(frame.sx(x, xlo, xhi))},{_f(frame.sy(y, ylo, yhi))}" for x, y in s.points)
        data = " ".join(f"{x:g},{y:g}" for x, y in s.points)  # the values drawn, for readers and tests
        parts.append(
            f'<polyline class="mark" points="{coords}" data-values="{data}" fill="none" stroke="{s.color}" '
            'stroke-width="2" stroke-linejoin="round"/>'
        )
        if len(s.points) <= 40:
            for x, y in s.points:
                parts.append(
                    f'<circle class="mark" cx="{_f(frame.sx(x, xlo, xhi))}" cy="{_f(frame.sy(y, ylo, yhi))}" r="2.6" '
                    f'fill="{s.color}"/>'
                )
    parts += _legend(frame, series)
    parts.append(_x_label(frame, x_label))
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(
    edges: Sequence[float],
    series: Sequence[Series],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "",
    overflow: bool = False,
    edge_format: Callable[[float], str] = number,
    y_format: Callable[[float], str] = number,
    width: int = 460,
    height: int = 250,
) -> str:
    """Bars per bin ``[edges[i], edges[i+1])``, the series side by side within a bin. With ``overflow`` the
    last bin holds everything from its lower edge up: it is drawn apart, after a gap, labelled "60+"."""
    values = [v for s in series for v in s.values]
    if not values or not any(values):
        return empty_chart(title, "no data")
    frame = _Frame(width, height, 52, 14, 22, 34)
    y_ticks = nice_ticks(0.0, max(values))
    bins = len(edges) - 1
    parts = _open(width, height, title, "histogram")
    parts += _y_axis(frame, y_ticks, y_format, y_label)
    gap = 1.2 if overflow else 0.0  # in slots
    slot = (frame.x1 - frame.x0) / (bins + gap)
    bar = slot * 0.86 / len(series)

    def left(i: int) -> float:
        return frame.x0 + (i + (gap if overflow and i >= bins - 1 else 0.0)) * slot

    for k, s in enumerate(series):
        for i, v in enumerate(s.values):
            if v <= 0:
                continue
            x = left(i) + slot * 0.07 + k * bar
            y = frame.sy(v, 0.0, y_ticks[-1])
            parts.append(
                f'<rect class="mark" x="{_f(x)}" y="{_f(y)}" width="{_f(max(bar, 0.8))}" '
                f'height="{_f(frame.y0 - y)}" fill="{s.color}" data-bin="{i}"><title>{_e(s.name)}: '
                f"{_e(y_format(v))}</title></rect>"
            )
    regular = bins - 1 if overflow else bins
    step = max(1, math.ceil(regular / 10))
    for i in range(0, regular + 1 - (1 if overflow else 0), step):  # the overflow bar names its own edge
        x = left(i) if i < regular else frame.x0 + regular * slot
        parts.append(f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{frame.y0}" y2="{frame.y0 + 4}" stroke="{AXIS}"/>')
        label = _e(edge_format(edges[i]))
        parts.append(f'<text x="{_f(x)}" y="{frame.y0 + 15}" text-anchor="middle" fill="{INK}">{label}</text>')
    end = frame.x0 + regular * slot
    parts.append(f'<line x1="{frame.x0}" x2="{_f(end)}" y1="{frame.y0}" y2="{frame.y0}" stroke="{AXIS}"/>')
    if overflow:
        x = left(bins - 1)
        parts.append(f'<line x1="{_f(x)}" x2="{_f(x + slot)}" y1="{frame.y0}" y2="{frame.y0}" stroke="{AXIS}"/>')
        parts.append(
            f'<text class="overflow" x="{_f(x + slot / 2)}" y="{frame.y0 + 15}" text-anchor="middle" fill="{INK}">'
            f"{_e(edge_format(edges[bins - 1]))}+</text>"
        )
    parts += _legend(frame, series)
    parts.append(_x_label(frame, x_label))
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    value_format: Callable[[float], str] = count,
    width: int = 460,
    label_width: int = 150,
    row: int = 17,
) -> str:
    """Horizontal bars, one row per label, the series stacked as thin bars within a row, values printed."""
    if not labels:
        return empty_chart(title, "no data")
    top = 22 if len(series) > 1 else 6
    row = max(row, 12 * len(series) + 4)  # each series' value label gets its own line
    height = top + row * len(labels) + 8
    frame = _Frame(width, height, label_width, 56, top, 8)
    peak = max([v for s in series for v in s.values] + [1e-12])
    parts = _open(width, height, title, "bar")
    band = (row - 4) / len(series)
    for i, label in enumerate(labels):
        y = top + i * row
        shown = label if len(label) <= 22 else label[:21] + "…"
        parts.append(
            f'<text x="{label_width - 6}" y="{_f(y + row / 2 + 3.5)}" text-anchor="end" fill="{INK}">{_e(shown)}'
            f"<title>{_e(label)}</title></text>"
        )
        for k, s in enumerate(series):
            v = s.values[i] if i < len(s.values) else 0
            w = (frame.x1 - frame.x0) * v / peak
            by = y + 2 + k * band
            parts.append(
                f'<rect class="mark" x="{frame.x0}" y="{_f(by)}" width="{_f(max(w, 0.8 if v else 0))}" '
                f'height="{_f(band - 1)}" fill="{s.color}"/>'
            )
            parts.append(
                f'<text x="{_f(frame.x0 + w + 4)}" y="{_f(by + band / 2 + 3)}" fill="{INK}" font-size="{FONT - 1}">'
                f"{_e(value_format(v))}</text>"
            )
    parts.append(f'<line x1="{frame.x0}" x2="{frame.x0}" y1="{top}" y2="{height - 8}" stroke="{AXIS}"/>')
    parts += _legend(_Frame(width, height, label_width, 56, top, 8), series)
    parts.append("</svg>")
    return "".join(parts)


def _arc(cx: float, cy: float, r0: float, r1: float, a0: float, a1: float) -> str:
    """Path of a ring segment between radii r0 < r1 and angles a0 < a1 (radians, clockwise from 12 o'clock)."""
    a1 = min(a1, a0 + 2 * math.pi - 1e-6)

    def point(r: float, a: float) -> str:
        return f"{_f(cx + r * math.sin(a))} {_f(cy - r * math.cos(a))}"

    large = 1 if a1 - a0 > math.pi else 0
    return (
        f"M{point(r1, a0)} A{_f(r1)} {_f(r1)} 0 {large} 1 {point(r1, a1)} "
        f"L{point(r0, a1)} A{_f(r0)} {_f(r0)} 0 {large} 0 {point(r0, a0)} Z"
    )


# Paul Tol's "light" scheme: pale enough for dark text on every wedge (contrast 7:1 or better with INK).
WEDGES = ("#77AADD", "#EEDD88", "#44BB99", "#EE8866", "#99DDFF", "#BBCC33", "#FFAABB", "#DDDDDD", "#AAAA00")


def _tint(color: str, amount: float = 0.55) -> str:
    """``color`` mixed with white (``amount`` of white): the outer ring's shade of its verb's colour."""
    rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in rgb)


def wedge_color(rank: int) -> str:
    """The colour of the verb ranked ``rank`` (0-based), shared by the figure and its key table."""
    return WEDGES[rank % len(WEDGES)]


def _radial_label(
    cx: float, cy: float, r0: float, r1: float, mid: float, text: str, size: float, cls: str, key: str
) -> str:
    """Text along the radius at angle ``mid`` from r0 outwards (read from the left on the left half)."""
    flip = math.pi < mid % (2 * math.pi) < 2 * math.pi
    rotate = math.degrees(mid) - 90 + (180 if flip else 0)
    x, y = cx + r0 * math.sin(mid), cy - r0 * math.cos(mid)
    return (
        f'<text class="{cls}" data-key="{_e(key)}" x="{_f(x)}" y="{_f(y)}" text-anchor="{"end" if flip else "start"}" '
        f'dominant-baseline="central" fill="{INK}" font-size="{size:.1f}" '
        f'transform="rotate({_f(rotate)} {_f(x)} {_f(y)})">{_e(text)}</text>'
    )


def _fit(text: str, room: float, size: float) -> str:
    """``text`` cut to the characters that fit in ``room`` pixels at font ``size`` (0.6 em a character)."""
    chars = int(room / (size * 0.6))
    return text if len(text) <= chars else (text[: max(chars - 1, 1)] + "…" if chars >= 3 else "")


def sunburst(verbs: Sequence[tuple[str, int, Sequence[tuple[str, int]]]], *, title: str, size: int = 560) -> str:
    """The paper's Figure 2: the top verbs fill the inner ring (angles by their counts, relative to one
    another), and each verb's top nouns fill the verb's wedge in the outer ring (by their counts, relative
    to one another). Every wedge gets its word along the radius where the wedge is wide enough for the
    text's height; a narrower verb gets its rank, and the key table beside the figure (same colours, same
    ranks, nouns a–d) names every wedge."""
    total = sum(count for _, count, _ in verbs)
    if not verbs or total <= 0:
        return empty_chart(title, "no verb found", width=size, height=120)
    cx = cy = size / 2
    r_hole, r_mid, r_out = size * 0.09, size * 0.29, size * 0.495
    parts = _open(size, size, title, "sunburst")
    angle = 0.0
    for rank, (verb, count, nouns) in enumerate(verbs):
        span = 2 * math.pi * count / total
        color = wedge_color(rank)
        parts.append(
            f'<path class="mark wedge" data-verb="{_e(verb)}" d="{_arc(cx, cy, r_hole, r_mid, angle, angle + span)}" '
            f'fill="{color}" stroke="#fff" stroke-width="1.2"><title>{rank + 1}. {_e(verb)}: {count:,}</title></path>'
        )
        mid = angle + span / 2
        font = min(13.0, span * (r_hole + 30) * 0.85)
        if font >= 7:
            shown = _fit(verb, r_mid - r_hole - 10, font)
            parts.append(
                _radial_label(cx, cy, r_hole + 6, r_mid, mid, shown or str(rank + 1), font, "verb-label", verb)
            )
        noun_total = sum(c for _, c in nouns)
        sub = angle
        for letter, (noun, c) in zip("abcd", nouns, strict=False):
            nspan = span * c / noun_total if noun_total else 0.0
            parts.append(
                f'<path class="mark wedge" data-verb="{_e(verb)}" data-noun="{_e(noun)}" '
                f'd="{_arc(cx, cy, r_mid, r_out, sub, sub + nspan)}" fill="{_tint(color)}" stroke="#fff" '
                f'stroke-width="1"><title>{rank + 1}{letter}. {_e(verb)} → {_e(noun)}: {c:,}</title></path>'
            )
            font = min(12.0, nspan * (r_mid + 12) * 0.85)
            if font >= 6.5:
                shown = _fit(noun, r_out - r_mid - 10, font) or f"{rank + 1}{letter}"
                parts.append(
                    _radial_label(
                        cx, cy, r_mid + 6, r_out, sub + nspan / 2, shown, font, "noun-label", f"{verb} {noun}"
                    )
                )
            sub += nspan
        angle += span
    parts.append("</svg>")
    return "".join(parts)
