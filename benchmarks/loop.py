"""How much time the bootstrap loop itself adds per round, with a model that answers instantly.

The "model" replays real instructions from the benchmark corpus as its numbered lists, answers "No" to the
classification question and gives two instances per task, so everything but the language model runs for
real: prompt rendering, parsing, heuristic filters, the novelty index against a growing pool, instance
filters, and crash-safe appends (fsync included) to a pool directory on disk.

    python benchmarks/loop.py --corpus ../shared/bench/instructions.jsonl [--target 8000] [--batch-size 32]

Prints the median loop time per round at several pool sizes and the overall tasks per second of loop work.
Compare with your model's time per round (typically seconds to tens of seconds) to see the overhead.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from selfinstruct.backends import Completion, Sampling
from selfinstruct.config import GenerateConfig
from selfinstruct.paths import default_prompts_dir, default_seeds_path
from selfinstruct.runner import run_generate


class ReplayModel:
    """Answers each stage instantly; instruction lists come from the corpus, in order."""

    model = "replay"

    def __init__(self, instructions: Sequence[str], per_list: int = 7) -> None:
        self.instructions = [" ".join(text.split()) for text in instructions]
        self.per_list = per_list
        self.next = 0

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Completion]:
        out = []
        for prompt in prompts:
            if prompt.endswith("Is it classification?"):
                out.append(Completion(" No", "stop"))
            elif prompt.endswith("\n"):
                out.append(Completion("Example 1\nInput: first case\nOutput: one\n\nExample 2\nOutput: two\n", "stop"))
            else:
                start = int(prompt.rsplit("\n", 1)[1].rstrip("."))
                items = [self.instructions[(self.next + i) % len(self.instructions)] for i in range(self.per_list)]
                self.next += self.per_list
                text = " " + items[0] + "".join(f"\n{start + i}. {t}" for i, t in enumerate(items[1:], start=1))
                out.append(Completion(text, "stop"))
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="../shared/bench/instructions.jsonl")
    parser.add_argument("--target", type=int, default=8000, help="pool size to grow to")
    parser.add_argument("--batch-size", type=int, default=32, help="instruction prompts per round")
    parser.add_argument("--similarity-floor", type=float, default=0.0, help="provenance floor (see README)")
    args = parser.parse_args(argv)

    corpus = [json.loads(line)["instruction"] for line in Path(args.corpus).read_text().split("\n") if line]
    random.Random(0).shuffle(corpus)
    model = ReplayModel(corpus)
    marks = [1000, 2000, 4000, 8000, 16000]
    per_round: dict[int, list[float]] = {m: [] for m in marks}
    rounds: list[tuple[int, float]] = []

    def on_event(kind: str, payload: object) -> None:
        if kind == "round":
            rounds.append((payload.pool_size, payload.seconds))  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory() as tmp:
        config = GenerateConfig(
            seeds=str(default_seeds_path()), prompts=str(default_prompts_dir()), out=str(Path(tmp) / "pool"),
            num_instructions=args.target, batch_size=args.batch_size, seed=0, saturation_window=50,
            similarity_floor=args.similarity_floor,
        )  # fmt: skip
        started = time.perf_counter()
        outcome = run_generate(config, backend=model, on_event=on_event)
        total = time.perf_counter() - started

    for size, seconds in rounds:
        for m in marks:
            if size <= m:
                per_round[m].append(seconds)
                break
    print(f"python {sys.version.split()[0]}; corpus {args.corpus} ({len(corpus):,} instructions)")
    print(f"similarity_floor {args.similarity_floor}")
    print(f"grew a pool to {outcome.pool_size:,} tasks in {outcome.totals.rounds} rounds of {args.batch_size} prompts")
    print(f"({outcome.totals.candidates:,} candidates, exit: {outcome.exit_reason})\n")
    print(f"{'pool size up to':>16} {'rounds':>7} {'median loop time per round':>28}")
    for m in marks:
        if per_round[m]:
            print(f"{m:>16,} {len(per_round[m]):>7} {statistics.median(per_round[m]) * 1000:>25.1f} ms")
    print(f"\nwhole run: {total:.2f} s, {outcome.pool_size / total:,.0f} accepted tasks/s of loop work,")
    print(f"{outcome.totals.candidates / total:,.0f} candidates/s through parse, filters, novelty and append")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
