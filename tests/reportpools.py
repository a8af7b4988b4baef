"""Pools with known contents for the report tests: every number the report prints can be worked out by hand.

``known_pool`` holds four machine tasks over two rounds and two runs, five rejected candidates and three
seeds; the comments give the values the report must find. ``hostile_pool`` puts markup and script in every
string a page shows.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from selfinstruct.pool.directory import Pool, machine_task_id
from selfinstruct.pool.task import Instance, Task

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


VERBS = ("write", "classify", "explain", "list", "describe", "summarize", "generate", "find", "suggest", "compare",
         "rewrite", "translate", "create", "identify", "give", "name", "convert", "design", "predict", "calculate",
         "make", "plan")  # fmt: skip
NOUNS = ("story", "poem", "email", "sentence", "paragraph", "recipe", "plan", "question", "review", "title",
         "summary", "word", "code", "list", "letter", "essay")  # fmt: skip
FILLER = ("about", "for", "of", "in", "with", "each", "your", "this", "that", "simple", "friendly")
REASONS = ("too_similar", "too_short", "blocked_keyword", "no_valid_instance")


def synthetic_pool(root: Path, n: int, *, seed: int = 0, name: str = "pool", per_round: int = 10,
                   rounds_per_run: int = 10) -> Path:  # fmt: skip
    """A pool of ``n`` tasks as ``generate`` leaves it, written straight to its files: runs that close
    ``rounds_per_run`` rounds of ``per_round`` tasks each (with ``last_round`` in the ledger), rejected
    candidates with reasons, surplus and unfinished candidates (in the last round of each run and, for the
    last run, in rounds beyond it), and judgements (scores, half with the three verdicts) of 40% of tasks.
    Verbs and nouns are skewed (Zipf-like) so the top 20 x 4 are well defined; some tasks have the
    quality problems the report counts (identical outputs, output equal to input, repeated inputs, ...)."""
    import random
    from datetime import datetime, timedelta, timezone

    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    pool = root / name
    pool.mkdir(parents=True)
    verb_weights = [1 / (k + 1) for k in range(len(VERBS))]
    shared_inputs = [f"shared input number {k}" for k in range(20)]
    tasks, rejected, runs, judgements = [], [], [], []
    rounds = math.ceil(n / per_round)
    run_count = math.ceil(rounds / rounds_per_run)
    for run in range(run_count):
        first, last = run * rounds_per_run + 1, min((run + 1) * rounds_per_run, rounds)
        run_id = f"run-{run:04d}"
        accepted = 0
        reasons: Counter[str] = Counter()
        unused: Counter[str] = Counter()
        for round_number in range(first, last + 1):
            for k in range(per_round):
                i = (round_number - 1) * per_round + k
                if i >= n:
                    break
                verb = rng.choices(VERBS, verb_weights)[0]
                noun = NOUNS[min(int(rng.expovariate(0.5)), len(NOUNS) - 1)]
                words = [
                    verb.capitalize(),
                    "a",
                    noun,
                    *rng.choices(FILLER, k=rng.randint(0, 70 if i % 97 == 0 else 12)),
                ]
                instruction = " ".join(words) + f" number {i}."
                clf = rng.random() < 0.2
                instances = []
                for _ in range(rng.randint(1, 4)):
                    text = "" if rng.random() < 0.4 else " ".join(rng.choices(FILLER + NOUNS, k=rng.randint(1, 160)))
                    if rng.random() < 0.05:
                        text = rng.choice(shared_inputs)
                    out = rng.choice(["Yes", "No"]) if clf else " ".join(rng.choices(NOUNS, k=rng.randint(1, 90))) + "."
                    instances.append({"input": text, "output": out})
                if i % 50 == 1:  # every output the same
                    instances = [{"input": f"x{j}", "output": "Same answer."} for j in range(2)]
                if i % 70 == 2:  # output equal to the input
                    instances[0] = {"input": "Echo this line.", "output": "Echo this line."}
                if i % 90 == 3:  # an output cut mid-sentence
                    instances[0]["output"] = " ".join(["word"] * 30) + " and then the"
                tasks.append({
                    "id": machine_task_id(i), "name": f"task_{i}", "instruction": instruction, "instances": instances,
                    "is_classification": clf, "source": "machine", "run_id": run_id, "round": round_number,
                    "created_at": (start + timedelta(minutes=i)).isoformat(), "model": "m",
                    "max_similarity": round(rng.random() * 0.7, 4), "classification_answer": "Yes" if clf else "No",
                })  # fmt: skip
                accepted += 1
                if rng.random() < 0.4:
                    score = rng.choice([1, 2, 3, 4, 4, 5, 5])
                    record = {"id": machine_task_id(i), "instruction": instruction, "score": score,
                              "reason": "r", "model": "judge-m", "rubric": "abc",
                              "judged_at": "2026-01-02T00:00:00+00:00"}  # fmt: skip
                    if rng.random() < 0.5:
                        record["verdicts"] = {"instruction": score >= 2, "input": score >= 3 if score > 1 else None,
                                              "output": score >= 4}  # fmt: skip
                    judgements.append(record)
            for _ in range(rng.randint(0, 15)):
                reason = rng.choice(REASONS)
                reasons[reason] += 1
                rejected.append({"instruction": f"Rejected {reason} {rng.randint(0, 30)}", "reject_reason": reason,
                                 "round": round_number, "run_id": run_id})  # fmt: skip
        beyond = [last] + ([last + 1, last + 2] if run == run_count - 1 else [])
        for round_number in beyond:
            for kind in ("surplus", "unfinished"):
                for _ in range(rng.randint(1, 6)):
                    unused[kind] += 1
                    rejected.append({"instruction": f"Late {kind}", "reject_reason": kind, "round": round_number,
                                     "run_id": run_id})  # fmt: skip
        runs.append({
            "run_id": run_id, "started_at": (start + timedelta(minutes=(first - 1) * per_round)).isoformat(),
            "seconds": 100.0, "exit_reason": "target_reached", "model": "m", "rounds": last - first + 1,
            "last_round": last, "accepted": accepted,
            "candidates": accepted + sum(reasons.values()) + sum(unused.values()),
            "rejected": dict(reasons), "surplus": dict(unused), "target": n, "prompt_tokens": 1000 * accepted,
            "completion_tokens": 300 * accepted,
        })  # fmt: skip
    for file, records in (("tasks.jsonl", tasks), ("rejected.jsonl", rejected), ("runs.jsonl", runs),
                          ("judgements.jsonl", judgements)):  # fmt: skip
        with (pool / file).open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
    return pool
