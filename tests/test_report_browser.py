"""The report page in a real headless Chromium: it loads with no network request, every plot is drawn,
the screenshot is not blank, and hostile pool text stays text.

Marked ``browser``: skipped with a reason where no Chromium is installed (``.ci/run`` installs Debian's).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from chromium import Chromium, find_chromium, page_url
from pngpixels import Image, read_png
from reportpools import EVIL, hostile_pool, known_pool

from selfinstruct.report import ReportOptions, build_report
from selfinstruct.reporthtml import render_html
from selfinstruct.svg import PALETTE

pytestmark = pytest.mark.browser

CHROMIUM = find_chromium()
if CHROMIUM is None:  # pragma: no cover - depends on the machine
    pytest.skip("browser test: Chromium is not installed (apt-get install chromium)", allow_module_level=True)

CHARTS = """JSON.stringify([...document.querySelectorAll('svg.chart')].map(s => {
  const r = s.getBoundingClientRect();
  return {kind: s.dataset.chart, x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width,
          height: r.height, marks: s.querySelectorAll('.mark').length,
          painted: [...s.querySelectorAll('.mark')].filter(m => { const b = m.getBoundingClientRect();
                                                                   return b.width > 0 && b.height > 0; }).length};
}))"""


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return int(hex_color[1:3], 16), int(hex_color[3:5], 16), int(hex_color[5:7], 16)


def _colours(image: Image) -> Counter[tuple[int, int, int]]:
    counts: Counter[tuple[int, int, int]] = Counter()
    for row in image.rows:
        counts.update(zip(row[0::3], row[1::3], row[2::3], strict=True))
    return counts


def _ink_share(counts: Counter[tuple[int, int, int]]) -> float:
    """Share of pixels that are not (near) white."""
    total = sum(counts.values())
    return sum(n for c, n in counts.items() if min(c) < 235) / total


@pytest.fixture(scope="module")
def browser() -> Chromium:
    assert CHROMIUM is not None
    with Chromium(CHROMIUM) as chrome:
        yield chrome


def _write_page(tmp_path: Path, *reports: dict) -> Path:
    page = tmp_path / "report.html"
    page.write_text(render_html(list(reports), version="test"), encoding="utf-8")
    return page


def test_page_loads_offline_and_every_plot_is_drawn(browser: Chromium, tmp_path: Path) -> None:
    pool, seeds = known_pool(tmp_path)
    page = _write_page(tmp_path, build_report(pool, ReportOptions(seeds=str(seeds), parser="heuristic")))
    url = page_url(page)
    browser.open(url)

    # No request leaves the page: the only one is the document itself.
    assert browser.requests() == [url]
    charts = json.loads(browser.evaluate(CHARTS))
    kinds = Counter(c["kind"] for c in charts)
    assert kinds == {"line": 2, "bar": 4, "histogram": 4, "sunburst": 1}
    for chart in charts:
        assert chart["width"] > 200 and chart["height"] > 50, chart
        assert chart["marks"] >= 1 and chart["painted"] == chart["marks"], chart

    # Each plot, as painted: ink on the page, and the data colour among it.
    blue = _rgb(PALETTE[0])
    for chart in charts:
        clip = {k: chart[k] for k in ("x", "y", "width", "height")}
        counts = _colours(read_png(browser.screenshot(clip, scale=0.5)))
        assert _ink_share(counts) > 0.01, chart["kind"]
        assert counts[blue] > 20, (chart["kind"], counts.most_common(5))

    # The whole first screen: not blank, many colours (text, rules, plots).
    shot = read_png(browser.screenshot({"x": 0, "y": 0, "width": 1100, "height": 1400}, scale=0.5))
    counts = _colours(shot)
    assert shot.width == 550 and shot.height == 700
    assert _ink_share(counts) > 0.03
    assert len(counts) > 50


def test_hostile_pool_text_renders_as_text(browser: Chromium, tmp_path: Path) -> None:
    pool, seeds = hostile_pool(tmp_path)
    known, known_seeds = known_pool(tmp_path)
    reports = [
        build_report(pool, ReportOptions(seeds=str(seeds), parser="heuristic")),
        build_report(known, ReportOptions(seeds=str(known_seeds), parser="heuristic")),
    ]
    page = _write_page(tmp_path, *reports)
    url = page_url(page)
    browser.open(url)
    assert browser.requests() == [url]
    assert browser.evaluate("document.querySelectorAll('img, script, iframe, object, embed').length") == 0
    assert not browser.evaluate(
        "[...document.querySelectorAll('*')].some(e => [...e.attributes].some(a => a.name.startsWith('on')))"
    )
    text = browser.evaluate("document.body.innerText")
    assert EVIL in text  # the literal characters, markup and all
    assert browser.evaluate("document.querySelectorAll('svg.chart[data-chart=sunburst]').length") == 2


def test_the_request_check_sees_requests(browser: Chromium, tmp_path: Path) -> None:
    """Control: a page without the policy that loads an image is seen making that request."""
    probe = "http://127.0.0.1:9/probe.png"
    page = tmp_path / "leaky.html"
    page.write_text(f'<!DOCTYPE html><html><body><img src="{probe}"></body></html>', encoding="utf-8")
    browser.open(page_url(page))
    assert probe in browser.requests()
