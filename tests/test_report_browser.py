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
from reportpools import EVIL, REASONS, hostile_pool, known_pool, synthetic_pool

from selfinstruct.views.report import ReportOptions, build_report, build_reports
from selfinstruct.views.reporthtml import render_html
from selfinstruct.views.svg import PALETTE, WEDGES

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
        colour = _rgb(WEDGES[0]) if chart["kind"] == "sunburst" else blue  # the sunburst's pale, dark-text scheme
        assert counts[colour] > 20, (chart["kind"], counts.most_common(5))

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


# ------------------------------------------------------------------------ numbers on the page, checked


def _independent(pool: Path) -> dict:
    """What the page must say, worked out here from the pool's files alone (no selfinstruct code)."""
    read = lambda name: [json.loads(x) for x in (pool / name).read_text(encoding="utf-8").splitlines() if x]  # noqa: E731
    tasks, rejected, runs = read("tasks.jsonl"), read("rejected.jsonl"), read("runs.jsonl")
    judged = {j["id"]: j for j in read("judgements.jsonl")}
    closed = {r for run in runs for r in range(run["last_round"] - run["rounds"] + 1, run["last_round"] + 1)}
    acc = Counter(t["round"] for t in tasks)
    rej = Counter(r["round"] for r in rejected if r["reject_reason"] not in ("surplus", "unfinished"))
    per_round = {r: acc[r] / (acc[r] + rej[r]) for r in sorted(closed) if acc[r] + rej[r]}
    accepted = sum(run["accepted"] for run in runs)
    rejected_n = sum(sum(run["rejected"].values()) for run in runs)
    instances = [i for t in tasks for i in t["instances"]]
    words = [len(t["instruction"].split()) for t in tasks]
    inst_hist = Counter(min(w // 2, 30) for w in words)
    scores = Counter(j["score"] for j in judged.values())
    verdicts = [j["verdicts"] for j in judged.values() if "verdicts" in j]
    return {
        "tasks": len(tasks),
        "instances": len(instances),
        "acceptance": f"{accepted / (accepted + rejected_n) * 100:.1f}% ({accepted:,} / {accepted + rejected_n:,})",
        "unused": sum(sum(run["surplus"].values()) for run in runs),
        "per_round": per_round,
        "reasons": dict(Counter(r["reject_reason"] for r in rejected if r["reject_reason"] in REASONS)),
        "instruction_hist": inst_hist,
        "empty_inputs": sum(1 for i in instances if not i["input"].strip()),
        "classification": sum(1 for t in tasks if t["is_classification"]),
        "scores": scores,
        "verdict_output": sum(1 for v in verdicts if v["output"]),
        "verdicts": len(verdicts),
        "leading": Counter(t["instruction"].split()[0].lower() for t in tasks),
    }


SIZES = [300, pytest.param(52_000, marks=pytest.mark.slow)]


@pytest.mark.parametrize("n", SIZES)
def test_every_caption_matches_the_pool(browser: Chromium, tmp_path: Path, n: int) -> None:
    pool = synthetic_pool(tmp_path, n, rounds_per_run=10 if n < 1000 else 100)
    want = _independent(pool)
    page = _write_page(tmp_path, build_report(pool, ReportOptions(parser="heuristic")))
    browser.open(page_url(page))
    cell = (
        "(label => [...document.querySelectorAll('tr')]"
        ".find(r => r.cells[0] && r.cells[0].innerText.trim() === label)?.cells[1].innerText)"
    )
    summary = lambda label: browser.evaluate(f"{cell}({json.dumps(label)})")  # noqa: E731
    assert summary("machine tasks") == f"{want['tasks']:,}"
    assert summary("instances") == f"{want['instances']:,}"
    assert summary("acceptance: accepted / (accepted + rejected)") == want["acceptance"]
    assert summary("unused candidates (surplus, unfinished)") == f"{want['unused']:,}"
    assert summary("instances with an empty input") == f"{want['empty_inputs']:,}"
    assert summary("classification instructions") == f"{want['classification']:,}"

    # Acceptance by round: the values drawn are the ledger's rounds only, each accepted / (accepted + rejected).
    drawn = browser.evaluate("document.querySelector('svg[data-chart=line] + *') && "
                             "[...document.querySelectorAll('polyline')].map(p => p.dataset.values)")  # fmt: skip
    points = [tuple(map(float, xy.split(","))) for xy in drawn[1].split()]
    if n < 1000:
        assert [int(x) for x, _ in points] == sorted(want["per_round"])
        for x, y in points:
            assert y == pytest.approx(want["per_round"][int(x)], abs=1e-4)
    else:
        assert max(x for x, _ in points) <= max(want["per_round"])  # grouped, never beyond the ledger
    ticks = browser.evaluate("[...document.querySelectorAll('svg[data-chart=line]')[1].querySelectorAll('text')]"
                             ".map(t => t.firstChild.textContent)")  # fmt: skip
    assert not [t for t in ticks if "." in t and t[0].isdigit()], ticks  # integer round ticks

    # Rejections by reason: surplus and unfinished are not among them; the counts are the ledger's.
    bars = browser.evaluate("[...document.querySelectorAll('svg[data-chart=bar]')[0].querySelectorAll('text')]"
                            ".map(t => t.firstChild.textContent)")  # fmt: skip
    labels = [b for b in bars if not b[0].isdigit()]
    values = [int(b.replace(",", "")) for b in bars if b[0].isdigit()]
    assert dict(zip(labels, values, strict=True)) == want["reasons"]

    # Instruction lengths: every bin's bar, the 60+ bin drawn apart and labelled so.
    rects = browser.evaluate("[...document.querySelectorAll('svg[data-chart=histogram]')].find(s => "
                             "s.querySelector('title').textContent === 'Length of instructions')"
                             ".querySelectorAll('rect.mark')].map(r => [+r.dataset.bin, r.querySelector('title')"
                             ".textContent])".replace("[...document", "[...[...document", 1))  # fmt: skip
    got = {b: int(t.split(": ")[1].replace(",", "").replace("k", "000")) for b, t in rects if "k" not in t}
    for b, count in got.items():
        assert count == want["instruction_hist"][b]
    assert "60+" in browser.evaluate("document.body.innerHTML")

    # The verb–noun figure: every one of the 20 verbs and 80 nouns is labelled in the figure or keyed.
    keys = json.loads(browser.evaluate("JSON.stringify({verbs: [...document.querySelectorAll('.verb-key')]"
                                       ".map(e => e.dataset.verb), nouns: [...document.querySelectorAll('.noun-key')]"
                                       ".map(e => e.dataset.key), wedges: [...document.querySelectorAll("
                                       "'path.wedge[data-noun]')].map(e => e.dataset.verb + ' ' + "
                                       "e.dataset.noun)})"))  # fmt: skip
    assert len(keys["verbs"]) == 20
    assert len(keys["nouns"]) == 80 if n > 1000 else len(keys["nouns"]) >= 60  # a rare verb of 300 may have < 4
    assert set(keys["wedges"]) == set(keys["nouns"])

    # Quality: the judge's scores and the paper's Table 2 from the separate verdicts.
    text = browser.evaluate("document.body.innerText")
    assert "Judge scores" in text and "The paper's Table 2" in text
    share = want["verdict_output"] / want["verdicts"] * 100
    assert f"{share:.1f}% [" in text and f"({want['verdict_output']:,}/{want['verdicts']:,})" in text
    score_bars = browser.evaluate("[...[...document.querySelectorAll('svg[data-chart=bar]')].find(s => "
                                  "s.querySelector('title').textContent === 'Judge scores').querySelectorAll('text')]"
                                  ".map(t => t.firstChild.textContent)")  # fmt: skip
    counts = [int(v.replace(",", "")) for v in score_bars if v[0].isdigit()]
    assert counts == [want["scores"][s] for s in range(1, 6)]
    # Table 1 and the signals, from the files.
    tasks = [json.loads(x) for x in (pool / "tasks.jsonl").read_text(encoding="utf-8").splitlines()]
    mean_words = sum(len(t["instruction"].split()) for t in tasks) / len(tasks)
    assert summary("mean instruction length (words)") == f"{mean_words:.1f}"
    same = sum(
        1 for t in tasks if not t["is_classification"] and len(t["instances"]) > 1
        and len({" ".join(i["output"].casefold().split()) for i in t["instances"]}) == 1
    )  # fmt: skip
    assert summary("every output the same (non-classification tasks of 2+ instances)").startswith(
        f"{same:,} ({same / len(tasks) * 100:.1f}%)"
    )
    if n < 1000:  # ROUGE-L of every task to every seed with rouge-score itself: 300 x 175 pairs
        from rouge_score import rouge_scorer

        from selfinstruct.paths import default_seeds_path

        seeds = [json.loads(x)["instruction"] for x in default_seeds_path().read_text(encoding="utf-8").splitlines()]
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        best = [max(scorer.score(s, t["instruction"])["rougeL"].fmeasure for s in seeds) for t in tasks]
        want_bins = Counter(min(int(b * 20 + 1e-9), 19) for b in best)
        drawn_bins = browser.evaluate("[...[...document.querySelectorAll('svg[data-chart=histogram]')].find(s => "
                                      "s.querySelector('title').textContent === 'ROUGE-L to the most similar seed')"
                                      ".querySelectorAll('rect.mark')].filter(r => r.querySelector('title')"
                                      ".textContent.startsWith('to the nearest seed')).map(r => [+r.dataset.bin, "
                                      "+r.querySelector('title').textContent.split(': ')[1]])")  # fmt: skip
        assert dict(map(tuple, drawn_bins)) == dict(want_bins)
    shot = read_png(browser.screenshot({"x": 0, "y": 0, "width": 1100, "height": 1400}, scale=0.5))
    assert _ink_share(_colours(shot)) > 0.03


@pytest.mark.parametrize("n", [3000, pytest.param(52_000, marks=pytest.mark.slow)])
def test_against_uses_full_counts(browser: Chromium, tmp_path: Path, n: int) -> None:
    small = synthetic_pool(tmp_path, 300, name="small")
    big = synthetic_pool(tmp_path, n, seed=1, name="big", rounds_per_run=50 if n < 10_000 else 100)
    measured = build_reports([big, small], ReportOptions(parser="heuristic"))
    page = _write_page(tmp_path, *[m.report for m in measured])
    browser.open(page_url(page))
    want = [_independent(big)["leading"], _independent(small)["leading"]]
    bars = browser.evaluate("[...[...document.querySelectorAll('svg[data-chart=bar]')].find(s => "
                            "s.querySelector('title').textContent === 'Leading words').querySelectorAll('text')]"
                            ".map(t => t.firstChild.textContent)")  # fmt: skip
    words = [b for b in bars if not b[0].isdigit() and not b.endswith("%") and b not in ("big", "small")]
    shares = [b for b in bars if b.endswith("%")]
    for k, word in enumerate(words):
        for j in range(2):
            assert shares[2 * k + j] == f"{want[j][word] / sum(want[j].values()) * 100:.1f}%", word
    text = browser.evaluate("document.body.innerText")
    assert f"on a seeded random subsample of 300 of its {n:,} tasks" in text
