"""How often a Ctrl-C in a command's first moments gives a traceback, and from where.

Starts the command again and again, sends SIGINT at a uniformly random moment of the first ``--window``
seconds, and sorts the outcomes: exit 130 (the package's quiet stop), the command's own exit status (it
finished first), death by the signal (before Python had a handler), or a traceback, by where it came from:
Python's own start-up (its streams, ``site``), the launcher script pip writes, or this package.

    python benchmarks/startup_signals.py --runs 300 --window 0.06 -- .venv/bin/selfinstruct status /nonexistent

SIGINT is reset to its default first: a shell's background job (``cmd &``, ``nohup``) starts with SIGINT
ignored, and so would every command started from it, which hides the windows being measured.
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import signal
import subprocess
import sys
import time


def classify(returncode: int, stderr: str, finished: int) -> str:
    """``finished``: the command's exit status when no signal comes."""
    if "Traceback" in stderr or "Exception ignored" in stderr:
        if re.search(r'File "[^"]*/selfinstruct/[\w/]+\.py"', stderr):
            return "traceback: selfinstruct"
        if re.search(r'File "[^"]*/selfinstruct", line', stderr):
            return "traceback: launcher"
        # Python's own initialisation (its standard streams, site), or a KeyboardInterrupt swallowed by one of
        # importlib's callbacks ("Exception ignored") while site imports.
        return "traceback: Python's start-up"
    if returncode == 130:
        return "exit 130 (stopped)"
    if returncode < 0:
        return f"killed by signal {-returncode}"
    if returncode == finished:
        return f"exit {returncode} (finished first)"
    return f"exit {returncode} (unexpected)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--window", type=float, default=0.3, help="seconds after the start: SIGINT is sent within")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", action="store_true", help="print each traceback")
    parser.add_argument("command", nargs="+", help="the command, after --")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    finished = subprocess.run(args.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    rng = random.Random(args.seed)
    outcomes: collections.Counter[str] = collections.Counter()
    moments: list[float] = []
    for _ in range(args.runs):
        proc = subprocess.Popen(args.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(0.0, args.window)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        outcome = classify(proc.returncode, stderr, finished)
        outcomes[outcome] += 1
        if outcome.startswith("traceback"):
            moments.append(delay)
        if args.show and (outcome.startswith("traceback") or outcome.endswith("(unexpected)")):
            print(f"--- SIGINT at {delay * 1000:.1f} ms: {outcome}\n{stderr[-1500:]}")
    print(f"command: {' '.join(args.command)}")
    print(f"runs: {args.runs}, SIGINT uniformly within the first {args.window * 1000:.0f} ms (seed {args.seed})")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {outcome}: {count}")
    tracebacks = sum(count for outcome, count in outcomes.items() if outcome.startswith("traceback"))
    print(f"tracebacks: {tracebacks} of {args.runs}", end="")
    print(f" (SIGINT sent {min(moments) * 1000:.1f}-{max(moments) * 1000:.1f} ms after the start)" if moments else "")


if __name__ == "__main__":
    sys.exit(main())
