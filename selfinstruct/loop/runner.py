"""One ``generate`` run against a pool directory: lock, load, check, loop, record.

This is the library side of ``selfinstruct generate``. It takes the pool's lock (a second writer gets
:class:`~selfinstruct.errors.PoolLockedError`, exit 75), loads and checks the pool, refuses to mix a pool
made with another model, prompt templates or seed file unless forced, runs :class:`Bootstrap` with the
pool as its sink, and appends one line to the run ledger whatever happens (budget reached, Ctrl-C,
SIGTERM, a dead server, a failed write). It never prints: progress and warnings go to ``on_event``.

The method (``self-instruct`` or ``alpaca``) and the model's API (``completions`` or ``chat``, resolved
here: ``auto`` asks the server once, for a new pool; a pool keeps the API it was grown with) are part of the
pool's identity, with the fingerprint of the templates they use. A judge (``--judge-model``) shares the
generator's engine when it is the same model, else gets its own backend; it is recorded in the ledger.

The ledger line records, besides counts by reason, each stage's requests, tokens and request-seconds,
the retries the backend made, and the seconds spent starting (model load, server detection) apart from
the seconds the loop ran, so rates never count a model's load time.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import random
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from selfinstruct.config import GenerateConfig
from selfinstruct.engines import Backend, make_backend, resolve_backend_name
from selfinstruct.engines.localmodels import DEFAULT_MODEL
from selfinstruct.errors import ConfigError, PoolError, SelfInstructError
from selfinstruct.loop.bootstrap import INTERRUPTED, SURPLUS, Bootstrap, JudgeSpec, Progress, RoundReport, RunTotals
from selfinstruct.pool.directory import Pool, compare_configs
from selfinstruct.pool.inputs import fingerprint
from selfinstruct.pool.task import Task, load_seed_tasks
from selfinstruct.protocol.alpaca import AlpacaTemplates
from selfinstruct.protocol.chatprompts import ASK, PREFILL, ChatTemplates
from selfinstruct.protocol.judge import JudgeTemplate
from selfinstruct.protocol.prompts import PromptTemplates
from selfinstruct.stopping import StopRequested, held, raise_pending, reason_of, shielded, stop_in

EventHandler = Callable[[str, Any], None]
"""``on_event(kind, payload)``: ``("warning", str)``, ``("start", RunInfo)``, ``("round", RoundReport)``,
``("progress", Progress)`` about once a second, and from the backend ``("retry", RetryEvent)`` and
``("endpoint_down", str)``."""

# Keys of the stored configuration that must match for a later run to add to the same pool.
IDENTITY_KEYS = ("model", "prompts_hash", "seeds_hash", "method", "api")
# What a pool recorded before these keys existed was grown this way.
IDENTITY_DEFAULTS = {"method": "self-instruct", "api": "completions"}
# Model names that usually mean an instruct (chat) model: a hint when --api auto chose completions.
_INSTRUCT_NAME = re.compile(r"(?i)(?:instruct|chat|[-_.](?:it|sft|dpo|rlhf)(?:[-_.]|$))")


def looks_instruct(model: str) -> bool:
    """Whether a model's name suggests an instruction-tuned model. Only the last part of a name or path
    counts: ``~/.cache/selfinstruct/models/gemma-3-270m`` is a base model whatever its folders are called.

    >>> [looks_instruct(m) for m in ("org/Llama-3.1-8B-Instruct", "google/gemma-2-9b-it", "/m/selfinstruct/gpt2")]
    [True, True, False]
    """
    return bool(_INSTRUCT_NAME.search(model.rstrip("/").rsplit("/", 1)[-1]))


@dataclass
class RunInfo:
    run_id: str
    seed: int
    backend: str
    model: str
    pool_dir: str
    pool_size: int
    target: int
    seeds: int
    startup_seconds: float = 0.0
    window: int | None = None  # --window; None: the window follows the engine
    lag: int | None = None  # the staleness lag the loop used (known once the loop opened its stream)
    method: str = "self-instruct"
    api: str = "completions"
    judge: str | None = None  # the judge's model, when there is one


@dataclass
class RunOutcome:
    """How the run ended. ``exit_reason`` is a budget name, ``interrupted``/``terminated``, or ``error``.
    ``seconds`` is the loop's time; ``startup_seconds`` what came before it (conversion, model load)."""

    info: RunInfo
    exit_reason: str
    totals: RunTotals
    seconds: float
    pool_size: int
    startup_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def file_fingerprint(path: str | Path) -> str:
    """The fingerprint of a seed file or template, read with the bounded reader (never from /dev/zero)."""
    return fingerprint(path)


def _stored_identity(pool: Pool, machine: list[Task]) -> tuple[dict[str, Any] | None, str]:
    """The identity this pool was made with, and where it was found.

    ``config.json`` first; a user may delete it, so then the ledger (the latest run that accepted tasks
    records model and fingerprints), and last the tasks themselves, each of which records its model.
    """
    stored = pool.read_config()
    if stored is not None:
        return stored, str(pool.config_path)
    for run in reversed(pool.read_runs()):
        if isinstance(run.get("accepted"), int) and run["accepted"] > 0 and run.get("model"):
            return {k: run[k] for k in IDENTITY_KEYS if k in run}, f"{pool.runs_path} (run {run.get('run_id')})"
    for task in reversed(machine):
        model = task.meta.get("model")
        if isinstance(model, str) and model:
            return {"model": model}, f"{pool.tasks_path} (task {task.id})"
    return None, ""


def _check_identity(pool: Pool, machine: list[Task], identity: dict[str, Any], force: bool) -> list[str]:
    stored, source = _stored_identity(pool, machine)
    if stored is None:
        return []
    if stored.get("prompts_hash") is not None:  # recorded by a run, perhaps before method and api were
        stored = {**IDENTITY_DEFAULTS, **stored}
    # Only what both sides know: a pool identified by its tasks knows the model, not the fingerprints.
    keys = [k for k in IDENTITY_KEYS if identity.get(k) is not None and stored.get(k) is not None]
    diffs = compare_configs(stored, identity, keys=tuple(keys))
    if diffs and not force:
        raise PoolError(
            f"{pool.directory} was made with a different setup (recorded in {source}), and mixing it would "
            "make a pool that no single configuration explains:\n  "
            + "\n  ".join(diffs)
            + "\nUse another --out directory, or --force to add to this pool anyway."
        )
    return diffs


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


# The cyclic garbage collector's thresholds during a run. Python's default (700, 10, 10) collects the youngest
# objects every 700 allocations and everything about every 70,000: on a 12,000-task run over HTTP that was
# 5.8 s of 46 (pauses up to 0.3 s in which neither the loop nor its HTTP thread runs). With these it was 0.95 s
# and no full collection; a long run still gets them (every 4M allocations, when the heap has grown).
RUN_GC_THRESHOLDS = (20_000, 20, 10)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Raise the garbage collector's thresholds for the run (restored after it)."""
    before = gc.get_threshold()
    gc.set_threshold(*RUN_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def run_generate(
    config: GenerateConfig,
    *,
    force: bool = False,
    repair: bool = False,
    backend: Backend | None = None,
    on_event: EventHandler | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunOutcome:
    """Run ``generate`` as configured. ``backend`` overrides the configured one (tests, embedding).

    Once the pool's lock is held, every way this function ends leaves one line in ``runs.jsonl``: a budget,
    a stop (:class:`~selfinstruct.stopping.StopRequested` or Ctrl-C), a failure while starting (server
    down, bad key, model that does not load) or later, and a bug. Errors are re-raised after the line is
    written; a stop is returned as an outcome with ``exit_reason`` ``interrupted`` or ``terminated``.
    """
    emit: EventHandler = on_event or (lambda kind, payload: None)
    warnings: list[str] = []
    config = dataclasses.replace(config)  # platform defaults are filled in on this copy, not the caller's

    def warn(message: str) -> None:
        warnings.append(message)
        emit("warning", message)

    # Local files the user named are read before the pool is touched: bad input is exit 2, nothing written.
    seeds = load_seed_tasks(config.seeds)
    templates = PromptTemplates.load(config.prompts)
    prompts = _Prompts(
        templates,
        chat=ChatTemplates.load(config.prompts, form=_given_form(config))
        if config.api == "chat" and config.method != "alpaca"
        else None,
        alpaca=AlpacaTemplates.load(config.prompts) if config.method == "alpaca" else None,
        judge=JudgeTemplate.load(config.prompts) if config.judging else None,
        chat_form_pending=config.chat_form == "auto",
    )
    seeds_hash = file_fingerprint(config.seeds)
    backend_name = "custom" if backend is not None else resolve_backend_name(config.backend, config.base_url)
    # In-process vLLM without --model: the default packaged model (converted into the cache on first use).
    model_name = config.model or (DEFAULT_MODEL if backend_name == "vllm" else None)
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    run_id = new_run_id()
    info = RunInfo(
        run_id=run_id,
        seed=seed,
        backend=backend_name,
        model=backend.model if backend is not None else (model_name or "(not detected yet)"),
        pool_dir=str(config.out),
        pool_size=0,
        target=config.num_instructions,
        seeds=len(seeds),
        window=config.window,
        method=config.method,
        judge=config.judge_model,
    )

    pool = Pool(config.out)
    with ExitStack() as cleanup:
        cleanup.enter_context(pool.lock("generate"))  # locked out (75) or unusable: no run, no ledger line
        cleanup.enter_context(_fewer_collections())
        api = config.api if config.api != "auto" else None  # resolved once the backend is up
        state = _RunState(info=info, identity={"model": model_name, "seeds_hash": seeds_hash,
                                               "method": config.method, "api": api,
                                               "prompts_hash": prompts.fingerprint(config.method, api)})  # fmt: skip
        started_wall, started = _utc_now(), clock()
        state.started = started
        try:
            try:
                backend = _start_and_loop(
                    config, pool, state, seeds, prompts, backend, backend_name, force, repair, cleanup, emit, warn,
                    clock,
                )  # fmt: skip
                state.exit_reason = state.loop.stop_reason if state.loop and state.loop.stop_reason else "error"
            except StopRequested as stop:
                state.exit_reason = stop.reason
            except KeyboardInterrupt:
                state.exit_reason = INTERRUPTED
            except SelfInstructError as exc:
                state.error, state.failure = str(exc), exc
            except Exception as exc:  # an unexpected bug: still record the run, then let it surface
                stop_inside = stop_in(exc)  # a signal that a dependency wrapped (e.g. inside an import)
                if stop_inside is not None:
                    state.exit_reason = reason_of(stop_inside)
                else:
                    state.error, state.failure = f"{type(exc).__name__}: {exc}", exc
            finally:
                _record(pool, config, state, started_wall, clock() - started, warn)
        except StopRequested as stop:
            # The first signal landed after the run's end and before its line was written: write it now
            # (only the first signal raises, so nothing can interrupt this one).
            if state.exit_reason == "error" and state.failure is None:
                state.exit_reason = stop.reason
            _record(pool, config, state, started_wall, clock() - started, warn)
        ended = clock()
        with shielded():
            cleanup.close()  # the backend we made, then the lock
    if state.failure is not None:
        raise state.failure
    if state.record_failure is not None:
        raise state.record_failure
    totals = state.loop.totals if state.loop else RunTotals()
    loop_started = state.loop_started if state.loop_started is not None else ended
    return RunOutcome(
        info=state.info,
        exit_reason=state.exit_reason,
        totals=totals,
        seconds=ended - loop_started,
        startup_seconds=loop_started - started,
        pool_size=state.info.pool_size + (state.loop.persisted if state.loop else 0),
        warnings=warnings,
    )


@dataclass
class _Prompts:
    """The templates a run may use: the completion ones always; chat, Alpaca and judge ones when needed."""

    completion: PromptTemplates
    chat: ChatTemplates | None = None
    alpaca: AlpacaTemplates | None = None
    judge: JudgeTemplate | None = None
    chat_form_pending: bool = False  # --chat-form auto: the form is the backend's to decide, once it is up

    def fingerprint(self, method: str, api: str | None) -> str | None:
        """The hash of the templates a run of this method and API uses (None while the API, or the chat form,
        is unknown). Self-Instruct on completions keeps the hash pools have always recorded."""
        if api is None or (api == "chat" and method != "alpaca" and self.chat_form_pending):
            return None
        chat = api == "chat"
        if method == "alpaca":
            assert self.alpaca is not None
            return self.alpaca.fingerprint(chat=chat)
        if chat:
            assert self.chat is not None
            return self.chat.fingerprint()
        return self.completion.fingerprint()


@dataclass
class _RunState:
    """What is known about a run so far: enough for its ledger line at any moment after the lock."""

    info: RunInfo
    identity: dict[str, Any]
    loop: Bootstrap | None = None
    exit_reason: str = "error"
    error: str | None = None
    failure: BaseException | None = None
    record_failure: SelfInstructError | None = None
    recorded: bool = False
    started: float = 0.0
    loop_started: float | None = None  # when the loop began (after the model was converted and loaded)
    prepare_seconds: float = 0.0  # converting a packaged model into the cache (part of startup_seconds)
    retries: int = 0
    endpoint_stats: Callable[[], Any] | None = None
    judge: JudgeSpec | None = None
    forced: set[str] = field(default_factory=set)  # identity differences already warned about


def _start_and_loop(
    config: GenerateConfig,
    pool: Pool,
    state: _RunState,
    seeds: list[Task],
    prompts: _Prompts,
    backend: Backend | None,
    backend_name: str,
    force: bool,
    repair: bool,
    cleanup: ExitStack,
    emit: EventHandler,
    warn: Callable[[str], None],
    clock: Callable[[], float],
) -> Backend:
    """Everything of a run after the lock: load and check the pool, start the backend, run the rounds."""
    machine = pool.load(repair=repair)
    state.info.pool_size = len(machine)
    for message in pool.warnings:
        warn(message)
    pool.warnings.clear()
    if state.identity["model"] is not None:  # check before a model is loaded: a wrong pool fails in a second
        for diff in _check_identity(pool, machine, state.identity, force):
            state.forced.add(diff)
            warn(f"--force: adding to a pool made with another setup: {diff}")
    if backend is None:

        def backend_event(kind: str, payload: Any) -> None:
            if kind == "retry":
                state.retries += 1
            emit(kind, payload)

        options = config.backend_options()
        options.on_event = backend_event
        backend = make_backend(backend_name, options)
        close = getattr(backend, "close", None)
        if callable(close):
            cleanup.callback(close)  # the backend we made, we close (HTTP connections)
    endpoint_stats = getattr(backend, "endpoint_stats", None)
    state.endpoint_stats = endpoint_stats if callable(endpoint_stats) else None
    endpoint_loads = getattr(backend, "endpoint_loads", None)
    state.prepare_seconds = float(getattr(backend, "prepare_seconds", 0.0) or 0.0)
    _platform_defaults(config, backend, state, emit)
    state.info.model = backend.model
    state.identity["model"] = backend.model
    api = _resolve_api(config, pool, backend, warn)
    if api == "chat" and prompts.chat is None and config.method != "alpaca":
        prompts.chat = ChatTemplates.load(config.prompts, form=_given_form(config))
    form_pending = prompts.chat_form_pending
    if prompts.chat is not None:
        config.chat_form = _resolve_chat_form(config, backend, prompts.chat)  # the ledger records the form used
        prompts.chat = prompts.chat.with_form(config.chat_form)
        prompts.chat_form_pending = False
    state.info.api = state.identity["api"] = api
    state.identity["prompts_hash"] = prompts.fingerprint(config.method, api)
    if config.model is None or config.api == "auto" or form_pending:  # the model, API or form is known only now
        for diff in _check_identity(pool, machine, state.identity, force):
            if diff not in state.forced:
                warn(f"--force: adding to a pool made with another setup: {diff}")
    judge = _make_judge(config, prompts, backend, backend_name, api, cleanup, emit)
    state.judge = judge
    # The identity is stored with the first round that adds a task: a run that produced nothing (a
    # mistyped model, a server that is down) must not decide what later runs may add to this pool.
    config_pending = pool.read_config() is None

    runs = pool.read_runs()
    last_round = max((_int(r.get("last_round")) for r in runs), default=0)

    def sink(accepted: list[Task], records: list[dict[str, Any]]) -> None:
        nonlocal config_pending
        # A group is written whole; a stop takes effect once the loop has counted it (the loop holds
        # signals around the call too, and raises a pending stop after its counts are updated).
        with held():
            pool.append(accepted)
            if accepted and config_pending:
                # The tasks are in: a failure here must not fail the group (the loop would offer the same
                # tasks again). The tasks record their model, so the pool's identity survives a missing
                # config.json; the next group tries again.
                try:
                    pool.write_config({**state.identity, "config": _public_config(config), "created_at": _utc_now()})
                    config_pending = False
                except PoolError as exc:
                    warn(f"{exc}; the tasks record their model, and the next group tries again")
            # Surplus tasks are finished, paid-for work: always kept. Rejections only when asked.
            keep = records if config.keep_rejected else [r for r in records if r.get("reject_reason") == SURPLUS]
            if keep:
                pool.append_rejected(keep)
        for message in pool.warnings:
            warn(message)
        pool.warnings.clear()

    loop = Bootstrap(
        config,
        backend,
        seeds,
        machine,
        prompts.completion,
        rng=random.Random(state.info.seed),
        run_id=state.info.run_id,
        next_index=pool.next_index(machine),
        last_round=last_round,
        sink=sink,
        clock=clock,
        chat=api == "chat",
        chat_templates=prompts.chat,
        alpaca=prompts.alpaca,
        judge=judge,
    )
    state.loop = loop
    for message in loop.warnings:
        warn(message)
    state.loop_started = clock()
    state.info.startup_seconds = state.loop_started - state.started
    emit("start", state.info)
    with closing(loop.run()) as events:
        for event in events:
            state.info.lag = loop.lag
            progress = event if isinstance(event, Progress) else event.progress
            if progress is not None and callable(endpoint_loads):
                progress.endpoints = endpoint_loads()  # each server's running, waiting, in flight, tokens/s
            emit("progress" if isinstance(event, Progress) else "round", event)
            raise_pending()  # a signal that arrived while the event was shown
    state.info.lag = loop.lag
    return backend


CPU_TARGET = 10
"""The target on vLLM's CPU build when none was given: a few minutes on a 2-core machine with the default
model (--num-instructions sets another, and a rerun with the same --out resumes the pool)."""


def _platform_defaults(config: GenerateConfig, backend: Backend, state: _RunState, emit: EventHandler) -> None:
    """Defaults that depend on where the model runs, for the options the user left unset."""
    chosen = config.explicit
    if getattr(backend, "on_cpu", False) is True and chosen is not None and "num_instructions" not in chosen:
        config.num_instructions = CPU_TARGET
        state.info.target = CPU_TARGET
        emit(
            "notice",
            f"vLLM runs on the CPU: the target is {CPU_TARGET} tasks unless you set one (a few minutes on 2 "
            "cores with the default model); --num-instructions N grows the pool, and the same --out resumes it",
        )


def _resolve_api(config: GenerateConfig, pool: Pool, backend: Backend, warn: Callable[[str], None]) -> str:
    """``completions`` or ``chat``. An explicit ``--api`` wins (``chat`` checks that the model has a chat
    template, where the backend can tell). ``auto``: the API the pool was grown with, else what the server
    makes clear (:meth:`OpenAIBackend.detect_api`), else completions, the method's default."""
    if config.api == "chat":
        check = getattr(backend, "check_chat", None)
        if callable(check):
            check()
        return "chat"
    if config.api == "completions":
        return "completions"
    stored = (pool.read_config() or {}).get("api")
    if stored in ("chat", "completions"):
        return str(stored)
    detect = getattr(backend, "detect_api", None)
    api, why = detect() if callable(detect) else ("completions", "the backend cannot tell")
    if api == "chat":
        warn(f"--api auto: using the chat API: {why}")
    elif looks_instruct(backend.model or ""):
        warn(
            f"--api auto: using completions, as for a base model, but {backend.model!r} looks like an instruct "
            "model; --api chat sends it chat requests with the templates of prompts/chat/"
        )
    return api


def _given_form(config: GenerateConfig) -> str:
    """The chat form the configuration fixes; with ``auto``, ask until the backend says it can do better."""
    return ASK if config.chat_form == "auto" else config.chat_form


def _resolve_chat_form(config: GenerateConfig, backend: Backend, templates: ChatTemplates) -> str:
    """``prefill`` or ``ask``. A form given with ``--chat-form`` wins; ``auto`` is prefill where the backend
    continues an assistant message (``can_continue_reply()``: vLLM in-process and ``vllm serve``) and the
    prompts directory has the template of that form, else ask (hosted chat APIs refuse a prefilled reply)."""
    if config.chat_form != "auto":
        return config.chat_form
    probe = getattr(backend, "can_continue_reply", None)
    return PREFILL if templates.can_prefill and callable(probe) and probe() else ASK


def _make_judge(
    config: GenerateConfig,
    prompts: _Prompts,
    backend: Backend,
    backend_name: str,
    api: str,
    cleanup: ExitStack,
    emit: EventHandler,
) -> JudgeSpec | None:
    """The run's judge: the generating model itself (``--judge-model same`` or its own name, no
    ``--judge-base-url``) on the same engine and stream, or another model with its own backend."""
    if config.judge_model is None:
        return None
    assert prompts.judge is not None
    if config.judge_base_url is None and config.judge_model in ("same", backend.model):
        chat = (config.judge_api or api) == "chat"
        return JudgeSpec(prompts.judge, backend.model, chat, None, config.min_score)
    if config.judge_base_url is None and backend_name != "openai":
        raise ConfigError(
            f"--judge-model {config.judge_model}: in-process vLLM runs one model; judge with the same model "
            "(--judge-model same) or give the judge's server with --judge-base-url"
        )
    options = config.backend_options()
    options.model = config.judge_model
    if config.judge_base_url is not None:
        options.base_url = config.judge_base_url
    options.on_event = emit
    judge_backend = make_backend("openai", options)
    close = getattr(judge_backend, "close", None)
    if callable(close):
        cleanup.callback(close)
    judge_api = config.judge_api or "auto"
    if judge_api == "auto":
        detect = getattr(judge_backend, "detect_api", None)
        judge_api = detect()[0] if callable(detect) else "completions"
    return JudgeSpec(prompts.judge, judge_backend.model, judge_api == "chat", judge_backend, config.min_score)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _record(
    pool: Pool, config: GenerateConfig, state: _RunState, started_at: str, seconds: float, warn: Callable[[str], None]
) -> None:
    """Append the run's line to the ledger once, whatever state the run is in. Signals wait meanwhile."""
    if state.recorded:
        return
    with shielded():
        state.recorded = True
        loop = state.loop
        totals = loop.totals if loop else RunTotals()
        persisted = loop.persisted if loop else 0
        endpoints: dict[str, Any] = {}
        if state.endpoint_stats is not None:
            try:
                endpoints = {"endpoints": state.endpoint_stats()}
            except Exception as exc:  # the ledger line matters more than the per-server figures
                warn(f"could not read the per-server request counts: {type(exc).__name__}: {exc}")
        record = {
            "run_id": state.info.run_id,
            "started_at": started_at,
            "ended_at": _utc_now(),
            # the loop's seconds; start-up (conversion, model load, server detection) is recorded apart
            "seconds": round(max(0.0, seconds - state.info.startup_seconds) if state.loop_started else 0.0, 3),
            "startup_seconds": round(state.info.startup_seconds if state.loop_started else seconds, 3),
            "prepare_seconds": round(state.prepare_seconds, 3),
            "exit_reason": state.exit_reason,
            "error": state.error,
            "backend": state.info.backend,
            "model": state.identity.get("model"),
            "seed": state.info.seed,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "config": _public_config(config),
            "config_hash": _config_hash(config),
            # Request k showed the pool as of request k - lag: with the seed, pool and config, what replays it.
            "lag": loop.lag if loop else None,
            **state.identity,
            "pool_before": state.info.pool_size,
            "pool_after": state.info.pool_size + persisted,
            "target": config.num_instructions,
            "rounds": totals.rounds,
            "last_round": loop.last_round if loop else None,
            "candidates": totals.candidates,
            "accepted": persisted,
            "rejected": dict(totals.rejected),
            "surplus": dict(totals.surplus),
            "notes": dict(totals.notes),
            "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens,
            "stages": {name: stats.to_dict() for name, stats in totals.stages.items()},
            "retries": state.retries,
            **endpoints,
        }
        if state.judge is not None:
            record["judge"] = {
                "model": state.judge.model,
                "rubric": state.judge.rubric,
                "api": "chat" if state.judge.chat else "completions",
                "shares_engine": state.judge.backend is None,
                "min_score": state.judge.min_score,
            }
        try:
            pool.append_run(record)
        except PoolError as exc:
            if state.failure is None:
                state.record_failure = exc
            else:
                warn(str(exc))


def _public_config(config: GenerateConfig) -> dict[str, Any]:
    """The resolved configuration as stored in the pool and the ledger: no credentials (see ``to_public_dict``)."""
    return config.to_public_dict()


def _config_hash(config: GenerateConfig) -> str:
    blob = json.dumps(_public_config(config), sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["EventHandler", "Progress", "RoundReport", "RunInfo", "RunOutcome", "StopRequested", "run_generate"]
