"""A loopback server that speaks enough of the OpenAI completions protocol to stand in for ``vllm serve``.

Every test that needs a language model can talk to a real HTTP server on 127.0.0.1 instead of patching
aiohttp: the backend's batching, retries and error messages are exercised for real.

    with FakeLM(respond=lambda prompt, body: ("1. Write a poem.", "stop")) as lm:
        backend = OpenAIBackend(lm.base_url)           # the model is detected from GET /v1/models
        ...
        assert len(lm.requests) == 1                    # JSON bodies of POST /v1/completions

What the server does:

* ``GET /v1/models`` lists ``models``, each ``owned_by`` the given owner (``"vllm"`` stands in for vLLM);
* ``POST /v1/completions`` calls ``respond(prompt, body)`` for each prompt (a ``str`` or a list), then
  applies the request's ``stop`` sequences (finish ``"stop"``) and ``max_tokens`` counted in
  whitespace-separated words (finish ``"length"``), as a real server would. Token counts in ``usage``
  are word counts. A ``model`` that is not in ``models`` gets a 404 like vLLM's;
* fault injection: :meth:`FakeLM.fail_next` answers the next requests with an HTTP error,
  :meth:`FakeLM.drop_next` closes their connections without a reply, ``delay`` slows every request,
  ``required_api_key`` demands ``Authorization: Bearer <key>``, ``shuffle_choices`` returns choices
  out of order; ``respond`` may also raise :class:`Fault` to fail a request depending on its prompt;
* ``drip`` sends completions replies one byte at a time, ``drip`` seconds apart (a server that never
  stalls long enough for a read timeout, yet never finishes);
* timing: ``jitter=(low, high)`` delays each request by a random time in that range (drawn from
  ``jitter_seed``), so that concurrent requests finish in a shuffled order; ``answered`` lists the
  prompts of completions requests in the order their replies were sent.

* ``POST /v1/chat/completions`` calls ``respond(text, body)`` with the messages' contents joined by blank
  lines (``body["messages"]`` holds them), with the same limits; its bodies are kept in ``chat_requests``.
  A reply text of None is sent as ``"content": null``. ``apis`` says which endpoints exist: without
  ``"completions"`` the server answers ``/v1/completions`` with OpenAI's 404 for a chat model; without
  ``"chat"`` it answers ``/v1/chat/completions`` as vLLM does for a model without a chat template (400).

``GET /metrics`` gets a 404, as from a server without metrics (llama.cpp without ``--metrics``, Ollama):
the backend then paces by latency and 429/503. Those reads are only counted (``metrics_reads``): they
take no fault, no ``log`` entry, no place in ``in_flight``. For a server that batches and shows vLLM's
metrics, see :mod:`batchlm`.

Faults are consumed by the next requests in arrival order, whatever their path (``GET /v1/models``
included). ``log`` records ``(method, path, outcome)`` for every request, outcome being the status
code sent or ``"dropped"``; ``requests`` holds every completions body received, failed ones included.
"""

from __future__ import annotations

import json
import random
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Respond = Callable[[str, dict[str, Any]], tuple[str, str]]


def echo(prompt: str, body: dict[str, Any]) -> tuple[str, str]:
    """The default reply: the prompt itself, prefixed, so tests can check which prompt got which text."""
    return f"echo: {prompt}", "stop"


class Fault(Exception):
    """Raise from ``respond`` to answer the whole request with an HTTP error."""

    def __init__(self, status: int, body: str | None = None, retry_after: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.retry_after = retry_after


@dataclass
class _Planned:
    status: int | None  # None drops the connection
    body: str | None = None
    retry_after: str | None = None


def _error_body(message: str, status: int) -> str:
    return json.dumps({"object": "error", "message": message, "type": "FakeLMError", "code": status})


def cut_completion(text: str, finish_reason: str, stop: list[str], max_tokens: int | None) -> tuple[str, str]:
    """Cut ``text`` at the first stop sequence, then at ``max_tokens`` words.

    >>> cut_completion("a b c\\n\\nd", "stop", ["\\n\\n"], None)
    ('a b c', 'stop')
    >>> cut_completion("one two three", "stop", [], 2)
    ('one two', 'length')
    """
    cuts = [text.find(s) for s in stop if s and s in text]
    if cuts:
        text, finish_reason = text[: min(cuts)], "stop"
    if max_tokens is not None:
        words = list(re.finditer(r"\S+", text))
        if len(words) > max_tokens:
            text = text[: words[max_tokens - 1].end()] if max_tokens > 0 else ""
            finish_reason = "length"
    return text, finish_reason


class FakeLM:
    """An OpenAI-compatible completions server on ``127.0.0.1``, started by ``with`` (or :meth:`start`)."""

    def __init__(
        self,
        respond: Respond | None = None,
        *,
        models: list[str] | None = None,
        delay: float = 0.0,
        required_api_key: str | None = None,
        shuffle_choices: bool = False,
        apply_limits: bool = True,
        include_usage: bool = True,
        jitter: tuple[float, float] | None = None,
        jitter_seed: int = 0,
        drip: float = 0.0,
        apis: tuple[str, ...] = ("completions", "chat"),
        owned_by: str = "fakelm",
    ) -> None:
        self.respond: Respond = respond or echo
        self.owned_by = owned_by
        self.models: list[str] = list(models) if models is not None else ["fake-model"]
        self.delay = delay
        self.required_api_key = required_api_key
        self.shuffle_choices = shuffle_choices
        self.apply_limits = apply_limits
        self.include_usage = include_usage
        self.jitter = jitter
        self.drip = drip
        self._jitter_rng = random.Random(jitter_seed)
        self.answered: list[str] = []
        self.apis = apis
        self.requests: list[dict[str, Any]] = []
        self.chat_requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.log: list[tuple[str, str, int | str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.metrics_reads = 0
        self._lock = threading.Lock()
        self._planned: deque[_Planned] = deque()
        self._shuffler = random.Random(0)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- fault injection ------------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1, body: str | None = None, retry_after: str | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (body: a vLLM-style JSON error by default)
        and, when given, a ``Retry-After`` header."""
        with self._lock:
            self._planned.extend(_Planned(status, body, retry_after) for _ in range(times))

    def drop_next(self, times: int = 1) -> None:
        """Read the next ``times`` requests, then close their connections without replying."""
        with self._lock:
            self._planned.extend(_Planned(None) for _ in range(times))

    @property
    def completion_requests(self) -> int:
        """How many ``POST /v1/completions`` were answered with 200."""
        with self._lock:
            return sum(1 for m, p, o in self.log if m == "POST" and p.endswith("/completions") and o == 200)

    # -- lifetime -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeLM is not started; use it in a `with` block")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeLM:
        server = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fakelm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeLM:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- request handling (called from server threads) -------------------------------------------

    def _next_planned(self) -> _Planned | None:
        with self._lock:
            return self._planned.popleft() if self._planned else None

    def _record(self, method: str, path: str, outcome: int | str) -> None:
        with self._lock:
            self.log.append((method, path, outcome))

    def _complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = body.get("model")
        if model is not None and model not in self.models:
            return 404, {"object": "error", "message": f"The model `{model}` does not exist.", "code": 404}
        raw = body.get("prompt")
        prompts = [raw] if isinstance(raw, str) else raw
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            return 400, {"object": "error", "message": "prompt must be a string or a list of strings"}
        n = int(body.get("n") or 1)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        max_tokens = body.get("max_tokens")
        choices = []
        completion_words = 0
        for i, prompt in enumerate(prompts):
            for j in range(n):
                text, finish = self.respond(prompt, body)
                if self.apply_limits:
                    text, finish = cut_completion(text, finish, stop, max_tokens)
                completion_words += len(text.split())
                choices.append({"index": i * n + j, "text": text, "finish_reason": finish, "logprobs": None})
        if self.shuffle_choices:
            with self._lock:
                self._shuffler.shuffle(choices)
        prompt_words = sum(len(p.split()) for p in prompts)
        reply: dict[str, Any] = {
            "id": f"cmpl-fake-{time.monotonic_ns()}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model or self.models[0],
            "choices": choices,
        }
        if self.include_usage:
            reply["usage"] = {
                "prompt_tokens": prompt_words,
                "completion_tokens": completion_words,
                "total_tokens": prompt_words + completion_words,
            }
        return 200, reply

    def _chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = body.get("model")
        if model is not None and model not in self.models:
            return 404, {"object": "error", "message": f"The model `{model}` does not exist.", "code": 404}
        messages = body.get("messages")
        roles = ("system", "user", "assistant")
        ok = (
            isinstance(messages, list)
            and messages
            and all(
                isinstance(m, dict) and m.get("role") in roles and isinstance(m.get("content"), str) for m in messages
            )
        )
        if not ok:
            return 400, {"object": "error", "message": "messages must be a list of {role, content} objects"}
        text_in = "\n\n".join(m["content"] for m in messages)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        text, finish = self.respond(text_in, body)
        if text is not None and self.apply_limits:
            text, finish = cut_completion(text, finish, stop, body.get("max_tokens"))
        reply: dict[str, Any] = {
            "id": f"chatcmpl-fake-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model or self.models[0],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        }
        if self.include_usage:
            words_in, words_out = len(text_in.split()), len((text or "").split())
            reply["usage"] = {
                "prompt_tokens": words_in,
                "completion_tokens": words_out,
                "total_tokens": words_in + words_out,
            }
        return 200, reply


class _QuietServer(ThreadingHTTPServer):
    """Daemon handler threads; a client that hung up (a timeout in a test) is not an error worth a trace."""

    daemon_threads = True
    request_queue_size = 512  # many clients connect at once, as they would to a vLLM server

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def _make_handler(lm: FakeLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeLM/1"
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in separate writes: without this, Nagle's algorithm and delayed ACKs
            # add 40 ms to every reply.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def _handle(self, method: str) -> None:
            if method == "GET" and self.path.split("?", 1)[0].rstrip("/") == "/metrics":
                with lm._lock:
                    lm.metrics_reads += 1
                data = b'{"detail":"Not Found"}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            with lm._lock:
                lm.in_flight += 1
                lm.max_in_flight = max(lm.max_in_flight, lm.in_flight)
            try:
                self._serve(method)
            finally:
                with lm._lock:
                    lm.in_flight -= 1

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0].rstrip("/")
            body: dict[str, Any] | None = None
            if method == "POST":
                try:
                    parsed = json.loads(raw or b"null")
                except ValueError:
                    parsed = None
                body = parsed if isinstance(parsed, dict) else None
            with lm._lock:
                lm.headers.append(dict(self.headers.items()))
                if method == "POST" and path == "/v1/completions" and body is not None:
                    lm.requests.append(body)
                if method == "POST" and path == "/v1/chat/completions" and body is not None:
                    lm.chat_requests.append(body)
            if lm.delay:
                time.sleep(lm.delay)
            if lm.jitter is not None:
                with lm._lock:
                    pause = lm._jitter_rng.uniform(*lm.jitter)
                time.sleep(pause)

            planned = lm._next_planned()
            if planned is not None and planned.status is None:
                lm._record(method, path, "dropped")
                self.close_connection = True
                return
            if planned is not None:
                self._error(method, path, planned.status or 500, planned.body, planned.retry_after)
                return
            key = lm.required_api_key
            if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
                self._error(method, path, 401, _error_body("invalid API key", 401), None)
                return

            if method == "GET" and path == "/v1/models":
                data = [{"id": m, "object": "model", "owned_by": lm.owned_by} for m in lm.models]
                self._send(method, path, 200, json.dumps({"object": "list", "data": data}))
            elif method == "POST" and path == "/v1/completions" and "completions" not in lm.apis:
                message = (
                    "This is a chat model and not supported in the v1/completions endpoint. "
                    "Did you mean v1/chat/completions?"
                )
                self._error(method, path, 404, _error_body(message, 404))
            elif method == "POST" and path == "/v1/chat/completions" and "chat" not in lm.apis:
                message = (
                    "As of transformers v4.44, default chat template is no longer allowed, so you must provide a chat "
                    "template if the tokenizer does not define one."
                )
                self._error(method, path, 400, _error_body(message, 400))
            elif method == "POST" and path == "/v1/chat/completions":

                def chat_prompts(b: dict[str, Any]) -> list[str]:
                    return ["\n\n".join(str(m.get("content")) for m in b.get("messages") or [])]

                self._answer(method, path, body, lm._chat, chat_prompts)
            elif method == "POST" and path == "/v1/completions":

                def completion_prompts(b: dict[str, Any]) -> list[str]:
                    prompt = b.get("prompt")
                    return prompt if isinstance(prompt, list) else [str(prompt)]

                self._answer(method, path, body, lm._complete, completion_prompts)
            else:
                self._error(method, path, 404, _error_body(f"no route for {method} {path}", 404))

        def _answer(
            self,
            method: str,
            path: str,
            body: dict[str, Any] | None,
            handle: Callable[[dict[str, Any]], tuple[int, Any]],
            prompts_of: Callable[[dict[str, Any]], list[str]],
        ) -> None:
            """Answer one generation request with ``handle``, recording its prompts once it succeeded."""
            if body is None:
                self._error(method, path, 400, _error_body("request body must be a JSON object", 400))
                return
            try:
                status, reply = handle(body)
            except Fault as fault:
                self._error(method, path, fault.status, fault.body, fault.retry_after)
                return
            except Exception as exc:  # a broken respond() shows up as a 500, as on a real server
                self._error(method, path, 500, _error_body(f"respond failed: {exc!r}", 500))
                return
            with lm._lock:
                lm.answered.extend(prompts_of(body))
            self._send(method, path, status, json.dumps(reply))

        def _error(self, method: str, path: str, status: int, body: str | None, retry_after: str | None = None) -> None:
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            text = body if body is not None else _error_body(f"injected HTTP {status}", status)
            self._send(method, path, status, text, headers)

        def _send(self, method: str, path: str, status: int, text: str, headers: dict[str, str] | None = None) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            lm._record(method, path, status)  # before the reply, so a client that got it sees the log
            if lm.drip and path.endswith("/completions"):
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(lm.drip)
                return
            self.wfile.write(data)

    return Handler
