"""One ``generate`` run against a pool directory: lock, load, check, loop, record.

This is the library side of ``selfinstruct generate``. It takes the pool's lock (a second writer gets
:class:`~selfinstruct.errors.PoolLockedError`, exit 75), loads and checks the pool, refuses to mix a pool
made with another model, prompt templates or seed file unless forced, runs :class:`Bootstrap` with the
pool as its sink, and appends one line to the run ledger whatever happens (budget reached, Ctrl-C,
SIGTERM, a dead server, a failed write). It never prints: progress and warnings go to ``on_event``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from selfinstruct.backends import Backend, make_backend, resolve_backend_name
from selfinstruct.bootstrap import INTERRUPTED, Bootstrap, RoundReport, RunTotals
from selfinstruct.config import GenerateConfig
from selfinstruct.errors import PoolError, SelfInstructError
from selfinstruct.pool import Pool, compare_configs
from selfinstruct.prompts import PromptTemplates
from selfinstruct.task import Task, load_seed_tasks

EventHandler = Callable[[str, Any], None]
"""``on_event(kind, payload)``: ``("warning", str)``, ``("start", RunInfo)``, ``("round", RoundReport)``."""

# Keys of the stored configuration that must match for a later run to add to the same pool.
IDENTITY_KEYS = ("model", "prompts_hash", "seeds_hash")


class Terminated(Exception):
    """Raised by the CLI's SIGTERM handler so a run stops like Ctrl-C and records why."""


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


@dataclass
class RunOutcome:
    """How the run ended. ``exit_reason`` is a budget name, ``interrupted``/``terminated``, or ``error``."""

    info: RunInfo
    exit_reason: str
    totals: RunTotals
    seconds: float
    pool_size: int
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def file_fingerprint(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _identity(config: GenerateConfig, model: str | None, templates: PromptTemplates) -> dict[str, Any]:
    return {
        "model": model,
        "prompts_hash": templates.fingerprint(),
        "seeds_hash": file_fingerprint(config.seeds),
    }


def _check_identity(pool: Pool, identity: dict[str, Any], force: bool) -> list[str]:
    stored = pool.read_config()
    if stored is None:
        return []
    keys = [k for k in IDENTITY_KEYS if identity.get(k) is not None]
    diffs = compare_configs(stored, identity, keys=tuple(keys))
    if diffs and not force:
        raise PoolError(
            f"{pool.directory} was made with a different setup, and mixing it would make a pool that no "
            "single configuration explains:\n  "
            + "\n  ".join(diffs)
            + "\nUse another --out directory, or --force to add to this pool anyway."
        )
    return diffs


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_generate(
    config: GenerateConfig,
    *,
    force: bool = False,
    repair: bool = False,
    backend: Backend | None = None,
    on_event: EventHandler | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunOutcome:
    """Run ``generate`` as configured. ``backend`` overrides the configured one (tests, embedding)."""
    emit: EventHandler = on_event or (lambda kind, payload: None)
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        emit("warning", message)

    # Everything that can fail on bad input fails here, before the pool is touched.
    seeds = load_seed_tasks(config.seeds)
    templates = PromptTemplates.load(config.prompts)
    backend_name = "custom" if backend is not None else resolve_backend_name(config.backend, config.base_url)

    pool = Pool(config.out)
    with ExitStack() as cleanup, pool.lock("generate"):
        machine = pool.load(repair=repair)
        for message in pool.warnings:
            warn(message)
        if config.model is not None:
            for diff in _check_identity(pool, _identity(config, config.model, templates), force):
                warn(f"--force: adding to a pool made with another setup: {diff}")
        if backend is None:
            backend = make_backend(backend_name, config.backend_options())
            close = getattr(backend, "close", None)
            if callable(close):
                cleanup.callback(close)  # the backend we made, we close (HTTP connections)
        identity = _identity(config, backend.model, templates)
        if config.model is None:
            for diff in _check_identity(pool, identity, force):
                warn(f"--force: adding to a pool made with another setup: {diff}")
        if pool.read_config() is None:
            pool.write_config({**identity, "config": _public_config(config), "created_at": _utc_now()})

        seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
        run_id = new_run_id()
        runs = pool.read_runs()
        last_round = max((int(r.get("last_round", 0) or 0) for r in runs), default=0)

        def sink(accepted: list[Task], rejected: list[dict[str, Any]]) -> None:
            pool.append(accepted)
            if config.keep_rejected and rejected:
                pool.append_rejected(rejected)

        loop = Bootstrap(
            config,
            backend,
            seeds,
            machine,
            templates,
            rng=random.Random(seed),
            run_id=run_id,
            next_index=pool.next_index(machine),
            last_round=last_round,
            sink=sink,
            clock=clock,
        )
        for message in loop.warnings:
            warn(message)
        info = RunInfo(
            run_id=run_id,
            seed=seed,
            backend=backend_name,
            model=backend.model,
            pool_dir=str(pool.directory),
            pool_size=len(machine),
            target=config.num_instructions,
            seeds=len(seeds),
        )
        emit("start", info)

        started_wall, started = _utc_now(), clock()
        exit_reason, error = "error", None
        pool_before = len(machine)
        try:
            for report in loop.rounds():
                emit("round", report)
            exit_reason = loop.stop_reason or "error"
        except KeyboardInterrupt:
            exit_reason = INTERRUPTED
        except Terminated:
            exit_reason = "terminated"
        except SelfInstructError as exc:
            error = str(exc)
            raise
        except Exception as exc:  # an unexpected bug: still record the run, then let it surface
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            seconds = clock() - started
            pool.append_run(
                {
                    "run_id": run_id,
                    "started_at": started_wall,
                    "ended_at": _utc_now(),
                    "seconds": round(seconds, 3),
                    "exit_reason": exit_reason,
                    "error": error,
                    "backend": backend_name,
                    "model": backend.model,
                    "seed": seed,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "config": _public_config(config),
                    "config_hash": _config_hash(config),
                    **identity,
                    "pool_before": pool_before,
                    "pool_after": len(loop.machine),
                    "target": config.num_instructions,
                    "rounds": loop.totals.rounds,
                    "last_round": loop.last_round,
                    "candidates": loop.totals.candidates,
                    "accepted": loop.totals.accepted,
                    "rejected": dict(loop.totals.rejected),
                    "notes": dict(loop.totals.notes),
                    "prompt_tokens": loop.totals.prompt_tokens,
                    "completion_tokens": loop.totals.completion_tokens,
                }
            )
    return RunOutcome(
        info=info,
        exit_reason=exit_reason,
        totals=loop.totals,
        seconds=seconds,
        pool_size=len(loop.machine),
        warnings=warnings,
    )


def _public_config(config: GenerateConfig) -> dict[str, Any]:
    """The resolved configuration as stored in the pool and the ledger (it holds no secret)."""
    return config.to_dict()


def _config_hash(config: GenerateConfig) -> str:
    blob = json.dumps(_public_config(config), sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["EventHandler", "RoundReport", "RunInfo", "RunOutcome", "Terminated", "run_generate"]
