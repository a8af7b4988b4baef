"""A loopback OpenAI-compatible server that batches like an engine: the HTTP stand-in for ``vllm serve``.

Where :mod:`fakelm` answers each request on its own thread after a fixed delay, this one schedules like a
continuous-batching engine, on one asyncio event loop (keep-alive connections, no thread per request), so
it keeps up with the rates it is used to measure:

* at most ``max_num_seqs`` sequences **run**; the rest **wait**, first come first served (with
  ``priority_scheduling``, lowest ``priority`` field first, as ``vllm serve --scheduling-policy priority``);
* one engine step gives every running sequence one token and takes ``step_base + step_per_seq * running``
  seconds (sleeping, as a GPU would, so the client's own work runs beside it); a finished sequence's slot
  goes to a waiting one at the next step;
* ``GET /metrics`` answers in Prometheus text with vLLM's names: ``vllm:num_requests_running``,
  ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``, ``vllm:num_preemptions_total``,
  ``vllm:generation_tokens_total``. The KV cache holds ``kv_tokens`` tokens (each running sequence's prompt
  and output so far); when the running sequences outgrow it, the latest admitted is preempted: it goes back
  to the front of the queue and starts again, as vLLM recomputes it;
* like vLLM, a request with a ``priority`` other than 0 is refused (400) unless ``priority_scheduling``.

Knobs for tests: ``metrics=False`` answers ``/metrics`` with 404 (llama.cpp without ``--metrics``, Ollama,
hosted APIs); ``max_waiting`` answers 503 once that many wait (a server with a bounded queue);
``phantom_waiting`` adds that many to the reported waiting count (another client's queue).

    with BatchLM(max_num_seqs=8) as lm:
        backend = OpenAIBackend(lm.base_url)
        ...
        lm.history          # (start, seconds, running, waiting) of every step

``respond(prompt, body)`` gives ``(text, tokens)``: the completion and how many steps it takes (cut at the
request's ``max_tokens``). The default echoes the prompt, one token per word.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

Respond = Callable[[str, dict[str, Any]], tuple[str, int]]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}


def echo(prompt: str, body: dict[str, Any]) -> tuple[str, int]:
    text = f"echo: {prompt}"
    return text, len(text.split())


@dataclass(order=True)
class _Sequence:
    order: tuple[int, int]
    prompt_tokens: int = field(compare=False)
    tokens: int = field(compare=False)  # output tokens it takes
    text: str = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)
    done: int = field(compare=False, default=0)


class BatchLM:
    """The stand-in engine server on ``127.0.0.1``; started by ``with`` (or :meth:`start`)."""

    def __init__(
        self,
        respond: Respond | None = None,
        *,
        max_num_seqs: int = 256,
        step_base: float = 0.010,
        step_per_seq: float = 0.0001,
        kv_tokens: int | None = None,
        metrics: bool = True,
        max_waiting: int | None = None,
        priority_scheduling: bool = False,
        models: tuple[str, ...] = ("stand-in",),
        keep_history: bool = True,
    ) -> None:
        self.respond: Respond = respond or echo
        self.max_num_seqs = max_num_seqs
        self.step_base = step_base
        self.step_per_seq = step_per_seq
        self.kv_tokens = kv_tokens if kv_tokens is not None else max_num_seqs * 2048
        self.metrics = metrics
        self.max_waiting = max_waiting
        self.priority_scheduling = priority_scheduling
        self.models = models
        self.keep_history = keep_history
        self.phantom_waiting = 0
        # what happened
        self.history: list[tuple[float, float, int, int]] = []  # (start, seconds, running, waiting) per step
        self.steps = 0
        self.sequence_steps = 0
        self.tokens = 0
        self.busy = 0.0
        self.preemptions = 0
        self.requests = 0  # completions requests received
        self.refused: Counter[int] = Counter()  # status -> how many
        self.metrics_reads = 0
        self.priorities: list[int] = []  # priority of each sequence, in the order the engine admitted them
        self.max_queued = 0  # the most running + waiting at once
        self.first_request: float | None = None
        self.last_step_end = 0.0
        # the engine
        self._waiting: list[_Sequence] = []  # a heap on (priority or 0, arrival)
        self._running: list[_Sequence] = []
        self._arrivals = itertools.count()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifetime -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("BatchLM is not started; use it in a `with` block")
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self) -> BatchLM:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # pragma: no cover - a port that cannot be bound
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="batchlm", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _open(self) -> None:
        self._wake = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=2048)
        self._port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._engine())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = self._thread = None
        self._port = 0

    def __enter__(self) -> BatchLM:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the engine -----------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _kv_used(self) -> int:
        return sum(s.prompt_tokens + s.done for s in self._running)

    async def _engine(self) -> None:
        assert self._wake is not None
        while True:
            if not self._running and not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            started = time.perf_counter()
            while self._waiting and len(self._running) < self.max_num_seqs:
                seq = heapq.heappop(self._waiting)
                if seq.future.done():  # the client went away while it waited
                    continue
                self._running.append(seq)
                self.priorities.append(seq.order[0])
            # Out of cache: the latest admitted goes back to the queue and starts over (vLLM recomputes it).
            while len(self._running) > 1 and self._kv_used() + len(self._running) > self.kv_tokens:
                seq = self._running.pop()
                seq.done = 0
                heapq.heappush(self._waiting, seq)
                self.preemptions += 1
            n = len(self._running)
            waiting = len(self._waiting)
            await asyncio.sleep(self.step_base + self.step_per_seq * n)
            still = []
            for seq in self._running:
                if seq.future.done():  # cancelled by a closed connection: its slot frees now
                    continue
                seq.done += 1
                if seq.done >= seq.tokens:
                    seq.future.set_result(None)
                else:
                    still.append(seq)
            self._running = still
            end = time.perf_counter()
            self.steps += 1
            self.sequence_steps += n
            self.tokens += n
            self.busy += end - started
            self.last_step_end = end
            if self.keep_history:
                self.history.append((started, end - started, n, waiting))

    def metrics_text(self) -> str:
        """The ``/metrics`` page, in Prometheus text format with vLLM's names."""
        label = f'{{engine="0",model_name="{self.models[0]}"}}'
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{label} {float(len(self._running))}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{label} {float(len(self._waiting) + self.phantom_waiting)}",
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{label} {min(1.0, self._kv_used() / self.kv_tokens)}",
            "# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.",
            "# TYPE vllm:num_preemptions_total counter",
            f"vllm:num_preemptions_total{label} {float(self.preemptions)}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{label} {float(self.tokens)}",
        ]
        return "\n".join(lines) + "\n"

    # -- HTTP -----------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # so that stop() ends the connections too
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) < 2:
                    return
                method, path = parts[0], parts[1].split("?", 1)[0].rstrip("/")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                raw = await reader.readexactly(length) if length else b""
                status, payload, content_type = await self._route(method, path, raw)
                keep = headers.get("connection", "").lower() != "close"
                reason = _REASONS.get(status, "Error")
                connection = "keep-alive" if keep else "close"
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: {connection}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # the client went away, or the server is stopping
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _route(self, method: str, path: str, raw: bytes) -> tuple[int, bytes, str]:
        if method == "GET" and path == "/metrics":
            self.metrics_reads += 1
            if not self.metrics:
                return 404, b'{"detail":"Not Found"}', "application/json"
            return 200, self.metrics_text().encode(), "text/plain; version=0.0.4; charset=utf-8"
        if method == "GET" and path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "batchlm"} for m in self.models]
            return 200, json.dumps({"object": "list", "data": data}).encode(), "application/json"
        if method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return self._error(400, "request body must be a JSON object")
            return await self._generate(body, chat=path.endswith("/chat/completions"))
        return self._error(404, f"no route for {method} {path}")

    def _error(self, status: int, message: str) -> tuple[int, bytes, str]:
        self.refused[status] += 1
        body = {"object": "error", "message": message, "type": "BatchLMError", "code": status}
        return status, json.dumps(body).encode(), "application/json"

    async def _generate(self, body: dict[str, Any], *, chat: bool) -> tuple[int, bytes, str]:
        self.requests += 1
        if self.first_request is None:
            self.first_request = time.perf_counter()
        priority = body.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            return self._error(400, "priority must be an integer")
        if priority != 0 and not self.priority_scheduling:
            return self._error(400, f"Got priority {priority} but Priority scheduling is not enabled.")
        if self.max_waiting is not None and len(self._waiting) >= self.max_waiting:
            return self._error(503, "the queue is full")
        if chat:
            messages = body.get("messages")
            prompt = "\n\n".join(str(m.get("content")) for m in messages or [] if isinstance(m, dict))
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                return self._error(400, "prompt must be a string")
        text, tokens = self.respond(prompt, body)
        max_tokens = body.get("max_tokens")
        finish = "stop"
        if isinstance(max_tokens, int) and tokens > max_tokens:
            tokens, finish = max(max_tokens, 1), "length"
        tokens = max(1, tokens)
        prompt_tokens = len(prompt.split())
        assert self._loop is not None and self._wake is not None
        future: asyncio.Future[None] = self._loop.create_future()
        order = (priority if self.priority_scheduling else 0, next(self._arrivals))
        heapq.heappush(self._waiting, _Sequence(order, prompt_tokens, tokens, text, future))
        self.max_queued = max(self.max_queued, len(self._waiting) + len(self._running))
        self._wake.set()
        try:
            await future
        finally:
            if not future.done():
                future.cancel()
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens}
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
        choice["finish_reason"] = finish
        reply = {
            "id": f"cmpl-batchlm-{order[1]}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or self.models[0],
            "choices": [choice],
            "usage": usage,
        }
        return 200, json.dumps(reply).encode(), "application/json"

    # -- what happened ----------------------------------------------------------------------------

    def mean_running(self, start: float, end: float) -> float:
        """Running sequences between ``start`` and ``end`` (``time.perf_counter`` values), weighted by time;
        time with no step counts as 0 running."""
        covered = 0.0
        for s, seconds, n, _ in self.history:
            overlap = min(s + seconds, end) - max(s, start)
            if overlap > 0:
                covered += overlap * n
        return covered / max(end - start, 1e-9)

    def mean_waiting(self, start: float, end: float) -> float:
        """Waiting requests between ``start`` and ``end``, weighted by time."""
        covered = 0.0
        for s, seconds, _, w in self.history:
            overlap = min(s + seconds, end) - max(s, start)
            if overlap > 0:
                covered += overlap * w
        return covered / max(end - start, 1e-9)
