"""Time and peak memory of ``selfinstruct report`` on a pool the size of the paper's (52K tasks).

Builds a pool directory as ``generate`` leaves it: ``tasks.jsonl`` with full provenance (demonstrations,
most similar instructions, ...), ``rejected.jsonl`` with two rejected candidates per task and the
surplus candidates of each run, a ledger of hourly runs (with their last rounds) and judge scores of a
third of the tasks. Instructions come from the benchmark corpus (``--corpus``; beyond its size each is
reused with a suffix, since a pool holds no duplicates) or, without it, are synthetic sentences over a
small vocabulary. Then it times the report (read, measure, render, write) in a fresh process per
configuration, so that each peak resident memory is its own:

* ``heuristic``: ``--parser heuristic``, no embeddings (the least a report does);
* ``auto``: ``--parser auto`` (spaCy when it and an ``en_core_web_*`` pipeline are installed);
* ``spacy``: ``--parser spacy`` (skipped, with the reason, where no pipeline is installed);
* ``embeddings``: ``--parser heuristic --embeddings`` (all tasks embedded, 10,000 nearest-neighbour
  queries; skipped where sentence-transformers is missing).

    python benchmarks/report.py --corpus ../shared/bench/instructions.jsonl [--tasks 52000]
        [--configs heuristic,auto,spacy,embeddings] [--repeat 1]

The pool is written to a temporary directory (``--keep DIR`` keeps it there instead).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from selfinstruct.paths import default_seeds_path
from selfinstruct.pool.directory import machine_task_id
from selfinstruct.views.report import ReportOptions, build_report
from selfinstruct.views.reporthtml import render_html

VERBS = "write explain classify list describe summarize generate find suggest compare rewrite translate".split()  # noqa: SIM905
NOUNS = "story poem email list sentence paragraph recipe plan question review title summary word code".split()  # noqa: SIM905
FILLER = "a the short given following simple new about for of in with each two three your this that".split()  # noqa: SIM905


def synthetic(rng: random.Random, n: int) -> list[str]:
    out, seen = [], set()
    while len(out) < n:
        words = [rng.choice(VERBS).capitalize(), rng.choice(FILLER), rng.choice(NOUNS)]
        words += [rng.choice(FILLER + NOUNS) for _ in range(rng.randint(3, 18))]
        text = " ".join(words) + "."
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def from_corpus(path: Path, n: int) -> list[str]:
    base = [" ".join(json.loads(line)["instruction"].split()) for line in path.open(encoding="utf-8")]
    base = [t for t in base if 3 < len(t.split()) <= 150]  # what the generation filters let through
    out, seen = [], set()
    copy = 0
    while len(out) < n:
        for text in base:
            candidate = text if copy == 0 else f"{text} (variant {copy})"
            key = " ".join(candidate.casefold().split())
            if key not in seen:
                seen.add(key)
                out.append(candidate)
                if len(out) == n:
                    break
        copy += 1
    return out


def build_pool(directory: Path, instructions: list[str], seed: int = 0) -> None:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    per_run = 1000
    directory.mkdir(parents=True, exist_ok=True)
    with (
        (directory / "tasks.jsonl").open("w", encoding="utf-8") as tasks,
        (directory / "rejected.jsonl").open("w", encoding="utf-8") as rejected,
        (directory / "runs.jsonl").open("w", encoding="utf-8") as runs,
        (directory / "judgements.jsonl").open("w", encoding="utf-8") as judgements,
    ):
        for run in range(0, len(instructions), per_run):
            run_id = f"run-{run // per_run:04d}"
            began = start + timedelta(hours=run // per_run)
            batch = instructions[run : run + per_run]
            for i, text in enumerate(batch):
                n = run + i
                round_number = n // 30 + 1
                clf = rng.random() < 0.2
                k = rng.randint(1, 5)
                instances = [
                    {"input": "" if rng.random() < 0.4 else " ".join(rng.choices(FILLER + NOUNS, k=rng.randint(2, 40))),
                     "output": rng.choice(["Yes", "No", "Positive", "Negative"]) if clf else
                     " ".join(rng.choices(FILLER + NOUNS, k=rng.randint(1, 80)))}
                    for _ in range(k)
                ]  # fmt: skip
                demos = rng.sample(instructions[: max(8, n)], min(8, max(8, n)))
                record: dict[str, Any] = {
                    "id": machine_task_id(n), "name": f"task_{n}", "instruction": text, "instances": instances,
                    "is_classification": clf, "source": "machine", "run_id": run_id, "round": round_number,
                    "created_at": (began + timedelta(seconds=3 * i)).isoformat(), "model": "bench",
                    "max_similarity": round(rng.random() * 0.7, 4),
                    "most_similar": [{"instruction": d, "score": 0.5} for d in demos[:5]],
                    "classification_answer": "Yes" if clf else "No", "instance_format": "input_first",
                    "demonstrations": demos,
                }  # fmt: skip
                tasks.write(json.dumps(record, ensure_ascii=False) + "\n")
                for reason in rng.sample(["too_similar", "too_short", "blocked_keyword", "no_valid_instance"], 2):
                    rejected.write(json.dumps({"instruction": rng.choice(demos), "reject_reason": reason,
                                               "round": round_number, "run_id": run_id}) + "\n")  # fmt: skip
                if rng.random() < 0.33:
                    judgements.write(json.dumps({"id": record["id"], "instruction": text, "score": rng.randint(1, 5),
                                                 "reason": "r", "model": "judge", "rubric": "r0",
                                                 "judged_at": began.isoformat()}) + "\n")  # fmt: skip
            last_round = (run + len(batch) - 1) // 30 + 1
            for _ in range(20):
                rejected.write(json.dumps({"instruction": "late", "reject_reason": "surplus", "round": last_round,
                                           "run_id": run_id}) + "\n")  # fmt: skip
            runs.write(json.dumps({
                "run_id": run_id, "started_at": began.isoformat(),
                "ended_at": (began + timedelta(minutes=50)).isoformat(),
                "seconds": 3000.0, "exit_reason": "time_limit", "model": "bench",
                "rounds": last_round - run // 30, "last_round": last_round, "accepted": len(batch),
                "candidates": 3 * len(batch) + 20, "rejected": {"too_similar": len(batch), "too_short": len(batch)},
                "surplus": {"surplus": 20},
                "prompt_tokens": 900 * len(batch), "completion_tokens": 300 * len(batch), "target": len(instructions),
            }) + "\n")  # fmt: skip


CONFIGS = {
    "heuristic": {"parser": "heuristic"},
    "auto": {"parser": "auto"},
    "spacy": {"parser": "spacy"},
    "embeddings": {"parser": "heuristic", "embeddings": True},
}


def one(pool: Path, config: str, workers: int) -> dict[str, Any]:
    """Report on ``pool`` with ``config`` in this process: seconds, CPU seconds, peak RSS, stage timings."""
    from selfinstruct.errors import ConfigError

    options = ReportOptions(seeds=str(default_seeds_path()), workers=workers, **CONFIGS[config])  # type: ignore[arg-type]
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        report = build_report(pool, options)
    except ConfigError as exc:
        return {"config": config, "skipped": str(exc)}
    t1 = time.perf_counter()
    page = render_html([report])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "report.html").write_text(page, encoding="utf-8")
    t2 = time.perf_counter()
    return {
        "config": config,
        "measure": t1 - t0,
        "render": t2 - t1,
        "total": t2 - t0,
        "cpu": time.process_time() - c0,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "method": report["diversity"]["verb_noun"]["method"],
        "timings": report["timings"],
        "tasks": report["pool"]["tasks"],
        "page_kib": len(page) / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, help="JSONL with an 'instruction' field (default: synthetic text)")
    parser.add_argument("--tasks", type=int, default=52_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="cdist workers for the seed similarity")
    parser.add_argument("--configs", default="heuristic,auto,spacy,embeddings")
    parser.add_argument("--keep", type=Path, help="build the pool here and keep it")
    parser.add_argument("--pool", type=Path, help="time the report of this existing pool instead of building one")
    parser.add_argument("--one", choices=sorted(CONFIGS), help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.pool, args.one, args.workers)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        pool = args.pool or args.keep or Path(tmp) / "pool"
        if args.pool is None:
            t0 = time.perf_counter()
            texts = from_corpus(args.corpus, args.tasks) if args.corpus else synthetic(random.Random(0), args.tasks)
            build_pool(pool, texts)
            print(f"built {args.tasks:,} tasks in {pool} in {time.perf_counter() - t0:.1f}s")
        size = sum((pool / f).stat().st_size for f in ("tasks.jsonl", "rejected.jsonl", "judgements.jsonl"))
        print(f"tasks.jsonl + rejected.jsonl + judgements.jsonl: {size / 2**20:.0f} MiB")
        print(f"{'config':<11} {'total s':>8} {'CPU s':>7} {'peak MiB':>9}  method; slowest stages")
        for config in args.configs.split(","):
            results = []
            for _ in range(args.repeat):
                child = subprocess.run(
                    [sys.executable, __file__, "--pool", str(pool), "--one", config, "--workers", str(args.workers)],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if child.returncode != 0:
                    print(f"{config:<11} failed: {child.stderr.strip()[-400:]}")
                    break
                results.append(json.loads(child.stdout.strip().splitlines()[-1]))
            if not results:
                continue
            if "skipped" in results[0]:
                print(f"{config:<11} skipped: {results[0]['skipped']}")
                continue
            total = statistics.median(r["total"] for r in results)
            cpu = statistics.median(r["cpu"] for r in results)
            peak = max(r["peak_mib"] for r in results)
            stages = sorted(results[0]["timings"].items(), key=lambda kv: -kv[1])[:3]
            slow = ", ".join(f"{k} {v:.1f}s" for k, v in stages)
            print(f"{config:<11} {total:8.1f} {cpu:7.1f} {peak:9.0f}  {results[0]['method']}; {slow}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
