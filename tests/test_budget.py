"""Tests for selfinstruct.loop.budget: the room a run has (--num-instructions, --max-new), the requests worth
having, --max-rounds as requests, the lag with and without --window, the deadline and saturation. The lag
formula itself (default_lag) and the time estimate are tested through the loop in test_bootstrap."""

from __future__ import annotations

from typing import Any

import pytest

from selfinstruct.config import GenerateConfig
from selfinstruct.loop.budget import MAX_NEW, TARGET_REACHED, Budget, default_lag
from selfinstruct.loop.reporting import RunTotals
from selfinstruct.pool.task import Instance, Task


def tasks(n: int) -> list[Task]:
    return [Task(f"Task number {i}.", [Instance("", "x")], id=f"t{i}") for i in range(n)]


def budget(pool: int = 0, accepted: int = 0, **options: Any) -> Budget:
    totals = RunTotals(accepted=accepted)
    return Budget(GenerateConfig(**{"num_instructions": 10, **options}), tasks(pool), totals)


@pytest.mark.parametrize(
    ("pool", "accepted", "options", "room", "full"),
    [
        (0, 0, {}, 10, None),
        (9, 0, {}, 1, None),
        (10, 0, {}, 0, TARGET_REACHED),
        (12, 0, {}, -2, TARGET_REACHED),  # a pool already past the target
        (3, 3, {"max_new": 3}, 0, MAX_NEW),
        (10, 3, {"max_new": 3}, 0, TARGET_REACHED),  # both end here: the target is named
        (3, 1, {"max_new": 5}, 4, None),
    ],
)
def test_room_and_why_it_is_full(
    pool: int, accepted: int, options: dict[str, Any], room: float, full: str | None
) -> None:
    b = budget(pool, accepted, **options)
    assert b.room() == room
    assert b.full() == full


def test_room_follows_the_live_pool_and_totals() -> None:
    pool, totals = tasks(2), RunTotals()
    b = Budget(GenerateConfig(num_instructions=5, max_new=2), pool, totals)
    assert b.room() == 2
    pool.append(tasks(3)[2])
    totals.accepted += 1
    assert b.room() == 1 and b.full() is None
    pool.append(Task("One more.", [Instance("", "y")], id="x"))
    totals.accepted += 1
    assert b.full() == MAX_NEW


@pytest.mark.parametrize(
    ("options", "committed", "accepted", "wanted"),
    [
        ({}, 0, 0, 8),  # 10 tasks at the guessed 2 per request: 5, with a quarter more, plus one
        ({}, 7, 100, 8),  # fewer than 8 committed: still the guess
        ({}, 8, 4, 26),  # half a task per request: 20, with a quarter more, plus one
        ({}, 10, 0, 251),  # nothing accepted yet: at most 20 requests per task
        ({"method": "alpaca", "alpaca_count": 20}, 0, 0, 4),  # 5 tasks per Alpaca request
        ({"max_new": 1}, 0, 0, 2),
    ],
)
def test_wanted_requests(options: dict[str, Any], committed: int, accepted: int, wanted: int) -> None:
    assert budget(0, accepted, **options).wanted(committed) == wanted


def test_wanted_is_at_least_one_when_the_run_is_full() -> None:
    assert budget(10).wanted(20) == 1


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, 5.0),
        ({"num_instructions": 1000, "max_rounds": 2, "batch_size": 3}, 6),
        ({"method": "alpaca", "alpaca_count": 40}, 1.0),
    ],
)
def test_expected_requests_come_from_settings_alone(options: dict[str, Any], expected: float) -> None:
    assert budget(**options).expected_requests() == expected


@pytest.mark.parametrize(
    ("options", "max_capacity", "lag"),
    [
        ({"window": 6}, 1280, 6),  # --window wins over the engine
        ({"window": 6}, None, 6),
        ({"num_instructions": 4000}, 320, default_lag(320, 2000)),
        ({"num_instructions": 4000}, None, default_lag(None, 2000)),
    ],
)
def test_lag(options: dict[str, Any], max_capacity: int | None, lag: int) -> None:
    assert budget(**options).lag(max_capacity) == lag


@pytest.mark.parametrize(("max_rounds", "requests", "spent"), [(None, 10**6, False), (2, 5, False), (2, 6, True)])
def test_rounds_spent(max_rounds: int | None, requests: int, spent: bool) -> None:
    assert budget(max_rounds=max_rounds, batch_size=3).rounds_spent(requests) is spent


@pytest.mark.parametrize(("time_limit", "deadline"), [(None, None), ("90s", 100.0), ("1h", 3610.0)])
def test_deadline(time_limit: str | None, deadline: float | None) -> None:
    assert budget(time_limit=time_limit).deadline(10.0) == deadline


def test_saturation_needs_a_full_window_of_rounds_below_the_rate() -> None:
    b = budget(saturation_window=3, saturation_min_rate=0.1)
    assert not b.saturated(0, 100)  # one round of three: too early to tell
    assert not b.saturated(0, 100)
    assert b.saturated(29, 300)  # 29 of 500 over the last three rounds: below 10%
    assert not b.saturated(60, 100)  # the first round left the window: 89 of 500
    assert not b.saturated(0, 0)  # 89 of 400
