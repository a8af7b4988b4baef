"""Regenerate docs/report-52k-*.png: the report of a 52,000-task pool, section by section.

The pool is the test suite's synthetic one (tests/reportpools.py ``synthetic_pool``: words drawn at random
from short lists, so the instructions read oddly, with rejected, surplus and unfinished candidates, 52 runs
in the ledger and judge scores of 40% of its tasks, half with the three separate verdicts). Its report is
written with the word heuristic (no spaCy), then each section is photographed in headless Chromium
(tests/chromium.py) at 1000 CSS pixels wide.

    python docs/screenshots52k.py [--tasks 52000] [--out-dir docs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from chromium import Chromium, find_chromium, page_url  # noqa: E402
from reportpools import synthetic_pool  # noqa: E402

from selfinstruct.paths import default_seeds_path  # noqa: E402
from selfinstruct.views.report import ReportOptions, build_report  # noqa: E402
from selfinstruct.views.reporthtml import render_html  # noqa: E402

# (file suffix, CSS selector of the first element, of the element the shot ends after)
SECTIONS = [
    ("summary", "h1", "#growth"),
    ("growth", "#growth", "#diversity"),
    ("verb-noun", "svg[data-chart=sunburst]", "svg[data-chart=sunburst]"),
    ("shape", "#shape", "#quality"),
    ("quality", "#quality", "#samples"),
]
BOX = """(([a, b]) => { const top = document.querySelector(a).getBoundingClientRect().top + window.scrollY;
  const end = document.querySelector(b); const r = end.getBoundingClientRect();
  const bottom = (a === b ? r.bottom : r.top) + window.scrollY;
  return JSON.stringify({x: 0, y: Math.max(0, top - 8), width: 1000, height: bottom - top + 16}); })"""


def main() -> int:
    parser = argparse.ArgumentParser(description="Regenerate docs/report-52k-*.png")
    parser.add_argument("--tasks", type=int, default=52_000)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    out_dir = args.out_dir.resolve()
    chromium = find_chromium()
    if chromium is None:
        print("Chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # relative paths: the page shows no machine's paths
        pool = synthetic_pool(Path("."), args.tasks, name="pool-52k", rounds_per_run=100)
        seeds = Path("seeds") / "seed_tasks.jsonl"
        seeds.parent.mkdir()
        shutil.copy(default_seeds_path(), seeds)
        page = Path(tmp) / "report.html"
        report = build_report(pool, ReportOptions(seeds=str(seeds), parser="heuristic"))
        page.write_text(render_html([report]), encoding="utf-8")
        with Chromium(chromium) as browser:
            browser.open(page_url(page), width=1000, height=1400)
            for name, first, last in SECTIONS:
                box = json.loads(browser.evaluate(f"{BOX}({json.dumps([first, last])})"))
                png = browser.screenshot(box)
                target = out_dir / f"report-52k-{name}.png"
                target.write_bytes(png)
                print(f"wrote {target} ({len(png) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
