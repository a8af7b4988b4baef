"""``selfinstruct judge POOL``: score the tasks of an existing pool after the fact, resumably.

Scope: choosing which tasks still need this judge's score, sending their rubric prompts, and appending each
batch's judgements to the pool's ``judgements.jsonl``. The rubric, the reading of replies and the judgement
record are :mod:`selfinstruct.protocol.judge`'s; the file's safety is :class:`~selfinstruct.pool.directory.Pool`'s.

Why a sidecar file and not the task records: ``tasks.jsonl`` is append-only, which is what makes it safe
under kill -9, cron overlaps and full disks (see :mod:`selfinstruct.pool.directory`). Putting scores into it would mean
rewriting the whole file for every batch. ``judgements.jsonl`` is append-only too, written under the pool's
lock (so ``judge`` and ``generate`` never write one pool at once), one fsynced write per batch. A run killed
at any moment keeps every batch written before; an incomplete last line is skipped by readers. Readers merge
the two files by task id (:func:`selfinstruct.protocol.judge.effective_judgements`).

Resuming: a task is skipped when its effective judgement was made by the same judge (model and rubric
fingerprint), so a rerun of the same command continues where the last stopped and a rerun with another
judge model or an edited rubric scores everything again (its lines then win). Replies with no readable score
are stored too (score null, the reply kept) and skipped on a rerun unless ``retry_failed``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.config import GenerateConfig
from selfinstruct.engines import Backend, Completion, make_backend, resolve_backend_name
from selfinstruct.errors import BackendError, InputError
from selfinstruct.pool.directory import TASKS_FILE, Pool
from selfinstruct.pool.task import Task
from selfinstruct.protocol.judge import (
    PROBLEM_NO_SCORE,
    Judgement,
    JudgeTemplate,
    effective_judgements,
    judge_sampling,
    read_sidecar_records,
)
from selfinstruct.stopping import INTERRUPTED, StopRequested, held, raise_pending

EventHandler = Callable[[str, Any], None]

DONE = "done"
LIMIT = "limit"


@dataclass(frozen=True, slots=True)
class JudgeOptions:
    """How to run: ``api`` is ``completions`` (the rubric ending in ``Score:`` for a base model), ``chat``
    (the rubric as the user's message) or ``auto`` (chat where the server makes it clear, see
    :meth:`~selfinstruct.engines.openai.OpenAIBackend.detect_api`); ``batch_size`` tasks per request batch
    and per fsynced append; ``limit`` caps the tasks judged by this run; ``retry_failed`` judges again tasks
    whose earlier reply from this judge had no readable score."""

    api: str = "completions"
    batch_size: int = 64
    limit: int | None = None
    retry_failed: bool = False
    max_tokens: int = 128

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.api not in ("auto", "chat", "completions"):
            raise ValueError(f"api must be auto, chat or completions, not {self.api!r}")


@dataclass
class JudgeOutcome:
    """What a judge run did. ``scores`` counts this run's judgements by score; ``problems`` counts the
    replies without a readable score by what was wrong."""

    pool_size: int = 0
    already: int = 0  # tasks this judge had scored before this run
    todo: int = 0
    judged: int = 0
    scores: Counter[float] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    model: str = ""
    rubric: str = ""
    api: str = "completions"
    exit_reason: str = DONE
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    orphans: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def scored(self) -> int:
        return sum(self.scores.values())

    @property
    def failed(self) -> int:
        return sum(self.problems.values())

    @property
    def mean(self) -> float | None:
        total = self.scored
        return sum(k * v for k, v in self.scores.items()) / total if total else None


def tasks_to_judge(
    tasks: Sequence[Task], current: Sequence[Judgement | None], identity: tuple[str, str], *, retry_failed: bool
) -> list[Task]:
    """The tasks this judge has not scored yet, in pool order."""
    todo = []
    for task, judgement in zip(tasks, current, strict=True):
        if judgement is None or judgement.identity != identity or (retry_failed and judgement.score is None):
            todo.append(task)
    return todo


def resolve_api(backend: Backend, api: str) -> str:
    """``chat`` or ``completions`` for this backend: ``chat`` is checked where the backend can (a model without
    a chat template is refused); ``auto`` asks the backend, completions when it cannot tell."""
    if api == "chat":
        check = getattr(backend, "check_chat", None)
        if callable(check):
            check()
        return "chat"
    if api == "auto":
        return auto_api(backend)[0]
    return "completions"


def auto_api(backend: Backend) -> tuple[str, str | None]:
    """What ``--api auto`` picks for this backend, and a warning to show (None: nothing to say): the chat
    API where the server makes it clear, else completions, with a warning when the model's name looks like an
    instruct model's (a base model's rubric continuation makes an instruct judge echo the rubric)."""
    from selfinstruct.loop.runner import looks_instruct

    detect = getattr(backend, "detect_api", None)
    api, why = detect() if callable(detect) else ("completions", "the backend cannot tell")
    if api == "chat":
        return "chat", f"--api auto: using the chat API: {why}"
    if looks_instruct(backend.model or ""):
        return "completions", (
            f"--api auto: using completions, as for a base model, but {backend.model!r} looks like an instruct "
            "model; an instruct judge given the rubric as text to continue tends to echo it and score nothing: "
            "pass --api chat"
        )
    return "completions", None


def configured_backend(config: GenerateConfig) -> Callable[[], Backend]:
    """A factory for the backend ``config`` describes (``--model``, ``--base-url``, engine options)."""

    def make() -> Backend:
        return make_backend(resolve_backend_name(config.backend, config.base_url), config.backend_options())

    return make


def run_judge(
    directory: str | Path,
    backend_factory: Callable[[], Backend],
    template: JudgeTemplate,
    options: JudgeOptions,
    *,
    on_event: EventHandler | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> JudgeOutcome:
    """Judge the pool at ``directory`` with the backend ``backend_factory`` makes (after the lock is held,
    so a pool in use fails before a model loads). Events: ``("start", JudgeOutcome)``, ``("batch",
    JudgeOutcome)`` after each stored batch, ``("warning", str)``. A stop (a signal, Ctrl-C) ends the run
    after the batch being written, with ``exit_reason`` ``interrupted``; what was stored stays.
    """
    emit: EventHandler = on_event or (lambda kind, payload: None)
    root = Path(directory)
    if not root.exists():
        raise InputError(root, None, "no such pool directory")
    if not root.is_dir():
        raise InputError(root, None, "not a pool directory (it is a file)")
    pool = Pool(root)
    if not pool.tasks_path.exists():
        raise InputError(root, None, f"holds no {TASKS_FILE}: nothing to judge")
    outcome = JudgeOutcome()
    started = clock()
    with pool.lock("judge"):
        tasks = pool.load()
        sidecar, bad = read_sidecar_records(pool.iter_judgements())
        outcome.warnings.extend(pool.warnings)
        if bad:
            outcome.warnings.append(f"{pool.judgements_path}: skipped {bad} line(s) that are not judgements")
        backend = backend_factory()
        try:
            outcome.model = backend.model
            outcome.rubric = template.fingerprint()
            if options.api == "auto":
                outcome.api, note = auto_api(backend)
                if note:
                    outcome.warnings.append(note)
            else:
                outcome.api = resolve_api(backend, options.api)
            merged = effective_judgements(tasks, sidecar)
            outcome.orphans = merged.orphans
            if merged.orphans:
                outcome.warnings.append(
                    f"{pool.judgements_path}: {merged.orphans} judgement(s) name a task id that is not in the pool "
                    "or whose instruction differs; they are ignored"
                )
            identity = (outcome.model, outcome.rubric)
            todo = tasks_to_judge(tasks, merged.judgements, identity, retry_failed=options.retry_failed)
            outcome.pool_size = len(tasks)
            outcome.already = sum(1 for j in merged.judgements if j is not None and j.identity == identity)
            if options.limit is not None and len(todo) > options.limit:
                todo = todo[: options.limit]
                outcome.exit_reason = LIMIT
            outcome.todo = len(todo)
            for message in outcome.warnings:
                emit("warning", message)
            emit("start", outcome)
            try:
                _judge_batches(pool, backend, template, options, todo, outcome, emit)
            except StopRequested as stop:
                outcome.exit_reason = stop.reason
            except KeyboardInterrupt:
                outcome.exit_reason = INTERRUPTED
        finally:
            close = getattr(backend, "close", None)
            if callable(close):
                close()
    outcome.seconds = clock() - started
    return outcome


def _judge_batches(
    pool: Pool,
    backend: Backend,
    template: JudgeTemplate,
    options: JudgeOptions,
    todo: list[Task],
    outcome: JudgeOutcome,
    emit: EventHandler,
) -> None:
    chat = outcome.api == "chat"
    sampling = judge_sampling(chat=chat, max_tokens=options.max_tokens)
    for start in range(0, len(todo), options.batch_size):
        batch = todo[start : start + options.batch_size]
        prompts: list[Any] = [template.prompt(task, chat=chat) for task in batch]
        completions: list[Completion] = backend.generate(prompts, sampling)
        if len(completions) != len(batch):
            raise BackendError(f"the judge's backend returned {len(completions)} completions for {len(batch)} prompts")
        lines = []
        for task, completion in zip(batch, completions, strict=True):
            judgement = Judgement.from_reply(
                completion.text, model=outcome.model, rubric=outcome.rubric, after_score=not chat
            )
            lines.append(judgement.to_sidecar(task))
            if judgement.score is None:
                outcome.problems[judgement.problem or PROBLEM_NO_SCORE] += 1
            else:
                outcome.scores[judgement.score] += 1
            outcome.prompt_tokens += completion.prompt_tokens
            outcome.completion_tokens += completion.completion_tokens
        with held():  # a batch is stored whole; a stop takes effect once it is counted
            pool.append_judgements(lines)
            outcome.judged += len(batch)
        for message in pool.warnings:
            emit("warning", message)
        pool.warnings.clear()
        emit("batch", outcome)
        raise_pending()


__all__ = [
    "DONE",
    "LIMIT",
    "JudgeOptions",
    "JudgeOutcome",
    "auto_api",
    "configured_backend",
    "resolve_api",
    "run_judge",
    "tasks_to_judge",
]
