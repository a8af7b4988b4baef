"""The SVG chart helpers: tick choice, escaping of labels, and a placeholder when there is nothing to draw."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from selfinstruct.views import svg
from selfinstruct.views.svg import Series

EVIL = '<script>alert(1)</script>"&'


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0.0, 0.83, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.0, 480.0, [0.0, 100.0, 200.0, 300.0, 400.0, 500.0]),
        (0.0, 0.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),  # an empty range becomes [lo, lo + 1]
    ],
)
def test_nice_ticks(lo: float, hi: float, expected: list[float]) -> None:
    assert svg.nice_ticks(lo, hi) == expected


def test_number_labels() -> None:
    assert [svg.number(x) for x in (3, 0.25, 1200, 2_500_000)] == ["3", "0.25", "1.2k", "2.5M"]


@pytest.mark.parametrize(
    "chart",
    [
        lambda: svg.bar_chart([EVIL, "b"], [Series(EVIL, [3, 1])], title=EVIL),
        lambda: svg.bar_chart([EVIL], [Series(EVIL, [3]), Series("other", [2], svg.PALETTE[1])], title="t"),
        lambda: svg.histogram_chart([0, 1, 2], [Series(EVIL, [1, 2])], title=EVIL, x_label=EVIL, y_label=EVIL),
        lambda: svg.line_chart([Series(EVIL, [], points=[(0, 1), (1, 2)])], title=EVIL, markers=[0.5]),
        lambda: svg.sunburst([(EVIL, 5, [(EVIL, 3)])], title=EVIL),
        lambda: svg.histogram_chart([0, 1, 2, 3], [Series(EVIL, [1, 2, 5])], title=EVIL, overflow=True),
        lambda: svg.empty_chart(EVIL, EVIL),
    ],
)
def test_charts_are_well_formed_and_escape_labels(chart: object) -> None:
    text = chart()  # type: ignore[operator]
    root = ET.fromstring(text)  # well-formed XML: nothing from a label broke out of its element
    assert root.tag.endswith("svg")
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    assert "<script>" not in text


def test_nothing_to_draw_gives_a_placeholder() -> None:
    assert 'data-chart="empty"' in svg.histogram_chart([0, 1], [Series("a", [0])], title="t")
    assert 'data-chart="empty"' in svg.line_chart([Series("a", [])], title="t")
    assert 'data-chart="empty"' in svg.bar_chart([], [Series("a", [])], title="t")
    assert 'data-chart="empty"' in svg.sunburst([], title="t")


def test_sunburst_angles_follow_counts() -> None:
    text = svg.sunburst([("write", 5, [("poem", 5)]), ("list", 5, [])], title="t")
    assert text.count('class="mark wedge"') == 3  # two verbs, one noun
    # The verbs fill the circle between them: "write" takes the right half, and its one noun all of it.
    root = ET.fromstring(text)
    labels = {e.get("data-key") for e in root.iter() if e.tag.endswith("text") and e.get("data-key")}
    assert labels == {"write", "list", "write poem"}


def test_sunburst_small_wedges_get_no_unreadable_label() -> None:
    verbs = [("write", 1000, [("poem", 998), ("haiku", 2)]), ("sort", 1, [("list", 1)])]
    text = svg.sunburst(verbs, title="t")
    root = ET.fromstring(text)
    labels = {e.get("data-key"): float(e.get("font-size") or 0) for e in root.iter() if e.get("data-key")}
    assert "sort" not in labels and "write haiku" not in labels  # too narrow: named in the key table instead
    assert all(size >= 6.5 for size in labels.values())


def test_overflow_bin_is_drawn_apart_and_named_with_a_plus() -> None:
    text = svg.histogram_chart([0, 10, 20, 30], [Series("a", [1, 2, 3])], title="t", overflow=True)
    assert "20+" in text and "≥" not in text
    xs = [float(x) for x in re.findall(r'<rect class="mark" x="([\d.]+)"', text)]
    assert xs[2] - xs[1] > xs[1] - xs[0] + 10  # a gap before the overflow bar


def test_integer_ticks_never_fall_between_rounds() -> None:
    assert all(t == int(t) for t in svg.integer_ticks(1, 5))
    assert svg.integer_ticks(1, 2) == [1.0, 2.0]
