"""How much of the engine the loop uses: the loop's output tokens/s against raw ``LLM.generate`` on the very
same requests, on one in-process vLLM engine, in one run.

1. Build one engine (in-process vLLM; by default the real-engine tier's Gemma 3 270M on the CPU build).
2. Run ``generate`` (the real loop, real pool on disk) for a few rounds through a recording wrapper that
   keeps every request the loop sends (prompt, sampling settings, per-request seed) and times each stage.
3. Send all those requests again in ONE ``LLM.generate`` call: what the engine gives when it is fed
   everything at once, the ceiling for this workload.
4. Report output tokens/s of both, their ratio (the engine-use ratio), and time and tokens per stage.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


@dataclass
class StageStats:
    calls: int = 0
    requests: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Recorder:
    """A Backend that forwards to the real one and keeps every request and its stage's timing."""

    inner: Any
    requests: list[tuple[str, Any, int | None]] = field(default_factory=list)
    stages: dict[str, StageStats] = field(default_factory=lambda: defaultdict(StageStats))

    @property
    def model(self) -> str:
        return str(self.inner.model)

    def generate(self, prompts: Sequence[str], sampling: Any, seeds: Sequence[int] | None = None) -> list[Any]:
        stage = stage_of(sampling)
        started = time.perf_counter()
        completions = self.inner.generate(prompts, sampling, seeds)
        stats = self.stages[stage]
        stats.seconds += time.perf_counter() - started
        stats.calls += 1
        stats.requests += len(prompts)
        stats.prompt_tokens += sum(c.prompt_tokens for c in completions)
        stats.output_tokens += sum(c.completion_tokens for c in completions)
        for i, prompt in enumerate(prompts):
            self.requests.append((prompt, sampling, None if seeds is None else int(seeds[i])))
        return list(completions)


def stage_of(sampling: Any) -> str:
    from selfinstruct.prompts import CLASSIFICATION_STOP, INSTRUCTION_STOP

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
    parser.add_argument("--batch-size", type=int, default=16, help="instruction prompts per round (default 16)")
    parser.add_argument("--max-tokens", type=int, help="instruction max tokens (default: the loop's, 1024)")
    parser.add_argument("--instance-max-tokens", type=int, help="instance max tokens (default: the loop's, 350)")
    parser.add_argument("--gpu-memory-utilization", type=float, help="default: selfinstruct's for the platform")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from selfinstruct.backends.vllm import VLLMBackend
    from selfinstruct.config import GenerateConfig, parse_key_values
    from selfinstruct.runner import run_generate

    model = args.model
    if model is None:
        import realmodel

        model = str(realmodel.prepare())
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

    raw_seconds, raw_tokens = raw_generate(backend, recorder.requests)
    loop_rate = loop_tokens / loop_seconds
    raw_rate = raw_tokens / raw_seconds
    results = {
        "model": model,
        "engine_kwargs": {k: v for k, v in backend.engine_kwargs.items() if k != "model"},
        "engine_load_seconds": round(load_seconds, 1),
        "rounds": outcome.totals.rounds,
        "requests": len(recorder.requests),
        "accepted": outcome.totals.accepted,
        "candidates": outcome.totals.candidates,
        "loop": {"seconds": round(loop_seconds, 2), "output_tokens": loop_tokens, "tokens_per_s": round(loop_rate, 2)},
        "raw": {"seconds": round(raw_seconds, 2), "output_tokens": raw_tokens, "tokens_per_s": round(raw_rate, 2)},
        "engine_use_ratio": round(loop_rate / raw_rate, 3),
        "stages": {
            name: {
                "calls": s.calls,
                "requests": s.requests,
                "seconds": round(s.seconds, 2),
                "output_tokens": s.output_tokens,
                "tokens_per_s": round(s.output_tokens / s.seconds, 2) if s.seconds else None,
            }
            for name, s in recorder.stages.items()
        },
        "outside_the_engine_seconds": round(loop_seconds - sum(s.seconds for s in recorder.stages.values()), 2),
    }
    print(f"engine: {model} {results['engine_kwargs']} (loaded in {load_seconds:.0f}s, not counted)")
    print(
        f"loop ({results['rounds']} rounds, {len(recorder.requests)} requests, {outcome.totals.accepted} accepted):"
        f" {loop_tokens} output tokens in {loop_seconds:.1f}s = {loop_rate:.1f} tokens/s"
    )
    print(f"raw LLM.generate, same requests in one call: {raw_tokens} tokens in {raw_seconds:.1f}s = {raw_rate:.1f}/s")
    print(f"engine-use ratio (loop / raw tokens per second): {results['engine_use_ratio']:.3f}")
    print(f"{'stage':<16}{'calls':>6}{'requests':>10}{'seconds':>10}{'out tokens':>12}{'tokens/s':>10}")
    for name, s in results["stages"].items():
        print(
            f"{name:<16}{s['calls']:>6}{s['requests']:>10}{s['seconds']:>10.1f}{s['output_tokens']:>12}"
            f"{s['tokens_per_s'] or 0:>10.1f}"
        )
    print(f"{'outside engine':<16}{'':>6}{'':>10}{results['outside_the_engine_seconds']:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
