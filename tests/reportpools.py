"""Pools with known contents for the report tests: every number the report prints can be worked out by hand.

``known_pool`` holds four machine tasks over two rounds and two runs, five rejected candidates and three
seeds; the comments give the values the report must find. ``hostile_pool`` puts markup and script in every
string a page shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfinstruct.pool import Pool, machine_task_id
from selfinstruct.task import Instance, Task

SEEDS = [
    "Write a poem about the sea.",
    "Classify the sentiment of the review.",
    "Translate the sentence into French.",
]

# (instruction, instances, is_classification, round, created_at, classification_answer, max_similarity)
TASKS: list[tuple[str, list[tuple[str, str]], bool, int, str, str | None, float]] = [
    ("Write a short poem about mountains in winter.", [("", "Peaks rise above the clouds.")], False, 1,
     "2026-01-01T00:00:00+00:00", "No", 0.6),
    ("Classify the sentiment of the tweet as Positive or Negative.",
     [("I love it", "Positive"), ("Awful", "Negative"), ("Great", "Positive")], True, 1,
     "2026-01-01T00:30:00+00:00", "Yes", 0.625),
    ("Summarize the article in two sentences.", [("Long text here", "Short.")], False, 2,
     "2026-01-01T02:00:00+00:00", "No", 0.2),
    ("What is the capital of the country?", [("France", "Paris"), ("Japan", "Tokyo")], False, 2,
     "2026-01-01T02:00:00+00:00", None, 0.3),
]  # fmt: skip

REJECTED: list[dict[str, Any]] = [
    {"instruction": "Hi there", "reject_reason": "too_short", "round": 1},
    {"instruction": "Draw a map of the town.", "reject_reason": "blocked_keyword", "keyword": "map", "round": 1},
    {"instruction": "Write a poem about the sea!", "reject_reason": "too_similar", "round": 2,
     "most_similar": [{"instruction": "Write a poem about the sea.", "score": 1.0}]},
    {"instruction": "write a poem about the  sea!", "reject_reason": "too_similar", "round": 2,
     "most_similar": [{"instruction": "Write a poem about the sea.", "score": 1.0}]},
    {"instruction": "Go now", "reject_reason": "too_short", "round": 2},
]  # fmt: skip

RUNS: list[dict[str, Any]] = [
    {"run_id": "run-1", "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:30:10+00:00",
     "seconds": 10.0, "exit_reason": "max_rounds", "model": "m", "rounds": 1, "pool_before": 0, "pool_after": 2,
     "accepted": 2, "candidates": 4, "rejected": {"too_short": 1, "blocked_keyword": 1}, "target": 100,
     "prompt_tokens": 300, "completion_tokens": 100},
    {"run_id": "run-2", "started_at": "2026-01-01T02:00:00+00:00", "ended_at": "2026-01-01T02:00:30+00:00",
     "seconds": 30.0, "exit_reason": "time_limit", "model": "m", "rounds": 1, "pool_before": 2, "pool_after": 4,
     "accepted": 2, "candidates": 5, "rejected": {"too_similar": 2, "too_short": 1}, "target": 100,
     "prompt_tokens": 500, "completion_tokens": 100},
]  # fmt: skip


def write_seed_file(path: Path, instructions: list[str] = SEEDS) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i, text in enumerate(instructions):
            record = {"id": f"seed_task_{i}", "name": f"s{i}", "instruction": text, "is_classification": False,
                      "instances": [{"input": "", "output": "x"}]}  # fmt: skip
            fh.write(json.dumps(record) + "\n")
    return path


def _task(n: int, spec: tuple[str, list[tuple[str, str]], bool, int, str, str | None, float]) -> Task:
    instruction, instances, clf, round_number, created, answer, max_sim = spec
    return Task(
        instruction=instruction,
        instances=[Instance(i, o) for i, o in instances],
        is_classification=clf,
        id=machine_task_id(n),
        name=f"task_{n}",
        meta={"source": "machine", "run_id": f"run-{round_number}", "round": round_number, "created_at": created,
              "model": "m", "max_similarity": max_sim, "classification_answer": answer},
    )  # fmt: skip


def known_pool(root: Path) -> tuple[Path, Path]:
    """``(pool directory, seed file)`` of the pool described in the module docstring."""
    seeds = write_seed_file(root / "seeds.jsonl")
    pool = Pool(root / "pool")
    with pool.lock():
        pool.append([_task(n, spec) for n, spec in enumerate(TASKS)])
        pool.append_rejected(REJECTED)
        for run in RUNS:
            pool.append_run(run)
    return pool.directory, seeds


EVIL = '</script><script>alert(1)</script><img src=x onerror="alert(2)"><svg onload=alert(3)>&amp;'


def hostile_pool(root: Path) -> tuple[Path, Path]:
    """A pool whose every displayed string carries markup: instruction, input, output, label, reason, run id."""
    seeds = write_seed_file(root / "seeds.jsonl", [f"Explain this {EVIL}", *SEEDS])
    pool = Pool(root / "hostile")
    task = Task(
        instruction=f"Explain this {EVIL} carefully",
        instances=[Instance(EVIL, EVIL), Instance("b", EVIL)],
        is_classification=True,
        id=machine_task_id(0),
        name="evil",
        meta={"source": "machine", "round": 1, "created_at": "2026-01-01T00:00:00+00:00",
              "classification_answer": EVIL, "max_similarity": 0.5},
    )  # fmt: skip
    with pool.lock():
        pool.append([task])
        pool.append_rejected([{"instruction": EVIL, "reject_reason": EVIL, "round": 1, "keyword": EVIL}])
        pool.append_run({"run_id": EVIL, "started_at": EVIL, "exit_reason": EVIL, "accepted": 1, "candidates": 2,
                         "rejected": {EVIL: 1}, "model": EVIL})  # fmt: skip
    return pool.directory, seeds
