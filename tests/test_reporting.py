"""Tests for selfinstruct.loop.reporting: a round's report adds up its committed requests and their outcomes,
the run's totals add up everything, the clock is read only when something is measured, and progress is due
about once a second. Progress's token rate and the time estimate are tested through the loop in
test_bootstrap."""

from __future__ import annotations

from collections import Counter

import pytest

from selfinstruct.engines import Completion, Finished
from selfinstruct.loop.reporting import Progress, Reporter
from selfinstruct.pool.task import Instance, Task


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def no_eta(elapsed: float, rate: float) -> float | None:
    return None


def progress_of(reporter: Reporter) -> Progress:
    return reporter.progress(0.0, Counter(), pool_size=0, capacity=None, eta=no_eta)


def task(n: int) -> Task:
    return Task(f"Task {n}.", [Instance("", "x")], id=f"t{n}")


def test_a_round_adds_up_its_requests_and_outcomes() -> None:
    clock = Clock()
    reporter = Reporter(target=50, batch_size=2, clock=clock)
    reporter.start(10.0)
    assert reporter.open_round is None
    reporter.committed(7, 3, Counter({"cut_off": 1}), 100, 40)
    assert reporter.open_round == 7
    reporter.accepted(task(1))
    reporter.rejected("too_similar")
    reporter.surplus("surplus")
    reporter.committed(7, 2, Counter({"cut_off": 2}), 50, 20)
    reporter.rejected("too_similar")
    reporter.rejected("too_short")
    clock.now = 14.5
    report = reporter.close_round(pool_size=21, progress=lambda: progress_of(reporter))
    assert report is not None and reporter.open_round is None
    assert (report.round, report.prompts, report.candidates, report.pool_size) == (7, 2, 5, 21)
    assert [t.id for t in report.accepted] == ["t1"]
    assert report.rejected == Counter({"too_similar": 2, "too_short": 1})
    assert report.surplus == Counter({"surplus": 1})
    assert report.notes == Counter({"cut_off": 3})
    assert (report.prompt_tokens, report.completion_tokens) == (150, 60)
    assert report.seconds == pytest.approx(4.5) and report.complete
    assert report.progress is not None and report.progress.target == 50
    totals = reporter.totals
    assert (totals.rounds, totals.candidates, totals.accepted) == (1, 5, 1)
    assert totals.rejected == report.rejected and totals.surplus == report.surplus and totals.notes == report.notes


@pytest.mark.parametrize(("requests", "complete"), [(1, False), (3, True)])
def test_a_round_is_complete_with_batch_size_requests(requests: int, complete: bool) -> None:
    reporter = Reporter(target=10, batch_size=3, clock=Clock())
    for _ in range(requests):
        reporter.committed(1, 0, Counter(), 0, 0)
    report = reporter.close_round(0, lambda: progress_of(reporter))
    assert report is not None and report.complete is complete and report.prompts == requests


def test_reports_are_kept_until_taken_and_closing_no_round_reads_no_clock() -> None:
    clock = Clock()
    reporter = Reporter(target=10, batch_size=1, clock=clock)
    assert reporter.close_round(0, lambda: progress_of(reporter)) is None
    assert clock.reads == 0 and not reporter.reports_due
    for number in (1, 2):
        reporter.committed(number, 1, Counter(), 0, 0)
        reporter.close_round(0, lambda: progress_of(reporter))
    assert reporter.reports_due
    assert [r.round for r in reporter.take_reports()] == [1, 2]
    assert not reporter.reports_due and reporter.take_reports() == []
    assert reporter.totals.rounds == 2


def test_each_round_counts_its_seconds_from_the_last_report() -> None:
    clock = Clock()
    reporter = Reporter(target=10, batch_size=1, clock=clock)
    reporter.start(5.0)
    seconds = []
    for number, now in ((1, 7.0), (2, 10.0)):
        reporter.committed(number, 0, Counter(), 0, 0)
        clock.now = now
        report = reporter.close_round(0, lambda: progress_of(reporter))
        assert report is not None
        seconds.append(report.seconds)
    assert seconds == [2.0, 3.0]


def test_requests_are_counted_by_stage() -> None:
    clock = Clock()
    reporter = Reporter(target=10, batch_size=1, clock=clock)
    reporter.sent("instructions")
    reporter.sent("instructions")
    reporter.sent("judge")
    reporter.finished("instructions", Finished(0, Completion("text", "stop", 12, 30), seconds=1.5))
    reporter.cancelled("instructions")
    reporter.cancelled("judge")
    stages = reporter.totals.stages
    assert stages["instructions"].to_dict() == {
        "requests": 2,
        "finished": 1,
        "cancelled": 1,
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "request_seconds": 1.5,
    }
    assert (stages["judge"].requests, stages["judge"].cancelled) == (1, 1)
    assert (reporter.totals.prompt_tokens, reporter.totals.completion_tokens) == (12, 30)
    assert clock.reads == 1  # the finished request's time, for the token rate


@pytest.mark.parametrize(
    ("times", "due"), [((0.5,), [False]), ((1.0,), [True]), ((1.0, 1.5, 2.0), [True, False, True])]
)
def test_progress_is_due_about_once_a_second(times: tuple[float, ...], due: list[bool]) -> None:
    reporter = Reporter(target=10, batch_size=1, clock=Clock())
    reporter.start(0.0)
    assert [reporter.progress_due(t) for t in times] == due


def test_progress_shows_every_stage_and_the_budget_estimate() -> None:
    clock = Clock()
    reporter = Reporter(target=40, batch_size=1, clock=clock)
    reporter.committed(1, 1, Counter(), 0, 0)
    reporter.accepted(task(1))
    reporter.accepted(task(2))
    clock.now = 60.0
    seen = []

    def eta(elapsed: float, rate: float) -> float:
        seen.append((elapsed, rate))
        return 42.0

    progress = reporter.progress(0.0, Counter({"judge": 2}), pool_size=7, capacity=5, eta=eta)
    assert progress.in_flight == {"instructions": 0, "classification": 0, "instances": 0, "judge": 2}
    assert progress.in_flight_total == 2 and progress.capacity == 5 and progress.pool_size == 7
    assert progress.tasks_per_minute == pytest.approx(2.0) and progress.eta_seconds == 42.0
    assert seen == [(60.0, pytest.approx(2 / 60))]
