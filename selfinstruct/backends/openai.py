"""A Backend for any OpenAI-compatible ``/v1/completions`` server: ``vllm serve``, llama.cpp, Ollama, SGLang.

What it does:

* splits a batch of prompts into requests of ``request_batch_size`` prompts each (the legacy
  completions endpoint takes a list of prompts) and keeps up to ``concurrency`` requests in flight;
* puts the server's ``choices`` back in prompt order by their ``index``;
* retries what is transient (HTTP 429 and 5xx, timeouts, refused or dropped connections) with
  exponential backoff and jitter, honouring ``Retry-After``; everything else fails at once with a
  :class:`~selfinstruct.errors.BackendError` that says what the server answered;
* asks ``GET /v1/models`` for the model name when none is given and the server serves exactly one.

What it deliberately does not do: the chat endpoint (Self-Instruct drives a *base* model with plain
prompts), streaming, or logprobs. It never imports vllm.

The API key travels only in the ``Authorization`` header. It is kept out of ``repr``, logs and error
messages, and the URL shown in messages has any ``user:password@`` part removed.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from selfinstruct.backends import BackendOptions, Completion, Sampling
from selfinstruct.errors import BackendError, ConfigError

#: Statuses worth another try: rate limiting and the server being busy, restarting or behind a proxy.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: How much of a server's error message goes into ours.
MESSAGE_EXCERPT = 500
_SERVER_HINT = "Is the server (for example `vllm serve`) running? Check --base-url."


def normalize_base_url(url: str) -> str:
    """Return the API root that ``/completions`` and ``/models`` hang off, without a trailing slash.

    >>> normalize_base_url("http://host:8000")
    'http://host:8000/v1'
    >>> normalize_base_url("http://host:8000/v1/")
    'http://host:8000/v1'
    >>> normalize_base_url("https://gateway.example/api/v1")
    'https://gateway.example/api/v1'

    Raises :class:`ConfigError` for anything that is not an absolute http(s) URL.
    """
    text = url.strip()
    example = "for example http://127.0.0.1:8000/v1"
    if "://" not in text:
        raise ConfigError(f"--base-url {_display(text)!r} needs a scheme: {example}")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"--base-url must start with http:// or https:// ({example}), not {scheme}://")
    if not parts.hostname:
        raise ConfigError(f"--base-url {_display(text)!r} has no host name: {example}")
    if parts.query or parts.fragment:
        raise ConfigError(f"--base-url {_display(text)!r} should not have a ?query or #fragment: {example}")
    path = parts.path.rstrip("/")
    if path.endswith("/completions"):
        raise ConfigError(f"--base-url should be the API root ({example}), not the /completions endpoint itself")
    return urlunsplit((scheme, parts.netloc, path or "/v1", "", ""))


def _display(url: str) -> str:
    """``url`` without any ``user:password@`` part, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _excerpt(text: str, limit: int = MESSAGE_EXCERPT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _server_message(response: httpx.Response) -> str:
    """The human part of an error reply: vLLM, llama.cpp, Ollama and OpenAI each nest it differently."""
    try:
        payload = response.json()
    except ValueError:
        return _excerpt(response.text) or "(empty body)"
    if isinstance(payload, dict):
        for candidate in (payload.get("error"), payload):
            if isinstance(candidate, dict):
                for key in ("message", "detail"):
                    if isinstance(candidate.get(key), str):
                        return _excerpt(candidate[key])
            elif isinstance(candidate, str):
                return _excerpt(candidate)
    return _excerpt(response.text)


def _describe_transport_error(exc: httpx.TransportError, timeout: float) -> str:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"no reply within {timeout:g}s ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed ({detail})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server closed the connection without a complete reply ({detail})"
    return f"connection error: {type(exc).__name__} ({detail})"


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; the HTTP-date form is ignored (backoff applies instead)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0) if seconds == seconds else None  # NaN check


class _Transient(Exception):
    """One failed attempt that is worth repeating."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


class _Aborted(Exception):
    """Another request of the same batch failed for good; this one stops retrying."""


@dataclass(frozen=True, slots=True)
class _Chunk:
    start: int
    prompts: list[str]
    seed: int


class OpenAIBackend:
    """Completions from an OpenAI-compatible server.

    ``base_url`` is the API root (``http://host:8000/v1``; a bare ``http://host:8000`` gets ``/v1``).
    ``model`` None asks the server, which must then serve exactly one model. ``api_key`` is sent as
    ``Authorization: Bearer ...`` (:meth:`from_options` reads it from the environment).

    ``max_retries`` counts *re*-tries: a request is attempted at most ``1 + max_retries`` times.
    ``retry_wait_initial``/``retry_wait_max`` shape the exponential backoff (seconds) and
    ``retry_after_max`` caps a server's ``Retry-After``. ``extra`` is merged into every request body
    last, so its fields win (for example ``{"repetition_penalty": 1.1}``). ``transport`` replaces
    httpx's network transport (tests).

    Use it as a context manager, or call :meth:`close`, to release its connections.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        request_batch_size: int = 16,
        concurrency: int = 8,
        timeout: float = 300.0,
        max_retries: int = 6,
        seed: int = 0,
        extra: Mapping[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
        retry_wait_initial: float = 0.5,
        retry_wait_max: float = 20.0,
        retry_after_max: float = 60.0,
    ) -> None:
        if request_batch_size < 1:
            raise ConfigError(f"request batch size must be at least 1, not {request_batch_size}")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, not {timeout}")
        if max_retries < 0:
            raise ConfigError(f"max retries cannot be negative ({max_retries})")
        self.base_url = normalize_base_url(base_url)
        self.request_batch_size = request_batch_size
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.seed = seed
        self.extra: dict[str, Any] = dict(extra or {})
        self._api_key = api_key or None
        self._retry_after_max = retry_after_max
        # Exponential backoff with jitter, spelled so that it reads the same on tenacity 8 and 9.
        self._backoff = wait_exponential(multiplier=retry_wait_initial, max=retry_wait_max) + wait_random(
            0, retry_wait_initial
        )
        self._calls = 0
        self._calls_lock = threading.Lock()
        headers = {"User-Agent": "selfinstruct"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 30.0)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
            trust_env=True,
        )
        try:
            self.model: str = model if model else self._detect_model()
        except BaseException:
            self._client.close()
            raise

    @classmethod
    def from_options(cls, options: BackendOptions) -> OpenAIBackend:
        """Build from CLI/config options; the API key comes from the first set variable of
        ``options.api_key_env`` (``SELFINSTRUCT_API_KEY``, then ``OPENAI_API_KEY``)."""
        if not options.base_url:
            raise ConfigError("the openai backend needs --base-url (for example http://127.0.0.1:8000/v1)")
        api_key = next((os.environ[n].strip() for n in options.api_key_env if os.environ.get(n)), None)
        return cls(
            options.base_url,
            options.model,
            api_key=api_key,
            request_batch_size=options.request_batch_size,
            concurrency=options.concurrency,
            timeout=options.timeout,
            max_retries=options.max_retries,
            seed=options.seed,
            extra=options.request_fields,
        )

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"OpenAIBackend(base_url={_display(self.base_url)!r}, model={self.model!r}, api_key={key})"

    # -- the Backend contract -------------------------------------------------------------------

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Completion]:
        """Complete ``prompts`` in order.

        Each request carries one ``seed`` although it holds several prompts: with ``seeds`` it is the
        seed of the request's first prompt, so the same prompts, seeds and ``request_batch_size``
        replay the same request. Without ``seeds`` it is derived from ``seed``, the number of this
        call and the chunk's offset, so a run replays while repeated calls still differ.

        Token usage is reported per request, not per prompt: a request's whole usage goes on the
        completion of its first prompt and the others get 0, so totals are right.
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        if not prompts:
            return []
        with self._calls_lock:
            call = self._calls
            self._calls += 1
        chunks = []
        for start in range(0, len(prompts), self.request_batch_size):
            if seeds is not None:
                seed = int(seeds[start])
            else:
                seed = random.Random(f"{self.seed}:{call}:{start}").randrange(2**31)
            chunks.append(_Chunk(start, list(prompts[start : start + self.request_batch_size]), seed))

        results: list[Completion | None] = [None] * len(prompts)
        if len(chunks) == 1:
            self._fill(results, chunks[0], self._complete_chunk(chunks[0], sampling, None))
        else:
            self._run_concurrently(chunks, sampling, results)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _run_concurrently(self, chunks: list[_Chunk], sampling: Sampling, results: list[Completion | None]) -> None:
        abort = threading.Event()
        pool = ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(chunks)), thread_name_prefix="selfinstruct-http"
        )
        try:
            futures: dict[Future[list[Completion]], _Chunk] = {
                pool.submit(self._complete_chunk, chunk, sampling, abort): chunk for chunk in chunks
            }
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                # Stop the others promptly: queued requests are cancelled, in-flight ones stop retrying.
                abort.set()
                pool.shutdown(wait=True, cancel_futures=True)
                first = min(failed, key=lambda f: futures[f].start)
                first.result()  # raises
            for future, chunk in futures.items():
                self._fill(results, chunk, future.result())
        except BaseException:
            abort.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    @staticmethod
    def _fill(results: list[Completion | None], chunk: _Chunk, completions: list[Completion]) -> None:
        results[chunk.start : chunk.start + len(completions)] = completions

    def _request_body(self, chunk: _Chunk, sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": chunk.prompts,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
            "n": 1,
            "seed": chunk.seed,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.top_k is not None:
            body["top_k"] = sampling.top_k  # a vLLM extension; OpenAI itself would reject it
        body.update(self.extra)
        return body

    def _complete_chunk(self, chunk: _Chunk, sampling: Sampling, abort: threading.Event | None) -> list[Completion]:
        url = f"{self.base_url}/completions"
        response = self._send("POST", url, self._request_body(chunk, sampling), abort)
        return self._parse_completions(url, response, len(chunk.prompts))

    def _parse_completions(self, url: str, response: httpx.Response, expected: int) -> list[Completion]:
        payload = self._json(url, response)
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list):
            raise self._error(f"{_display(url)} replied without a list of choices: {_excerpt(response.text)}")
        by_index: dict[int, Completion] = {}
        for choice in choices:
            index = choice.get("index") if isinstance(choice, dict) else None
            text = choice.get("text") if isinstance(choice, dict) else None
            if not isinstance(index, int) or not isinstance(text, str):
                raise self._error(
                    f"{_display(url)} replied with a malformed choice (needs an integer index and a "
                    f"text): {_excerpt(repr(choice), 200)}"
                )
            finish = choice.get("finish_reason")
            by_index[index] = Completion(text, finish if isinstance(finish, str) else None)
        if len(choices) != expected or set(by_index) != set(range(expected)):
            raise self._error(
                f"server returned {len(choices)} choices for {expected} prompts "
                f"(indexes {sorted(by_index)[:20]}); does {_display(url)} support a list of prompts?"
            )
        completions = [by_index[i] for i in range(expected)]
        usage = payload.get("usage")
        if isinstance(usage, dict):
            first = completions[0]
            completions[0] = Completion(
                first.text,
                first.finish_reason,
                prompt_tokens=_as_count(usage.get("prompt_tokens")),
                completion_tokens=_as_count(usage.get("completion_tokens")),
            )
        return completions

    # -- model detection ----------------------------------------------------------------------

    def _detect_model(self) -> str:
        url = f"{self.base_url}/models"
        response = self._send("GET", url, None, None)
        payload = self._json(url, response)
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise ConfigError(f"{_display(url)} did not list its models ({_excerpt(response.text, 200)}); pass --model")
        ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise ConfigError(f"the server at {_display(self.base_url)} lists no models; pass --model")
        raise ConfigError(
            f"the server at {_display(self.base_url)} serves {len(ids)} models: {', '.join(ids)}; "
            "choose one with --model"
        )

    # -- HTTP with retries ----------------------------------------------------------------------

    def _send(
        self, method: str, url: str, body: dict[str, Any] | None, abort: threading.Event | None
    ) -> httpx.Response:
        """One logical request: retried while failures are transient, else a BackendError."""
        attempts = 0

        def attempt() -> httpx.Response:
            nonlocal attempts
            if abort is not None and abort.is_set():
                raise _Aborted()
            attempts += 1
            try:
                response = self._client.request(method, url, json=body)
            except httpx.TransportError as exc:
                raise _Transient(_describe_transport_error(exc, self.timeout)) from exc
            status = response.status_code
            if status in RETRY_STATUSES:
                retry_after = _parse_retry_after(response.headers.get("Retry-After"))
                raise _Transient(f"HTTP {status}: {_server_message(response)}", retry_after)
            if status >= 400:
                raise self._error(self._http_error_message(url, response))
            return response

        def sleep(seconds: float) -> None:
            # An aborted batch wakes its sleepers at once; the next attempt then sees the abort.
            if abort is None:
                time.sleep(seconds)
            else:
                abort.wait(seconds)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            sleep=sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Transient as exc:
            tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
            message = f"{method} {_display(url)} failed after {tries}: {exc.what}. {_SERVER_HINT}"
            raise self._error(message) from exc.__cause__
        except _Aborted:
            raise self._error(f"{method} {_display(url)} abandoned: another request of the batch failed") from None

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(exc.retry_after, self._retry_after_max)
        return float(self._backoff(state))

    def _http_error_message(self, url: str, response: httpx.Response) -> str:
        status = response.status_code
        message = f"{_display(url)} answered HTTP {status}: {_server_message(response)}"
        if status in (401, 403):
            message += " (check the API key in SELFINSTRUCT_API_KEY or OPENAI_API_KEY)"
        elif status == 404:
            message += " (check --base-url, usually ending in /v1, and --model)"
        return message

    def _json(self, url: str, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise self._error(
                f"{_display(url)} replied with something that is not JSON (HTTP {response.status_code}): "
                f"{_excerpt(response.text, 200) or '(empty body)'}"
            ) from None

    def _error(self, message: str) -> BackendError:
        """A BackendError whose message cannot carry the API key, even if a server echoed it."""
        if self._api_key:
            message = message.replace(self._api_key, "<redacted>")
        return BackendError(message)

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool; the backend cannot be used afterwards."""
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _as_count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


__all__ = ["RETRY_STATUSES", "OpenAIBackend", "normalize_base_url"]
