"""The Self-Instruct loop as a stream: many request lives overlap on one engine, with results that do not
depend on timing.

One instruction request's life: sample demonstrations -> generate a numbered list -> parse -> heuristic
filters -> ROUGE-L novelty -> for each survivor, classify (Yes/No) -> generate instances -> instance
filters -> accept. With ``--method alpaca`` the life is shorter: one request of complete tasks -> parse
-> heuristic filters -> instance filters -> ROUGE-L novelty -> accept. With a judge, every task that passed
the filters takes one more request (the rubric) before it is accepted; below ``--min-score`` it is rejected
as ``low_score``. A chat model gets the chat templates and its replies the chat readers; nothing else
changes. The stages are the plain functions of :mod:`selfinstruct.loop.stages`; this module is the scheduler
that runs lives side by side. It owns five things:

* **the window**: instruction requests are topped up while fewer than the *lag* are unresolved
  (submitted, not yet committed), no more than the budget still needs, and -- by default -- while the
  stream holds fewer requests than the engine can usefully take (:meth:`Stream.capacity
  <selfinstruct.engines.Stream.capacity>`: its running slots plus a short queue, which follows the
  engine's own counts and so grows and shrinks with timing); follow-up requests (classification,
  instances) go in the moment their input exists, ahead of new instruction requests (lower priority
  number). ``--window N`` fixes both: lag ``N``, at most ``N`` unresolved, whatever the engine says;
* **the lag**: a staleness rule fixed before the first request and never by timing (:func:`default_lag`):
  ``--window`` when given, else twice the most the engine can hold (:meth:`Stream.max_capacity
  <selfinstruct.engines.Stream.max_capacity>`, from its settings such as ``max_num_seqs``; 256 when the
  stream does not say), but no more than three quarters of the instruction requests the budget is
  expected to need, so a small run still shows its own tasks as demonstrations. The dynamic in-flight
  bound never exceeds it. The run records it (``Bootstrap.lag``, the ledger's ``lag``);
* **the order**: completions arrive in any order, but each instruction request's candidates are
  novelty-checked, and each request's tasks committed, in *submission order* (a reorder buffer). A
  candidate is compared with every seed, every pool task and every earlier surviving candidate of this
  run. Request ``k`` shows demonstrations drawn from the pool as it stood after request ``k - lag``
  was committed, and its sampling seed is derived from the run's seed and ``k``. So the same seed, pool,
  configuration, lag and an engine that gives the same text for the same request make the same pool,
  however the requests interleave and however the window moves;
* **budgets**: ``--num-instructions`` and ``--max-new`` are checked as tasks are committed (the pool lands
  exactly on them); ``--time-limit``, saturation (over "rounds" of ``batch_size`` instruction requests,
  the reporting unit) and ``--max-rounds`` (submit that many rounds, then drain) stop the run;
* **cancellation and accounting**: when the run stops, what is still in flight is cancelled and every
  candidate already parsed is accounted for: accepted, rejected by reason, or ``surplus`` (a finished
  task beyond the budget) or ``unfinished`` (its requests were cancelled), written out by the sink.

Accepted tasks reach the ``sink`` in groups (every second, every 64 tasks, and at each round's end), so
fsync never becomes the bottleneck and a kill loses at most the last group and the work in flight.

Signals: each turn of the loop (wait for completions, bookkeeping, group commit) runs with signals held
(:func:`selfinstruct.stopping.held`); a SIGINT/SIGTERM that arrived meanwhile raises
:class:`~selfinstruct.stopping.StopRequested` only after the turn, once every write is counted, and at
most a quarter of a second later. Leaving :meth:`Bootstrap.run` that way cancels what is in flight and
records every candidate, like any other end.

Where things are: the budget (room, the requests it needs, the lag, the deadline, saturation, the estimate,
why a run stops) is :mod:`selfinstruct.loop.budget`'s, the counting for the people watching (round reports,
progress, the run's totals) :mod:`selfinstruct.loop.reporting`'s. What stays here is the scheduler and one
request's life, top to bottom: **submit** (:meth:`Bootstrap._top_up`), **receive** (:meth:`Bootstrap._receive`),
**check** (screen, novelty, and the follow-up requests a survivor needs: classification, instances, judge),
**commit** (in submission order, to the sink).

This module never prints and never touches files. :meth:`Bootstrap.run` yields :class:`RoundReport` and
(about once a second) :class:`Progress`; ``stop_reason`` says why it ended.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfinstruct import stopping
from selfinstruct.config import GenerateConfig
from selfinstruct.engines import (
    Backend,
    Completion,
    Finished,
    Prompt,
    Request,
    Stream,
    capacity_of,
    max_capacity_of,
    open_stream,
)
from selfinstruct.gates import filters as F
from selfinstruct.gates.novelty import NoveltyResult
from selfinstruct.gates.novelty_workers import NoveltyBatch, NoveltyWorkerError, ParallelNovelty, available_cores
from selfinstruct.loop.budget import (
    DEFAULT_LAG,
    INTERRUPTED,
    LAG_BUDGET_SHARE,
    LAG_PER_CAPACITY,
    MAX_LAG,
    MAX_NEW,
    MAX_ROUNDS,
    MIN_LAG,
    SATURATED,
    TARGET_REACHED,
    TIME_LIMIT,
    Budget,
    default_lag,
)
from selfinstruct.loop.reporting import (
    PROGRESS_SECONDS,
    STAGES,
    TOKEN_RATE_WINDOW,
    Progress,
    Reporter,
    RoundReport,
    RunTotals,
    StageStats,
)
from selfinstruct.loop.stages import (
    CUT_OFF,
    OVERSIZED_COMPLETION,
    STRAY_MARKER,
    UNPARSEABLE_CLASSIFICATION,
    UNPARSEABLE_INSTANCE,
    AlpacaItem,
    Classification,
    attach_judgement,
    derive_seed,
    make_alpaca_task,
    make_task,
    read_classification,
    read_instances,
    read_instruction_list,
    read_judgement,
    read_task_list,
    sample_demos,
    screen_alpaca_task,
    screen_instruction,
    task_name,
    utc_now,
)
from selfinstruct.pool.directory import machine_task_id
from selfinstruct.pool.task import Task
from selfinstruct.protocol.alpaca import AlpacaTemplates, pick_demos
from selfinstruct.protocol.chatprompts import ChatTemplates
from selfinstruct.protocol.judge import JudgeTemplate, passes
from selfinstruct.protocol.prompts import PromptTemplates

# Candidates neither accepted nor rejected: paid-for work that is recorded, never silently dropped.
SURPLUS = "surplus"  # a finished task beyond --num-instructions / --max-new
UNFINISHED = "unfinished"  # its classification or instance request was cancelled when the run stopped

_PRIORITY = {"judge": -1, "instances": 0, "classification": 1, "instructions": 2}

TURN_SECONDS = 0.05  # novelty checks per turn of the loop, at most (then completions are taken in again)
# Instruction requests novelty-checked as one batch when the novelty workers score it (one at a time in-process:
# batching gains nothing there and TURN_SECONDS stays a fine bound). Large batches keep the workers busy (32
# cost the workers about twice the CPU per task of 256 at a 52K pool, one run each on a loaded machine).
CHECK_BATCH = 256
CHECK_POLL_SECONDS = 0.005  # how soon the loop looks again for the workers' answers to a batch
GROUP_COMMIT_TASKS = 64
GROUP_COMMIT_SECONDS = 1.0

Sink = Callable[[list[Task], list[dict[str, Any]]], None]
"""Persists accepted tasks and candidate records (each with a ``reject_reason``), in commit order."""


@dataclass(frozen=True)
class JudgeSpec:
    """The judge of a run: its rubric, the model name stored with each judgement, whether it speaks chat,
    its own backend (None: it shares the generator's engine and stream), and the bar (``min_score``)."""

    template: JudgeTemplate
    model: str
    chat: bool = False
    backend: Backend | None = None
    min_score: float | None = None

    @property
    def rubric(self) -> str:
        return self.template.fingerprint()


@dataclass(eq=False)
class _Slot:
    """One instruction request and the candidates it produced."""

    index: int
    round: int
    demos: list[str]
    completion: Completion | None = None
    demo_tasks: list[Task] = field(default_factory=list)  # --method alpaca: the complete tasks shown
    candidates: list[_Candidate] = field(default_factory=list)
    checked: bool = False
    open: int = 0  # candidates still waiting for a follow-up request
    notes: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(eq=False)
class _Candidate:
    slot: _Slot
    instruction: str
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    max_similarity: float = 0.0
    most_similar: list[dict[str, Any]] = field(default_factory=list)
    classification: Classification | None = None
    output_first: bool = False
    task: Task | None = None
    done: bool = False
    item: AlpacaItem | None = None  # --method alpaca: the complete task as the list gave it
    judged: Task | None = None  # a finished task waiting for the judge's verdict


class Bootstrap:
    """The loop. Build it, then iterate :meth:`run` (or :meth:`rounds`); ``stop_reason`` says why it ended.

    ``seeds`` are the seed tasks, ``pool`` the machine tasks already accepted (resuming a run), ``next_index``
    the number of the next machine task id, ``last_round`` the last round number of earlier runs. ``rng``
    chooses the fixed classification and instance demonstrations and the run's base seed. ``clock`` is
    injectable for tests of the time budget.

    The methods read in the order of a run: set-up and the fixed demonstrations, the loop around many
    request lives, then one request's life, top to bottom: submit, receive, check, commit.
    """

    def __init__(
        self,
        config: GenerateConfig,
        backend: Backend,
        seeds: Sequence[Task],
        pool: Sequence[Task],
        templates: PromptTemplates,
        *,
        rng: random.Random,
        run_id: str,
        next_index: int = 0,
        last_round: int = 0,
        sink: Sink | None = None,
        clock: Callable[[], float] = time.monotonic,
        chat: bool = False,
        chat_templates: ChatTemplates | None = None,
        alpaca: AlpacaTemplates | None = None,
        judge: JudgeSpec | None = None,
    ) -> None:
        if not seeds:
            raise ValueError("at least one seed task is needed")
        if chat and chat_templates is None and config.method != "alpaca":
            raise ValueError("a chat model needs chat_templates")
        if config.method == "alpaca" and alpaca is None:
            raise ValueError("--method alpaca needs the alpaca templates")
        self.config = config
        self.backend = backend
        self.chat = chat
        self.chat_templates = chat_templates
        self.alpaca = alpaca
        self.judge = judge
        self.seeds = list(seeds)
        self.machine = list(pool)
        self.templates = templates
        self.rng = rng
        self.run_id = run_id
        self.next_index = next_index
        self.sink = sink
        # Continue the round numbering of the pool (and of the ledger, which the caller may know better).
        self.last_round = max([last_round, *(int(t.meta.get("round", 0) or 0) for t in self.machine)])
        self._first_round = self.last_round + 1
        self.clock = clock
        self.heuristics = F.InstructionHeuristics(blocked_keywords=tuple(config.blocked_keywords))
        # The exact novelty check; its scoring runs on worker processes once the pool is large (the order
        # and the decisions are the same whatever config.workers is).
        self.index = ParallelNovelty(
            [t.instruction for t in self.seeds] + [t.instruction for t in self.machine],
            threshold=config.threshold,
            report_floor=config.similarity_floor,
            top_k=5,
            workers=config.workers or available_cores(),
            expected_size=len(self.seeds) + max(len(self.machine), config.num_instructions),
        )
        # The counting (reports, progress, totals) and the limits; the clock is read through this object, so
        # a test may swap it after construction.
        self.reporter = Reporter(target=config.num_instructions, batch_size=config.batch_size, clock=self._now)
        self.totals = self.reporter.totals
        self.budget = Budget(config, self.machine, self.totals)
        # The staleness rule: request k shows the pool as of request k - lag. Fixed before the first request
        # (run() resolves the default from the stream's max_capacity), recorded, never changed by timing.
        self.lag = self.budget.lag(None)
        self._follow = config.window is None  # the in-flight bound follows the stream's capacity()
        self._capacity: int | None = None
        self.persisted = 0  # accepted tasks the sink has written
        self.stop_reason: str | None = None
        self.warnings: list[str] = []
        self._choose_fixed_demos()
        # Everything a request's prompt and seed depend on: the run's seed and where the pool stood.
        self._base = (rng.getrandbits(62), len(self.machine), next_index)
        self._initial_size = len(self.machine)
        self._sampling = {
            "instructions": config.instruction_sampling(chat=chat),
            "classification": config.classification_sampling(chat=chat),
            "instances": config.instance_sampling(chat=chat),
            "judge": config.judge_sampling(chat=judge.chat if judge else chat),
        }
        self._judge_stream: Stream | None = None  # the judge's own stream, when it has its own backend
        self._slots: dict[int, _Slot] = {}
        self._size_after: dict[int, int] = {}  # request index -> pool size once it was committed
        self._submitted = self._checked = self._committed = 0
        self._requests: dict[int, tuple[str, Any]] = {}  # key in flight -> (stage, slot or candidate)
        self._keys = 0
        self._pending_tasks: list[Task] = []
        self._pending_records: list[dict[str, Any]] = []
        self._pending_since: float | None = None
        self._started = 0.0
        self._settled = False
        # A batch being novelty-checked on the workers: its slots, their screened candidates, the batch.
        self._checking: tuple[list[_Slot], list[list[_Candidate]], NoveltyBatch] | None = None

    def _now(self) -> float:
        """The loop's clock, looked up at each reading (a test may swap ``clock`` after construction)."""
        return self.clock()

    # -- fixed demonstrations ------------------------------------------------------------------------------

    def _choose_fixed_demos(self) -> None:
        """Pick the classification and instance demonstrations once per run (a fixed prefix caches well)."""
        rng, cfg = self.rng, self.config
        yes = [t for t in self.seeds if t.is_classification is True and t.instances]
        no = [t for t in self.seeds if t.is_classification is not True and t.instances]
        if not yes:
            self.warnings.append(
                "no seed task is marked is_classification: true, so every generated task is treated as "
                "non-classification (instances are generated input-first)"
            )
            self.clf_demos: list[Task] = []
        else:
            n_yes = min(len(yes), max(1, cfg.classification_demos // 2))
            n_no = min(len(no), cfg.classification_demos - n_yes)
            self.clf_demos = rng.sample(yes, n_yes) + rng.sample(no, n_no)
            rng.shuffle(self.clf_demos)

        def short(tasks: list[Task]) -> list[Task]:
            # Long demonstrations eat the context window; prefer the compact ones when there are enough.
            compact = [t for t in tasks if sum(len(i.input) + len(i.output) for i in t.instances) <= 1200]
            return compact if len(compact) >= cfg.instance_demos else tasks

        no_pool, yes_pool = short(no), short(yes)
        self.input_first_demos = rng.sample(no_pool, min(cfg.instance_demos, len(no_pool)))
        self.output_first_demos = rng.sample(yes_pool, min(cfg.instance_demos, len(yes_pool)))

    # -- the loop: many request lives side by side ---------------------------------------------------------

    def rounds(self) -> Iterator[RoundReport]:
        """:meth:`run`, round reports only."""
        for event in self.run():
            if isinstance(event, RoundReport):
                yield event

    def run(self) -> Generator[RoundReport | Progress, None, None]:
        """Run until a budget ends the run; yield each round's report once its tasks went to the sink, and
        a :class:`Progress` about once a second. Closing the generator (or an exception inside it, such
        as KeyboardInterrupt) cancels what is in flight and records every candidate."""
        self._started = self.clock()
        self.reporter.start(self._started)
        deadline = self.budget.deadline(self._started)
        full = self.budget.full()
        if full is not None:
            self.stop_reason = full
            return
        self.index.start()  # large pools: the workers build their part while the first requests run
        stream = open_stream(self.backend)
        if self._follow:
            self.lag = self.budget.lag(max_capacity_of(stream))
        if self.judge is not None and self.judge.backend is not None:
            try:
                self._judge_stream = open_stream(self.judge.backend)
            except BaseException:
                stream.close()
                raise
        ended = False  # the loop ran to its end (no exception, not closed early)
        try:
            while True:
                # Bookkeeping and group commits run with signals held (see selfinstruct.stopping), and a
                # stop is raised after them, once every write is counted. The wait for completions is not
                # held: a signal there stops the run at once, and those completions count as cancelled.
                with stopping.held():
                    wait = self._before_poll(stream, deadline)
                stopping.raise_pending()
                if wait is None:
                    break
                finished = self._poll(stream, wait)
                with stopping.held():
                    events = self._after_poll(stream, finished)
                stopping.raise_pending()
                yield from events
            with stopping.held():
                self._close_round()
                self._flush()
                events = list(self._due_reports())
            stopping.raise_pending()
            yield from events
            ended = True
        finally:
            with stopping.held():
                try:
                    in_flight = list(self._requests)
                    stream.cancel(in_flight)
                    stream.close()
                    if self._judge_stream is not None:
                        self._judge_stream.cancel(in_flight)
                        self._judge_stream.close()
                finally:
                    self._end_check()
                    self._settle()
                    self._flush()
                    self.index.close()  # (also closed when collected, should the flush fail)
            if ended:  # else an exception is on its way out: a stop must not replace it
                stopping.raise_pending()

    def _poll(self, stream: Stream, wait: float) -> list[Finished]:
        """Completions from the generator's stream and, when the judge has its own, from the judge's: the
        wait goes to whichever has work in flight (shared when both do)."""
        other = self._judge_stream
        if other is None:
            return stream.poll(wait)
        busy = [s for s in (stream, other) if s.in_flight] or [stream]
        finished: list[Finished] = []
        for each in busy:
            finished += each.poll(wait / len(busy))
        return finished

    def _before_poll(self, stream: Stream, deadline: float | None) -> float | None:
        """Check the time budget and top up the window. How long to wait for completions (a quarter second
        at most), or ``None`` once the loop is over."""
        now = self.clock()
        if self.stop_reason is None and deadline is not None and now >= deadline:
            self.stop_reason = TIME_LIMIT
        if self.stop_reason is not None and self.stop_reason != MAX_ROUNDS:
            return None
        self._top_up(stream)
        if self._backlog():
            return 0.0  # completions still to check: take in what finished meanwhile, then go on checking
        if self._checking is not None:
            # The workers are scoring a batch: look again soon (or, with nothing in flight, wait for them).
            return CHECK_POLL_SECONDS if self._requests else 0.0
        if not self._requests:
            if self.stop_reason is None:  # nothing in flight and nothing to send: cannot happen
                raise AssertionError("the loop has nothing in flight and nothing to submit")
            return None  # drained (--max-rounds)
        wait = PROGRESS_SECONDS / 4
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - now))
        return wait

    def _after_poll(self, stream: Stream, finished: list[Finished]) -> list[RoundReport | Progress]:
        """Take the completions in, check and commit what their order allows, group-commit when due; the
        events to yield."""
        for done in finished:
            self._receive(done, stream)
        self._advance(stream)
        events: list[RoundReport | Progress] = list(self._due_reports())
        now = self.clock()
        if self.reporter.progress_due(now):
            events.append(self.progress())
        if self._pending_since is not None and (
            len(self._pending_tasks) >= GROUP_COMMIT_TASKS or now - self._pending_since >= GROUP_COMMIT_SECONDS
        ):
            self._flush()
        return events

    def progress(self) -> Progress:
        """The engine's view now (see :class:`Progress`), with the budget's estimate of the time left."""
        return self.reporter.progress(
            self._started,
            Counter(stage for stage, _ in self._requests.values()),
            pool_size=len(self.machine),
            capacity=self._capacity,
            eta=lambda elapsed, rate: self.budget.eta(elapsed, rate, self._committed),
        )

    # -- one request's life, 1: submit ---------------------------------------------------------------------

    def _top_up(self, stream: Stream) -> None:
        """Submit instruction requests while fewer than ``min(lag, wanted)`` are unresolved and, when the
        window follows the engine, while the stream holds fewer requests than its capacity. Only *when* a
        request goes out depends on this; what it asks for depends on ``k`` and the lag alone."""
        if self.stop_reason is not None:
            return
        limit = min(self.lag, self.budget.wanted(self._committed))
        free: float = math.inf
        if self._follow:
            self._capacity = capacity_of(stream)
            if self._capacity is not None:
                free = self._capacity - stream.in_flight
        while self._submitted - self._committed < limit and free > 0:
            if self.budget.rounds_spent(self._submitted):
                return
            free -= 1
            k = self._submitted
            round_number = self._first_round + k // self.config.batch_size
            prompt: Prompt
            stop: tuple[str, ...] = ()
            if self.alpaca is not None and self.config.method == "alpaca":
                tasks = self.alpaca_demos_for(k)
                slot = _Slot(k, round_number, [t.instruction for t in tasks], demo_tasks=tasks)
                if self.chat:
                    prompt = self.alpaca.chat_prompt(tasks, self.config.alpaca_count)
                else:
                    prompt = self.alpaca.completion_prompt(tasks)
            else:
                slot = _Slot(k, round_number, self.demos_for(k))
                if self.chat_templates is not None and self.chat:
                    prompt = self.chat_templates.instruction_chat(slot.demos)
                    stop = self.chat_templates.copy_stops(slot.demos)  # a prefilled reply ends where it re-lists
                else:
                    prompt = self.templates.instruction_prompt(slot.demos)
            self._slots[k] = slot
            self._submitted += 1
            seed = derive_seed(*self._base, "instructions", k)
            self._submit(stream, "instructions", prompt, seed, slot, stop)

    def alpaca_demos_for(self, k: int) -> list[Task]:
        """The complete tasks an Alpaca request ``k`` shows: seed tasks only, as the Alpaca recipe does (the
        pool's tasks are the model's own and would feed its habits back), fixed by ``k``."""
        rng = random.Random(derive_seed(*self._base, "alpaca-demos", k))
        return pick_demos(rng, self.seeds, [], self.config.alpaca_demos, 0)

    def demos_for(self, k: int) -> list[str]:
        """The demonstrations of instruction request ``k``: fixed by ``k`` and the pool as it stood once
        request ``k - lag`` was committed (the initial pool for the first ``lag`` requests)."""
        view = self._size_after[k - self.lag] if k >= self.lag else self._initial_size
        cfg = self.config
        rng = random.Random(derive_seed(*self._base, "demos", k))
        return sample_demos(rng, self.seeds, _Prefix(self.machine, view), cfg.num_seed_demos, cfg.num_machine_demos)

    def _submit(
        self, stream: Stream, stage: str, prompt: Prompt, seed: int, owner: Any, stop: tuple[str, ...] = ()
    ) -> None:
        """Send one request of ``stage`` (to the judge's own stream when it has one), owned by a slot (an
        instruction request) or a ``(candidate, position)`` (a follow-up); ``stop`` adds stop strings."""
        key = self._keys
        self._keys += 1
        self._requests[key] = (stage, owner)
        self.reporter.sent(stage)
        if stage == "judge" and self._judge_stream is not None:
            stream = self._judge_stream
        sampling = self._sampling[stage]
        if stop:
            sampling = dataclasses.replace(sampling, stop=(*sampling.stop, *stop))
        stream.submit(Request(key, prompt, sampling, seed, _PRIORITY[stage]))

    # -- one request's life, 2: receive --------------------------------------------------------------------

    def _receive(self, done: Finished, stream: Stream) -> None:
        """A completion came back: an instruction request's waits for its turn to be checked (in submission
        order); a follow-up's answer is read at once and its candidate moves on."""
        entry = self._requests.pop(done.key, None)
        if entry is None:
            return  # cancelled meanwhile
        stage, owner = entry
        completion = done.completion
        self.reporter.finished(stage, done)
        if stage == "instructions":
            slot: _Slot = owner
            slot.completion = completion
            slot.prompt_tokens += completion.prompt_tokens
            slot.completion_tokens += completion.completion_tokens
            return
        cand, position = owner
        cand.slot.prompt_tokens += completion.prompt_tokens
        cand.slot.completion_tokens += completion.completion_tokens
        if stage == "judge":
            self._receive_judgement(cand, completion)
        elif stage == "classification":
            self._receive_classification(stream, cand, position, completion)
        else:
            self._receive_instances(stream, cand, position, completion)

    # -- one request's life, 3: check ----------------------------------------------------------------------

    def _backlog(self) -> bool:
        """Whether a check can go on now: a batch's novelty answers are in, or (none being scored) an
        instruction request's completion is waiting to be checked (the turn's time ran out)."""
        if self.stop_reason not in (None, MAX_ROUNDS):
            return False
        if self._checking is not None:
            return self.index.ready(self._checking[2])
        if self._checked >= self._submitted:
            return False
        return self._slots[self._checked].completion is not None

    def _advance(self, stream: Stream) -> None:
        """Novelty-check and commit, in submission order, as far as the completions allow -- checking for
        at most :data:`TURN_SECONDS` (at least one batch), so that a burst of completions does not keep
        the loop from taking in the follow-ups' answers (and sending the next requests) meanwhile; the rest
        waits for the next turn, in the same order. Up to :data:`CHECK_BATCH` requests are checked as one
        batch, whose novelty scoring runs on the workers while the loop goes on taking in completions and
        sending requests (one batch at a time); the order, and so every decision, is the same as one by one."""
        ends = time.perf_counter() + TURN_SECONDS
        while self.stop_reason in (None, MAX_ROUNDS):
            if self._checking is not None:
                slots, screened, batch = self._checking
                # Wait for the workers only when there is nothing else to do meanwhile.
                if self._requests and not self.index.ready(batch):
                    break
                self._checking = None
                results = iter(self.index.finish(batch))
                for slot, survivors in zip(slots, screened, strict=True):
                    self._resolve(slot, survivors, results, stream)
                self._checked += len(slots)
                if time.perf_counter() >= ends:
                    break
                continue
            size = CHECK_BATCH if self.index.on_workers else 1
            ready: list[_Slot] = []
            while len(ready) < size and self._checked + len(ready) < self._submitted:
                slot = self._slots[self._checked + len(ready)]
                if slot.completion is None:
                    break
                ready.append(slot)
            if not ready:
                break
            screened = [self._screen(slot) for slot in ready]
            # Against seeds, pool and every earlier survivor of this run (which join the index at once).
            self._checking = (ready, screened, self.index.begin([c.instruction for group in screened for c in group]))
        while self._committed < self._checked and self.stop_reason in (None, MAX_ROUNDS):
            slot = self._slots[self._committed]
            if slot.open:
                break
            self._commit(slot)
        if self.stop_reason is None and self.budget.rounds_spent(self._committed):
            self.stop_reason = MAX_ROUNDS
            self._close_round()

    def _end_check(self) -> None:
        """The run ends while the workers score a batch: take their answers and judge its candidates' novelty,
        as a check that had finished before the end would have (the survivors' follow-ups are never sent:
        they are recorded as unfinished). Should the workers be gone, its slots go back to unchecked."""
        if self._checking is None:
            return
        slots, screened, batch = self._checking
        self._checking = None
        try:
            results = iter(self.index.finish(batch))
        except (NoveltyWorkerError, RuntimeError):
            for slot in slots:
                slot.candidates = []
                slot.notes = Counter()
            return
        for slot, survivors in zip(slots, screened, strict=True):
            self._judge_novelty(slot, survivors, results)

    def _parse_slot(self, slot: _Slot) -> list[_Candidate]:
        """The candidates of an instruction request's completion (instructions, or complete Alpaca tasks)."""
        assert slot.completion is not None
        if self.config.method == "alpaca":
            tasks = read_task_list(slot.completion, chat=self.chat)
            slot.notes.update(tasks.notes)
            return [_Candidate(slot, item.instruction, item=item) for item in tasks.items]
        prefix = self.chat_templates.reply_prefix(slot.demos) if self.chat and self.chat_templates else ""
        parsed = read_instruction_list(slot.completion, chat=self.chat, prefix=prefix)
        slot.notes.update(parsed.notes)
        return [_Candidate(slot, text) for text in parsed.items]

    def _screen(self, slot: _Slot) -> list[_Candidate]:
        """Parse the slot's completion and run the heuristic filters: the candidates left for novelty."""
        survivors: list[_Candidate] = []
        for cand in self._parse_slot(slot):
            slot.candidates.append(cand)
            screened = screen_instruction(self.heuristics, cand.instruction, slot.demos)
            if screened is not None:
                cand.reason, cand.details = screened
                cand.done = True
                continue
            if cand.item is not None:  # an Alpaca task: its instance is judged before its novelty
                verdict = screen_alpaca_task(cand.item, slot.demo_tasks)
                slot.notes.update(verdict.notes)
                if verdict.reason is not None:
                    cand.reason = verdict.reason
                    cand.details = {"input": cand.item.instance.input, "output": cand.item.instance.output}
                    cand.done = True
                    continue
            survivors.append(cand)
        return survivors

    def _resolve(
        self, slot: _Slot, survivors: list[_Candidate], results: Iterator[NoveltyResult], stream: Stream
    ) -> None:
        """Apply the novelty results to the slot's survivors (too similar: rejected), then send each task
        still open on to its follow-ups: a Self-Instruct instruction to classification, an Alpaca task,
        already complete, to :meth:`_finish`."""
        self._judge_novelty(slot, survivors, results)
        for position, cand in enumerate(slot.candidates):
            if cand.done:
                continue
            slot.open += 1
            if cand.item is None:
                self._submit_classification(stream, cand, position)
                continue
            task = make_alpaca_task(
                cand.item,
                max_similarity=cand.max_similarity if cand.most_similar or self.config.similarity_floor == 0 else None,
                most_similar=cand.most_similar,
                demonstrations=slot.demos,
                run_id=self.run_id,
                round_number=slot.round,
                model=getattr(self.backend, "model", None),
            )
            self._finish(stream, cand, position, task)

    def _judge_novelty(self, slot: _Slot, survivors: list[_Candidate], results: Iterator[NoveltyResult]) -> None:
        """Apply the novelty results to the slot's survivors: too similar, rejected. The slot is checked."""
        for cand in survivors:
            res = next(results)
            cand.max_similarity = res.max_score
            cand.most_similar = [{"instruction": m.instruction, "score": m.score} for m in res.top[:5]]
            if res.max_score > self.config.threshold:
                cand.reason = F.TOO_SIMILAR
                cand.details = {"max_similarity": res.max_score, "most_similar": cand.most_similar}
                cand.done = True
        slot.checked = True

    # -- one request's life, 3 (continued): the follow-ups a survivor needs --------------------------------
    # A Self-Instruct survivor: classification -> instances -> (judge); an Alpaca survivor: (judge). Each
    # follow-up goes in the moment its input exists, ahead of new instruction requests.

    def _submit_classification(self, stream: Stream, cand: _Candidate, position: int) -> None:
        """A Self-Instruct survivor's first follow-up: is it a classification task? (Straight to its instances
        when no seed is marked as one.)"""
        if not self.clf_demos:
            self._submit_instances(stream, cand, position)
            return
        prompt: Prompt
        if self.chat_templates is not None and self.chat:
            prompt = self.chat_templates.classification_chat(self.clf_demos, cand.instruction)
        else:
            prompt = self.templates.classification_prompt(self.clf_demos, cand.instruction)
        seed = derive_seed(*self._base, "classification", cand.slot.index, position)
        self._submit(stream, "classification", prompt, seed, (cand, position))

    def _receive_classification(self, stream: Stream, cand: _Candidate, position: int, completion: Completion) -> None:
        cand.classification = read_classification(completion, chat=self.chat)
        cand.slot.notes.update(cand.classification.notes)
        self._submit_instances(stream, cand, position)

    def _submit_instances(self, stream: Stream, cand: _Candidate, position: int) -> None:
        clf = cand.classification
        cand.output_first = bool(clf and clf.is_classification and self.output_first_demos)
        demos = self.output_first_demos if cand.output_first else self.input_first_demos
        prompt: Prompt
        if self.chat_templates is not None and self.chat:
            prompt = self.chat_templates.instance_chat(demos, cand.instruction, classification=cand.output_first)
        else:
            prompt = self.templates.instance_prompt(demos, cand.instruction, classification=cand.output_first)
        seed = derive_seed(*self._base, "instances", cand.slot.index, position)
        self._submit(stream, "instances", prompt, seed, (cand, position))

    def _receive_instances(self, stream: Stream, cand: _Candidate, position: int, completion: Completion) -> None:
        """The instances, through the instance filters: a finished task (on to :meth:`_finish`), or a reject."""
        verdict = read_instances(
            completion,
            output_first=cand.output_first,
            max_instances=self.config.max_instances,
            chat=self.chat,
            demos=self.output_first_demos if cand.output_first else self.input_first_demos,
        )
        cand.slot.notes.update(verdict.notes)
        if verdict.reason is not None:
            cand.reason = verdict.reason
            cand.details = {"raw_instances": completion.text}
            cand.done = True
            cand.slot.open -= 1
            return
        clf = cand.classification
        task = make_task(
            cand.instruction,
            verdict.instances,
            is_classification=bool(clf and clf.is_classification),
            instance_format="output_first" if cand.output_first else "input_first",
            classification_answer=clf.answer if clf else "",
            # Exact when known; None when a similarity floor hid every neighbour (all below the floor).
            max_similarity=(cand.max_similarity if cand.most_similar or self.config.similarity_floor == 0 else None),
            most_similar=cand.most_similar,
            demonstrations=cand.slot.demos,
            run_id=self.run_id,
            round_number=cand.slot.round,
            model=getattr(self.backend, "model", None),
        )
        self._finish(stream, cand, position, task)

    def _finish(self, stream: Stream, cand: _Candidate, position: int, task: Task) -> None:
        """A task that passed every filter: to the judge when there is one, else done."""
        if self.judge is None:
            cand.task = task
            cand.done = True
            cand.slot.open -= 1
            return
        cand.judged = task
        prompt = self.judge.template.prompt(task, chat=self.judge.chat)
        seed = derive_seed(*self._base, "judge", cand.slot.index, position)
        self._submit(stream, "judge", prompt, seed, (cand, position))

    def _receive_judgement(self, cand: _Candidate, completion: Completion) -> None:
        judge, task = self.judge, cand.judged
        assert judge is not None and task is not None
        judgement, notes = read_judgement(completion, model=judge.model, rubric=judge.rubric, chat=judge.chat)
        cand.slot.notes.update(notes)
        attach_judgement(task, judgement)
        cand.judged = None
        reason = passes(judgement, judge.min_score)
        if reason is None:
            cand.task = task
        else:
            cand.reason = reason
            cand.details = {k: v for k, v in task.to_record().items() if k not in ("id", "instruction")}
        cand.done = True
        cand.slot.open -= 1

    # -- one request's life, 4: commit ---------------------------------------------------------------------

    def _commit(self, slot: _Slot) -> None:
        """Accept the slot's finished tasks while the budget has room; the rest are surplus."""
        if self.reporter.open_round not in (None, slot.round):
            self._close_round()
        self.reporter.committed(
            slot.round, len(slot.candidates), slot.notes, slot.prompt_tokens, slot.completion_tokens
        )
        self.last_round = slot.round
        for cand in slot.candidates:
            if cand.reason is not None:
                self.reporter.rejected(cand.reason)
                self._record(cand, cand.reason)
            elif cand.task is not None and self.budget.room() > 0:
                task = cand.task
                task.id = machine_task_id(self.next_index)
                self.next_index += 1
                self.machine.append(task)
                self.reporter.accepted(task)
                self._pending_tasks.append(task)
                if self._pending_since is None:
                    self._pending_since = self.clock()
            else:
                self.reporter.surplus(SURPLUS)
                self._record(cand, SURPLUS)
        self._size_after[slot.index] = len(self.machine)
        del self._slots[slot.index]
        self._committed += 1
        full = self.budget.full()
        if full is not None:
            self.stop_reason = full
            self._close_round()
        elif (slot.index + 1) % self.config.batch_size == 0:
            self._close_round()

    def _close_round(self) -> None:
        """Close the open round into its report; a complete round also counts towards saturation."""
        report = self.reporter.close_round(len(self.machine), self.progress)
        if report is None or not report.complete:
            return
        if self.budget.saturated(len(report.accepted), report.candidates) and self.stop_reason is None:
            self.stop_reason = SATURATED

    def _due_reports(self) -> Iterator[RoundReport]:
        if not self.reporter.reports_due:
            return
        self._flush()  # a reported round is a persisted round
        yield from self.reporter.take_reports()

    # -- records and persistence (the commit's side) -------------------------------------------------------

    def _record(self, cand: _Candidate, reason: str) -> None:
        record: dict[str, Any]
        if reason == SURPLUS and cand.task is not None:
            record = {k: v for k, v in cand.task.to_record().items() if k != "id"}
        else:
            record = {"instruction": cand.instruction}
        record.update(
            {"reject_reason": reason, "round": cand.slot.round, "run_id": self.run_id, "created_at": utc_now()}
        )
        record.update(cand.details)
        self._pending_records.append(record)
        if self._pending_since is None:
            self._pending_since = self.clock()

    def _flush(self) -> None:
        """Hand what is pending to the sink: tasks first, then records, each cleared only once the sink
        returned. A sink interrupted mid-write (a signal, a full disk) leaves them pending, so the flush in
        ``run``'s cleanup tries again instead of losing them or writing them twice."""
        if self.sink is None:
            self.persisted += len(self._pending_tasks)
            self._pending_tasks, self._pending_records, self._pending_since = [], [], None
            return
        if self._pending_tasks:
            self.sink(self._pending_tasks, [])
            self.persisted += len(self._pending_tasks)
            self._pending_tasks = []
        if self._pending_records:
            self.sink([], self._pending_records)
            self._pending_records = []
        self._pending_since = None

    def _settle(self) -> None:
        """At the end: count cancelled requests and record every candidate that was not committed."""
        if self._settled:
            return
        self._settled = True
        for stage, _ in self._requests.values():
            self.reporter.cancelled(stage)
        self._requests.clear()
        for index in sorted(self._slots):
            slot = self._slots[index]
            if slot.completion is None:
                continue
            if not slot.checked:
                slot.candidates = self._parse_slot(slot)
            self.totals.candidates += len(slot.candidates)
            self.totals.notes.update(slot.notes)
            for cand in slot.candidates:
                if cand.reason is not None:
                    self.totals.rejected[cand.reason] += 1
                    self._record(cand, cand.reason)
                else:
                    name = SURPLUS if cand.task is not None else UNFINISHED
                    self.totals.surplus[name] += 1
                    self._record(cand, name)
        self._slots.clear()


class _Prefix(Sequence[Task]):
    """The first ``size`` items of a list, without copying it (demonstrations sample from a pool view)."""

    def __init__(self, items: list[Task], size: int) -> None:
        self._items = items
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self._items[: self._size][index]
        if not -self._size <= index < self._size:
            raise IndexError(index)
        return self._items[index % self._size]


__all__ = [
    "CUT_OFF",
    "DEFAULT_LAG",
    "INTERRUPTED",
    "LAG_BUDGET_SHARE",
    "LAG_PER_CAPACITY",
    "MAX_LAG",
    "MAX_NEW",
    "MAX_ROUNDS",
    "MIN_LAG",
    "OVERSIZED_COMPLETION",
    "PROGRESS_SECONDS",
    "SATURATED",
    "STAGES",
    "STRAY_MARKER",
    "SURPLUS",
    "TARGET_REACHED",
    "TIME_LIMIT",
    "TOKEN_RATE_WINDOW",
    "UNFINISHED",
    "UNPARSEABLE_CLASSIFICATION",
    "UNPARSEABLE_INSTANCE",
    "Bootstrap",
    "JudgeSpec",
    "Progress",
    "RoundReport",
    "RunTotals",
    "Sink",
    "StageStats",
    "default_lag",
    "task_name",
]
