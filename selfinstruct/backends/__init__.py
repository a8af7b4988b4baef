"""The language-model contract: a batch of prompts and sampling parameters in, completions out.

Everything the bootstrap loop needs from a model is :meth:`Backend.generate`. Two backends ship:

* ``vllm``   -- in-process ``vllm.LLM`` on the local GPU (:mod:`selfinstruct.backends.vllm`);
* ``openai`` -- any OpenAI-compatible ``/v1/completions`` server: ``vllm serve``, llama.cpp's server,
  Ollama, SGLang (:mod:`selfinstruct.backends.openai`).

A test fake needs no inheritance: any object with a matching ``generate`` method is a Backend.
Heavy imports (vllm) happen inside the backend module that needs them, never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from selfinstruct.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling parameters for one stage. ``temperature == 0`` means greedy decoding.

    ``top_k`` is passed through only where the backend supports it (vLLM does; None leaves it unset).
    """

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_k: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": list(self.stop),
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "top_k": self.top_k,
        }


@dataclass(frozen=True, slots=True)
class Completion:
    """What the model wrote for one prompt.

    ``finish_reason`` is ``"stop"`` (a stop sequence or end of text), ``"length"`` (cut off at
    ``max_tokens``) or whatever the server reported; None when unknown. Token counts are 0 when the
    backend does not report them.
    """

    text: str
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class Backend(Protocol):
    """A language model that completes a batch of prompts.

    ``seeds``, when given, has one integer per prompt; a backend that supports per-request seeds uses them
    so that the same prompts and seeds replay the same completions. The returned list is in prompt order.
    """

    model: str

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Completion]: ...


@dataclass(slots=True)
class BackendOptions:
    """Everything :func:`make_backend` may need; each backend reads the fields it understands."""

    model: str | None = None
    base_url: str | None = None
    seed: int = 0
    # vllm
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None  # None: chosen for the platform (see backends.vllm)
    max_model_len: int | None = None
    dtype: str = "auto"
    engine_args: dict[str, Any] = field(default_factory=dict)  # more keyword arguments of vllm.LLM
    # openai
    api_key_env: tuple[str, ...] = ("SELFINSTRUCT_API_KEY", "OPENAI_API_KEY")
    request_batch_size: int = 16
    concurrency: int = 8
    timeout: float = 300.0
    max_retries: int = 6
    request_fields: dict[str, Any] = field(default_factory=dict)  # merged into every request body


BACKEND_NAMES = ("vllm", "openai")


def resolve_backend_name(name: str | None, base_url: str | None) -> str:
    """``--backend`` wins; otherwise ``openai`` when a base URL is given, else ``vllm``."""
    if name is None or name == "auto":
        return "openai" if base_url else "vllm"
    if name not in BACKEND_NAMES:
        raise ConfigError(f"unknown backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}")
    if name == "vllm" and base_url:
        raise ConfigError("--base-url is for the openai backend; drop it or use --backend openai")
    if name == "openai" and not base_url:
        raise ConfigError("the openai backend needs --base-url (for example http://127.0.0.1:8000/v1)")
    return name


def make_backend(name: str | None, options: BackendOptions) -> Backend:
    """Construct the named backend (see :func:`resolve_backend_name`)."""
    resolved = resolve_backend_name(name, options.base_url)
    if resolved == "openai":
        from selfinstruct.backends.openai import OpenAIBackend

        return OpenAIBackend.from_options(options)
    from selfinstruct.backends.vllm import VLLMBackend

    return VLLMBackend.from_options(options)


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendOptions",
    "Completion",
    "Sampling",
    "make_backend",
    "resolve_backend_name",
]
