"""Does the streaming loop keep a batching engine busy? A stand-in engine with vLLM's incremental API.

The stand-in behaves like a continuous-batching engine: up to ``--max-num-seqs`` sequences run at once
(fewer with ``--kv-seqs N``: a KV cache that holds only N sequences, the rest wait), each step gives every
running sequence one token and takes ``--step-base + --step-per-seq * running`` seconds (sleeping, as a GPU
would, so the loop's own work runs beside it), a finished sequence's slot is taken by a waiting one at the
next step. Like vLLM with its default output kind, each step returns an output for every sequence that got
a token (``finished`` on the last one): the running count the stream's capacity follows. The text of each
completion comes from the instant model of ``benchmarks/loop.py`` (benchmark-corpus instructions), its
length in tokens is its length in words.

Like vLLM's engine core, which runs in a process of its own, the accelerator starts a step when the last
one ends, even if the thread that collects outputs is late (the loop held the interpreter lock): the thread
catches up, by at most one step. ``--serial-steps`` instead starts each step's time when ``step()`` is called,
an engine that shares the loop's interpreter lock: on 2 cores that measures the lock as much as the loop.

It is driven through the real in-process code path: :class:`selfinstruct.engines.vllm.VLLMBackend` and
its :class:`~selfinstruct.engines.vllm.VLLMStream` (``enqueue``/``step``/``abort_request``), under the real
scheduler and pool, exactly as ``selfinstruct generate`` runs vLLM in-process.

    python benchmarks/standin_engine.py --corpus ../shared/bench/instructions.jsonl [--target 3000]
    python benchmarks/standin_engine.py --max-num-seqs 1024 --target 6000              # the window follows
    python benchmarks/standin_engine.py --max-num-seqs 1024 --target 6000 --window 256  # a fixed window

Reports the share of the run during which the engine had no sequence to run although the run was not
finished (target: < 2%), the mean number of sequences per step, and output tokens per second against the
engine's maximum (``max_num_seqs`` tokens per step of ``max_num_seqs`` sequences).

On a loaded machine the engine's own thread waits for a CPU between steps, and ``time.sleep`` wakes late,
so even an engine that is always full stays below its nominal maximum. ``--calibrate SECONDS`` first
measures that ceiling: the same stand-in behind the same ``VLLMStream``, kept full by a bare submit/poll
loop (no Self-Instruct loop) for that long; the run's ratio is then also given against it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

from loop import InstantModel, load_corpus

from selfinstruct.config import GenerateConfig
from selfinstruct.loop.runner import run_generate
from selfinstruct.paths import default_prompts_dir, default_seeds_path


class _Params:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class _Output:
    """One sequence's output: returned at every step it runs (``finished`` on its last)."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.finished = False

    def finish(self, text: str, tokens: int, prompt_tokens: int) -> _Output:
        self.finished = True
        self.prompt_token_ids = [0] * prompt_tokens
        self.outputs = [types.SimpleNamespace(text=text, finish_reason="stop", token_ids=[0] * tokens)]
        return self


class StandInEngine:
    """vLLM's LLMEngine surface (``add_request``, ``step``, ``abort_request``) over simulated batching."""

    def __init__(
        self,
        model: InstantModel,
        max_num_seqs: int,
        step_base: float,
        step_per_seq: float,
        kv_seqs: int | None = None,
        serial: bool = False,
    ) -> None:
        self.model = model
        self.vllm_config = types.SimpleNamespace(scheduler_config=types.SimpleNamespace(max_num_seqs=max_num_seqs))
        self.max_num_seqs = max_num_seqs
        self.runnable = min(max_num_seqs, kv_seqs or max_num_seqs)  # what the KV cache lets run at once
        self.step_base = step_base
        self.step_per_seq = step_per_seq
        self.waiting: list[list[Any]] = []
        self.running: list[list[Any]] = []  # [request id, completion, tokens left]
        self.lock = threading.Lock()
        self.busy = 0.0  # seconds spent in steps
        self.steps = 0
        self.sequence_steps = 0
        self.tokens = 0
        self.first_added: float | None = None
        self.last_step_end = 0.0
        self.serial = serial  # each step's time starts when step() is called (the engine in this thread)
        self.gpu_free_at = 0.0  # when the accelerator finished its last step
        self.busy_after_last = False  # whether the last step left sequences to run
        self.history: list[tuple[float, int]] = []  # (end of step, sequences it ran)
        self.aborted_tokens = 0

    def add_request(self, request_id: str, prompt: str, params: _Params) -> str:
        if self.first_added is None:
            self.first_added = time.perf_counter()
        completion = self.model.complete(prompt, int(params.kwargs.get("seed") or 0))
        tokens = max(1, min(completion.completion_tokens, params.kwargs["max_tokens"]))
        self.waiting.append([request_id, completion, tokens, _Output(request_id), params.kwargs["max_tokens"]])
        return request_id

    def abort_request(self, request_ids: list[str], internal: bool = False) -> None:
        drop = set(request_ids)
        for entry in self.running:
            if entry[0] in drop:  # tokens the engine made for a request nobody reads
                self.aborted_tokens += max(1, min(entry[1].completion_tokens, entry[4])) - entry[2]
        self.waiting = [w for w in self.waiting if w[0] not in drop]
        self.running = [r for r in self.running if r[0] not in drop]

    def step(self) -> list[_Output]:
        now = time.perf_counter()
        while self.waiting and len(self.running) < self.runnable:
            self.running.append(self.waiting.pop(0))
        n = len(self.running)
        duration = self.step_base + self.step_per_seq * n
        # vLLM's engine core runs in its own process: the accelerator starts the next step when the last one
        # ends, whether or not this thread has collected it yet. A thread that wakes late (another thread held
        # the GIL) catches up, by at most one step's worth. Serial: the accelerator waited for this call.
        idle_before = self.serial or not self.busy_after_last
        started = now if idle_before else max(self.gpu_free_at, now - duration)
        ends = started + duration
        time.sleep(max(0.0, ends - time.perf_counter()))
        if self.serial:
            ends = time.perf_counter()
        outputs, still = [], []
        for entry in self.running:
            entry[2] -= 1
            if entry[2] <= 0:
                completion = entry[1]
                outputs.append(entry[3].finish(completion.text, completion.completion_tokens, completion.prompt_tokens))
            else:
                outputs.append(entry[3])
                still.append(entry)
        self.running = still
        self.steps += 1
        self.sequence_steps += n
        self.tokens += n
        self.gpu_free_at = self.last_step_end = ends
        self.busy_after_last = bool(self.running or self.waiting)
        self.busy += ends - started
        self.history.append((ends, n))
        return outputs


def calibrate(engine: StandInEngine, backend: Any, seconds: float) -> float:
    """Tokens/s of ``engine`` kept full for ``seconds`` through ``backend``'s stream by a bare loop."""
    from selfinstruct.engines import Request, Sampling

    stream = backend.stream()
    sampling = Sampling(max_tokens=1024)
    keys = 0
    ends = time.perf_counter() + seconds
    try:
        while time.perf_counter() < ends:
            while stream.in_flight < 2 * engine.max_num_seqs:
                stream.submit(Request(keys, "\n8.", sampling, seed=keys))  # an instruction list, ~100 tokens
                keys += 1
            stream.poll(0.05)
    finally:
        stream.close()
    return engine.tokens / (engine.last_step_end - (engine.first_added or ends - seconds))


def install_stub_vllm() -> None:
    """A ``vllm`` module with just ``SamplingParams`` and ``LLM`` names, so VLLMBackend takes our engine."""
    module = types.ModuleType("vllm")
    module.SamplingParams = _Params  # type: ignore[attr-defined]
    module.LLM = object  # type: ignore[attr-defined]
    sys.modules["vllm"] = module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="../shared/bench/instructions.jsonl")
    parser.add_argument("--target", type=int, default=3000)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--step-base", type=float, default=0.010, help="seconds per step, fixed part")
    parser.add_argument("--step-per-seq", type=float, default=0.0001, help="seconds per step per sequence")
    parser.add_argument("--kv-seqs", type=int, help="sequences the KV cache lets run at once (default: all)")
    parser.add_argument(
        "--serial-steps", action="store_true",
        help="start each step's time when the engine thread calls step() (an engine in the loop's process, "
        "sharing its interpreter lock), instead of when the last step ended (vLLM's engine core process)",
    )  # fmt: skip
    parser.add_argument("--timeline", type=int, default=10, metavar="N",
                        help="also print the mean sequences per step in each of N equal parts of the run")  # fmt: skip
    parser.add_argument("--window", type=int, help="a fixed window (default: the loop's, which follows the engine)")
    parser.add_argument(
        "--calibrate", type=float, default=0.0, metavar="SECONDS",
        help="first measure the engine's ceiling on this machine: kept full without the loop for SECONDS",
    )  # fmt: skip
    args = parser.parse_args(argv)

    install_stub_vllm()
    from selfinstruct.engines.vllm import VLLMBackend

    model = InstantModel(load_corpus(args.corpus))
    ceiling = None
    if args.calibrate > 0:
        alone = StandInEngine(
            model, args.max_num_seqs, args.step_base, args.step_per_seq, args.kv_seqs, args.serial_steps
        )
        ceiling = calibrate(alone, VLLMBackend("stand-in", llm=types.SimpleNamespace(llm_engine=alone)), args.calibrate)
    engine = StandInEngine(model, args.max_num_seqs, args.step_base, args.step_per_seq, args.kv_seqs, args.serial_steps)
    llm = types.SimpleNamespace(llm_engine=engine)  # no enqueue: the stream uses llm_engine.add_request
    backend = VLLMBackend("stand-in", llm=llm)
    with tempfile.TemporaryDirectory() as tmp:
        config = GenerateConfig(
            seeds=str(default_seeds_path()), prompts=str(default_prompts_dir()), out=str(Path(tmp) / "pool"),
            num_instructions=args.target, seed=0, window=args.window,
        )  # fmt: skip
        started = time.perf_counter()
        outcome = run_generate(config, backend=backend)
        total = time.perf_counter() - started

    # "While work remains": from the first request to the end of the last step (start-up and the final
    # bookkeeping after the stop are the loop's, not the engine's, time).
    span = engine.last_step_end - (engine.first_added or started)
    idle = span - engine.busy
    full = engine.runnable
    max_rate = full / (args.step_base + args.step_per_seq * full)
    rate = engine.tokens / span
    window = "follows the engine" if args.window is None else str(args.window)
    kv = "" if full == args.max_num_seqs else f" (the KV cache holds {full})"
    print(f"stand-in engine: max_num_seqs {args.max_num_seqs}{kv}, step {args.step_base * 1000:g} ms + "
          f"{args.step_per_seq * 1000:g} ms per sequence; window {window}, lag {outcome.info.lag}")  # fmt: skip
    print(f"grew a pool to {outcome.pool_size:,} tasks in {total:.1f} s ({outcome.exit_reason}); "
          f"{engine.steps:,} steps, {engine.tokens:,} tokens")  # fmt: skip
    requests = " ".join(f"{name} {stage.requests:,}" for name, stage in outcome.totals.stages.items() if stage.requests)
    print(f"requests: {requests}; rejected: {sum(outcome.totals.rejected.values()):,}")
    wasted = engine.aborted_tokens
    print(f"tokens of requests aborted at the stop: {wasted:,} ({wasted / max(engine.tokens, 1):.1%})")
    print(f"engine idle while work remained: {idle:.2f} s = {idle / span:.1%} of {span:.1f} s")
    print(f"mean sequences per step: {engine.sequence_steps / max(engine.steps, 1):.1f} of {full}")
    print(f"output tokens/s: {rate:,.0f}; the engine's maximum: {max_rate:,.0f}; ratio {rate / max_rate:.2f}")
    if args.timeline:
        first = engine.first_added or started
        cuts = [
            (first + span * k / args.timeline, first + span * (k + 1) / args.timeline) for k in range(args.timeline)
        ]
        means = []
        for a, b in cuts:
            ns = [n for t, n in engine.history if a <= t < b]
            means.append(f"{sum(ns) / max(len(ns), 1):.0f}")
        print(f"mean sequences per step in each tenth of the run: {' '.join(means)}")
    if ceiling is not None:
        print(f"the same engine kept full without the loop for {args.calibrate:g} s: {ceiling:,.0f} tokens/s "
              f"(ratio {ceiling / max_rate:.2f}); the run against that ceiling: {rate / ceiling:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
