"""Requests and tokens per finished task for each generation mode, against the test suite's scripted stand-in.

What a mode costs in requests and prompt tokens is structural (how many requests a task's life takes), so the
stand-in (tests/fakelm.py serving tests/paperlm.py, whose token counts are word counts) shows it without a GPU:

    python benchmarks/modes.py [--target 200]

A finished task is an accepted one or a surplus one (finished beyond the target, recorded in rejected.jsonl):
both were paid for. Acceptance and quality need a real model (the real-model tier, or a GPU run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakelm import FakeLM
from paperlm import PaperLM

MODES = {
    "self-instruct": [],
    "self-instruct + judge": ["--judge-model", "same"],
    "alpaca": ["--method", "alpaca"],
    "alpaca + judge": ["--method", "alpaca", "--judge-model", "same"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=int, default=200)
    args = parser.parse_args()
    print("| mode | accepted | surplus | requests / finished task | prompt words / task | output words / task |")
    print("|---|---|---|---|---|---|")
    with FakeLM(respond=PaperLM(items=8)) as lm:
        for name, extra in MODES.items():
            with tempfile.TemporaryDirectory() as out:
                command = [
                    sys.executable, "-m", "selfinstruct", "generate", "--base-url", lm.base_url, "--out", out,
                    "--api", "completions", "--num-instructions", str(args.target), "--seed", "1", "-q", *extra,
                ]  # fmt: skip
                subprocess.run(command, check=True, capture_output=True)
                run = json.loads((Path(out) / "runs.jsonl").read_text().splitlines()[-1])
            surplus = run["surplus"].get("surplus", 0)
            finished = run["accepted"] + surplus
            requests = sum(stage["requests"] for stage in run["stages"].values())
            print(
                f"| {name} | {run['accepted']} | {surplus} | {requests / finished:.2f} | "
                f"{run['prompt_tokens'] / finished:.0f} | {run['completion_tokens'] / finished:.0f} |"
            )


if __name__ == "__main__":
    main()
