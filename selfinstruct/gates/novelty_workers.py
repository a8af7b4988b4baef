"""The exact novelty check of :mod:`selfinstruct.gates.novelty`, with its heavy part on worker processes.

Scope
-----
:class:`ParallelNovelty` answers :meth:`~selfinstruct.gates.novelty.NoveltyIndex.filter_batch` (candidate ``i`` is
scored against every instruction indexed so far and every earlier accepted candidate of the batch, in
order) with the same decisions, the same floats and the same top matches, using several cores. The loop
keeps one writer and one order; only the scoring is spread:

* **Against the snapshot, in parallel.** The instructions indexed before a batch (the snapshot) live in
  worker processes (plain Python processes: the index is mostly Python code, so threads would share one
  core under the GIL). Each worker holds a *shard*: with ``S`` shards, the instruction at position ``p``
  lives in shard ``p mod S``. With ``W`` workers there are ``R = W / S`` *replicas* of the whole snapshot;
  the batch's candidates are cut into ``R`` contiguous parts and part ``r`` is scored by every shard of
  replica ``r``. Each shard answers, per candidate, the exact maximum F and the exact top-k above the
  report floor among its instructions (a :meth:`~selfinstruct.gates.novelty.NoveltyIndex.query`).
* **Against the batch, in order.** The main process then walks the candidates in order and scores each
  against the earlier accepted candidates of the same batch (which no worker has yet), pair by pair in one
  rapidfuzz ``cdist`` call (a batch is small; rouge-score's float, computed in its order), merges, and
  decides. Accepted candidates join the workers' shards with the next batch.

Why the merge is exact: the pool a candidate is checked against is the union of the shards and the batch's
earlier accepted candidates, so its maximum F is the largest of the parts' maxima and its top-k (score
descending, then insertion position) is the top-k of the parts' top-k lists, with each shard's local
positions mapped back to global ones (local ``j`` of shard ``s`` is global ``j·S + s``; the batch's own
come after the snapshot). Where the true maximum exceeds the report floor every part that holds it reports
it exactly; below the floor, ``max_score`` is a lower bound, as the single index documents.

How the work is laid out: replicas cost memory (each holds the whole snapshot, roughly 0.6 KB per
instruction), shards cost time (every shard pays a query's fixed cost, which dominates on small pools).
So the layout takes as few shards as keep each worker's share of the expected index at most
``shard_size`` instructions (a divisor of ``W``): on 2 cores, a 52K pool runs as 2 replicas and a 1M pool
as 2 shards. Small indexes (under ``parallel_from`` instructions) stay in-process, where starting workers
would cost more than it saves; ``workers=1`` never starts any and is the single index itself.

Workers are ``python -m selfinstruct.gates.novelty_workers`` subprocesses speaking pickle over their stdin and
stdout. They ignore SIGINT, SIGTERM and SIGHUP (the loop decides when to stop) and exit when their stdin
closes, so they never outlive the process that started them. A worker that dies or fails raises
:class:`NoveltyWorkerError` naming it; nothing is decided from a partial answer.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from rapidfuzz.distance import LCSseq
from rapidfuzz.process import cdist

from selfinstruct.errors import SelfInstructError
from selfinstruct.gates.novelty import (
    _CODE_CAPACITY,
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_K,
    Match,
    NoveltyIndex,
    NoveltyResult,
    _code,
    rouge_tokens_many,
)

__all__ = ["NoveltyBatch", "NoveltyWorkerError", "ParallelNovelty", "available_cores", "plan_layout"]

# Below this many indexed instructions the check runs in-process (a worker's start and the messages cost
# more than the scoring they would share).
PARALLEL_FROM = 10_000
# Each worker's share of the expected index stays at most this (see plan_layout).
SHARD_SIZE = 500_000
# A worker's reply on its pipe: this many bytes of length (little-endian), then the pickle.
_FRAME = 8


class NoveltyWorkerError(SelfInstructError):
    """A novelty worker process failed or exited; the run stops rather than decide from part of the pool."""

    exit_code = 1


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def plan_layout(workers: int, expected_size: int, shard_size: int = SHARD_SIZE) -> tuple[int, int]:
    """``(replicas, shards)`` for ``workers`` processes and an index expected to reach ``expected_size``.

    The fewest shards (a divisor of ``workers``) that keep each worker's share at most ``shard_size``;
    every shard when even that is not enough.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    for shards in range(1, workers + 1):
        if workers % shards == 0 and -(-max(expected_size, 0) // shards) <= shard_size:
            return workers // shards, shards
    return 1, workers


def merge_results(parts: Iterable[NoveltyResult], top_k: int) -> NoveltyResult:
    """One result over the union of disjoint parts whose ``Match.index`` values are global positions."""
    best = 0.0
    tops: list[Match] = []
    for part in parts:
        best = max(best, part.max_score)
        tops.extend(part.top)
    if not top_k or not tops:
        return NoveltyResult(best, [])
    tops.sort(key=lambda m: (-m.score, m.index))
    return NoveltyResult(best, tops[:top_k])


class _Recent:
    """The batch's accepted candidates, scored pair by pair: every candidate against every earlier one.

    A batch holds at most a few thousand instructions, where one rapidfuzz ``cdist`` call over all of them
    beats the pruned search (which, at report floor 0, verifies nearly every instruction of a small index
    anyway). Scores are rouge-score's floats, computed in its order, as :class:`NoveltyIndex` computes them.
    """

    def __init__(self, base: int, top_k: int, report_floor: float) -> None:
        self.base = base
        self.top_k = top_k
        self.report_floor = report_floor
        self._ids: dict[str, str] = {}  # token -> its code point (shared by the batch's instructions)
        self._texts: list[str] = []
        self._codes: list[str] = []
        self._lengths: list[int] = []

    def __len__(self) -> int:
        return len(self._texts)

    def _code(self, tokens: list[str]) -> str | None:
        ids = self._ids
        for token in tokens:
            if token not in ids:
                if len(ids) >= _CODE_CAPACITY:  # pragma: no cover - a batch with a million distinct tokens
                    return None
                ids[token] = _code(len(ids))
        return "".join([ids[t] for t in tokens])

    def query(self, tokens: list[str], code: str) -> NoveltyResult:
        if not self._texts or not tokens:
            return NoveltyResult(0.0, [])
        lcs = cdist([code], self._codes, scorer=LCSseq.similarity, dtype=np.int32)[0].astype(np.float64)
        n = np.asarray(self._lengths, dtype=np.float64)
        m = float(len(tokens))
        precision = lcs / np.maximum(n, 1.0)
        recall = lcs / m
        denom = precision + recall
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
        best = float(scores.max())
        above = np.flatnonzero(scores > self.report_floor)
        if not self.top_k or not len(above):
            return NoveltyResult(best, [])
        order = above[np.lexsort((above, -scores[above]))[: self.top_k]]
        return NoveltyResult(best, [Match(self._texts[i], float(scores[i]), self.base + i) for i in order.tolist()])

    def add(self, text: str, code: str, count: int) -> None:
        self._texts.append(text)
        self._codes.append(code)
        self._lengths.append(count)


def _readable(fd: int) -> bool:
    """Whether reading ``fd`` would not wait (poll(2): select(2) cannot take the high descriptors of a loop
    with thousands of connections). Where poll is missing (Windows), say yes: the caller then waits, as
    a synchronous check would."""
    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _Worker:
    """One worker process and its pipes."""

    def __init__(self, number: int, count: int) -> None:
        self.number = number
        self.count = count
        package_parent = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "selfinstruct.gates.novelty_workers"],
                bufsize=0,  # replies are read from the raw pipe (see _fill): no buffer hides what came
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.errors,
                env=env,
                close_fds=True,
                # Its own session: a terminal's Ctrl-C or a signal to the run's process group never reaches
                # it; the main process stops it by closing its input.
                start_new_session=True,
            )
        except OSError as exc:
            self.errors.close()
            raise NoveltyWorkerError(f"cannot start novelty worker {number + 1} of {count}: {exc}") from None
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin: IO[bytes] = self.process.stdin
        self.stdout: IO[bytes] = self.process.stdout
        self._fd = self.stdout.fileno()
        self._buffer = bytearray()  # bytes of replies read so far (each: 8-byte length, then the pickle)
        self.built = False  # its answer to "init" (the first reply it gives) has been taken in

    def _failed(self, what: str) -> NoveltyWorkerError:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self.errors.seek(0)
        tail = self.errors.read()[-2000:].decode("utf-8", "replace").strip()
        status = "is not answering" if code is None else f"exited with code {code}"
        if code is not None and code < 0:
            status += f" (signal {-code}{', out of memory?' if -code == signal.SIGKILL else ''})"
        detail = f"; it said: {tail.splitlines()[-1]}" if tail else ""
        return NoveltyWorkerError(
            f"novelty worker {self.number + 1} of {self.count} {status} {what}{detail}. "
            "--workers 1 checks novelty in the main process."
        )

    def send(self, message: object) -> None:
        try:
            pickle.dump(message, self.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._failed("while taking work") from None

    def _complete(self) -> int:
        """The length of the first reply's frame when all of it has been read, else 0."""
        if len(self._buffer) < _FRAME:
            return 0
        end = _FRAME + int.from_bytes(self._buffer[:_FRAME], "little")
        return end if len(self._buffer) >= end else 0

    def _fill(self, block: bool) -> bool:
        """Read what the pipe holds (waiting for it when ``block``); whether a whole reply is in."""
        while not self._complete():
            if not block and not _readable(self._fd):
                return False
            try:
                chunk = os.read(self._fd, 1 << 20)
            except OSError:
                raise self._failed("before answering") from None
            if not chunk:
                raise self._failed("before answering")
            self._buffer += chunk
        return True

    def answered(self) -> bool:
        """Whether the next reply owed is all in (never waits)."""
        return self._fill(block=False)

    def receive(self) -> Any:
        """The next reply, waiting for it."""
        self._fill(block=True)
        end = self._complete()
        frame = bytes(self._buffer[_FRAME:end])
        del self._buffer[:end]
        try:
            reply = pickle.loads(frame)
        except (pickle.UnpicklingError, EOFError, ValueError):
            raise self._failed("with a reply that does not unpickle") from None
        if not (isinstance(reply, tuple) and len(reply) == 2):
            raise self._failed("with a reply it should not give")
        kind, payload = reply
        if kind == "error":
            raise NoveltyWorkerError(
                f"novelty worker {self.number + 1} of {self.count} failed: {payload}. "
                "--workers 1 checks novelty in the main process."
            )
        return payload

    def close(self) -> None:
        """End the worker: an idle one exits at once when its input closes; a busy one is killed (what it
        was computing is no longer wanted)."""
        for pipe in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.errors.close()


def _close_all(workers: list[_Worker]) -> None:
    while workers:
        workers.pop().close()


class ParallelNovelty:
    """:class:`~selfinstruct.gates.novelty.NoveltyIndex`'s ``filter_batch`` on ``workers`` processes (module docs).

    ``expected_size``: how many instructions the index will likely hold (it chooses the layout only).
    ``parallel_from`` and ``shard_size`` default to :data:`PARALLEL_FROM` and :data:`SHARD_SIZE`.
    Results are identical whatever ``workers`` is. Call :meth:`close` (or use it as a context manager) to
    stop the workers; they also stop when this object is collected or the process exits.
    """

    def __init__(
        self,
        instructions: Iterable[str] = (),
        *,
        workers: int = 1,
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
        report_floor: float | None = None,
        expected_size: int | None = None,
        parallel_from: int | None = None,
        shard_size: int | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.top_k = top_k
        self.threshold = threshold
        self.report_floor = threshold if report_floor is None else report_floor
        self._options = {"top_k": top_k, "threshold": threshold, "report_floor": self.report_floor}
        self._texts: list[str] = list(instructions)
        self._expected = max(len(self._texts), expected_size or 0)
        self._parallel_from = PARALLEL_FROM if parallel_from is None else parallel_from
        self._shard_size = SHARD_SIZE if shard_size is None else shard_size
        NoveltyIndex(**self._options)  # type: ignore[arg-type]  # checks the options
        self._procs: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _close_all, self._procs)
        self.replicas = self.shards = 1
        self._sent = 0  # instructions the workers hold (positions 0 .. _sent-1)
        self._starting = False  # workers were sent their shards and have not confirmed yet
        self._pending: NoveltyBatch | None = None  # a batch sent to the workers, not yet finished
        # In-process while the index is small (always, with one worker); else the workers build it.
        self._index: NoveltyIndex | None = None
        if not self._wants_workers():
            self._index = NoveltyIndex(self._texts, **self._options)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._texts)

    def __enter__(self) -> ParallelNovelty:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def on_workers(self) -> bool:
        """Whether the next batch is scored on the worker processes: they are up (or due to start, when no
        in-process index could answer meanwhile). While they build their shards, the in-process index
        answers, so a caller keeps its batches small then."""
        if not self._procs and not self._wants_workers():
            return False
        if self._index is None:
            return True
        return bool(self._procs) and self._confirmed(block=False)

    @property
    def parallel(self) -> bool:
        """Whether worker processes hold the index (else it is in this process)."""
        return bool(self._procs)

    def close(self) -> None:
        """Stop the workers; the index stays usable (it restarts them when asked). A batch being scored is
        abandoned: :meth:`finish` raises for it."""
        if self._procs:
            _close_all(self._procs)
            self._sent = 0
            self._starting = False
        if self._pending is not None:
            self._pending.abandoned = True
            self._pending = None

    def _wants_workers(self) -> bool:
        return self.workers > 1 and len(self._texts) >= self._parallel_from

    # ------------------------------------------------------------------------------------------ workers

    def start(self) -> None:
        """Start the workers now if the index is big enough for them, without waiting for them to build
        their shards (so that they build while the caller does other things); else do nothing. An
        in-process index already built keeps answering until they are ready."""
        if self._procs or not self._wants_workers():
            return
        self.replicas, self.shards = plan_layout(self.workers, max(self._expected, len(self._texts)), self._shard_size)
        try:
            for number in range(self.workers):
                self._procs.append(_Worker(number, self.workers))
            for number, worker in enumerate(self._procs):
                shard = number % self.shards
                worker.send(("init", self._options, self._texts[shard :: self.shards]))
        except BaseException:
            _close_all(self._procs)
            raise
        self._sent = len(self._texts)
        self._starting = True

    def _confirmed(self, block: bool) -> bool:
        """Whether every worker has built its shard (taking in the answers that came; waiting when
        ``block``)."""
        if not self._starting:
            return True
        try:
            for worker in self._procs:
                if not worker.built:
                    if not block and not worker.answered():
                        return False
                    worker.receive()
                    worker.built = True
        except BaseException:
            self.close()
            raise
        self._starting = False
        self._index = None  # the workers hold the index now
        return True

    def _in_process(self, candidates: list[str]) -> list[NoveltyResult]:
        if self._index is None:  # the workers were closed while the index was small
            self._index = NoveltyIndex(self._texts, **self._options)  # type: ignore[arg-type]
        results = self._index.filter_batch(candidates, add=True)
        self._texts.extend(t for t, r in zip(candidates, results, strict=True) if r.max_score <= self.threshold)
        return results

    # ---------------------------------------------------------------------------------------------- API

    def begin(self, candidates: Sequence[str]) -> NoveltyBatch:
        """Start scoring ``candidates`` and return at once: :meth:`ready` says when the answers are in and
        :meth:`finish` resolves the batch, in order, as ``NoveltyIndex.filter_batch(candidates, add=True)``
        does. One batch at a time: the next one's snapshot includes this one's accepted candidates. In
        process (a small index, one worker, or workers still building their shards) the batch is resolved
        here and now."""
        if self._pending is not None:
            raise RuntimeError("a novelty batch is still being scored: finish it first")
        candidates = list(candidates)
        if not candidates:
            return NoveltyBatch([], 0, [])
        self.start()  # (when the index has grown enough: they build their shards from now on)
        if not self.on_workers:
            return NoveltyBatch(candidates, len(self._texts), self._in_process(candidates))
        shards, replicas = self.shards, self.replicas
        adds = self._texts[self._sent :]
        first = self._sent
        batch = NoveltyBatch(candidates, len(self._texts), None, replicas=replicas, workers=len(self._procs))
        try:
            for number, worker in enumerate(self._procs):
                replica, shard = divmod(number, shards)
                # The new instructions at global positions p with p mod shards == shard, in order.
                mine = adds[(shard - first) % shards :: shards]
                worker.send(("batch", mine, candidates[batch.bounds[replica] : batch.bounds[replica + 1]]))
        except BaseException:
            self.close()
            raise
        self._sent = len(self._texts)
        self._pending = batch
        return batch

    def ready(self, batch: NoveltyBatch) -> bool:
        """Whether ``batch``'s answers are all in (:meth:`finish` will not wait). Never waits."""
        if batch.results is not None or batch.abandoned:
            return True
        return self._collect(batch, block=False)

    def _collect(self, batch: NoveltyBatch, block: bool) -> bool:
        try:
            if not self._confirmed(block):
                return False
            for worker in self._procs:
                if not batch.received[worker.number]:
                    if not block and not worker.answered():
                        return False
                    batch.answers[worker.number] = worker.receive()
                    batch.received[worker.number] = True
        except BaseException:
            # A worker that failed, or an interrupt mid-exchange: the pipes may hold half a message.
            self.close()
            raise
        return True

    def finish(self, batch: NoveltyBatch) -> list[NoveltyResult]:
        """``batch``'s results, in order (waiting for the workers' answers if need be). The batch's accepted
        candidates join the index."""
        if batch.results is not None:
            return batch.results
        if batch.abandoned:
            raise RuntimeError("this novelty batch was abandoned (the workers were closed)")
        self._collect(batch, block=True)
        self._pending = None
        candidates, base, texts = batch.candidates, batch.base, self._texts
        shards, replicas = self.shards, self.replicas
        snapshot: list[NoveltyResult] = []
        for replica in range(replicas):
            per_shard = batch.answers[replica * shards : (replica + 1) * shards]
            for i in range(batch.bounds[replica + 1] - batch.bounds[replica]):
                parts = []
                for shard, answer in enumerate(per_shard):
                    best, top = answer[i]
                    glob = [(local * shards + shard, score) for local, score in top]
                    parts.append(NoveltyResult(best, [Match(texts[p], s, p) for p, s in glob]))
                snapshot.append(merge_results(parts, self.top_k))
        # The batch's own accepted candidates, which no worker holds yet: checked here, in order.
        recent = _Recent(base, self.top_k, self.report_floor)
        fallback: NoveltyIndex | None = None  # should a batch exhaust the code points
        results = []
        for text, against_snapshot, tokens in zip(candidates, snapshot, rouge_tokens_many(candidates), strict=True):
            code = recent._code(tokens) if fallback is None else None
            if code is None and fallback is None:  # pragma: no cover - a batch with a million distinct tokens
                fallback = NoveltyIndex(self._texts[base:], **self._options)  # type: ignore[arg-type]
            if fallback is not None:  # pragma: no cover
                own = fallback.query(text)
                own = NoveltyResult(own.max_score, [Match(m.instruction, m.score, base + m.index) for m in own.top])
            else:
                assert code is not None
                own = recent.query(tokens, code)
            result = merge_results((against_snapshot, own), self.top_k) if len(self._texts) > base else against_snapshot
            results.append(result)
            if result.max_score <= self.threshold:
                if fallback is not None:  # pragma: no cover
                    fallback.add(text)
                else:
                    assert code is not None
                    recent.add(text, code, len(tokens))
                self._texts.append(text)
        batch.results = results
        return results

    def filter_batch(self, candidates: Sequence[str]) -> list[NoveltyResult]:
        """Resolve the candidates in order, as ``NoveltyIndex.filter_batch(candidates, add=True)`` does."""
        return self.finish(self.begin(candidates))


class NoveltyBatch:
    """A batch handed to :meth:`ParallelNovelty.begin`: its candidates, and its results once resolved."""

    __slots__ = ("abandoned", "answers", "base", "bounds", "candidates", "received", "results")

    def __init__(
        self,
        candidates: list[str],
        base: int,
        results: list[NoveltyResult] | None,
        *,
        replicas: int = 1,
        workers: int = 0,
    ) -> None:
        self.candidates = candidates
        self.base = base  # the index's size when the batch began
        self.results = results
        self.abandoned = False
        # Replica r scores candidates bounds[r] .. bounds[r + 1] - 1.
        self.bounds = [len(candidates) * r // replicas for r in range(replicas + 1)]
        self.answers: list[Any] = [None] * workers
        self.received = [False] * workers


# ----------------------------------------------------------------------------------------------- worker


def _serve(source: IO[bytes], sink: IO[bytes]) -> None:
    """The worker's loop: build a shard, then answer batches until the input closes."""
    index: NoveltyIndex | None = None
    while True:
        try:
            message = pickle.load(source)
        except EOFError:
            return
        try:
            kind = message[0]
            if kind == "init":
                _, options, texts = message
                index = NoveltyIndex(texts, **options)
                reply: tuple[str, Any] = ("ok", len(index))
            elif kind == "batch" and index is not None:
                _, adds, queries = message
                index.extend(adds)
                answers = []
                for text in queries:
                    result = index.query(text)
                    answers.append((result.max_score, [(m.index, m.score) for m in result.top]))
                reply = ("ok", answers)
            else:
                reply = ("error", f"unexpected message {kind!r}")
        except Exception as exc:  # sent back and raised by the main process, which names this worker
            reply = ("error", f"{type(exc).__name__}: {exc}")
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        sink.write(len(data).to_bytes(_FRAME, "little") + data)
        sink.flush()


def _worker_main() -> int:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    # Replies go to the original stdout; anything else that writes to fd 1 lands on stderr instead.
    sink = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, sink)
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker_main())
