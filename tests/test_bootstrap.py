"""The streaming loop (selfinstruct.loop.bootstrap) against stand-in engines that answer in random order.

``ShuffledEngine`` is a backend whose stream finishes the requests it holds in a random order, a random
number at a time (its own seed), with the text :class:`paperlm.PaperLM` gives for the prompt and the
request's seed: the same request always gets the same text, only the timing changes. The loop must then
build the same pool whatever that timing, and account for every candidate when it stops.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from paperlm import PaperLM
from seedsets import write_seeds

from selfinstruct import stopping
from selfinstruct.config import GenerateConfig
from selfinstruct.engines import Completion, Finished, Request, Sampling
from selfinstruct.engines.chat import prompt_text
from selfinstruct.gates import novelty_workers
from selfinstruct.loop.bootstrap import (
    MAX_NEW,
    MAX_ROUNDS,
    SURPLUS,
    TARGET_REACHED,
    TIME_LIMIT,
    UNFINISHED,
    Bootstrap,
    Progress,
    RoundReport,
    default_lag,
)
from selfinstruct.pool.task import Task, load_seed_tasks
from selfinstruct.protocol.prompts import PromptTemplates

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"


class ShuffledStream:
    def __init__(self, engine: ShuffledEngine) -> None:
        self.engine = engine
        self.held: dict[int, Request] = {}
        self.closed = False
        self.cancelled: list[int] = []

    @property
    def in_flight(self) -> int:
        return len(self.held)

    def submit(self, request: Request) -> None:
        self.engine.submitted.append(request)
        self.held[request.key] = request

    def poll(self, timeout: float) -> list[Finished]:
        engine = self.engine
        engine.polls += 1
        if engine.interrupt_at is not None and engine.polls >= engine.interrupt_at:
            raise KeyboardInterrupt
        if not self.held or engine.stall(self):
            return []
        keys = list(self.held)
        engine.rng.shuffle(keys)
        done = []
        for key in keys[: engine.rng.randint(1, max(1, len(keys) // 2))]:
            request = self.held.pop(key)
            body: dict[str, Any] = {"seed": request.seed}
            if isinstance(request.prompt, tuple):  # a chat: the stand-in answers as an instruct model
                body["messages"] = [m.to_dict() for m in request.prompt]
            text, finish = engine.lm(prompt_text(request.prompt), body)
            done.append(Finished(key, Completion(text, finish, 3, len(text.split()))))
        return done

    def cancel(self, keys: Iterable[int]) -> None:
        for key in keys:
            if self.held.pop(key, None) is not None:
                self.cancelled.append(key)

    def close(self) -> None:
        self.cancel(list(self.held))
        self.closed = True


class ShuffledEngine:
    """A backend whose stream answers in a random order; ``stall(stream)`` may hold answers back."""

    model = "shuffled"

    def __init__(self, seed: int, lm: Any = None) -> None:
        self.rng = random.Random(seed)
        self.lm = lm or PaperLM()
        self.submitted: list[Request] = []
        self.polls = 0
        self.interrupt_at: int | None = None
        self.streams: list[ShuffledStream] = []

    def stall(self, stream: ShuffledStream) -> bool:
        return False

    def generate(self, prompts: Any, sampling: Sampling, seeds: Any = None) -> list[Completion]:
        raise AssertionError("the loop streams")

    def stream(self) -> ShuffledStream:
        self.streams.append(ShuffledStream(self))
        return self.streams[-1]


class Recorder:
    """A sink that remembers what it was given, call by call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Task], list[dict[str, Any]]]] = []

    def __call__(self, tasks: list[Task], records: list[dict[str, Any]]) -> None:
        self.calls.append((list(tasks), list(records)))

    @property
    def tasks(self) -> list[Task]:
        return [t for tasks, _ in self.calls for t in tasks]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for _, records in self.calls for r in records]


@pytest.fixture
def seeds(tmp_path: Path) -> list[Task]:
    return load_seed_tasks(write_seeds(tmp_path / "seeds.jsonl"))


def make_loop(
    seeds: list[Task], backend: Any, pool: list[Task] | None = None, sink: Any = None, clock: Any = None, **options: Any
) -> Bootstrap:
    cfg = GenerateConfig(**{"num_instructions": 40, "batch_size": 3, "window": 4, **options})
    kwargs = {"clock": clock} if clock is not None else {}
    return Bootstrap(
        cfg, backend, seeds, pool or [], PromptTemplates.load(PROMPTS), rng=random.Random(5), run_id="r",
        sink=sink, **kwargs,
    )  # fmt: skip


def comparable(tasks: list[Task]) -> list[dict[str, Any]]:
    return [{k: v for k, v in t.to_record().items() if k != "created_at"} for t in tasks]


# -- exact and replayable ------------------------------------------------------------------------------


def test_the_same_pool_whatever_order_the_engine_answers_in(seeds: list[Task]) -> None:
    pools = []
    for timing in range(4):
        engine = ShuffledEngine(seed=timing)
        sink = Recorder()
        loop = make_loop(seeds, engine, sink=sink, num_instructions=60)
        list(loop.run())
        assert loop.stop_reason == TARGET_REACHED
        assert sink.tasks == loop.machine and len(loop.machine) == 60
        pools.append(comparable(loop.machine))
    assert all(pool == pools[0] for pool in pools[1:])
    # The window is small, so later requests showed machine tasks as demonstrations, and still replayed.
    machine = {t["instruction"] for t in pools[0]}
    assert any(set(t["demonstrations"]) & machine for t in pools[0])


def test_the_same_pool_from_a_batch_only_backend(seeds: list[Task]) -> None:
    lm = PaperLM()

    class Batch:
        model = "shuffled"

        def generate(self, prompts: Any, sampling: Sampling, seeds: Any = None) -> list[Completion]:
            return [
                Completion(*lm(p, {"seed": s}), 3, len(lm(p, {"seed": s})[0].split()))
                for p, s in zip(prompts, seeds, strict=True)
            ]

    streamed = make_loop(seeds, ShuffledEngine(seed=9))
    list(streamed.run())
    batched = make_loop(seeds, Batch())
    list(batched.run())
    assert comparable(batched.machine) == comparable(streamed.machine)


def test_demonstrations_come_from_the_pool_as_it_stood_window_requests_earlier(seeds: list[Task]) -> None:
    engine = ShuffledEngine(seed=1)
    loop = make_loop(seeds, engine, num_instructions=80, window=6)
    list(loop.run())
    instruction_prompts = [r.prompt for r in engine.submitted if r.priority == 2]
    pool_text = [t.instruction for t in loop.machine]
    seed_text = {t.instruction for t in seeds}
    for k, prompt in enumerate(instruction_prompts):
        shown = [line.split(". ", 1)[1] for line in prompt.splitlines() if line[:1].isdigit() and ". " in line]
        machine_shown = [s for s in shown if s not in seed_text]
        if k < 6:
            assert machine_shown == []
        else:
            visible = set(pool_text[: loop._size_after[k - 6]])
            assert set(machine_shown) <= visible
            assert len(machine_shown) == min(2, len(visible))


def test_novelty_is_checked_in_submission_order(seeds: list[Task]) -> None:
    # Every instruction list is the same, so only the first request's survivors can be novel: whatever
    # request finishes first, the accepted tasks are those of request 0.
    def same(prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        if prompt.rstrip().endswith("Is it classification?"):
            return " No", "stop"
        if prompt.endswith("\n"):
            return f"Example 1\nInput: x\nOutput: {body['seed']}\n\n", "stop"
        start = int(prompt.rsplit("\n", 1)[1].rstrip("."))
        items = ["Name three rivers that flow through more than one country.", "Explain why the sky looks blue."]
        return f" {items[0]}\n{start + 1}. {items[1]}\n\n", "stop"

    results = []
    for timing in range(3):
        loop = make_loop(seeds, ShuffledEngine(seed=timing, lm=same), num_instructions=10, max_rounds=3)
        list(loop.run())
        assert loop.stop_reason == MAX_ROUNDS
        results.append([(t.instruction, t.instances[0].output, t.meta["round"]) for t in loop.machine])
    assert all(r == results[0] for r in results)
    assert len(results[0]) == 2 and {r for _, _, r in results[0]} == {1}
    # The other eight requests' copies: of a demonstration once the pool's tasks are shown, else too similar.
    assert loop.totals.rejected["too_similar"] + loop.totals.rejected["demo_copy"] == 2 * 8


@pytest.mark.parametrize(
    ("workers", "shard_size", "parallel_from"), [(2, 10**6, 0), (2, 100, 0), (3, 100, 0), (2, 10**6, 40)]
)  # 40: the workers start mid-run, the in-process index answering while they build their shards
def test_the_same_pool_and_records_with_novelty_on_worker_processes(
    seeds: list[Task], monkeypatch: pytest.MonkeyPatch, workers: int, shard_size: int, parallel_from: int
) -> None:
    outcomes = []
    for count in (1, workers):
        monkeypatch.setattr(novelty_workers, "PARALLEL_FROM", parallel_from)  # 0: from the first batch on
        monkeypatch.setattr(novelty_workers, "SHARD_SIZE", shard_size)  # replicas, or shards
        sink = Recorder()
        loop = make_loop(seeds, ShuffledEngine(seed=7), sink=sink, num_instructions=50, window=8, workers=count)
        list(loop.run())
        assert loop.index.parallel is False  # closed at the end
        assert loop.index.replicas * loop.index.shards == count  # the workers ran (1: none did)
        # The work past the target (checked while the workers scored a batch, or not) depends on timing: the
        # records of every round the pool reached do not.
        last_round = max(t.meta["round"] for t in loop.machine)
        records = [
            {k: v for k, v in r.items() if k != "created_at"}
            for r in sink.records
            if r["round"] < last_round and r["reject_reason"] not in ("surplus", "unfinished")
        ]
        outcomes.append((comparable(loop.machine), records))
    assert outcomes[1] == outcomes[0]
    # novelty rejected something (a copy of a demonstration is caught before it, as demo_copy)
    assert any(r["reject_reason"] in ("too_similar", "demo_copy") for r in outcomes[0][1])


# -- budgets, accounting, cancellation -----------------------------------------------------------------


def test_every_candidate_is_accounted_for(seeds: list[Task]) -> None:
    sink = Recorder()
    loop = make_loop(seeds, ShuffledEngine(seed=2), sink=sink, num_instructions=25, window=16)
    reports = list(loop.rounds())
    totals = loop.totals
    assert totals.candidates == totals.accepted + sum(totals.rejected.values()) + sum(totals.surplus.values())
    assert totals.surplus[SURPLUS] > 0  # the last requests' tasks are beyond the target: kept as surplus
    reasons = Counter(r["reject_reason"] for r in sink.records)
    assert reasons == totals.rejected + totals.surplus
    surplus = [r for r in sink.records if r["reject_reason"] == SURPLUS]
    assert all(r["instances"] and "id" not in r for r in surplus)
    assert len(loop.machine) == 25 and [t.id for t in loop.machine] == [f"machine_task_{i:06d}" for i in range(25)]
    assert sum(len(r.accepted) for r in reports) == 25
    # per-stage requests: every one finished or cancelled
    for stats in totals.stages.values():
        assert stats.requests == stats.finished + stats.cancelled
    assert totals.stages["classification"].requests > 0 and totals.completion_tokens > 0


def test_max_rounds_submits_that_many_rounds_and_drains_them(seeds: list[Task]) -> None:
    engine = ShuffledEngine(seed=3)
    loop = make_loop(seeds, engine, num_instructions=1000, max_rounds=2, batch_size=3, window=64)
    reports = list(loop.rounds())
    assert loop.stop_reason == MAX_ROUNDS
    assert loop.totals.stages["instructions"].requests == 6
    assert all(s.cancelled == 0 for s in loop.totals.stages.values())
    assert [r.round for r in reports] == [1, 2] and all(r.complete and r.prompts == 3 for r in reports)
    assert sum(loop.totals.surplus.values()) == 0


def test_max_new_lands_exactly(seeds: list[Task]) -> None:
    loop = make_loop(seeds, ShuffledEngine(seed=4), num_instructions=1000, max_new=7)
    list(loop.run())
    assert loop.stop_reason == MAX_NEW and len(loop.machine) == 7


def test_time_limit_cancels_what_is_in_flight_and_records_it(seeds: list[Task]) -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    class Slow(ShuffledEngine):
        def stall(self, stream: ShuffledStream) -> bool:
            now[0] += 1.0
            # After 30 s the engine stops answering instance requests: they are in flight at the limit.
            return now[0] > 30 and all(r.priority == 0 for r in stream.held.values())

    engine = Slow(seed=5)
    sink = Recorder()
    loop = make_loop(seeds, engine, sink=sink, clock=clock, num_instructions=1000, time_limit="60s", window=8)
    events = list(loop.run())
    assert loop.stop_reason == TIME_LIMIT and now[0] <= 62
    assert engine.streams[0].closed and engine.streams[0].cancelled
    assert sum(s.cancelled for s in loop.totals.stages.values()) == len(engine.streams[0].cancelled)
    assert loop.totals.stages["instances"].cancelled > 0
    assert loop.totals.surplus[UNFINISHED] > 0
    unfinished = [r for r in sink.records if r["reject_reason"] == UNFINISHED]
    assert len(unfinished) == loop.totals.surplus[UNFINISHED]
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and all(p.in_flight_total >= 0 and p.target == 1000 for p in progress)
    assert any(p.output_tokens_per_second > 0 for p in progress)


def test_progress_falls_back_to_the_run_average_when_nothing_finished_lately(seeds: list[Task]) -> None:
    now = [0.0]
    loop = make_loop(seeds, ShuffledEngine(seed=5), clock=lambda: now[0])
    assert loop.progress().output_tokens_per_second == 0  # nothing finished yet: nothing to show
    loop.totals.stages["instructions"].completion_tokens = 600
    now[0] = 60.0  # long sequences in flight, none finished in the last ten seconds
    assert loop.progress().output_tokens_per_second == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("options", "accepted", "committed", "eta"),
    [
        ({}, 0, 0, None),  # nothing accepted, no other budget: no estimate
        ({}, 10, 5, 240.0),  # target 40, the pool still empty: 40 more at 10 per 60 s
        ({"max_rounds": 2}, 10, 3, 60.0),  # 6 requests, 3 committed in 60 s: 60 s more, before the target
        ({"max_rounds": 2}, 0, 0, None),  # nothing committed yet: no rate to go by
        ({"time_limit": "90s"}, 10, 5, 30.0),  # the clock ends it before the target would
        ({"time_limit": "90s"}, 0, 0, 30.0),
        ({"time_limit": "1h", "max_new": 12}, 10, 5, 12.0),  # 2 more at 10 per minute
        ({"time_limit": "30s"}, 10, 5, 0.0),  # past the limit: never negative
    ],
)
def test_eta_is_the_first_budget_to_end_the_run(
    seeds: list[Task], options: dict[str, Any], accepted: int, committed: int, eta: float | None
) -> None:
    now = [0.0]
    loop = make_loop(seeds, ShuffledEngine(seed=5), clock=lambda: now[0], **options)
    loop._started = 0.0
    now[0] = 60.0
    loop.totals.accepted = accepted
    loop._committed = committed
    got = loop.progress().eta_seconds
    assert got == (None if eta is None else pytest.approx(eta))


def test_interrupt_cancels_in_flight_and_keeps_what_was_committed(seeds: list[Task]) -> None:
    engine = ShuffledEngine(seed=6)
    engine.interrupt_at = 25
    sink = Recorder()
    loop = make_loop(seeds, engine, sink=sink, num_instructions=1000, window=8)
    seen: list[RoundReport] = []
    with pytest.raises(KeyboardInterrupt):
        for event in loop.run():
            if isinstance(event, RoundReport):
                seen.append(event)
    assert engine.streams[0].closed
    assert sink.tasks == loop.machine  # everything committed reached the sink, nothing else
    totals = loop.totals
    assert totals.candidates == totals.accepted + sum(totals.rejected.values()) + sum(totals.surplus.values())


def test_a_signal_during_a_group_commit_stops_the_loop_once_the_write_is_counted(seeds: list[Task]) -> None:
    """SIGTERM while the sink writes: the write finishes, the loop counts it, then StopRequested is raised
    (not later, not in the middle), in-flight requests are cancelled and every candidate is accounted for."""
    signalled: list[int] = []

    class SignallingSink(Recorder):
        def __call__(self, tasks: list[Task], records: list[dict[str, Any]]) -> None:
            if tasks and not signalled:
                os.kill(os.getpid(), signal.SIGTERM)  # handled at once, held by the loop
                signalled.append(len(tasks))
                time.sleep(0.01)  # the rest of the write happens after the signal arrived
            super().__call__(tasks, records)

    engine = ShuffledEngine(seed=8)
    sink = SignallingSink()
    loop = make_loop(seeds, engine, sink=sink, num_instructions=1000, window=8)
    restore = stopping.install()
    try:
        with pytest.raises(stopping.StopRequested) as info:
            for _ in loop.run():
                pass
    finally:
        restore()
        stopping.reset()
    assert info.value.reason == "terminated" and signalled
    assert loop.persisted == len(sink.tasks) == len(loop.machine) >= signalled[0]  # the write was counted
    assert sum(1 for tasks, _ in sink.calls if tasks) == 1  # and nothing was written after it
    assert engine.streams[0].closed
    totals = loop.totals
    assert totals.candidates == totals.accepted + sum(totals.rejected.values()) + sum(totals.surplus.values())


def test_tasks_reach_the_sink_in_groups(seeds: list[Task]) -> None:
    sink = Recorder()
    loop = make_loop(seeds, ShuffledEngine(seed=7), sink=sink, num_instructions=200, batch_size=1000, window=64)
    list(loop.run())
    assert len(sink.tasks) == 200
    assert len([c for c in sink.calls if c[0]]) <= 200 / 64 + 2


def test_follow_up_requests_overtake_new_instruction_requests(seeds: list[Task]) -> None:
    engine = ShuffledEngine(seed=8)
    list(make_loop(seeds, engine, num_instructions=10).run())
    by_stage = {r.sampling.max_tokens: r.priority for r in engine.submitted}
    assert by_stage == {1024: 2, 3: 1, 350: 0}


def test_a_pool_already_at_its_target_sends_nothing(seeds: list[Task]) -> None:
    engine = ShuffledEngine(seed=0)
    first = make_loop(seeds, engine, num_instructions=5)
    list(first.run())
    engine.submitted.clear()
    again = make_loop(seeds, engine, pool=first.machine, num_instructions=5)
    assert list(again.run()) == [] and again.stop_reason == TARGET_REACHED
    assert engine.submitted == []


# -- chat, the Alpaca method and the judge --------------------------------------------------------------


def make_issue13_loop(
    seeds: list[Task], backend: Any, *, chat: bool, method: str, judge: Any = None, sink: Any = None, **options: Any
) -> Bootstrap:
    from selfinstruct.protocol.alpaca import AlpacaTemplates
    from selfinstruct.protocol.chatprompts import ChatTemplates

    cfg = GenerateConfig(**{"num_instructions": 30, "batch_size": 3, "window": 4, "method": method, **options})
    return Bootstrap(
        cfg, backend, seeds, [], PromptTemplates.load(PROMPTS), rng=random.Random(5), run_id="r", sink=sink,
        chat=chat, chat_templates=ChatTemplates.load(PROMPTS), alpaca=AlpacaTemplates.load(PROMPTS), judge=judge,
    )  # fmt: skip


def judge_spec(chat: bool = False, backend: Any = None, min_score: float | None = None) -> Any:
    from selfinstruct.loop.bootstrap import JudgeSpec
    from selfinstruct.protocol.judge import JudgeTemplate

    return JudgeSpec(JudgeTemplate.load(PROMPTS), "shuffled", chat, backend, min_score)


@pytest.mark.parametrize(
    ("method", "chat", "judged"),
    [
        ("self-instruct", True, False),
        ("alpaca", False, False),
        ("alpaca", True, False),
        ("self-instruct", False, True),
        ("alpaca", True, True),
    ],
)
def test_replay_and_accounting_hold_for_every_mode(seeds: list[Task], method: str, chat: bool, judged: bool) -> None:
    pools = []
    for engine_seed in (1, 2):
        sink = Recorder()
        judge = judge_spec(chat=chat, min_score=3) if judged else None
        loop = make_issue13_loop(seeds, ShuffledEngine(seed=engine_seed), chat=chat, method=method, judge=judge,
                                 sink=sink)  # fmt: skip
        list(loop.run())
        totals = loop.totals
        assert loop.stop_reason == TARGET_REACHED and len(loop.machine) == 30
        assert totals.candidates == totals.accepted + sum(totals.rejected.values()) + sum(totals.surplus.values())
        assert Counter(r["reject_reason"] for r in sink.records) == totals.rejected + totals.surplus
        for stats in totals.stages.values():
            assert stats.requests == stats.finished + stats.cancelled
        assert (totals.stages["judge"].requests > 0) is judged
        if judged:
            assert {"low_score", "no_score"} <= totals.rejected.keys()
            assert all(t.meta["judge"]["score"] >= 3 for t in loop.machine)
        if method == "alpaca":
            assert totals.stages["classification"].requests == totals.stages["instances"].requests == 0
            assert all(t.meta["method"] == "alpaca" and len(t.instances) == 1 for t in loop.machine)
        records = comparable(loop.machine)
        for record in records:  # the judgement's time, like created_at, is no part of a replay
            if "judge" in record:
                record["judge"] = {k: v for k, v in record["judge"].items() if k != "judged_at"}
        pools.append(records)
    assert pools[0] == pools[1]


def test_a_judge_with_its_own_backend_gets_only_the_judge_requests(seeds: list[Task]) -> None:
    generator, judge_engine = ShuffledEngine(seed=1), ShuffledEngine(seed=9)
    loop = make_issue13_loop(seeds, generator, chat=False, method="self-instruct",
                             judge=judge_spec(backend=judge_engine), num_instructions=10)  # fmt: skip
    list(loop.run())
    assert len(loop.machine) == 10 and all("judge" in t.meta for t in loop.machine)
    assert judge_engine.submitted and all(r.prompt.endswith("\nScore:") for r in judge_engine.submitted)
    assert not any(isinstance(r.prompt, str) and r.prompt.endswith("\nScore:") for r in generator.submitted)
    assert generator.streams[0].closed and judge_engine.streams[0].closed


def test_tasks_waiting_for_the_judge_at_the_time_limit_are_unfinished(seeds: list[Task]) -> None:
    now = [0.0]

    class SilentJudge(ShuffledEngine):
        def stall(self, stream: ShuffledStream) -> bool:
            now[0] += 1.0
            return now[0] > 20 and all(r.priority == -1 for r in stream.held.values())

    sink = Recorder()
    cfg = {"num_instructions": 1000, "time_limit": "40s"}
    loop = make_issue13_loop(seeds, SilentJudge(seed=3), chat=False, method="alpaca", judge=judge_spec(), sink=sink,
                             **cfg)  # fmt: skip
    loop.clock = lambda: now[0]
    list(loop.run())
    totals = loop.totals
    assert loop.stop_reason == TIME_LIMIT
    assert totals.stages["judge"].cancelled > 0 and totals.surplus[UNFINISHED] >= totals.stages["judge"].cancelled
    assert totals.candidates == totals.accepted + sum(totals.rejected.values()) + sum(totals.surplus.values())


# -- the window follows the engine; the lag stays fixed ------------------------------------------------


class CapacityStream(ShuffledStream):
    """A stream that says how much it can hold, as an engine's running and waiting counts would:
    ``capacity()`` follows the engine's ``script`` (a list, cycled), or moves at random within
    ``max_capacity()`` (its own seed), or is unknown. Every instruction request records (capacity,
    requests held once it is in, the loop's unresolved instruction requests)."""

    engine: CapacityEngine

    def __init__(self, engine: CapacityEngine) -> None:
        super().__init__(engine)
        self.rng = random.Random(engine.capacity_seed)
        self.asked = 0
        self.current: int | None = None
        self.sent: list[tuple[int | None, int, int]] = []

    def capacity(self) -> int | None:
        engine = self.engine
        if engine.script:
            self.current = engine.script[self.asked % len(engine.script)]
        elif engine.capacity_seed is not None:
            self.current = self.rng.randint(1, engine.most)
        self.asked += 1
        return self.current

    def max_capacity(self) -> int | None:
        return self.engine.most

    def submit(self, request: Request) -> None:
        super().submit(request)
        if request.priority == 2:
            loop = self.engine.loop
            assert loop is not None
            self.sent.append((self.current, len(self.held), loop._submitted - loop._committed))


class CapacityEngine(ShuffledEngine):
    def __init__(self, seed: int, most: int, capacity_seed: int | None = None, script: list[int] | None = None) -> None:
        super().__init__(seed)
        self.most = most
        self.capacity_seed = capacity_seed
        self.script = script or []
        self.loop: Bootstrap | None = None

    def stream(self) -> CapacityStream:  # type: ignore[override]
        stream = CapacityStream(self)
        self.streams.append(stream)
        return stream


def follow(seeds: list[Task], engine: CapacityEngine, **options: Any) -> Bootstrap:
    """A loop whose window follows the engine (no --window), run to its end."""
    loop = make_loop(seeds, engine, window=None, **options)
    engine.loop = loop
    list(loop.run())
    return loop


@pytest.mark.parametrize(
    ("max_capacity", "expected", "lag"),
    [
        (None, 10**6, 256),  # the stream does not say: the old fixed window
        (1280, 3000, 2250),  # a wide engine, a long run: three quarters of the requests it needs
        (1280, 10**6, 2560),  # a wide engine, a very long run: twice what it holds
        (320, 3000, 640),
        (24, 50, 38),  # a small run on a CPU engine still shows its own tasks
        (1280, 4, 8),  # never below MIN_LAG
        (10**6, math.inf, 65_536),  # never above --window's own bound
    ],
)
def test_default_lag(max_capacity: int | None, expected: float, lag: int) -> None:
    assert default_lag(max_capacity, expected) == lag


@pytest.mark.parametrize("timing", range(4))
def test_a_capacity_that_moves_with_timing_does_not_change_the_pool(seeds: list[Task], timing: int) -> None:
    """The same seed and engine settings: the same pool whether the capacity is unknown or moves at random,
    whatever order and delays the answers come with; and the loop never sent past it."""
    reference = follow(seeds, CapacityEngine(seed=100, most=5), num_instructions=60)
    engine = CapacityEngine(seed=timing, most=5, capacity_seed=timing + 7)
    loop = follow(seeds, engine, num_instructions=60)
    assert loop.stop_reason == reference.stop_reason == TARGET_REACHED
    assert comparable(loop.machine) == comparable(reference.machine) and len(loop.machine) == 60
    # Fixed by max_capacity (2 x 5) and the budget (3/4 of 30 requests), not by timing: 10 both times.
    assert loop.lag == reference.lag == 10
    machine = {t.instruction for t in loop.machine}  # later requests showed the run's own tasks
    assert any(set(t.meta["demonstrations"]) & machine for t in loop.machine)
    sent = engine.streams[0].sent
    assert all(cap is not None and held <= cap for cap, held, _ in sent)
    assert all(unresolved <= loop.lag for _, _, unresolved in sent)


def test_the_window_grows_and_shrinks_with_the_capacity(seeds: list[Task]) -> None:
    script = [2, 2, 12, 12, 1, 1, 40, 40]
    engine = CapacityEngine(seed=4, most=40, script=script)
    loop = follow(seeds, engine, num_instructions=200)
    assert loop.stop_reason == TARGET_REACHED
    assert loop.lag == 75  # 3/4 of the 100 requests 200 tasks need at 2 each (2 x 40 would be 80)
    sent = engine.streams[0].sent
    assert all(cap is not None and held <= cap for cap, held, _ in sent)
    assert all(unresolved <= loop.lag for _, _, unresolved in sent)
    most = {cap: max((held for c, held, _ in sent if c == cap), default=0) for cap in set(script)}
    assert most[40] > 12 >= most[12] > 2 >= most[2] and most[1] <= 1
    assert max(unresolved for _, _, unresolved in sent) > 12  # more unresolved than one capacity of 12


def test_a_fixed_window_ignores_the_capacity(seeds: list[Task]) -> None:
    engine = CapacityEngine(seed=5, most=3, script=[1])
    loop = make_loop(seeds, engine, num_instructions=60, window=16)
    engine.loop = loop
    list(loop.run())
    assert loop.lag == 16
    assert max(unresolved for _, _, unresolved in engine.streams[0].sent) == 16  # not held to capacity 1


def test_progress_shows_the_capacity(seeds: list[Task]) -> None:
    engine = CapacityEngine(seed=6, most=7, script=[7])
    loop = make_loop(seeds, engine, num_instructions=20, window=None)
    engine.loop = loop
    events = list(loop.run())
    assert loop.progress().capacity == 7
    assert all(e.capacity in (None, 7) for e in events if isinstance(e, Progress))


@pytest.mark.parametrize("interrupt", [False, True])
def test_a_batch_still_on_the_workers_when_the_run_ends_is_accounted_for(
    seeds: list[Task], monkeypatch: pytest.MonkeyPatch, interrupt: bool
) -> None:
    """The workers' answers never look ready (the loop goes on without them, and waits only when nothing
    else is in flight), and the run ends, by its target or by a stop, with a batch still on them: every
    candidate is still counted and recorded once, and the pool is the one novelty in-process gives."""
    monkeypatch.setattr(novelty_workers, "PARALLEL_FROM", 0)
    reference = make_loop(seeds, ShuffledEngine(seed=9), num_instructions=30, window=8, workers=1)
    list(reference.run())
    monkeypatch.setattr(novelty_workers._Worker, "answered", lambda self: False)
    engine = ShuffledEngine(seed=9)
    engine.interrupt_at = 30 if interrupt else None
    sink = Recorder()
    loop = make_loop(seeds, engine, sink=sink, num_instructions=30, window=8, workers=2)
    if interrupt:
        with pytest.raises(KeyboardInterrupt):
            list(loop.run())
    else:
        list(loop.run())
        assert comparable(loop.machine) == comparable(reference.machine)
    assert loop._checking is None and not loop.index.parallel
    totals = loop.totals
    assert totals.candidates == totals.accepted + sum(totals.rejected.values()) + sum(totals.surplus.values())
    assert Counter(r["reject_reason"] for r in sink.records) == totals.rejected + totals.surplus
    assert sink.tasks == loop.machine
