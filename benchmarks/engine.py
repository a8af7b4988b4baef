"""How much of the engine the loop uses: the loop's output tokens/s against raw ``LLM.generate`` on the very
same requests, on one in-process vLLM engine, in one run.

1. Build one engine (in-process vLLM; by default the real-engine tier's Gemma 3 270M on the CPU build).
2. Run ``generate`` (the real streaming loop, real pool on disk) for a few rounds through a recording
   wrapper around the backend's stream (``submit``/``poll``/``cancel``, the engine's incremental API): it
   keeps every request the loop sends (prompt, sampling settings, per-request seed) and, per stage, the
   requests, tokens and request-seconds (stages overlap in a stream, so request-seconds add up to more
   than the wall time).
3. Send all the requests that finished again in ONE raw ``LLM.generate`` call: what the engine gives when
   it is fed everything at once, the ceiling for this workload. (``--max-rounds`` drains what it sent, so
   normally nothing is cancelled; cancelled requests, if any, are counted and not replayed.)
4. Report output tokens/s of both, their ratio (the engine-use ratio), and requests and tokens per stage.

    ~/.cache/selfinstruct/venv-real/bin/python benchmarks/engine.py [--rounds 2] [--batch-size 16]
    python benchmarks/engine.py --model meta-llama/Llama-3.1-8B --rounds 3 --json engine.json   # on a GPU

The engine's load time is not counted anywhere: both measurements start with the engine warm. Both
sides use the engine's per-request seeds, so they sample the same way; their token counts can still
differ slightly where batching changes floating-point sums, so throughput (tokens/s) is compared, not time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


@dataclass
class StageStats:
    requests: int = 0  # submitted
    finished: int = 0
    cancelled: int = 0
    seconds: float = 0.0  # summed from submission to completion, per request
    prompt_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Recorder:
    """A Backend that forwards to the real one; its :meth:`stream` records every request the loop sends.

    ``requests`` holds ``(prompt, sampling, seed)`` in submission order; ``finished`` the keys whose
    completion came back (in any order); ``first_submit``/``last_finish`` bound the time the engine had work.
    """

    inner: Any
    requests: dict[int, tuple[str, Any, int | None]] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    stages: dict[str, StageStats] = field(default_factory=lambda: defaultdict(StageStats))
    first_submit: float | None = None
    last_finish: float | None = None

    @property
    def model(self) -> str:
        return str(self.inner.model)

    def generate(self, prompts: Sequence[str], sampling: Any, seeds: Sequence[int] | None = None) -> list[Any]:
        """Not used by the streaming loop (it calls :meth:`stream`); kept so this is still a Backend."""
        raise RuntimeError("the loop should stream: Recorder.generate would measure the batch path instead")

    def stream(self) -> RecordingStream:
        return RecordingStream(self, self.inner.stream())


class RecordingStream:
    """The backend's stream (``VLLMStream``), with every request and completion written down on the way."""

    def __init__(self, recorder: Recorder, inner: Any) -> None:
        self.recorder = recorder
        self.inner = inner
        self._stage: dict[int, str] = {}

    @property
    def in_flight(self) -> int:
        return int(self.inner.in_flight)

    def capacity(self) -> int | None:
        from selfinstruct.engines import capacity_of

        return capacity_of(self.inner)

    def max_capacity(self) -> int | None:
        from selfinstruct.engines import max_capacity_of

        return max_capacity_of(self.inner)

    def submit(self, request: Any) -> None:
        rec = self.recorder
        if rec.first_submit is None:
            rec.first_submit = time.perf_counter()
        # Keys are unique for a whole run (the loop numbers its requests), so they name a request here.
        rec.requests[request.key] = (request.prompt, request.sampling, request.seed)
        stage = stage_of(request.sampling)
        self._stage[request.key] = stage
        rec.stages[stage].requests += 1
        self.inner.submit(request)

    def poll(self, timeout: float) -> list[Any]:
        done = self.inner.poll(timeout)
        rec = self.recorder
        for item in done:
            stats = rec.stages[self._stage.pop(item.key)]
            stats.finished += 1
            stats.seconds += item.seconds
            stats.prompt_tokens += item.completion.prompt_tokens
            stats.output_tokens += item.completion.completion_tokens
            rec.finished.add(item.key)
        if done:
            rec.last_finish = time.perf_counter()
        return list(done)

    def cancel(self, keys: Iterable[int]) -> None:
        keys = list(keys)
        for key in keys:
            stage = self._stage.pop(key, None)
            if stage is not None:
                self.recorder.stages[stage].cancelled += 1
        self.inner.cancel(keys)

    def close(self) -> None:
        self.cancel(list(self._stage))
        self.inner.close()


def stage_of(sampling: Any) -> str:
    from selfinstruct.protocol.prompts import CLASSIFICATION_STOP, INSTRUCTION_STOP

    stop = tuple(sampling.stop)
    if stop == INSTRUCTION_STOP:
        return "instructions"
    if stop == CLASSIFICATION_STOP:
        return "classification"
    return "instances"


def raw_generate(backend: Any, requests: list[tuple[str, Any, int | None]]) -> tuple[float, int]:
    """All requests in one ``LLM.generate`` call; (seconds, output tokens)."""
    params = [
        backend._sampling_params(**backend._params_kwargs(sampling, seed))  # the backend's own mapping
        for _, sampling, seed in requests
    ]
    started = time.perf_counter()
    outputs = backend.llm.generate([p for p, _, _ in requests], params, use_tqdm=False)
    seconds = time.perf_counter() - started
    return seconds, sum(len(o.outputs[0].token_ids or []) for o in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model path or name (default: the real-engine tier's Gemma 3 270M)")
    parser.add_argument("--rounds", type=int, default=2, help="loop rounds to run (default 2)")
    parser.add_argument("--batch-size", type=int, default=16, help="instruction requests per round (default 16)")
    parser.add_argument("--max-tokens", type=int, help="instruction max tokens (default: the loop's, 1024)")
    parser.add_argument("--instance-max-tokens", type=int, help="instance max tokens (default: the loop's, 350)")
    parser.add_argument("--gpu-memory-utilization", type=float, help="default: selfinstruct's for the platform")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from selfinstruct.config import GenerateConfig, parse_key_values
    from selfinstruct.engines.vllm import VLLMBackend
    from selfinstruct.loop.runner import run_generate

    model = args.model
    if model is None:  # the default packaged model, converted into $SELFINSTRUCT_CACHE on first use
        from selfinstruct.engines import localmodels

        model = str(localmodels.prepare(localmodels.DEFAULT_MODEL))
    engine_args = parse_key_values("engine_args", args.engine_arg) or {}
    loaded = time.perf_counter()
    backend = VLLMBackend(
        model,
        seed=0,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        engine_args=engine_args,
    )
    load_seconds = time.perf_counter() - loaded
    recorder = Recorder(backend)
    overrides: dict[str, Any] = {
        "batch_size": args.batch_size,
        "max_rounds": args.rounds,
        "num_instructions": 10**6,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "instance_max_tokens": args.instance_max_tokens,
    }
    with tempfile.TemporaryDirectory() as tmp:
        overrides["out"] = str(Path(tmp) / "pool")
        config = GenerateConfig.from_sources(None, overrides)
        outcome = run_generate(config, backend=recorder)  # type: ignore[arg-type]
    loop_seconds = outcome.seconds
    loop_tokens = sum(s.output_tokens for s in recorder.stages.values())
    replay = [recorder.requests[key] for key in sorted(recorder.finished)]  # submission order
    cancelled = len(recorder.requests) - len(replay)
    busy = (recorder.last_finish or 0.0) - (recorder.first_submit or 0.0)

    raw_seconds, raw_tokens = raw_generate(backend, replay)
    loop_rate = loop_tokens / loop_seconds
    raw_rate = raw_tokens / raw_seconds
    results = {
        "model": model,
        "engine_kwargs": {k: v for k, v in backend.engine_kwargs.items() if k != "model"},
        "engine_load_seconds": round(load_seconds, 1),
        "rounds": outcome.totals.rounds,
        "window": config.window,  # None: it followed the engine
        "lag": outcome.info.lag,
        "requests": len(recorder.requests),
        "replayed": len(replay),
        "cancelled": cancelled,
        "accepted": outcome.totals.accepted,
        "candidates": outcome.totals.candidates,
        "loop": {
            "seconds": round(loop_seconds, 2),
            "engine_busy_seconds": round(busy, 2),
            "output_tokens": loop_tokens,
            "tokens_per_s": round(loop_rate, 2),
        },
        "raw": {"seconds": round(raw_seconds, 2), "output_tokens": raw_tokens, "tokens_per_s": round(raw_rate, 2)},
        "engine_use_ratio": round(loop_rate / raw_rate, 3),
        "stages": {
            name: {
                "requests": s.requests,
                "finished": s.finished,
                "cancelled": s.cancelled,
                "request_seconds": round(s.seconds, 2),
                "prompt_tokens": s.prompt_tokens,
                "output_tokens": s.output_tokens,
            }
            for name, s in recorder.stages.items()
        },
        # Loop time when the engine had nothing to do: before the first request and after the last completion.
        "outside_the_engine_seconds": round(loop_seconds - busy, 2),
    }
    print(f"engine: {model} {results['engine_kwargs']} (loaded in {load_seconds:.0f}s, not counted)")
    print(
        f"loop ({results['rounds']} rounds, window {config.window or 'follows the engine'}, lag {outcome.info.lag}, "
        f"{len(recorder.requests)} requests, "
        f"{outcome.totals.accepted} accepted): {loop_tokens} output tokens in {loop_seconds:.1f}s = "
        f"{loop_rate:.1f} tokens/s"
    )
    if cancelled:
        print(f"  ({cancelled} requests were cancelled by the loop: not replayed, their tokens not counted)")
    print(f"raw LLM.generate, same requests in one call: {raw_tokens} tokens in {raw_seconds:.1f}s = {raw_rate:.1f}/s")
    print(f"engine-use ratio (loop / raw tokens per second): {results['engine_use_ratio']:.3f}")
    print(f"{'stage':<16}{'requests':>10}{'finished':>10}{'cancelled':>10}{'request-s':>11}{'out tokens':>12}")
    for name, s in results["stages"].items():
        print(
            f"{name:<16}{s['requests']:>10}{s['finished']:>10}{s['cancelled']:>10}{s['request_seconds']:>11.1f}"
            f"{s['output_tokens']:>12}"
        )
    print(f"loop time with no request in the engine: {results['outside_the_engine_seconds']:.2f}s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
