"""How much a run may still do, and why it stops: the budget of :class:`~selfinstruct.loop.bootstrap.Bootstrap`.

Scope: the run's limits and the numbers derived from them, never the order or the content of a request.

* **Room**: ``--num-instructions`` (the pool's target size) and ``--max-new`` (tasks this run may add),
  checked as tasks are committed, so the pool lands exactly on them.
* **Requests**: how many instruction requests the budget is expected to need (from settings and the pool
  alone: the lag depends on it) and how many are worth having unresolved now (from the yield seen so far:
  only timing depends on it); ``--max-rounds`` as a number of requests.
* **The lag** (:func:`default_lag`), the staleness rule fixed before the first request.
* **Time and saturation**: ``--time-limit`` as a deadline, and saturation over the last complete rounds.
* **The estimate** of the time left until the first of these ends the run.
* **Why a run ended**: the stop reasons.

Nothing here reads a clock, talks to an engine or prints: the loop passes in what it measured.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from selfinstruct.config import GenerateConfig
from selfinstruct.pool.task import Task

if TYPE_CHECKING:
    from selfinstruct.loop.reporting import RunTotals

# Why a run ended.
TARGET_REACHED = "target_reached"
MAX_ROUNDS = "max_rounds"
MAX_NEW = "max_new"
TIME_LIMIT = "time_limit"
SATURATED = "saturated"
INTERRUPTED = "interrupted"

DEFAULT_LAG = 256  # the lag when neither --window nor the stream says otherwise
LAG_PER_CAPACITY = 2  # the lag, in multiples of what the engine can hold (see default_lag)
LAG_BUDGET_SHARE = 0.75  # the lag, at most this share of the instruction requests the budget needs
MIN_LAG = 8  # the smallest default lag (a tiny budget still keeps a few requests going)
MAX_LAG = 65_536  # as --window's own bound


def default_lag(max_capacity: int | None, expected_requests: float) -> int:
    """The lag when ``--window`` is not given: ``LAG_PER_CAPACITY`` times what the engine can hold at
    most (while the engine stays full, the requests in it, those waiting for their follow-ups and those
    held in the reorder buffer behind a slow earlier one add up to about that many unresolved
    instruction requests; :data:`DEFAULT_LAG` when the stream does not say), but at most
    :data:`LAG_BUDGET_SHARE` of the instruction requests the run is expected to send, so that the rest of
    a small run shows the run's own tasks as demonstrations; never below :data:`MIN_LAG`. Both inputs are
    fixed by settings (engine, budget, pool), never by timing.

    >>> default_lag(1280, 3000), default_lag(320, 3000), default_lag(24, 50), default_lag(None, 10**6)
    (2250, 640, 38, 256)
    >>> default_lag(1280, 4)
    8
    """
    engine = DEFAULT_LAG if max_capacity is None else LAG_PER_CAPACITY * max_capacity
    budget = math.ceil(expected_requests * LAG_BUDGET_SHARE) if math.isfinite(expected_requests) else MAX_LAG
    return max(MIN_LAG, min(engine, budget, MAX_LAG))


class Budget:
    """The limits of one run over a live ``pool`` (the loop appends to it as it accepts) and the run's
    ``totals`` (its accepted count)."""

    def __init__(self, config: GenerateConfig, pool: Sequence[Task], totals: RunTotals) -> None:
        self.config = config
        self._pool = pool
        self._totals = totals
        limit = config.max_rounds
        self.max_requests = None if limit is None else limit * config.batch_size
        self._recent_rounds: deque[tuple[int, int]] = deque(maxlen=config.saturation_window)

    # -- room ----------------------------------------------------------------------------------------

    def target_room(self) -> int:
        return self.config.num_instructions - len(self._pool)

    def room(self) -> float:
        """How many more tasks this run may accept."""
        room: float = self.target_room()
        if self.config.max_new is not None:
            room = min(room, self.config.max_new - self._totals.accepted)
        return room

    def full(self) -> str | None:
        """Why no more task may be accepted (:data:`TARGET_REACHED` or :data:`MAX_NEW`); None while there is room."""
        if self.room() > 0:
            return None
        return TARGET_REACHED if self.target_room() <= 0 else MAX_NEW

    # -- requests ------------------------------------------------------------------------------------

    def per_request_guess(self) -> float:
        """Accepted tasks per instruction request before any is known: 2 per Self-Instruct list, a quarter
        of the tasks an Alpaca request asks for (one request of complete tasks yields several)."""
        return max(2.0, self.config.alpaca_count / 4) if self.config.method == "alpaca" else 2.0

    def expected_requests(self) -> float:
        """Instruction requests the budget is expected to need, from settings and the pool alone (the lag
        depends on it, so nothing measured may enter): the room at the guessed yield, at most
        ``--max-rounds`` rounds."""
        expected = max(self.room(), 0) / self.per_request_guess()
        if self.config.max_rounds is not None:
            expected = min(expected, self.config.max_rounds * self.config.batch_size)
        return expected

    def wanted(self, committed: int) -> int:
        """Unresolved instruction requests worth having, ``committed`` requests into the run: enough for the
        remaining budget at the yield seen so far (a guess until 8 are committed), with a margin. Only
        timing depends on this."""
        room = self.room()
        guess = self.per_request_guess()  # until 8 requests are committed
        per_request = self._totals.accepted / committed if committed >= 8 else guess
        return max(1, math.ceil(room / max(per_request, 0.05) * 1.25) + 1)

    def rounds_spent(self, requests: int) -> bool:
        """Whether ``requests`` instruction requests use up ``--max-rounds``."""
        return self.max_requests is not None and requests >= self.max_requests

    def lag(self, max_capacity: int | None) -> int:
        """The lag of this run: ``--window`` when given, else :func:`default_lag` for an engine that holds
        ``max_capacity`` requests at most (None: it does not say)."""
        if self.config.window is not None:
            return self.config.window
        return default_lag(max_capacity, self.expected_requests())

    # -- time and saturation -------------------------------------------------------------------------

    def deadline(self, started: float) -> float | None:
        """When ``--time-limit`` ends a run that started at ``started`` (None: no time limit)."""
        limit = self.config.time_limit_seconds
        return None if limit is None else started + limit

    def saturated(self, accepted: int, candidates: int) -> bool:
        """Count a complete round; whether the last ``--saturation-window`` complete rounds accepted fewer
        than ``--saturation-min-rate`` of their candidates."""
        self._recent_rounds.append((accepted, candidates))
        if len(self._recent_rounds) < self.config.saturation_window:
            return False
        accepted_sum = sum(a for a, _ in self._recent_rounds)
        candidates_sum = sum(c for _, c in self._recent_rounds)
        return accepted_sum / max(candidates_sum, 1) < self.config.saturation_min_rate

    # -- the estimate ----------------------------------------------------------------------------------

    def eta(self, elapsed: float, rate: float, committed: int) -> float | None:
        """Seconds until the first budget ends the run, by what each has shown so far: the target and
        --max-new at the accepted ``rate`` (tasks per second), --max-rounds at the rate requests are
        committed, --time-limit by the clock. None while no budget can be estimated (nothing accepted and
        no round or time budget)."""
        estimates: list[float] = []
        room = self.room()
        if rate > 0 and room < math.inf:
            estimates.append(max(0.0, room) / rate)
        if self.max_requests is not None and committed > 0:
            left = max(0, self.max_requests - committed)
            estimates.append(left * elapsed / committed)
        limit = self.config.time_limit_seconds
        if limit is not None:
            estimates.append(max(0.0, limit - elapsed))
        return min(estimates) if estimates else None
