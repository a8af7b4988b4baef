"""A Backend for one or many OpenAI-compatible servers (``/v1/completions`` and ``/v1/chat/completions``):
``vllm serve``, llama.cpp, Ollama, SGLang.

What it does:

* sends one request per prompt (the server batches: vLLM's continuous batching does it better than any
  client could), from an asyncio event loop on a worker thread, and keeps as many in flight **per
  endpoint** as that server can take: a limit that follows the server's own ``/metrics`` (running and
  waiting requests, KV-cache usage, preemptions), or, where it has none, its latency and 429/503 replies
  (:mod:`selfinstruct.engines.pacing`); ``concurrency`` fixes the limit instead. Requests that wait for a
  slot go out lowest ``priority`` first, and with ``server_priority`` the request body carries that
  priority too, for a server that schedules by it (``vllm serve --scheduling-policy priority``);
* spreads requests over several endpoints (``--base-url`` given more than once) by least outstanding
  work (the ``max_tokens`` of the requests each endpoint holds), and sends a retry to another endpoint
  when one fails;
* retries what is transient (HTTP 429 and 5xx, timeouts, refused or dropped connections) with
  exponential backoff and jitter, honouring ``Retry-After``, and reports every retry (endpoint, reason,
  attempt, wait) as a ``("retry", RetryEvent)`` event; everything else fails at once with a
  :class:`~selfinstruct.errors.BackendError` that says what the server answered;
* bounds each request as a whole by ``timeout`` (a server that sends one byte a second still times
  out) and what one reply may contribute (see :func:`~selfinstruct.engines.bound_completion`; a body
  larger than :func:`reply_byte_limit` is not read further and counts as an empty, cut-off completion);
* asks ``GET /v1/models`` for the model name when none is given and the server serves exactly one;
* sends a prompt that is a chat (:data:`~selfinstruct.engines.chat.Chat`) to ``/chat/completions`` as
  ``messages``, a text prompt to ``/completions``; :meth:`OpenAIBackend.detect_api` tells which one a
  server wants where it makes that clear (a chat-only server refuses ``/completions``).

What it deliberately does not do: streaming of tokens, logprobs, tools. It never imports vllm.

Secrets: the API key travels only in the ``Authorization`` header; credentials written into a URL
(``http://user:key@host/v1``) are taken out of it and sent as HTTP Basic auth. Neither appears in
``repr``, events, error messages (even when a server echoes them back, in clear or base64) or anything
the caller stores: :attr:`OpenAIBackend.base_urls` holds the URLs without them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import itertools
import json
import os
import queue
import random
import re
import ssl
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp

from selfinstruct import redact
from selfinstruct.engines import (
    BackendOptions,
    Completion,
    EventHandler,
    Finished,
    Prompt,
    Request,
    RetryEvent,
    Sampling,
    bound_completion,
    drain_events,
    normalize_base_url,
    strip_userinfo,
)
from selfinstruct.engines.chat import continues_reply, to_openai
from selfinstruct.engines.pacing import (
    METRICS_BYTE_LIMIT,
    EndpointLoad,
    Pacer,
    PacingSettings,
    ServerLoad,
    metrics_url,
    parse_metrics,
)
from selfinstruct.errors import BackendError, ConfigError
from selfinstruct.safetext import clean

#: Statuses worth another try: rate limiting and the server being busy, restarting or behind a proxy.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Stop strings per request that an OpenAI-compatible server accepts (vLLM's server refuses more).
MAX_STOP_SEQUENCES = 4
#: How much of a server's error message goes into ours.
MESSAGE_EXCERPT = 500
_SERVER_HINT = "Is the server (for example `vllm serve`) running? Check --base-url."
_T = TypeVar("_T")


# What servers say when a model only speaks chat: OpenAI ("This is a chat model and not supported in the
# v1/completions endpoint"), gateways ("use the chat completions endpoint", "does not support completions").
_CHAT_ONLY = re.compile(
    r"chat model|chat[ /_-]?completions? (?:endpoint|api)|(?:does not|doesn't|not) support(?:ed)? .{0,40}completion",
    re.IGNORECASE,
)


def reply_byte_limit(max_tokens: int) -> int:
    """The most bytes read from one completions reply: room for JSON escaping of a bounded completion.

    >>> reply_byte_limit(1024)
    1310720
    """
    return 1_048_576 + max(1, max_tokens) * 256


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``(url without userinfo, (user, password) or None)``.

    >>> split_credentials("http://me:s%40cret@host/v1")
    ('http://host/v1', ('me', 's@cret'))
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo = parts.netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    return strip_userinfo(url), (unquote(user), unquote(password))


def _display(url: str) -> str:
    return strip_userinfo(url)


def _excerpt(text: str, limit: int = MESSAGE_EXCERPT) -> str:
    text = " ".join(clean(text).split())  # a server's text never carries escape sequences into our messages
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _server_message(status: int, data: bytes) -> str:
    """The human part of an error reply: vLLM, llama.cpp, Ollama and OpenAI each nest it differently."""
    text = data.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return _excerpt(text) or "(empty body)"
    if isinstance(payload, dict):
        for candidate in (payload.get("error"), payload):
            if isinstance(candidate, dict):
                for key in ("message", "detail"):
                    if isinstance(candidate.get(key), str):
                        return _excerpt(candidate[key])
            elif isinstance(candidate, str):
                return _excerpt(candidate)
    return _excerpt(text)


def _describe_transport_error(exc: aiohttp.ClientError | OSError, timeout: float) -> str:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return f"no reply within {timeout:g}s ({type(exc).__name__})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed ({detail})"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return f"the server closed the connection without a complete reply ({detail})"
    if isinstance(exc, aiohttp.ClientResponseError):  # a status line or headers that do not parse
        return f"the server sent a malformed reply ({detail})"
    return f"connection error: {type(exc).__name__} ({detail})"


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; the HTTP-date form is ignored (backoff applies instead)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0) if seconds == seconds and seconds != float("inf") else None


class _Transient(Exception):
    """One failed attempt that is worth repeating."""

    def __init__(self, what: str, retry_after: float | None = None, status: int = 0) -> None:
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after
        self.status = status  # the HTTP status, 0 when no reply came


@dataclass(eq=False)
class _Endpoint:
    url: str  # API root without credentials
    session: aiohttp.ClientSession  # for requests: keep-alive connections, as many as are in flight
    metrics: aiohttp.ClientSession  # for /metrics, so that reading them never waits behind requests
    pacer: Pacer
    proxy: str | None = None  # from HTTP(S)_PROXY and NO_PROXY, read once
    proxy_headers: dict[str, str] | None = None
    outstanding: int = 0  # requests holding a slot here
    work: int = 0  # their max_tokens, summed
    cooldown_until: float = 0.0  # after a failure: avoided until then while others are healthy
    requests: int = 0
    failures: int = 0
    down_reported: bool = False
    dropped: bool = False  # answered 404 while others answer: a wrong URL among several, not used again


@dataclass(order=True)
class _Waiter:
    order: tuple[int, int]
    future: asyncio.Future[_Endpoint] = field(compare=False)
    avoid: _Endpoint | None = field(compare=False, default=None)
    work: int = field(compare=False, default=0)


@dataclass
class _Reply:
    status: int
    data: bytes
    headers: Mapping[str, str]
    too_big: bool
    endpoint: _Endpoint | None = None  # who answered
    seconds: float = 0.0  # how long the answering attempt took


class OpenAIBackend:
    """Completions from one or many OpenAI-compatible servers.

    ``base_url`` is an API root (``http://host:8000/v1``; a bare ``http://host:8000`` gets ``/v1``) or a
    list of them, all serving the same model. ``model`` None asks the server, which must then serve
    exactly one model. ``api_key`` is sent as ``Authorization: Bearer ...`` (:meth:`from_options` reads it
    from the environment).

    ``concurrency``: requests in flight per endpoint, fixed; None (the default) lets each endpoint's limit
    follow its server (:mod:`~selfinstruct.engines.pacing`; ``pacing`` holds the controller's constants).
    ``server_priority``: send each request's ``priority`` in its body (lower first), for a server started
    with ``--scheduling-policy priority``; vLLM refuses a nonzero priority otherwise.
    ``timeout``: seconds for one attempt of a request, connection to last byte. ``max_retries`` counts
    *re*-tries: a request is attempted at most ``1 + max_retries`` times, on any endpoint.
    ``retry_wait_initial``/``retry_wait_max`` shape the exponential backoff (seconds) and
    ``retry_after_max`` caps a server's ``Retry-After``. ``extra`` is merged into every request body last,
    so its fields win (for example ``{"repetition_penalty": 1.1}``). ``on_event`` receives ``("retry",
    RetryEvent)`` and ``("endpoint_down", message)`` in the thread that calls :meth:`generate`, the
    stream's ``poll``, or the constructor.

    Use it as a context manager, or call :meth:`close`, to stop its worker thread and connections.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int | None = None,
        timeout: float = 300.0,
        max_retries: int = 6,
        seed: int = 0,
        extra: Mapping[str, Any] | None = None,
        retry_wait_initial: float = 0.5,
        retry_wait_max: float = 20.0,
        retry_after_max: float = 60.0,
        on_event: EventHandler | None = None,
        server_priority: bool = False,
        pacing: PacingSettings | None = None,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ConfigError("the openai backend needs --base-url (for example http://127.0.0.1:8000/v1)")
        if concurrency is not None and concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
        if not (timeout > 0 and timeout != float("inf")):
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout}")
        if max_retries < 0:
            raise ConfigError(f"max retries cannot be negative ({max_retries})")
        roots = [split_credentials(normalize_base_url(u)) for u in urls]
        seen: set[str] = set()
        for root, _ in roots:
            if root in seen:
                raise ConfigError(f"--base-url {root} is given twice")
            seen.add(root)
        self.base_urls: list[str] = [root for root, _ in roots]
        self.base_url = self.base_urls[0]
        self.concurrency = concurrency
        self.server_priority = server_priority
        self.pacing = pacing or PacingSettings()
        self._pacing_started = False
        self._watchers: list[asyncio.Task[None]] = []
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.seed = seed
        self.extra: dict[str, Any] = dict(extra or {})
        self._continues: bool | None = None  # can_continue_reply(), once asked
        self.on_event = on_event
        self._api_key = api_key or None
        self._secrets = self._secret_forms(self._api_key, [cred for _, cred in roots])
        redact.register(*self._secrets)  # and out of every file the process writes (judgements, exports)
        self._retry_wait_initial = retry_wait_initial
        self._retry_wait_max = retry_wait_max
        self._retry_after_max = retry_after_max
        self._jitter = random.Random()
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._order = itertools.count()
        self._waiters: list[_Waiter] = []
        self.retries = 0
        self.unreadable = 0  # replies that were not JSON after every retry, counted as empty completions
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_quiet_unretrieved)
        self._thread = threading.Thread(target=self._loop.run_forever, name="selfinstruct-http", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._endpoints = self._call(self._make_clients(roots))
            self.model: str = model if model else self._detect_model()
        except BaseException:
            self.close()
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
            concurrency=options.concurrency,
            timeout=options.timeout,
            max_retries=options.max_retries,
            seed=options.seed,
            extra=options.request_fields,
            on_event=options.on_event,
            server_priority=options.server_priority,
        )

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        urls = ", ".join(self.base_urls)
        return f"OpenAIBackend(base_urls=[{urls}], model={getattr(self, 'model', None)!r}, api_key={key})"

    def capacity(self) -> int:
        """Requests the endpoints usefully take at once now: the sum of their limits, over the endpoints that
        are not cooling down after a failure (all of them when every one is)."""
        now = time.monotonic()
        usable = [e for e in self._endpoints if not e.dropped] or self._endpoints
        live = [e for e in usable if e.cooldown_until <= now] or usable
        return sum(e.pacer.limit for e in live)

    def max_capacity(self) -> int:
        """The most :meth:`capacity` can ever say, from the settings alone: per endpoint ``concurrency``
        when fixed, else the pacing ceiling (the loop derives its staleness lag from this)."""
        per_endpoint = self.concurrency if self.concurrency is not None else self.pacing.ceiling
        return per_endpoint * len(self._endpoints)

    def endpoint_loads(self) -> list[EndpointLoad]:
        """Each endpoint as the progress line shows it: the server's running and waiting requests (from its
        metrics), this client's requests in flight and limit, output tokens/s."""
        loads = []
        for e in self._endpoints:
            load = e.pacer.load
            loads.append(
                EndpointLoad(
                    e.url, e.pacer.signals, e.pacer.limit, e.outstanding,
                    None if load is None else load.running, None if load is None else load.waiting,
                    None if load is None else load.kv_usage, e.pacer.tokens_per_second(),
                )
            )  # fmt: skip
        return loads

    def endpoint_stats(self) -> dict[str, dict[str, Any]]:
        """Per endpoint, for the run ledger: requests sent, failed attempts, and the pacing: which signals
        it followed, its last limit, the server's running/waiting (last, mean over the run, peak), output
        tokens and tokens/s, and how often the limit changed, by reason."""
        return {
            e.url: {"requests": e.requests, "failures": e.failures, "in_flight": e.outstanding, **e.pacer.summary()}
            for e in self._endpoints
        }

    # -- the Backend contract -------------------------------------------------------------------

    def generate(
        self, prompts: Sequence[Prompt], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Completion]:
        """Complete ``prompts``, one request each, all in flight together; completions in prompt order.

        ``seeds[i]`` goes with prompt ``i``; without seeds each prompt gets one derived from the
        backend's ``seed`` and its position in this backend's calls, so a rerun replays them.
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        if not prompts:
            return []
        if seeds is None:
            base = next(self._order)
            seeds = [(self.seed * 1_000_003 + base * 7_919 + i) % 2**31 for i in range(len(prompts))]
        stream = self.stream()
        try:
            for i, prompt in enumerate(prompts):
                stream.submit(Request(i, prompt, sampling, int(seeds[i])))
            results: dict[int, Completion] = {}
            while len(results) < len(prompts):
                for done in stream.poll(0.25):
                    results[done.key] = done.completion
            return [results[i] for i in range(len(prompts))]
        finally:
            stream.close()

    def stream(self) -> OpenAIStream:
        """The incremental form: see :class:`~selfinstruct.engines.Stream`."""
        return OpenAIStream(self)

    # -- requests (coroutines on the worker loop) ----------------------------------------------------

    def _request_body(self, request: Request) -> dict[str, Any]:
        sampling = request.sampling
        prompt: dict[str, Any] = (
            {"prompt": request.prompt} if isinstance(request.prompt, str) else {"messages": to_openai(request.prompt)}
        )
        body: dict[str, Any] = {
            "model": self.model,
            **prompt,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
            "n": 1,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if sampling.stop:
            # The OpenAI protocol takes at most 4 stop strings, and vLLM's server enforces it (HTTP 400). The
            # loop's own stops come first; what it adds after them (a prefilled reply's demonstrations) is
            # cut to fit. In-process vLLM takes them all.
            body["stop"] = list(sampling.stop)[:MAX_STOP_SEQUENCES]
        if sampling.top_k is not None:
            body["top_k"] = sampling.top_k  # a vLLM extension; OpenAI itself would reject it
        if self.server_priority:
            body["priority"] = request.priority  # vLLM: lower is scheduled earlier
        if not isinstance(request.prompt, str) and continues_reply(request.prompt):
            # A prefilled reply to continue, not answer (vLLM's chat extensions; hosted APIs refuse them).
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body.update(self.extra)
        return body

    async def _complete(self, request: Request) -> Completion:
        body = self._request_body(request)
        max_tokens = request.sampling.max_tokens
        chat = "messages" in body
        path = "/chat/completions" if chat else "/completions"
        reply = await self._send(
            "POST", path, body, (request.priority, request.key), max_tokens, readable=_is_json_object
        )
        if not _is_json_object(reply):
            # Still not JSON after every retry: one garbled reply is data to count (an empty completion that
            # the parsers note), not the end of the run.
            self.unreadable += 1
            self._emit("warning", self._redact(
                f"an unreadable reply (HTTP {reply.status}, not JSON: {_excerpt(self._text(reply), 120) or 'empty'}) "
                f"was counted as an empty completion ({self.unreadable} so far)"
            ))  # fmt: skip
            return Completion("", None)
        if reply.too_big:
            # A reply this large is not a completion of max_tokens tokens: count it, keep nothing of it.
            return Completion("", "length", cut=True)
        completion = self._parse_completion(reply, chat=chat)
        if reply.endpoint is not None:
            reply.endpoint.pacer.on_reply(reply.seconds, completion.completion_tokens, reply.status)
        return bound_completion(completion, max_tokens)

    def _parse_completion(self, reply: _Reply, *, chat: bool = False) -> Completion:
        payload = self._json(reply)
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not choices:
            raise self._error(f"the server replied without a list of choices: {_excerpt(self._text(reply))}")
        if len(choices) != 1:
            raise self._error(f"the server returned {len(choices)} choices for one prompt")
        choice = choices[0]
        if chat:
            # A chat choice holds a message; its content is null when the model wrote nothing but a refusal,
            # a tool call or (a reasoning parser's) reasoning: an empty answer, for the parsers to count.
            message = choice.get("message") if isinstance(choice, dict) else None
            content = message.get("content", "") if isinstance(message, dict) else None
            text = "" if isinstance(message, dict) and content is None else content
        else:
            text = choice.get("text") if isinstance(choice, dict) else None
        if not isinstance(text, str):
            raise self._error(f"the server replied with a malformed choice (no text): {_excerpt(repr(choice), 200)}")
        finish = choice.get("finish_reason")
        usage = payload.get("usage") if isinstance(payload, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        return Completion(
            text,
            finish if isinstance(finish, str) else None,
            prompt_tokens=_as_count(usage.get("prompt_tokens")),
            completion_tokens=_as_count(usage.get("completion_tokens")),
        )

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        order: tuple[int, int],
        max_tokens: int,
        *,
        attempts: int | None = None,
        readable: Any = None,
    ) -> _Reply:
        """One logical request: attempted on the least busy endpoint, retried elsewhere or later while
        failures are transient; a BackendError when they are not, or when the attempts run out (``attempts``:
        at most this many, instead of ``1 + max_retries``). ``readable(reply)`` false for a 200 reply makes it
        a transient failure too, and the last such reply is returned for the caller to count."""
        attempts = attempts or self.max_retries + 1
        failed: _Endpoint | None = None
        if method == "POST" and not self._pacing_started:
            self._start_pacing()
        attempt = 0
        while attempt < attempts:
            attempt += 1
            endpoint = await self._acquire(order, failed, max_tokens)
            try:
                endpoint.requests += 1
                endpoint.pacer.note_in_flight(endpoint.outstanding)
                started = time.monotonic()
                reply = await self._attempt(endpoint, method, path, body, max_tokens)
                reply.endpoint, reply.seconds = endpoint, time.monotonic() - started
                if reply.status in RETRY_STATUSES:
                    retry_after = _parse_retry_after(reply.headers.get("Retry-After"))
                    raise _Transient(
                        f"HTTP {reply.status}: {_server_message(reply.status, reply.data)}", retry_after, reply.status
                    )
                if reply.status == 404 and self._drop(endpoint, reply, path):
                    attempt -= 1  # the endpoint's fault, not the request's: it does not use up an attempt
                    continue
                if reply.status >= 400:
                    raise self._error(self._http_error_message(endpoint.url + path, reply))
                if readable is not None and not reply.too_big and not readable(reply):
                    if attempt == attempts:
                        return reply
                    raise _Transient(f"HTTP {reply.status} with a body that is not JSON")
                return reply
            except _Transient as exc:
                endpoint.pacer.on_reply(0.0, 0, exc.status)
                endpoint.failures += 1
                failed = endpoint
                if attempt == attempts:
                    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
                    raise self._error(
                        f"{method} {endpoint.url}{path} failed after {tries}: {exc.what}. {_SERVER_HINT}"
                    ) from exc.__cause__
                wait = self._backoff(attempt, exc.retry_after)
                endpoint.cooldown_until = time.monotonic() + wait
                elsewhere = self._healthy_other(endpoint)
                if not endpoint.down_reported and len(self._endpoints) > 1 and not endpoint.dropped:
                    endpoint.down_reported = True
                    self._emit("endpoint_down", self._redact(f"{endpoint.url} failed ({exc.what}); using the others"))
                self.retries += 1
                self._emit(
                    "retry",
                    RetryEvent(endpoint.url, self._redact(exc.what), attempt, attempts, 0.0 if elsewhere else wait,
                               elsewhere),
                )  # fmt: skip
            finally:
                self._release(endpoint, max_tokens)
            if not elsewhere:
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, endpoint: _Endpoint, method: str, path: str, body: dict[str, Any] | None, max_tokens: int
    ) -> _Reply:
        limit = reply_byte_limit(max_tokens)

        async def go() -> _Reply:
            data = None if body is None else json.dumps(body).encode()
            headers = _JSON_HEADERS if body is not None else None
            request = endpoint.session.request(
                method, endpoint.url + path, data=data, headers=headers,
                proxy=endpoint.proxy, proxy_headers=endpoint.proxy_headers,
            )  # fmt: skip
            async with request as response:
                raw, too_big = await _read_bounded(response, limit)
                return _Reply(response.status, raw, response.headers, too_big)

        try:
            # The whole attempt, first byte to last, within the timeout: a drip-feeding server times out too.
            return await asyncio.wait_for(go(), self.timeout)
        except asyncio.TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
            raise _Transient(f"no complete reply within {self.timeout:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:  # refused, reset, closed early, a reply that does not parse
            raise _Transient(_describe_transport_error(exc, self.timeout)) from exc

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self._retry_after_max)
        base = min(self._retry_wait_initial * 2 ** (attempt - 1), self._retry_wait_max)
        return base + self._jitter.uniform(0, self._retry_wait_initial)

    # -- endpoints: least outstanding work, priorities, failures ---------------------------------------

    def _healthy_other(self, endpoint: _Endpoint) -> bool:
        now = time.monotonic()
        return any(e is not endpoint and not e.dropped and e.cooldown_until <= now for e in self._endpoints)

    def _drop(self, endpoint: _Endpoint, reply: _Reply, path: str) -> bool:
        """Stop using an endpoint that answered 404 while another one is left: a wrong --base-url among
        several. Reported once; False (nothing dropped) when it is the last one, whose 404 is an error."""
        if endpoint.dropped:
            return True
        if not any(e is not endpoint and not e.dropped for e in self._endpoints):
            return False
        endpoint.dropped = True
        endpoint.down_reported = True
        self._emit("endpoint_down", self._redact(
            f"{self._http_error_message(endpoint.url + path, reply)}; dropped {endpoint.url}, using the others"
        ))  # fmt: skip
        return True

    def _pick(self, avoid: _Endpoint | None) -> _Endpoint | None:
        """The endpoint with a free slot and the least outstanding work, avoiding ``avoid`` and endpoints in
        cooldown while another one will do."""
        free = [e for e in self._endpoints if e.outstanding < e.pacer.limit and not e.dropped]
        if not free:
            return None
        now = time.monotonic()
        preferred = [e for e in free if e is not avoid and e.cooldown_until <= now]
        return min(preferred or free, key=lambda e: (e.work, e.outstanding))

    async def _acquire(self, order: tuple[int, int], avoid: _Endpoint | None, work: int) -> _Endpoint:
        if not self._waiters:
            endpoint = self._pick(avoid)
            if endpoint is not None:
                endpoint.outstanding += 1
                endpoint.work += work
                return endpoint
        future: asyncio.Future[_Endpoint] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, _Waiter(order, future, avoid, work))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(future.result(), work)
            raise

    def _release(self, endpoint: _Endpoint, work: int) -> None:
        endpoint.outstanding -= 1
        endpoint.work -= work
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to the waiting requests, lowest priority number first."""
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.future.done():
                heapq.heappop(self._waiters)
                continue
            chosen = self._pick(waiter.avoid)
            if chosen is None:
                return
            heapq.heappop(self._waiters)
            chosen.outstanding += 1
            chosen.work += waiter.work
            waiter.future.set_result(chosen)

    # -- pacing: each endpoint's limit follows its server ---------------------------------------------

    def _start_pacing(self) -> None:
        """Start one watcher per endpoint (on the worker loop), with the first generation request: a backend
        used only to detect the model or the API never reads /metrics."""
        self._pacing_started = True
        loop = asyncio.get_running_loop()
        self._watchers = [loop.create_task(self._watch(endpoint)) for endpoint in self._endpoints]

    async def _watch(self, endpoint: _Endpoint) -> None:
        """About once a second: read the endpoint's ``/metrics`` and let its pacer decide (from the replies
        instead, where the server has no metrics). A server that never had metrics is asked again every
        half minute (it may have been restarted with them); the looks in between go by its replies."""
        pacer = endpoint.pacer
        interval = self.pacing.interval
        url = metrics_url(endpoint.url)
        next_try = 0.0
        while True:
            now = time.monotonic()
            answer: ServerLoad | bool | None = False  # not asked this time: a server known to have none
            if now >= next_try:
                answer = await self._read_metrics(endpoint, url, interval)
                if answer is False:
                    next_try = now + 30.0
            before = pacer.limit
            if isinstance(answer, ServerLoad) or (answer is False and pacer.has_metrics is not True):
                pacer.on_metrics(answer or None, endpoint.outstanding)
            # else: no answer in time (a busy or dead server): hold; the replies' retries tell the rest
            if pacer.limit > before:
                self._dispatch()
            await asyncio.sleep(interval)

    async def _read_metrics(self, endpoint: _Endpoint, url: str, interval: float) -> ServerLoad | bool | None:
        """The server's load from its metrics page; False when it has none (a 404, or a page without request
        counts); None when no answer came in time or the connection failed (a slow page must not stall the
        looks, and says nothing about whether the server has metrics)."""

        async def fetch() -> bytes | None:
            async with endpoint.metrics.get(
                url, proxy=endpoint.proxy, proxy_headers=endpoint.proxy_headers
            ) as response:
                if response.status != 200:
                    return b""
                data, too_big = await _read_bounded(response, METRICS_BYTE_LIMIT)
                return None if too_big else data

        try:
            data = await asyncio.wait_for(fetch(), max(2.0, 2 * interval))
        except asyncio.CancelledError:
            raise
        except Exception:  # anything at all (timeout, refused, reset, a broken transport): no answer
            return None
        if data is None:  # larger than any metrics page
            return False
        return parse_metrics(data.decode("utf-8", errors="replace")) or False

    # -- API detection ------------------------------------------------------------------------

    def detect_api(self) -> tuple[str, str]:
        """Which API to use with this server, as far as the server makes it clear, and why: ``("chat",
        reason)`` when it has no ``/completions`` route or answers it with a message saying the model is a
        chat model; else ``("completions", reason)``. One tiny request (one token) to the first endpoint."""
        body = {"model": self.model, "prompt": "Hello", "max_tokens": 1, "temperature": 0.0}
        try:
            self._call(self._send("POST", "/completions", body, (-1, -1), 1, attempts=1))
        except BackendError as exc:
            message = str(exc)
            if re.search(r"HTTP (404|405)\b", message) or _CHAT_ONLY.search(message):
                return "chat", f"{self.base_url}/completions refused a completion ({_excerpt(message, 160)})"
            # Anything else (a busy or broken server) says nothing about the API: the run finds out.
            return "completions", f"the probe of {self.base_url}/completions failed ({_excerpt(message, 160)})"
        return "completions", f"{self.base_url}/completions answers"

    def can_continue_reply(self) -> bool:
        """Whether the server continues a prefilled assistant message (``continue_final_message``): a vLLM
        server does, and says so in ``GET /models`` (its models are ``owned_by: vllm``). Anything else, or no
        answer, is taken as a server that only answers (a hosted API refuses the field). Asked once."""
        if self._continues is None:
            try:
                payload = self._json(self._call(self._send("GET", "/models", None, (-1, -1), 0, attempts=1)))
            except BackendError:
                payload = None
            data = payload.get("data") if isinstance(payload, dict) else None
            owners = {m.get("owned_by") for m in data if isinstance(m, dict)} if isinstance(data, list) else set()
            self._continues = owners == {"vllm"}
        return self._continues

    # -- model detection ----------------------------------------------------------------------

    def _detect_model(self) -> str:
        reply = self._call(self._send("GET", "/models", None, (-1, -1), 0))
        payload = self._json(reply)
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise ConfigError(
                f"{self.base_url}/models did not list its models ({_excerpt(self._text(reply), 200)}); pass --model"
            )
        ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        for model_id in ids:
            if clean(model_id) != model_id or not model_id.strip():
                raise ConfigError(
                    f"the server at {self.base_url} lists a model id holding control characters or escape "
                    f"sequences ({clean(model_id)!r} once they are removed); refusing it: pass --model"
                )
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise ConfigError(f"the server at {self.base_url} lists no models; pass --model")
        raise ConfigError(
            f"the server at {self.base_url} serves {len(ids)} models: {', '.join(ids)}; choose one with --model"
        )

    # -- plumbing -------------------------------------------------------------------------------

    async def _make_clients(self, roots: list[tuple[str, tuple[str, str] | None]]) -> list[_Endpoint]:
        headers = {"User-Agent": "selfinstruct", "Accept-Encoding": ACCEPT_ENCODING}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        tls = _tls_context()  # one for every session: loading the CA store takes tens of milliseconds
        endpoints = []
        for root, credentials in roots:
            own = dict(headers)
            if credentials and not self._api_key:  # user:password from the URL, as HTTP Basic auth
                own["Authorization"] = _basic(credentials)

            def session(own: dict[str, str] = own) -> aiohttp.ClientSession:
                # No connection limit here: the endpoint's pacer bounds what is in flight. No total timeout
                # either: each attempt as a whole is bounded by ``timeout`` (see _attempt). Bodies are read
                # raw and inflated by _read_bounded, with a bound. The proxy is the endpoint's, found once:
                # aiohttp's trust_env looks the environment up again on every request (measured: a third of
                # the client's CPU).
                return aiohttp.ClientSession(
                    headers=own,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(self.timeout, 30.0)),
                    connector=aiohttp.TCPConnector(limit=0, ssl=tls),
                    auto_decompress=False,
                )

            pacer = Pacer(self.pacing, fixed=self.concurrency)
            endpoints.append(_Endpoint(root, session(), session(), pacer, *_proxy_for(root)))
        return endpoints

    def _call(self, coroutine: Any) -> Any:
        """Run a coroutine on the worker loop and wait for it here, delivering events as they come."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return self._wait(future)

    def _wait(self, future: Future[_T]) -> _T:
        try:
            while True:
                try:
                    result = future.result(timeout=0.2)
                except FutureTimeout:
                    drain_events(self._events, self.on_event)
                    continue
                drain_events(self._events, self.on_event)
                return result
        except BaseException:
            future.cancel()
            raise

    def _emit(self, kind: str, payload: Any) -> None:
        self._events.put((kind, payload))

    @staticmethod
    def _secret_forms(api_key: str | None, credentials: Iterable[tuple[str, str] | None]) -> list[str]:
        forms = [api_key] if api_key else []
        for cred in credentials:
            if cred is None:
                continue
            user, password = cred
            pair = f"{user}:{password}"
            forms += [pair, base64.b64encode(pair.encode()).decode(), *([password] if len(password) >= 4 else [])]
        return sorted({f for f in forms if f}, key=len, reverse=True)

    def _redact(self, message: str) -> str:
        for secret in self._secrets:
            message = message.replace(secret, "<redacted>")
        return redact.redact(message)

    def _error(self, message: str) -> BackendError:
        """A BackendError whose message cannot carry a secret, even if a server echoed it."""
        return BackendError(self._redact(message))

    @staticmethod
    def _text(reply: _Reply) -> str:
        return reply.data.decode("utf-8", errors="replace")

    def _json(self, reply: _Reply) -> Any:
        try:
            return json.loads(reply.data)
        except ValueError:
            raise self._error(
                f"the server replied with something that is not JSON (HTTP {reply.status}): "
                f"{_excerpt(self._text(reply), 200) or '(empty body)'}"
            ) from None

    def _http_error_message(self, url: str, reply: _Reply) -> str:
        status = reply.status
        message = f"{url} answered HTTP {status}: {_server_message(status, reply.data)}"
        if status in (401, 403):
            message += " (check the API key in SELFINSTRUCT_API_KEY or OPENAI_API_KEY)"
        elif status == 404:
            message += " (check --base-url, usually ending in /v1, and --model)"
        elif status == 400 and self.server_priority and "priority" in message.lower():
            message += (
                " (--server-priority sends each request's priority: start the server with "
                "--scheduling-policy priority, or leave --server-priority off)"
            )
        return message

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Cancel what is in flight, close the connections and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():

            async def shutdown() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for endpoint in getattr(self, "_endpoints", []):
                    for session in (endpoint.session, endpoint.metrics):
                        await session.close()

            with contextlib.suppress(Exception):  # closing is best effort; the thread is a daemon
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()
        drain_events(self._events, self.on_event)

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class OpenAIStream:
    """The incremental form of :class:`OpenAIBackend` (see :class:`~selfinstruct.engines.Stream`)."""

    def __init__(self, backend: OpenAIBackend) -> None:
        self._backend = backend
        self._futures: dict[int, Future[Completion]] = {}
        self._started: dict[int, float] = {}
        self._done: queue.SimpleQueue[int] = queue.SimpleQueue()

    @property
    def in_flight(self) -> int:
        return len(self._futures)

    def capacity(self) -> int | None:
        """Requests the servers usefully hold now: the sum of the live endpoints' limits (see
        :meth:`OpenAIBackend.capacity`)."""
        return self._backend.capacity()

    def max_capacity(self) -> int | None:
        return self._backend.max_capacity()

    def endpoint_loads(self) -> list[EndpointLoad]:
        return self._backend.endpoint_loads()

    def submit(self, request: Request) -> None:
        if request.key in self._futures:
            raise ValueError(f"request key {request.key} is already in flight")
        future = asyncio.run_coroutine_threadsafe(self._backend._complete(request), self._backend._loop)
        self._futures[request.key] = future
        self._started[request.key] = time.monotonic()
        key = request.key

        def done(_future: Future[Completion]) -> None:
            self._done.put(key)

        future.add_done_callback(done)

    def poll(self, timeout: float) -> list[Finished]:
        backend = self._backend
        finished: list[Finished] = []
        try:
            key: int | None = self._done.get(timeout=max(timeout, 0.0)) if timeout > 0 else self._done.get_nowait()
        except queue.Empty:
            key = None
        while key is not None:
            future = self._futures.pop(key, None)
            started = self._started.pop(key, 0.0)
            if future is not None and not future.cancelled():
                error = future.exception()
                if error is not None:
                    drain_events(backend._events, backend.on_event)
                    raise error
                finished.append(Finished(key, future.result(), time.monotonic() - started))
            try:
                key = self._done.get_nowait()
            except queue.Empty:
                key = None
        drain_events(backend._events, backend.on_event)
        return finished

    def cancel(self, keys: Iterable[int]) -> None:
        for key in keys:
            future = self._futures.pop(key, None)
            self._started.pop(key, None)
            if future is not None:
                future.cancel()

    def close(self) -> None:
        self.cancel(list(self._futures))


def _quiet_unretrieved(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The worker loop's exception handler: a request that failed after the run stopped waiting for it (the
    run already ended on another request's error, or cancelled it) is not news; asyncio would print it with
    a traceback when the task is collected. Anything else goes to asyncio's default handler."""
    if context.get("message", "").startswith("Task exception was never retrieved"):
        return
    loop.default_exception_handler(context)


#: What we accept: compressed bodies are inflated by :func:`_decoder`, with a bound on what they inflate to.
ACCEPT_ENCODING = "gzip, deflate"


def _decoder(content_encoding: str) -> Any:
    """``inflate(raw, max_out) -> (bytes, more)`` for a Content-Encoding: at most ``max_out`` bytes come out
    of each call, and ``more`` says that the chunk held more than that (the reply is too large)."""
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return lambda raw, max_out: (raw, False)
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise _Transient(f"a reply in an encoding we did not ask for (Content-Encoding: {_excerpt(coding, 40)})")
    state: dict[str, Any] = {"d": zlib.decompressobj(wbits=47), "started": False}  # 47: gzip or zlib header

    def inflate(raw: bytes, max_out: int) -> tuple[bytes, bool]:
        d = state["d"]
        try:
            out = d.decompress(raw, max_out)
            state["started"] = state["started"] or bool(raw)
        except zlib.error:
            if coding != "deflate" or state["started"]:
                raise _Transient("a compressed reply that does not inflate") from None
            state["d"] = d = zlib.decompressobj(wbits=-15)  # a raw deflate stream (some servers send it)
            try:
                out = d.decompress(raw, max_out)
            except zlib.error:
                raise _Transient("a compressed reply that does not inflate") from None
        return out, bool(d.unconsumed_tail)

    return inflate


#: The header of a request with a JSON body.
_JSON_HEADERS = {"Content-Type": "application/json"}


def _proxy_for(url: str) -> tuple[str | None, dict[str, str] | None]:
    """The proxy the environment names for ``url`` (``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``, in either
    case) and the headers that log in to it (credentials in the proxy's URL), or ``(None, None)`` where
    ``NO_PROXY`` exempts the host or no proxy is set."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):  # type: ignore[attr-defined]
        return None, None
    proxy = proxy if "://" in proxy else f"http://{proxy}"
    bare, credentials = split_credentials(proxy)
    if credentials is None:
        return bare, None
    return bare, {"Proxy-Authorization": _basic(credentials)}


def _basic(credentials: tuple[str, str]) -> str:
    """An HTTP Basic authorization value for ``(user, password)``."""
    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()


def _tls_context() -> ssl.SSLContext:
    """The system's CA store (OpenSSL honours SSL_CERT_FILE and SSL_CERT_DIR), plus certifi's bundle where
    it is installed and neither variable is set, as most Python HTTP clients trust it."""
    context = ssl.create_default_context()
    if not (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")):
        with contextlib.suppress(ImportError, OSError, ssl.SSLError):
            import certifi

            context.load_verify_locations(certifi.where())
    return context


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """A reply's body, inflated here with a bound: at most ``limit`` bytes, and whether there was more.
    Inflating a whole compressed chunk before checking its size would let a 40 KB gzip chunk become 40 MB,
    so the raw bytes are read and inflated step by step."""
    chunks: list[bytes] = []
    size = 0
    inflate = _decoder(response.headers.get("Content-Encoding", ""))
    async for raw in response.content.iter_any():
        chunk, more = inflate(raw, limit - size + 1)
        size += len(chunk)
        if size > limit or more:
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


def _is_json_object(reply: _Reply) -> bool:
    """Whether a reply's body is a JSON object (a too-large body counts: it is handled as cut off)."""
    if reply.too_big:
        return True
    try:
        return isinstance(json.loads(reply.data), dict)
    except ValueError:
        return False


def _as_count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


__all__ = ["RETRY_STATUSES", "OpenAIBackend", "OpenAIStream", "normalize_base_url", "reply_byte_limit"]
