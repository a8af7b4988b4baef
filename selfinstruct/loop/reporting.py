"""What a running loop tells the people watching it: round reports, progress, and the run's totals.

Scope: counting, never deciding. :class:`Reporter` adds up what :class:`~selfinstruct.loop.bootstrap.Bootstrap`
tells it (requests sent and finished per stage, tokens, each committed request's candidates by outcome) into
:class:`RunTotals` for the ledger and, per round (``batch_size`` consecutive instruction requests), into a
:class:`RoundReport`; and it makes :class:`Progress`, the engine's view, about once a second. Whether a
task is accepted, when the run stops and what the estimate to the end is are the loop's and the budget's
(:mod:`selfinstruct.loop.budget`); the clock is the loop's, read through the callable given here, so a test
that swaps the loop's clock swaps this one too.

Nothing here prints, touches files or talks to an engine.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from selfinstruct.engines import Finished
from selfinstruct.engines.pacing import EndpointLoad
from selfinstruct.pool.task import Task

STAGES = ("instructions", "classification", "instances", "judge")
PROGRESS_SECONDS = 1.0
TOKEN_RATE_WINDOW = 10.0


@dataclass
class StageStats:
    """One stage's requests: sent, finished, cancelled; tokens; seconds summed over requests."""

    requests: int = 0
    finished: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "finished": self.finished,
            "cancelled": self.cancelled,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "request_seconds": round(self.seconds, 3),
        }


@dataclass
class RoundReport:
    """What one round (``batch_size`` consecutive instruction requests) did, reported once it is
    committed. ``rejected`` counts candidates by reason; ``notes`` counts non-fatal oddities."""

    round: int
    prompts: int
    candidates: int
    accepted: list[Task]
    rejected: Counter[str]
    notes: Counter[str]
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    pool_size: int
    surplus: Counter[str] = field(default_factory=Counter)
    complete: bool = True
    progress: Progress | None = None  # the engine's view when the round was reported


@dataclass
class Progress:
    """The engine's view, about once a second: requests in flight by stage, output tokens per second
    (over the last ten seconds; the run's average when nothing finished in them), accepted tasks per
    minute and the estimated time to the target."""

    seconds: float
    in_flight: dict[str, int]
    pool_size: int
    target: int
    accepted: int
    output_tokens_per_second: float
    tasks_per_minute: float
    eta_seconds: float | None
    capacity: int | None = None  # what the engine could usefully hold when last asked (None: a fixed window)
    endpoints: list[EndpointLoad] = field(default_factory=list)  # per server, where the backend has servers

    @property
    def in_flight_total(self) -> int:
        return sum(self.in_flight.values())


@dataclass
class RunTotals:
    rounds: int = 0
    candidates: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    surplus: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    stages: dict[str, StageStats] = field(default_factory=lambda: {s: StageStats() for s in STAGES})

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.stages.values())

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.stages.values())


@dataclass
class _RoundAcc:
    number: int
    started: float
    prompts: int = 0
    candidates: int = 0
    accepted: list[Task] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    surplus: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Reporter:
    """The run's counts (:attr:`totals`), the open round, the round reports not yet handed out, and the
    recent output tokens that the progress rate is measured over.

    ``target`` is the pool size the run aims at (shown in :class:`Progress`); ``batch_size`` makes a round
    complete; ``clock`` is read at the moments the loop would read it (a request finished, a round closed,
    progress made)."""

    def __init__(self, *, target: int, batch_size: int, clock: Callable[[], float]) -> None:
        self.target = target
        self.batch_size = batch_size
        self.clock = clock
        self.totals = RunTotals()
        self.last_report = 0.0
        self.last_progress = 0.0
        self._round: _RoundAcc | None = None
        self._reports: list[RoundReport] = []
        self._token_times: deque[tuple[float, int]] = deque()

    def start(self, now: float) -> None:
        """The run starts at ``now``: the first round's seconds and the first progress count from it."""
        self.last_report = self.last_progress = now

    # -- requests ------------------------------------------------------------------------------------

    def sent(self, stage: str) -> None:
        self.totals.stages[stage].requests += 1

    def finished(self, stage: str, done: Finished) -> None:
        """A request of ``stage`` finished: its tokens and seconds, and its output tokens for the rate."""
        completion = done.completion
        stats = self.totals.stages[stage]
        stats.finished += 1
        stats.prompt_tokens += completion.prompt_tokens
        stats.completion_tokens += completion.completion_tokens
        stats.seconds += done.seconds
        self._token_times.append((self.clock(), completion.completion_tokens))

    def cancelled(self, stage: str) -> None:
        self.totals.stages[stage].cancelled += 1

    # -- rounds --------------------------------------------------------------------------------------

    @property
    def open_round(self) -> int | None:
        """The number of the round being added up, or None between rounds."""
        return None if self._round is None else self._round.number

    def committed(
        self, round_number: int, candidates: int, notes: Counter[str], prompt_tokens: int, completion_tokens: int
    ) -> None:
        """One instruction request of round ``round_number`` is committed (its outcomes follow, one call each).
        The round opens here if none is open; closing the previous one is the caller's (:meth:`close_round`)."""
        if self._round is None:
            self._round = _RoundAcc(round_number, self.last_report)
            self.totals.rounds += 1
        acc = self._round
        acc.prompts += 1
        acc.candidates += candidates
        acc.notes.update(notes)
        acc.prompt_tokens += prompt_tokens
        acc.completion_tokens += completion_tokens
        self.totals.candidates += candidates
        self.totals.notes.update(notes)

    def accepted(self, task: Task) -> None:
        assert self._round is not None
        self._round.accepted.append(task)
        self.totals.accepted += 1

    def rejected(self, reason: str) -> None:
        assert self._round is not None
        self._round.rejected[reason] += 1
        self.totals.rejected[reason] += 1

    def surplus(self, name: str) -> None:
        assert self._round is not None
        self._round.surplus[name] += 1
        self.totals.surplus[name] += 1

    def close_round(self, pool_size: int, progress: Callable[[], Progress]) -> RoundReport | None:
        """Close the open round (None if none is open) into a report, kept until :meth:`take_reports`."""
        acc, self._round = self._round, None
        if acc is None:
            return None
        now = self.clock()
        report = RoundReport(
            round=acc.number,
            prompts=acc.prompts,
            candidates=acc.candidates,
            accepted=acc.accepted,
            rejected=acc.rejected,
            notes=acc.notes,
            prompt_tokens=acc.prompt_tokens,
            completion_tokens=acc.completion_tokens,
            seconds=now - self.last_report,
            pool_size=pool_size,
            surplus=acc.surplus,
            complete=acc.prompts == self.batch_size,
            progress=progress(),
        )
        self.last_report = now
        self._reports.append(report)
        return report

    @property
    def reports_due(self) -> bool:
        return bool(self._reports)

    def take_reports(self) -> list[RoundReport]:
        reports, self._reports = self._reports, []
        return reports

    # -- progress ------------------------------------------------------------------------------------

    def progress_due(self, now: float) -> bool:
        """Whether a :class:`Progress` is due at ``now`` (about once a second); if so, it counts as made."""
        if now - self.last_progress < PROGRESS_SECONDS:
            return False
        self.last_progress = now
        return True

    def progress(
        self,
        started: float,
        in_flight: Counter[str],
        pool_size: int,
        capacity: int | None,
        eta: Callable[[float, float], float | None],
    ) -> Progress:
        """The engine's view now, for a run that started at ``started`` with ``in_flight`` requests by stage;
        ``eta(elapsed, accepted_per_second)`` is the budget's estimate."""
        now = self.clock()
        elapsed = max(now - started, 1e-9)
        while self._token_times and now - self._token_times[0][0] > TOKEN_RATE_WINDOW:
            self._token_times.popleft()
        if self._token_times:
            span = min(TOKEN_RATE_WINDOW, elapsed)
            tokens = sum(n for _, n in self._token_times)
        else:  # long sequences, none finished lately: the run's average, not a misleading zero
            span, tokens = elapsed, self.totals.completion_tokens
        rate = self.totals.accepted / elapsed
        return Progress(
            seconds=elapsed,
            in_flight={s: in_flight.get(s, 0) for s in STAGES},
            pool_size=pool_size,
            target=self.target,
            accepted=self.totals.accepted,
            output_tokens_per_second=tokens / span,
            tasks_per_minute=rate * 60,
            eta_seconds=eta(elapsed, rate),
            capacity=capacity,
        )
