"""A Backend that runs ``vllm.LLM`` in this process, on the local GPU(s).

vLLM is an optional dependency (``pip install 'selfinstruct[vllm]'``), imported only when this backend is
constructed; without it the error says how to install it or how to use a running server instead.
Each :meth:`VLLMBackend.generate` is one ``LLM.generate`` call with one ``SamplingParams`` per prompt,
so vLLM schedules the whole batch itself and per-prompt seeds make runs replayable.

Not handled here: chat templates, LoRA adapters, multiple samples per prompt (``n`` is always 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class VLLMBackend:
    """Completions from an in-process ``vllm.LLM``.

    The engine is built in the constructor (this loads the model: slow, and needs the GPU memory
    given by ``gpu_memory_utilization``). ``extra`` holds further keyword arguments for ``vllm.LLM``
    (for example ``{"enforce_eager": True}``). ``llm`` supplies an already built engine instead.
    """

    def __init__(
        self,
        model: str | None,
        *,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        extra: Mapping[str, Any] | None = None,
        llm: Any = None,
    ) -> None:
        if not model:
            raise ConfigError("--model is required with the vllm backend")
        self.model: str = model
        llm_class, self._sampling_params = _import_vllm()
        if llm is None:
            kwargs: dict[str, Any] = {
                "model": model,
                "seed": seed,
                "tensor_parallel_size": tensor_parallel_size,
                "gpu_memory_utilization": gpu_memory_utilization,
                "dtype": dtype,
            }
            if max_model_len is not None:
                kwargs["max_model_len"] = max_model_len
            kwargs.update(extra or {})
            try:
                llm = llm_class(**kwargs)
            except Exception as exc:
                raise BackendError(f"vLLM could not load model {model!r}: {type(exc).__name__}: {exc}") from exc
        self.llm = llm

    @classmethod
    def from_options(cls, options: BackendOptions) -> VLLMBackend:
        """Build from CLI/config options; ``options.extra`` goes to ``vllm.LLM`` as keyword arguments."""
        return cls(
            options.model,
            seed=options.seed,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=options.max_model_len,
            dtype=options.dtype,
            extra=options.extra,
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
