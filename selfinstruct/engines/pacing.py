"""How many requests each server gets at once, decided from the server's own signals.

A vLLM server batches up to ``max_num_seqs`` sequences; what it receives beyond that waits in its queue,
first come first served, where the client's priorities no longer count. So the OpenAI backend keeps, per
endpoint, a *limit* on its requests in flight and moves it with what the server says about itself:

* **the server's metrics** (``GET /metrics``, Prometheus text, about once a second): vLLM's
  ``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc`` (before vLLM
  V1: ``vllm:gpu_cache_usage_perc``) and the counter ``vllm:num_preemptions_total``; SGLang's
  ``sglang:num_running_reqs``, ``sglang:num_queue_reqs`` and ``sglang:token_usage`` are read the same
  way. Series of one name are summed (a data-parallel server reports one per engine), cache usage is the
  highest. :func:`parse_metrics` reads them, :meth:`Pacer.on_metrics` decides;
* **without metrics** (llama.cpp without ``--metrics``, Ollama, hosted APIs): the replies themselves.
  HTTP 429 or 503 means the server is over its limit; a per-token latency that jumps to twice its recent
  trend while the limit held means requests queue (right after a growth, slower steps are the batch
  filling). :meth:`Pacer.on_reply` collects them, :meth:`Pacer.on_interval` decides.

The rule is additive increase, multiplicative decrease (AIMD), with the server's numbers making both
steps informed:

* **grow** while the limit is what holds requests back (the client had that many in flight since the last
  look), nothing waits on the server and its KV cache has room: by half while starting (until the first
  sign of a full server; half, not double, so that the probe past a full engine queues at most a third of
  what it runs), then by a few (``headroom``: 5% of the running sequences, at least 4), or, while below the
  most the server was seen running at once (after a cut for a queue that has gone), half the way back;
* **shrink** when more than ``headroom`` requests wait, on two looks in a row (one look can catch a burst of
  arrivals between two engine steps): by the excess, at most by half (a queue of a few
  requests is kept on purpose: it covers the time the client takes to send the next request after one
  finishes, so the engine never runs short); when preemptions climb (the KV cache is overcommitted): by a
  quarter; without metrics, by half on a 429/503 or a latency jump, once per look. A cut shows on the
  server only as requests finish, so the requests this client still holds beyond its new limit are taken
  off the waiting count (and preemptions while they drain are not counted again): one queue, one cut.

A fixed ``--concurrency`` turns the controller off for that run (the limit stays where it was put); the
metrics are still read, to show and record.

This module has no I/O: the backend fetches ``/metrics`` and times the replies, and passes what it saw in.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

#: Metric names, in order of preference: the first name present wins.
RUNNING_METRICS = ("vllm:num_requests_running", "sglang:num_running_reqs")
WAITING_METRICS = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
KV_USAGE_METRICS = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")
PREEMPTION_METRICS = ("vllm:num_preemptions_total", "vllm:num_preemptions")

#: Statuses that say "too much at once" (rather than "broken"): the fallback backs off on them.
OVERLOAD_STATUSES = frozenset({429, 503})

#: The most bytes of a ``/metrics`` page read (vLLM's, histograms included, is well under 1 MiB).
METRICS_BYTE_LIMIT = 4 * 1024 * 1024

_SAMPLE = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)")


@dataclass(frozen=True, slots=True)
class ServerLoad:
    """What a server said about itself in one ``/metrics`` page. ``kv_usage`` is a share (0 to 1) and
    ``preemptions`` a running total; each is None when the page did not have it."""

    running: int
    waiting: int
    kv_usage: float | None = None
    preemptions: float | None = None


def _sample_value(line: str) -> tuple[str, float] | None:
    """``(name, value)`` of one sample line of the Prometheus text format, None for anything else.

    >>> _sample_value('vllm:num_requests_running{engine="0",model_name="m"} 12.0')
    ('vllm:num_requests_running', 12.0)
    >>> _sample_value('x{label="a } b"} 3 1712000000000')
    ('x', 3.0)
    """
    match = _SAMPLE.match(line)
    if match is None:
        return None
    name, rest = match.group(1), line[match.end() :]
    if rest.startswith("{"):  # labels: skip to the closing brace, minding quoted values and escapes
        i, quoted = 1, False
        while i < len(rest):
            c = rest[i]
            if quoted and c == "\\":
                i += 2
                continue
            if c == '"':
                quoted = not quoted
            elif c == "}" and not quoted:
                break
            i += 1
        else:
            return None
        rest = rest[i + 1 :]
    parts = rest.split()
    if not parts or (rest and not rest[0].isspace()):
        return None
    try:
        value = float(parts[0])
    except ValueError:
        return None
    return (name, value) if math.isfinite(value) else None


def parse_metrics(text: str) -> ServerLoad | None:
    """The load a Prometheus ``/metrics`` page reports, or None when it has neither a running nor a
    waiting count (not a vLLM or SGLang server, or not a metrics page at all).

    >>> parse_metrics('vllm:num_requests_running{engine="0"} 250\\nvllm:num_requests_waiting{engine="0"} 7\\n')
    ServerLoad(running=250, waiting=7, kv_usage=None, preemptions=None)
    >>> parse_metrics("<html>not here</html>") is None
    True
    """
    sums: dict[str, float] = {}
    highest: dict[str, float] = {}
    wanted = set(RUNNING_METRICS + WAITING_METRICS + KV_USAGE_METRICS + PREEMPTION_METRICS)
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sample = _sample_value(line)
        if sample is None or sample[0] not in wanted:
            continue
        name, value = sample
        sums[name] = sums.get(name, 0.0) + value
        highest[name] = max(highest.get(name, value), value)

    def first(names: tuple[str, ...], table: dict[str, float]) -> float | None:
        return next((table[n] for n in names if n in table), None)

    running, waiting = first(RUNNING_METRICS, sums), first(WAITING_METRICS, sums)
    if running is None and waiting is None:
        return None
    kv = first(KV_USAGE_METRICS, highest)
    return ServerLoad(
        running=max(0, round(running or 0.0)),
        waiting=max(0, round(waiting or 0.0)),
        kv_usage=None if kv is None else min(max(kv, 0.0), 1.0),
        preemptions=first(PREEMPTION_METRICS, sums),
    )


def metrics_url(api_root: str) -> str:
    """Where a server behind ``api_root`` shows its metrics: the root of its URL, as ``vllm serve`` and
    SGLang serve them.

    >>> metrics_url("http://host:8000/v1")
    'http://host:8000/metrics'
    >>> metrics_url("https://gateway.example/llm/v1")
    'https://gateway.example/llm/metrics'
    """
    base = api_root.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base + "/metrics"


@dataclass(frozen=True, slots=True)
class PacingSettings:
    """The controller's constants. ``initial``: the limit before anything is known; ``ceiling``: the most
    per endpoint when the server shows metrics, ``blind_ceiling`` when it does not (a hosted API should not
    get thousands of requests at once because it never said no)."""

    initial: int = 64
    start_growth: float = 1.5  # the limit's factor per look while starting
    ceiling: int = 4096
    blind_ceiling: int = 256
    floor: int = 1
    headroom_share: float = 0.05
    headroom_min: int = 4
    backoff: float = 0.5  # the most one decrease takes off: limit * backoff at least remains
    preemption_backoff: float = 0.75
    kv_high: float = 0.95  # above this KV-cache usage the limit does not grow
    latency_jump: float = 2.0  # per-token latency over this times its trend: requests are queueing
    latency_trend: float = 0.1  # weight of each look in the latency trend (an exponential average)
    latency_min_replies: int = 4  # replies a look needs before its latency counts
    binding_share: float = 0.9  # "the limit holds requests back": this share of it was in flight at once
    interval: float = 1.0  # seconds between looks


@dataclass(frozen=True, slots=True)
class Decision:
    """One change of a limit: when (seconds since the pacer started), from what to what, and why."""

    seconds: float
    before: int
    after: int
    reason: str  # "start", "room", "waiting", "preemptions", "overload", "latency"


@dataclass(slots=True)
class EndpointLoad:
    """One endpoint as the progress line and the ledger show it. ``running``/``waiting``/``kv_usage`` are
    the server's last metrics (None without them); ``in_flight`` and ``limit`` are this client's;
    ``tokens_per_second`` counts the output tokens of this client's replies over the last ten seconds."""

    url: str
    signals: str  # "metrics", "replies" (no metrics: latency and 429/503) or "fixed" (--concurrency)
    limit: int
    in_flight: int
    running: int | None
    waiting: int | None
    kv_usage: float | None
    tokens_per_second: float

    def describe(self) -> str:
        """``host:port run 250 wait 3 · in flight 262/264 · 6,900 tok/s`` (no credentials: ``url`` has none)."""
        where = self.url.split("://", 1)[-1].rsplit("/v1", 1)[0]
        engine = "" if self.running is None else f" run {self.running} wait {self.waiting}"
        return f"{where}{engine} · in flight {self.in_flight}/{self.limit} · {self.tokens_per_second:,.0f} tok/s"


TOKEN_RATE_SECONDS = 10.0


@dataclass
class Pacer:
    """The limit of one endpoint and the evidence it moves on. Not thread-safe: one event loop owns it.

    ``fixed``: a limit that never moves (``--concurrency``). ``clock`` is injectable for tests.
    """

    settings: PacingSettings = field(default_factory=PacingSettings)
    fixed: int | None = None
    clock: Any = time.monotonic
    limit_value: float = 0.0
    starting: bool = True  # doubling until the first sign of a full server
    has_metrics: bool | None = None  # None: not known yet
    load: ServerLoad | None = None
    peak_in_flight: int = 0  # the most in flight at once since the last look
    decisions: deque[Decision] = field(default_factory=lambda: deque(maxlen=256))
    counts: Counter[str] = field(default_factory=Counter)
    # the last look's preemption total, and the fallback's evidence
    _preemptions: float | None = None
    # Requests that arrive between two engine steps wait until the next one admits them (vLLM also admits
    # only so many prompt tokens per step): one look can catch a burst that is no queue at all. A real
    # queue lasts as long as a sequence runs, so a cut needs the excess on two looks in a row.
    _queued: bool = False
    _last_limit: int = 0  # the limit at the previous look without metrics
    _max_running: int = 0  # the most sequences the server was seen running at once
    _overloads: int = 0
    _latency_seconds: float = 0.0
    _latency_tokens: int = 0
    _latency_replies: int = 0
    _latency_trend: float | None = None
    _tokens: deque[tuple[float, int]] = field(default_factory=deque)
    _tokens_total: int = 0
    _started: float = 0.0
    _load_samples: int = 0
    _running_sum: float = 0.0
    _waiting_sum: float = 0.0
    _waiting_peak: int = 0

    def __post_init__(self) -> None:
        s = self.settings
        self._started = self.clock()
        if self.fixed is not None:
            self.limit_value = float(self.fixed)
            self.starting = False
        else:
            self.limit_value = float(min(max(s.initial, s.floor), s.ceiling))

    # -- what the backend reads ------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """Requests this endpoint may have in flight now."""
        return max(1, int(self.limit_value))

    @property
    def signals(self) -> str:
        if self.fixed is not None:
            return "fixed"
        return "metrics" if self.has_metrics else "replies"

    def note_in_flight(self, in_flight: int) -> None:
        """Called when a request is sent: the most in flight at once is the evidence for "binding"."""
        self.peak_in_flight = max(self.peak_in_flight, in_flight)

    def headroom(self, running: int) -> int:
        """Waiting requests that are fine: the queue that covers the client's reaction time.

        >>> Pacer().headroom(256)
        13
        >>> Pacer().headroom(10)
        4
        """
        s = self.settings
        return max(s.headroom_min, math.ceil(s.headroom_share * running))

    # -- evidence --------------------------------------------------------------------------------

    def on_reply(self, seconds: float, completion_tokens: int, status: int) -> None:
        """One reply (or failed attempt) from this endpoint: its status, time and output tokens."""
        if status in OVERLOAD_STATUSES:
            self._overloads += 1
            return
        if status >= 400 or completion_tokens <= 0:
            return
        now = self.clock()
        while self._tokens and now - self._tokens[0][0] > TOKEN_RATE_SECONDS:
            self._tokens.popleft()
        self._tokens.append((now, completion_tokens))
        self._tokens_total += completion_tokens
        self._latency_seconds += max(seconds, 0.0)
        self._latency_tokens += completion_tokens
        self._latency_replies += 1

    def tokens_per_second(self) -> float:
        """Output tokens of this endpoint's replies per second over the last ten seconds. Safe to call from
        another thread than the one that feeds the pacer (the progress line does): it reads a copy."""
        now = self.clock()
        recent = list(self._tokens)  # one atomic copy; only on_reply's thread changes the deque
        span = min(TOKEN_RATE_SECONDS, max(now - self._started, 1e-9))
        return sum(n for t, n in recent if now - t <= TOKEN_RATE_SECONDS) / span

    def on_metrics(self, load: ServerLoad | None, in_flight: int) -> Decision | None:
        """A look at the server's ``/metrics`` (None: it has none, or they could not be read); returns the
        change it made, if any. Without metrics, :meth:`on_interval` decides from the replies instead."""
        if load is None:
            if self.has_metrics:  # one look failed on a server that has metrics: hold until the next
                self.peak_in_flight = max(self.peak_in_flight, in_flight)
                return None
            self.has_metrics = False
            self.load = None
            return self.on_interval(in_flight)
        self.has_metrics = True
        self.load = load
        self._load_samples += 1
        self._running_sum += load.running
        self._waiting_sum += load.waiting
        self._waiting_peak = max(self._waiting_peak, load.waiting)
        self._max_running = max(self._max_running, load.running)
        climbed = (
            load.preemptions is not None and self._preemptions is not None and load.preemptions > self._preemptions
        )
        if load.preemptions is not None:
            self._preemptions = load.preemptions
        peak = max(self.peak_in_flight, in_flight)
        self.peak_in_flight = 0  # what is sent from now on is the next look's evidence
        self._overloads = 0
        self._reset_latency()
        if self.fixed is not None:
            return None
        s = self.settings
        limit = self.limit_value
        room = self.headroom(load.running)
        # A cut takes effect as requests finish: until then this client holds more than its limit, and the
        # server's queue still shows them. Only what remains beyond that is news.
        draining = max(0, in_flight - self.limit)
        if climbed and not draining:
            self.starting = False
            return self._set(limit * s.preemption_backoff, "preemptions")
        excess = load.waiting - draining - room
        queued, self._queued = self._queued, excess > 0
        if excess > 0 and queued:  # a queue seen on two looks in a row (see _queued)
            self.starting = False
            # From what was really sent (the limit may not have been reached), less the excess queue, but
            # never more than ``backoff`` at once: another client's queue should not zero ours.
            return self._set(max(min(limit, peak) - excess, limit * s.backoff), "waiting")
        if excess > 0:
            return None  # seen once: hold, and act if the next look shows it again
        # The limit holds requests back when this client had that many out and the server sees them: a client
        # short of CPU counts requests as in flight that have not reached the server (or whose replies it has
        # not read yet); growing then would only pile more up in the client. A cut still draining is untested.
        seen = load.running + load.waiting
        binding = peak >= s.binding_share * self.limit and seen >= s.binding_share * self.limit and not draining
        full_cache = load.kv_usage is not None and load.kv_usage >= s.kv_high
        if load.waiting == 0 and binding and not full_cache:
            if self.starting:
                return self._set(limit * s.start_growth, "start")
            # Below what the server has already run at once (a cut for another client's queue that is gone
            # now), half the way back per look; beyond it, a short queue's worth at a time.
            back = (self._max_running + room - limit) / 2
            return self._set(limit + max(room, back), "room")
        return None

    def on_interval(self, in_flight: int) -> Decision | None:
        """A look without metrics: back off on 429/503 or a latency jump, else grow while the limit binds."""
        peak = max(self.peak_in_flight, in_flight)
        self.peak_in_flight = 0  # what is sent from now on is the next look's evidence
        overloads, self._overloads = self._overloads, 0
        latency = self._take_latency()
        if self.fixed is not None:
            return None
        s = self.settings
        limit = self.limit_value
        if overloads:
            self.starting = False
            return self._set(min(limit, peak) * s.backoff, "overload")
        trend = self._latency_trend
        if latency is not None:
            self._latency_trend = latency if trend is None else trend + s.latency_trend * (latency - trend)
        # A batching server's steps slow down as its batch grows: latency that rises right after the limit
        # rose is the batch filling, not a queue. Only a jump while the limit held counts.
        steady, self._last_limit = self._last_limit == self.limit, self.limit
        if latency is not None and trend is not None and steady and latency > s.latency_jump * trend:
            self.starting = False
            return self._set(min(limit, peak) * s.backoff, "latency")
        if peak >= s.binding_share * self.limit and in_flight <= self.limit:
            grown = limit * s.start_growth if self.starting else limit + max(1.0, math.sqrt(limit))
            return self._set(grown, "start" if self.starting else "room")
        return None

    # -- plumbing --------------------------------------------------------------------------------

    def _ceiling(self) -> int:
        s = self.settings
        return s.ceiling if self.has_metrics else min(s.ceiling, s.blind_ceiling)

    def _set(self, value: float, reason: str) -> Decision | None:
        s = self.settings
        new = min(max(float(s.floor), value), float(self._ceiling()))
        before = self.limit
        self.limit_value = new
        if self.limit == before:
            return None
        decision = Decision(round(self.clock() - self._started, 3), before, self.limit, reason)
        self.decisions.append(decision)
        self.counts[reason] += 1
        return decision

    def _reset_latency(self) -> None:
        self._latency_seconds = 0.0
        self._latency_tokens = self._latency_replies = 0

    def _take_latency(self) -> float | None:
        """Seconds per output token over the replies since the last look (None: too few to tell)."""
        enough = self._latency_replies >= self.settings.latency_min_replies and self._latency_tokens > 0
        value = self._latency_seconds / self._latency_tokens if enough else None
        self._reset_latency()
        return value

    def summary(self) -> dict[str, Any]:
        """What the ledger records for this endpoint: the controller's signals and what it did."""
        elapsed = max(self.clock() - self._started, 1e-9)
        out: dict[str, Any] = {
            "signals": self.signals,
            "limit": self.limit,
            "output_tokens": self._tokens_total,
            "tokens_per_second": round(self._tokens_total / elapsed, 1),
            "limit_changes": dict(self.counts),
        }
        if self._load_samples:
            out["mean_running"] = round(self._running_sum / self._load_samples, 1)
            out["mean_waiting"] = round(self._waiting_sum / self._load_samples, 1)
            out["peak_waiting"] = self._waiting_peak
        if self.load is not None:
            out["running"], out["waiting"] = self.load.running, self.load.waiting
            if self.load.kv_usage is not None:
                out["kv_usage"] = round(self.load.kv_usage, 3)
            if self.load.preemptions is not None:
                out["preemptions"] = int(self.load.preemptions)
        return out


__all__ = [
    "KV_USAGE_METRICS",
    "METRICS_BYTE_LIMIT",
    "OVERLOAD_STATUSES",
    "PREEMPTION_METRICS",
    "RUNNING_METRICS",
    "WAITING_METRICS",
    "Decision",
    "EndpointLoad",
    "Pacer",
    "PacingSettings",
    "ServerLoad",
    "metrics_url",
    "parse_metrics",
]
