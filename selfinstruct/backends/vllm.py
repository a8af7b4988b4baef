"""A Backend that runs ``vllm.LLM`` in this process, on the local GPU(s).

vLLM is an optional dependency (``pip install 'selfinstruct[vllm]'``), imported only when this backend is
constructed; without it the error says how to install it or how to use a running server instead.
Each :meth:`VLLMBackend.generate` is one ``LLM.generate`` call with one ``SamplingParams`` per prompt,
so vLLM schedules the whole batch itself and per-prompt seeds make runs replayable.

Engine options: the first-class ones (``tensor_parallel_size``, ``gpu_memory_utilization``,
``max_model_len``, ``dtype``, ``seed``) and any other keyword argument of ``vllm.LLM`` passed through from
the ``[vllm]`` table or ``--engine-arg`` (checked against vLLM's own ``EngineArgs``). Where the user leaves
them unset, :func:`engine_kwargs` picks values that work on the platform vLLM runs on:

* GPU: vLLM's own defaults (``gpu_memory_utilization`` 0.9 of GPU memory);
* vLLM's CPU build: ``gpu_memory_utilization`` is the share of *RAM* reserved (0.9 fails at start on a
  machine running anything else), so 0.3, or less when less RAM is free; ``float32`` weights unless the
  CPU has bf16 instructions (AVX2-only CPUs ran float32 about 4x faster than bfloat16 with Gemma 3 270M);
  and ``max_num_batched_tokens`` 16384, which avoided the engine dying on long seeded batches
  ("CPU Generator does not use offset").

Not handled here: chat templates, LoRA adapters, multiple samples per prompt (``n`` is always 1).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from selfinstruct.backends import BackendOptions, Completion, Sampling
from selfinstruct.errors import BackendError, ConfigError

INSTALL_HINT = (
    "vLLM is not installed. Install it with: pip install 'selfinstruct[vllm]'  (needs a CUDA GPU), "
    "or point selfinstruct at a running server with --base-url http://HOST:PORT/v1"
)


def _import_vllm() -> tuple[Any, Any]:
    """``(vllm.LLM, vllm.SamplingParams)``, or a BackendError that says what to do."""
    try:
        import vllm
    except ImportError as exc:
        raise BackendError(INSTALL_HINT) from exc
    except Exception as exc:  # a broken install (CUDA/torch mismatch) fails in many ways
        raise BackendError(
            f"vLLM is installed but failed to import ({type(exc).__name__}: {exc}). "
            "Check that its torch/CUDA versions match this machine, or use --base-url with a server."
        ) from exc
    return vllm.LLM, vllm.SamplingParams


# Engine arguments that have their own option: set them there, not through --engine-arg.
FIRST_CLASS = {
    "model": "--model",
    "seed": "--seed",
    "tensor_parallel_size": "--tensor-parallel-size",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_model_len": "--max-model-len",
    "dtype": "--dtype",
}
GPU_MEMORY_UTILIZATION = 0.9
CPU_MEMORY_UTILIZATION = 0.3
CPU_MAX_NUM_BATCHED_TOKENS = 16384


def cpu_memory_utilization(total: int, available: int) -> float:
    """The share of RAM to give vLLM's CPU build: 0.3, or half of what is free when that is less.

    >>> cpu_memory_utilization(24 << 30, 20 << 30), cpu_memory_utilization(24 << 30, 6 << 30)
    (0.3, 0.12)
    """
    if total <= 0:
        return CPU_MEMORY_UTILIZATION
    return round(max(0.01, min(CPU_MEMORY_UTILIZATION, 0.5 * available / total)), 2)


def _meminfo() -> tuple[int, int]:
    """(total, available) bytes of RAM from /proc/meminfo; (0, 0) where it cannot be read."""
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # an unusual build: behave as on a GPU, the user's options still apply
        return False


def known_engine_args() -> set[str] | None:
    """The keyword names ``vllm.LLM`` accepts (``EngineArgs`` fields), or None when they cannot be read."""
    try:
        from vllm.engine.arg_utils import EngineArgs

        return {f.name for f in dataclasses.fields(EngineArgs)}
    except Exception:
        return None


def engine_kwargs(
    model: str,
    *,
    seed: int,
    tensor_parallel_size: int,
    gpu_memory_utilization: float | None,
    max_model_len: int | None,
    dtype: str,
    engine_args: Mapping[str, Any],
    on_cpu: bool,
    known: set[str] | None = None,
) -> dict[str, Any]:
    """The keyword arguments for ``vllm.LLM``: the options, platform defaults where unset, pass-through args.

    >>> kw = engine_kwargs("m", seed=1, tensor_parallel_size=1, gpu_memory_utilization=None,
    ...                    max_model_len=None, dtype="auto", engine_args={"enforce_eager": True}, on_cpu=False)
    >>> kw["gpu_memory_utilization"], kw["dtype"], kw["enforce_eager"]
    (0.9, 'auto', True)
    """
    for key in engine_args:
        if key in FIRST_CLASS:
            raise ConfigError(f"engine argument {key!r} has its own option: use {FIRST_CLASS[key]} instead")
        if known is not None and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"vLLM has no engine argument {key!r}{hint}")
    kwargs: dict[str, Any] = {
        "model": model,
        "seed": seed,
        "tensor_parallel_size": tensor_parallel_size,
        "dtype": dtype,
    }
    if gpu_memory_utilization is None:
        gpu_memory_utilization = cpu_memory_utilization(*_meminfo()) if on_cpu else GPU_MEMORY_UTILIZATION
    kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if on_cpu:
        if dtype == "auto" and not _cpu_has_bf16():
            kwargs["dtype"] = "float32"
        kwargs["max_num_batched_tokens"] = max(CPU_MAX_NUM_BATCHED_TOKENS, max_model_len or 0)
    kwargs.update(engine_args)
    return kwargs


class VLLMBackend:
    """Completions from an in-process ``vllm.LLM``.

    The engine is built in the constructor (this loads the model: slow, and needs the GPU memory
    given by ``gpu_memory_utilization``). ``engine_args`` holds further keyword arguments for ``vllm.LLM``
    (for example ``{"enforce_eager": True}``). ``llm`` supplies an already built engine instead.
    """

    def __init__(
        self,
        model: str | None,
        *,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
        engine_args: Mapping[str, Any] | None = None,
        llm: Any = None,
    ) -> None:
        if not model:
            raise ConfigError("--model is required with the vllm backend")
        self.model: str = model
        llm_class, self._sampling_params = _import_vllm()
        self.engine_kwargs: dict[str, Any] = {}
        if llm is None:
            kwargs = engine_kwargs(
                model,
                seed=seed,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                dtype=dtype,
                engine_args=engine_args or {},
                on_cpu=_on_cpu(),
                known=known_engine_args(),
            )
            self.engine_kwargs = kwargs
            try:
                llm = llm_class(**kwargs)
            except Exception as exc:
                raise BackendError(f"vLLM could not load model {model!r}: {type(exc).__name__}: {exc}") from exc
        self.llm = llm

    @classmethod
    def from_options(cls, options: BackendOptions) -> VLLMBackend:
        """Build from CLI/config options; ``options.engine_args`` go to ``vllm.LLM`` as keyword arguments."""
        return cls(
            options.model,
            seed=options.seed,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=options.max_model_len,
            dtype=options.dtype,
            engine_args=options.engine_args,
        )

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model!r})"

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Completion]:
        """Complete ``prompts`` in order with one ``LLM.generate`` call.

        ``seeds[i]`` becomes prompt *i*'s ``SamplingParams.seed``; without seeds vLLM draws from the
        generator seeded by ``seed`` at construction.
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        if not prompts:
            return []
        params = [
            self._sampling_params(**self._params_kwargs(sampling, None if seeds is None else int(seeds[i])))
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise BackendError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        completions = []
        for out in outputs:
            first = out.outputs[0]
            completions.append(
                Completion(
                    text=first.text,
                    finish_reason=first.finish_reason,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(first.token_ids or []),
                )
            )
        return completions

    @staticmethod
    def _params_kwargs(sampling: Sampling, seed: int | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "n": 1,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            # Always explicit: vLLM's default (16 tokens) would silently truncate every completion.
            "max_tokens": sampling.max_tokens,
            "stop": list(sampling.stop),
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
        }
        if sampling.top_k is not None:
            kwargs["top_k"] = sampling.top_k
        if seed is not None:
            kwargs["seed"] = seed
        return kwargs


__all__ = ["INSTALL_HINT", "VLLMBackend"]
