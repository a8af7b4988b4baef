"""Time and peak memory of the commands that read a whole pool, on a pool of N synthetic tasks.

1. Write a pool of ``--tasks`` tasks (one instance each, ~300 bytes a line) and a one-line ledger into a
   temporary directory (or ``--pool DIR`` to reuse one).
2. Run each command as its own process (``selfinstruct status``; ``export`` to JSON Lines, with
   ``--shuffle``, to Parquet and to a datasets directory; ``report``) and report its wall time and peak
   RSS (``wait4``'s rusage).

    python benchmarks/big_pool.py --tasks 1000000
    python benchmarks/big_pool.py --pool /tmp/big --commands status

Measured on the 2-core shared development machine (load average 13 to 20 at the time, so the seconds are
loose; the memory is not): status 70.9 s / 1.74 GB before streaming, 81.9 s / 230 MB after; export 247 s /
2.27 GB loaded, 245 s / 497 MB streamed, byte-identical output. On 1,000,000 tasks (315 MB of tasks.jsonl),
before and after everything streamed (issue 19; seconds loose again, load 5 to 7): ``export --shuffle``
134 s / 2.16 GB -> 173 s / 457 MB; Parquet 75 s / 2.74 GB -> 110 s / 584 MB; datasets 70 s / 3.19 GB ->
70 s / 618 MB; ``report`` 69 s / 3.47 GB -> 55 s / 562 MB (a seeded sample of 100,000 tasks for the
per-task statistics, counts exact). ``export --format seed`` to Parquet, quiet machine: 51.1 s / 2,447 MB
loaded whole, 95.1 s / 380 MB streamed (spooled, read once for the schema and once to write).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "status": ["status", "{pool}"],
    "export": ["export", "{pool}", "--out", "{tmp}/train.jsonl", "-q"],
    "export-shuffle": ["export", "{pool}", "--out", "{tmp}/shuffled.jsonl", "--shuffle", "-q"],
    "export-parquet": ["export", "{pool}", "--out", "{tmp}/train.parquet", "-q"],
    "export-datasets": ["export", "{pool}", "--out", "{tmp}/train_hf", "-q"],
    "export-seed-parquet": ["export", "{pool}", "--out", "{tmp}/seed.parquet", "--format", "seed", "-q"],
    "report": ["report", "{pool}", "--out", "{tmp}/report.html", "--parser", "heuristic"],
}


def write_pool(directory: Path, n: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "tasks.jsonl").open("w") as fh:
        for i in range(n):
            record = {
                "id": f"machine_task_{i:07d}", "name": f"t{i}",
                "instruction": f"Describe item number {i} of the long shop list in two sentences.",
                "instances": [{"input": "", "output": f"Item {i} is a thing one can buy at the shop."}],
                "is_classification": False, "source": "machine", "model": "bench-model", "round": i // 16,
            }  # fmt: skip
            fh.write(json.dumps(record) + "\n")
    run = {"run_id": "bench", "exit_reason": "target_reached", "accepted": n, "candidates": 2 * n, "target": n}
    (directory / "runs.jsonl").write_text(json.dumps(run) + "\n")


def measure(argv: list[str]) -> tuple[float, int, int]:
    """Wall seconds, peak RSS in KB and exit status of one command run as its own process."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - start, usage.ru_maxrss, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--pool", type=Path, help="reuse this pool instead of writing one")
    parser.add_argument("--commands", nargs="+", default=list(COMMANDS), choices=list(COMMANDS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pool = args.pool or Path(tmp) / "pool"
        if args.pool is None:
            write_pool(pool, args.tasks)
        size = (pool / "tasks.jsonl").stat().st_size
        print(f"pool {pool}: {size / 1e6:,.0f} MB of tasks.jsonl")
        for name in args.commands:
            argv = [sys.executable, "-m", "selfinstruct", *(a.format(pool=pool, tmp=tmp) for a in COMMANDS[name])]
            seconds, rss_kb, code = measure(argv)
            print(f"{name:15} exit {code}  {seconds:7.1f} s  peak RSS {rss_kb / 1024:8,.0f} MB")


if __name__ == "__main__":
    main()
