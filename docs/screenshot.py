"""Regenerate docs/report.png, the picture in docs/report.md of ``selfinstruct report``.

Grows a demonstration pool with the test suite's scripted stand-in model (tests/paperlm.py: the paper's
prompt and reply shapes, words drawn at random, so the instructions read oddly), over four runs against a
loopback OpenAI-compatible server, writes its report, and photographs the top of the page in headless
Chromium (tests/chromium.py).

    python docs/screenshot.py [--out docs/report.png] [--height 1750]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from chromium import Chromium, find_chromium, page_url  # noqa: E402
from fakelm import FakeLM  # noqa: E402
from paperlm import PaperLM  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from selfinstruct.cli import app  # noqa: E402
from selfinstruct.paths import default_seeds_path  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="Regenerate docs/report.png")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--height", type=int, default=1750, help="CSS pixels of the page to capture")
    parser.add_argument("--width", type=int, default=1000)
    args = parser.parse_args()
    args.out = args.out.resolve()
    chromium = find_chromium()
    if chromium is None:
        print("Chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        # Work in the temporary directory with relative paths, so the page shows no machine's paths.
        os.chdir(tmp)
        pool = Path("demo-pool")
        seeds = Path("seeds") / "seed_tasks.jsonl"
        seeds.parent.mkdir()
        shutil.copy(default_seeds_path(), seeds)
        with FakeLM(respond=PaperLM()) as lm:
            for run, target in enumerate((120, 260, 380, 480)):
                result = CliRunner().invoke(app, [
                    "generate", "--base-url", lm.base_url, "--out", str(pool), "--batch-size", "8",
                    "--num-instructions", str(target), "--seed", str(run), "--seeds", str(seeds),
                ])  # fmt: skip
                if result.exit_code != 0:
                    print(result.output, file=sys.stderr)
                    return 1
        page = Path(tmp) / "report.html"
        result = CliRunner().invoke(app, ["report", str(pool), "--out", str(page), "--seeds", str(seeds)])
        if result.exit_code != 0:
            print(result.output, file=sys.stderr)
            return 1
        with Chromium(chromium) as browser:
            browser.open(page_url(page), width=args.width, height=args.height)
            png = browser.screenshot({"x": 0, "y": 0, "width": args.width, "height": args.height})
    args.out.write_bytes(png)
    print(f"wrote {args.out} ({len(png) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
