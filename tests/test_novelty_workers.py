"""ParallelNovelty gives exactly NoveltyIndex.filter_batch's results on any layout of worker processes."""

from __future__ import annotations

import random
import time

import pytest

from selfinstruct.gates import novelty_workers
from selfinstruct.gates.novelty import NoveltyIndex, NoveltyResult
from selfinstruct.gates.novelty_workers import (
    NoveltyWorkerError,
    ParallelNovelty,
    available_cores,
    merge_results,
    plan_layout,
)

WORDS = [
    *("write", "explain", "list", "describe", "the", "a", "of", "to", "poem", "story", "recipe", "summary"),
    *("python", "function", "sort", "numbers", "three", "five", "ways", "reasons", "why", "how", "small"),
    *("large", "red", "blue", "city", "river", "quickly", "carefully", "friend", "letter"),
]


def _text(rng: random.Random) -> str:
    n = rng.choice([0, 1, 2, 3, 5, 8, 12, 20])
    return " ".join(rng.choice(WORDS) for _ in range(n)) + rng.choice(["", ".", "?", " 3", "!"])


def _stream(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    texts = [_text(rng) for _ in range(count)]
    # Near-duplicates, exact duplicates and empty strings, so that rejections and ties occur.
    for i in range(0, count, 7):
        texts[i] = texts[max(0, i - rng.randrange(1, 30))]
    texts[3] = ""
    return texts


def _batches(texts: list[str], rng: random.Random) -> list[list[str]]:
    out, i = [], 0
    while i < len(texts):
        size = rng.choice([0, 1, 2, 5, 17, 40])
        out.append(texts[i : i + size])
        i += size
    return out


def _same(a: list[NoveltyResult], b: list[NoveltyResult], floor: float = 0.0) -> None:
    """The same top lists; the same maxima wherever they are exact (above the floor: see the module docs),
    else both at most the floor (each a lower bound of the true maximum)."""
    assert [[(m.instruction, m.score, m.index) for m in r.top] for r in a] == [
        [(m.instruction, m.score, m.index) for m in r.top] for r in b
    ]
    for x, y in zip(a, b, strict=True):
        if x.max_score > floor or y.max_score > floor:
            assert x.max_score == y.max_score


@pytest.mark.parametrize(
    ("workers", "shard_size", "floor", "top_k"),
    [
        (1, 10**6, 0.0, 5),  # one worker: the in-process index itself
        (2, 10**6, 0.0, 5),  # two replicas
        (2, 50, 0.0, 5),  # two shards
        (3, 50, 0.0, 3),  # three shards
        (4, 300, 0.0, 5),  # two replicas of two shards
        (2, 50, 0.7, 5),  # the default floor: top only above the threshold
        (2, 50, 0.3, 0),  # no top list
    ],
)
def test_filter_batch_matches_single_index(workers: int, shard_size: int, floor: float, top_k: int) -> None:
    seeds = _stream(1, 60)
    texts = _stream(2, 400)
    rng = random.Random(workers * 31 + shard_size)
    reference = NoveltyIndex(seeds, report_floor=floor, top_k=top_k)
    with ParallelNovelty(
        seeds, workers=workers, report_floor=floor, top_k=top_k, parallel_from=0, shard_size=shard_size
    ) as parallel:
        for batch in _batches(texts, rng):
            _same(parallel.filter_batch(batch), reference.filter_batch(batch), floor)
        assert len(parallel) == len(reference)
        assert parallel.parallel == (workers > 1)
        assert parallel.replicas * parallel.shards == (workers if workers > 1 else 1)


def test_switches_to_workers_when_the_index_grows() -> None:
    texts = _stream(3, 300)
    reference = NoveltyIndex()
    with ParallelNovelty(workers=2, parallel_from=100) as parallel:
        for i in range(0, len(texts), 25):
            before = len(parallel)
            _same(parallel.filter_batch(texts[i : i + 25]), reference.filter_batch(texts[i : i + 25]), 0.7)
            assert parallel.parallel == (before >= 100)  # decided by the size when a batch starts
        assert parallel.parallel


def test_close_then_use_again_restarts_the_workers() -> None:
    texts = _stream(4, 200)
    reference = NoveltyIndex(texts[:50])
    parallel = ParallelNovelty(texts[:50], workers=2, parallel_from=0)
    parallel.start()
    _same(parallel.filter_batch(texts[50:120]), reference.filter_batch(texts[50:120]), 0.7)
    parallel.close()
    parallel.close()  # twice is fine
    assert not parallel.parallel
    _same(parallel.filter_batch(texts[120:]), reference.filter_batch(texts[120:]), 0.7)
    parallel.close()


def test_a_dead_worker_is_an_error_naming_it() -> None:
    parallel = ParallelNovelty(_stream(5, 50), workers=2, parallel_from=0)
    parallel.filter_batch(["write a poem about a river"])
    parallel._procs[1].process.kill()
    parallel._procs[1].process.wait()
    with pytest.raises(NoveltyWorkerError, match=r"novelty worker 2 of 2 .*(exited|signal).*--workers 1"):
        parallel.filter_batch(["describe a small city"])
    assert not parallel.parallel  # the others were stopped too
    parallel.close()


def test_a_worker_failure_comes_back_as_an_error() -> None:
    parallel = ParallelNovelty(_stream(5, 50), workers=2, parallel_from=0)
    parallel.start()
    parallel._procs[0].receive()  # the init answers
    parallel._procs[1].receive()
    parallel._starting = False
    parallel._procs[0].send(("bogus",))
    with pytest.raises(NoveltyWorkerError, match="worker 1 of 2 failed: unexpected message 'bogus'"):
        parallel._procs[0].receive()
    parallel.close()


@pytest.mark.parametrize(
    ("workers", "expected", "layout"),
    [(1, 10**9, (1, 1)), (2, 52_000, (2, 1)), (2, 1_000_000, (1, 2)), (8, 1_000_000, (4, 2)), (6, 3 * 10**6, (1, 6)),
     (4, 10**9, (1, 4)), (3, 0, (3, 1))],
)  # fmt: skip
def test_plan_layout(workers: int, expected: int, layout: tuple[int, int]) -> None:
    assert plan_layout(workers, expected) == layout


@pytest.mark.parametrize("bad", [0, -1])
def test_workers_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        ParallelNovelty(workers=bad)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        plan_layout(bad, 10)


def test_bad_options_are_checked_up_front() -> None:
    with pytest.raises(ValueError, match="report_floor"):
        ParallelNovelty(workers=2, threshold=0.5, report_floor=0.6)


def test_merge_results_orders_ties_by_position() -> None:
    from selfinstruct.gates.novelty import Match

    a = NoveltyResult(0.8, [Match("x", 0.8, 4), Match("y", 0.5, 0)])
    b = NoveltyResult(0.8, [Match("z", 0.8, 1), Match("w", 0.5, 3)])
    merged = merge_results([a, b], 3)
    assert merged.max_score == 0.8
    assert [m.index for m in merged.top] == [1, 4, 0]
    assert merge_results([a, b], 0).top == []
    assert merge_results([], 5) == NoveltyResult(0.0, [])


def test_available_cores_is_positive() -> None:
    assert available_cores() >= 1


def test_a_batch_is_scored_while_the_caller_goes_on() -> None:
    """begin() returns at once; ready() never waits; finish() gives filter_batch's results, in order."""
    texts = _stream(6, 300)
    reference = NoveltyIndex(texts[:100])
    with ParallelNovelty(texts[:100], workers=2, parallel_from=0) as parallel:
        for start in range(100, 300, 50):
            batch = parallel.begin(texts[start : start + 50])
            with pytest.raises(RuntimeError, match="still being scored"):
                parallel.begin(["one more"])
            while not parallel.ready(batch):
                time.sleep(0.001)
            _same(parallel.finish(batch), reference.filter_batch(texts[start : start + 50]), 0.7)
            assert parallel.finish(batch) is batch.results  # finishing twice gives the same list
        assert len(parallel) == len(reference)


def test_the_in_process_index_answers_while_the_workers_build_their_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _stream(7, 400)
    reference = NoveltyIndex()
    with ParallelNovelty(workers=2, parallel_from=100) as parallel:
        _same(parallel.filter_batch(texts[:120]), reference.filter_batch(texts[:120]), 0.7)
        assert len(parallel) >= 100 and not parallel.parallel
        # The workers start with the next batch; until they have built their shards (held back here), the
        # in-process index answers at once and the workers are told of its additions later.
        monkeypatch.setattr(novelty_workers._Worker, "answered", lambda self: False)
        first = parallel.begin(texts[120:140])
        assert parallel.parallel and first.results is not None and not parallel.on_workers
        _same(first.results, reference.filter_batch(texts[120:140]), 0.7)
        monkeypatch.undo()
        while not parallel.on_workers:
            time.sleep(0.001)
        later = parallel.begin(texts[140:])
        assert later.results is None  # on the workers now
        _same(parallel.finish(later), reference.filter_batch(texts[140:]), 0.7)


def test_closing_abandons_a_batch_being_scored() -> None:
    parallel = ParallelNovelty(_stream(8, 50), workers=2, parallel_from=0)
    batch = parallel.begin(["write a poem about a river", "describe a small city"])
    parallel.close()
    assert parallel.ready(batch)
    with pytest.raises(RuntimeError, match="abandoned"):
        parallel.finish(batch)
    assert len(parallel.filter_batch(["name three rivers"])) == 1  # usable again (workers restarted)
    parallel.close()
