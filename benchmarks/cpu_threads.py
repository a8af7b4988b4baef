"""vLLM's CPU build with its worker threads bound (vLLM's ``auto``) or unbound (``nobind``, what selfinstruct sets
on a machine of at most 2 cores): output tokens per second for the same greedy requests, one engine at a time.

    python benchmarks/cpu_threads.py --model ~/.cache/selfinstruct/models/qwen2.5-coder-0.5b-instruct \\
        --binds auto,nobind --prompts 16 --tokens 96

Each setting runs in a fresh process (the variable is read when the engine starts). What the numbers mean
depends on what else runs on the machine: on an idle 2-core machine ``auto`` binds the worker to one core
and reserves the other; with other engines or jobs around, every ``auto`` engine picks that same core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from selfinstruct.engines import Sampling
from selfinstruct.engines.vllm import VLLMBackend
t0 = time.monotonic()
backend = VLLMBackend({model!r}, seed=0, max_model_len=2048, engine_args={{"enforce_eager": True}})
ready = time.monotonic() - t0
prompts = [f"Write a short story about a lighthouse keeper, number {{i}}." for i in range({prompts})]
t1 = time.monotonic()
done = backend.generate(prompts, Sampling(max_tokens={tokens}, temperature=0.0))
seconds = time.monotonic() - t1
tokens = sum(c.completion_tokens for c in done)
print(json.dumps({{"ready_s": ready, "generate_s": seconds, "tokens": tokens}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--binds", default="auto,nobind")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    print("| VLLM_CPU_OMP_THREADS_BIND | engine ready | generate | output tokens | tok/s | load average (1 min) |")
    print("|---|---|---|---|---|---|")
    for bind in args.binds.split(","):
        env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": bind}
        code = CHILD.format(root=str(ROOT), model=args.model, prompts=args.prompts, tokens=args.tokens)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600)
        load = os.getloadavg()[0]
        if done.returncode != 0:
            print(f"| {bind} | failed after {time.monotonic() - started:.0f}s: {done.stderr[-300:]!r} | | | | |")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rate = result["tokens"] / result["generate_s"]
        print(f"| {bind} | {result['ready_s']:.0f} s | {result['generate_s']:.0f} s | {result['tokens']} | "
              f"{rate:.1f} | {load:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
