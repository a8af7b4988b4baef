"""The language-model contract: prompts and sampling parameters in, completions out.

Two forms of the same contract:

* :meth:`Backend.generate` -- a batch in, the completions in prompt order out. Any object with this one
  method is a Backend (a test fake needs no inheritance).
* :class:`Stream` -- the incremental form the streaming loop uses: :meth:`Stream.submit` one request,
  :meth:`Stream.poll` the completions that have finished (in whatever order the engine finished them),
  :meth:`Stream.cancel` what is no longer wanted. A backend that can stream has a ``stream()`` method;
  :func:`open_stream` gives every backend one, wrapping a batch-only backend in :class:`BatchStream`.
  A stream may also say how much it can usefully hold (:meth:`Stream.capacity`, which follows the engine's
  own signals, and :meth:`Stream.max_capacity`, fixed by the engine's settings); the loop then keeps that
  much in flight instead of a fixed window (:func:`capacity_of`, :func:`max_capacity_of`).

A prompt is text for a completions (base) model or a :data:`~selfinstruct.engines.chat.Chat` of messages
for a chat (instruct) model (:mod:`selfinstruct.engines.chat`); every backend takes both.

Two backends ship:

* ``vllm``   -- in-process vLLM on the local GPU(s), streamed through its engine's incremental API
  (:mod:`selfinstruct.engines.vllm`);
* ``openai`` -- one or many OpenAI-compatible servers (``/v1/completions``, ``/v1/chat/completions``):
  ``vllm serve``, llama.cpp's server, Ollama, SGLang (:mod:`selfinstruct.engines.openai`).

Whatever a server sends, one completion contributes at most :func:`max_completion_chars` characters
(:func:`bound_completion`): a server that answers with megabytes of text cannot put them into a pool.
Heavy imports (vllm) happen inside the backend module that needs them, never here.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from selfinstruct.engines.chat import Chat, ChatMessage, Prompt
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
    cut: bool = False  # the backend cut an oversized reply down (see bound_completion)


#: A generous bound on characters per generated token. Real tokens average about 4 characters; the longest
#: entries of common vocabularies (runs of spaces, long words) stay under 32.
MAX_CHARS_PER_TOKEN = 32


def max_completion_chars(max_tokens: int) -> int:
    """The most characters one completion of ``max_tokens`` tokens may contribute.

    >>> max_completion_chars(1024)
    33792
    """
    return max(1, max_tokens) * MAX_CHARS_PER_TOKEN + 1024


def bound_completion(completion: Completion, max_tokens: int) -> Completion:
    """``completion`` with its text cut to :func:`max_completion_chars`; a cut one is marked ``cut`` and
    finishes with ``"length"`` (so parsers drop its incomplete last item, as for any cut-off completion).

    >>> bound_completion(Completion("x" * 5000, "stop"), 100).text == "x" * 4224
    True
    """
    limit = max_completion_chars(max_tokens)
    if len(completion.text) <= limit:
        return completion
    return Completion(
        completion.text[:limit], "length", completion.prompt_tokens, completion.completion_tokens, cut=True
    )


@runtime_checkable
class Backend(Protocol):
    """A language model that completes a batch of prompts.

    ``seeds``, when given, has one integer per prompt; a backend that supports per-request seeds uses them
    so that the same prompts and seeds replay the same completions. The returned list is in prompt order.
    """

    model: str

    def generate(
        self, prompts: Sequence[Prompt], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Completion]: ...


@dataclass(frozen=True, slots=True)
class Request:
    """One prompt for a :class:`Stream`. ``key`` is the caller's name for it (unique among those in flight);
    ``priority``: lower goes to the engine first when more requests wait than it takes at once."""

    key: int
    prompt: Prompt  # text for a completions model, a Chat (tuple of messages) for a chat model
    sampling: Sampling
    seed: int | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Finished:
    """A request's completion; ``seconds`` from submission to completion as the stream saw it."""

    key: int
    completion: Completion
    seconds: float = 0.0


@runtime_checkable
class Stream(Protocol):
    """Requests in, completions out as they finish. Used from one thread.

    ``poll`` waits up to ``timeout`` seconds for at least one completion and returns every one that has
    finished, in any order; a request that failed for good raises :class:`~selfinstruct.errors.BackendError`
    from ``poll``. ``cancel`` drops requests (queued or running; unknown keys are ignored); ``close``
    cancels everything still in flight and releases the stream.

    ``capacity`` and ``max_capacity`` size what the loop keeps in flight (both optional: a stream without
    them, or returning None, gets a fixed window; read them through :func:`capacity_of` and
    :func:`max_capacity_of`):

    * ``capacity()``: how many requests (all stages together, counted like ``in_flight``) the engine(s)
      behind the stream can usefully hold *right now*: the sequences they run at once plus a short queue
      that refills a finished sequence's slot without waiting for the loop. It may change from call to call
      with the engine's own signals (grow while sequence slots are free and nothing waits, shrink while
      requests wait); it only changes *when* the loop submits, never what. None: unknown.
    * ``max_capacity()``: the most ``capacity()`` will ever return, fixed when the stream opens by the
      engine's settings (``max_num_seqs``, endpoints x their limit), never by timing: the loop derives the
      pool's staleness lag from it, so it must be the same on every run with the same settings. None: unknown.
    """

    @property
    def in_flight(self) -> int: ...

    def submit(self, request: Request) -> None: ...

    def poll(self, timeout: float) -> list[Finished]: ...

    def cancel(self, keys: Iterable[int]) -> None: ...

    def close(self) -> None: ...

    def capacity(self) -> int | None: ...

    def max_capacity(self) -> int | None: ...


def _size_hint(stream: Any, name: str) -> int | None:
    """``stream.<name>()`` as a usable size: None for a stream without the method or one that answers
    something other than an int; at least 1 otherwise, so the loop can always keep one request going."""
    method = getattr(stream, name, None)
    if not callable(method):
        return None
    value = method()
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        return None
    return max(1, value)


def capacity_of(stream: Any) -> int | None:
    """``stream.capacity()``, or None for a stream that does not say (or says something unusable).

    >>> capacity_of(object()) is None
    True
    """
    return _size_hint(stream, "capacity")


def max_capacity_of(stream: Any) -> int | None:
    """``stream.max_capacity()``, or None for a stream that does not say; at least 1 otherwise.

    >>> max_capacity_of(object()) is None
    True
    """
    return _size_hint(stream, "max_capacity")


class BatchStream:
    """The incremental form over a batch-only :class:`Backend`: ``poll`` sends what was submitted since the
    last poll as one ``generate`` call per distinct sampling, in the calling thread.

    Right for instant or test backends; a real engine should stream itself (vLLM and the OpenAI backend do).
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._pending: list[tuple[Request, float]] = []

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def capacity(self) -> int | None:
        """Unknown: a batch-only backend takes whatever was submitted in one call (the loop's fixed window)."""
        return None

    def max_capacity(self) -> int | None:
        return None

    def submit(self, request: Request) -> None:
        self._pending.append((request, time.monotonic()))

    def poll(self, timeout: float) -> list[Finished]:
        if not self._pending:
            time.sleep(min(timeout, 0.01))
            return []
        pending = sorted(self._pending, key=lambda item: item[0].priority)
        self._pending = []
        groups: dict[Sampling, list[tuple[Request, float]]] = {}
        for item in pending:
            groups.setdefault(item[0].sampling, []).append(item)
        finished: list[Finished] = []
        for sampling, items in groups.items():
            requests = [r for r, _ in items]
            seeds = [r.seed for r in requests]
            completions = self.backend.generate(
                [r.prompt for r in requests], sampling, None if None in seeds else [int(s or 0) for s in seeds]
            )
            if len(completions) != len(requests):
                from selfinstruct.errors import BackendError

                raise BackendError(f"the backend returned {len(completions)} completions for {len(requests)} prompts")
            now = time.monotonic()
            for (request, started), completion in zip(items, completions, strict=True):
                finished.append(Finished(request.key, bound_completion(completion, sampling.max_tokens), now - started))
        return finished

    def cancel(self, keys: Iterable[int]) -> None:
        drop = set(keys)
        self._pending = [item for item in self._pending if item[0].key not in drop]

    def close(self) -> None:
        self._pending = []


def open_stream(backend: Backend) -> Stream:
    """``backend.stream()`` when the backend streams, else a :class:`BatchStream` over its ``generate``."""
    factory = getattr(backend, "stream", None)
    if callable(factory):
        stream: Stream = factory()
        return stream
    return BatchStream(backend)


EventHandler = Callable[[str, Any], None]
"""``on_event(kind, payload)``; backends report ``("retry", RetryEvent)`` and ``("endpoint_down", str)``."""


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """One failed attempt that will be tried again: where, why, which attempt, and after how long."""

    endpoint: str
    reason: str
    attempt: int
    attempts: int
    wait: float
    elsewhere: bool = False  # the next attempt goes to another endpoint

    def describe(self) -> str:
        where = "on another endpoint" if self.elsewhere else f"in {self.wait:.1f}s"
        return f"retry {self.attempt}/{self.attempts - 1}: {self.endpoint}: {self.reason}; trying again {where}"


def strip_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` part: what may be shown, logged or stored.

    >>> strip_userinfo("http://me:secret@host:8000/v1")
    'http://host:8000/v1'
    >>> strip_userinfo("http://host/v1")
    'http://host/v1'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def normalize_base_url(url: str, where: str = "--base-url") -> str:
    """Return the API root that ``/completions`` and ``/models`` hang off, without a trailing slash.

    >>> normalize_base_url("http://host:8000")
    'http://host:8000/v1'
    >>> normalize_base_url("http://host:8000/v1/")
    'http://host:8000/v1'
    >>> normalize_base_url("https://gateway.example/api/v1")
    'https://gateway.example/api/v1'

    Credentials in the URL are kept (the openai backend takes them out). Raises :class:`ConfigError` for
    anything that is not an absolute http(s) URL, naming the option as ``where`` (a flag, or a config
    file and key); the message never shows credentials.
    """
    text = url.strip()
    example = "for example http://127.0.0.1:8000/v1"
    shown = strip_userinfo(text)
    if "://" not in text:
        raise ConfigError(f"{where} {shown!r} needs a scheme: {example}")
    try:
        parts = urlsplit(text)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"{where} {shown!r} is not a valid URL ({exc}): {example}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"{where} must start with http:// or https:// ({example}), not {scheme}://")
    if not hostname:
        raise ConfigError(f"{where} {shown!r} has no host name: {example}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where} {shown!r} should not have a ?query or #fragment: {example}")
    path = parts.path.rstrip("/")
    if path.endswith("/completions"):
        raise ConfigError(f"{where} should be the API root ({example}), not the /completions endpoint itself")
    return urlunsplit((scheme, parts.netloc, path or "/v1", "", ""))


def drain_events(events: queue.SimpleQueue[tuple[str, Any]], on_event: EventHandler | None) -> None:
    """Deliver events queued by a backend's worker thread, in the caller's thread."""
    while True:
        try:
            kind, payload = events.get_nowait()
        except queue.Empty:
            return
        if on_event is not None:
            on_event(kind, payload)


@dataclass(slots=True)
class BackendOptions:
    """Everything :func:`make_backend` may need; each backend reads the fields it understands."""

    model: str | None = None
    base_url: str | Sequence[str] | None = None
    seed: int = 0
    # vllm
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None  # None: chosen for the platform (see backends.vllm)
    max_model_len: int | None = None
    dtype: str = "auto"
    engine_args: dict[str, Any] = field(default_factory=dict)  # more keyword arguments of vllm.LLM
    # openai
    api_key_env: tuple[str, ...] = ("SELFINSTRUCT_API_KEY", "OPENAI_API_KEY")
    concurrency: int | None = None  # requests in flight per endpoint, fixed; None: follow each server
    server_priority: bool = False  # send each request's priority (vllm serve --scheduling-policy priority)
    timeout: float = 300.0
    max_retries: int = 6
    request_fields: dict[str, Any] = field(default_factory=dict)  # merged into every request body
    on_event: EventHandler | None = None


BACKEND_NAMES = ("vllm", "openai")


def resolve_backend_name(name: str | None, base_url: str | Sequence[str] | None) -> str:
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
        from selfinstruct.engines.openai import OpenAIBackend

        return OpenAIBackend.from_options(options)
    from selfinstruct.engines.vllm import VLLMBackend

    return VLLMBackend.from_options(options)


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendOptions",
    "BatchStream",
    "Chat",
    "ChatMessage",
    "Completion",
    "EventHandler",
    "Finished",
    "Prompt",
    "Request",
    "RetryEvent",
    "Sampling",
    "Stream",
    "bound_completion",
    "capacity_of",
    "make_backend",
    "max_capacity_of",
    "max_completion_chars",
    "normalize_base_url",
    "open_stream",
    "resolve_backend_name",
    "strip_userinfo",
]
