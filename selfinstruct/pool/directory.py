"""A pool directory: the only state of a ``selfinstruct generate`` run, grown over many runs.

Users grow a pool over days from cron: runs overlap, get killed with SIGKILL, hit full disks. This module
keeps the pool readable through all of that. It reads and writes files; it does not generate, filter or
print (warnings are collected as strings in :attr:`Pool.warnings` for the CLI to show).

Layout of a pool directory::

    tasks.jsonl          accepted machine tasks, one seed-schema record per line (Task.to_record), append-only
    rejected.jsonl       rejected candidates with a "reject_reason" field; append-only, best effort
    runs.jsonl           the run ledger: one line per finished run (a dict given by the caller)
    judgements.jsonl     scores given after the fact by `selfinstruct judge`, one line per judgement keyed by
                         task id; append-only, fsynced (tasks.jsonl is never rewritten to hold them)
    config.json          identity and configuration, stored with the first round that adds a task (atomically)
    .lock                while the pool is locked: the holder's pid, hostname, started_at, command
    tasks.jsonl.corrupt  lines moved out of tasks.jsonl, each after a "# <when> tasks.jsonl:<line> <why>"
                         note line, the bad line itself kept byte for byte (so this file is not JSONL)

Rules that make this safe:

* **One writer.** Every method that writes needs the lock held by the same :class:`Pool` object
  (``with pool.lock(): ...``), else :class:`PoolError`. The lock is ``flock(2)`` on the pool directory
  itself, so deleting or replacing ``.lock`` cannot let a second writer in (``.lock`` only tells who holds
  it, and is flocked too to keep out older versions). The kernel drops the lock when the holder dies, so
  there is never a stale lock to clean up. Readers (``selfinstruct status``) need no lock:
  :meth:`Pool.lock_holder` probes it, :meth:`Pool.load` without the lock never modifies a file.
* **No foreign lines.** Before each append, ``tasks.jsonl`` must still be the file this object loaded and
  wrote (device, inode, size, change time); otherwise another program is writing and :meth:`Pool.append`
  refuses, so the duplicate checks always see the whole file.
* **Whole lines.** :meth:`Pool.append` writes a round as one ``write(2)`` on an ``O_APPEND`` descriptor,
  then ``fsync``; on any error it truncates the file back to its size before the call. A process killed
  mid-write can still leave a partial block: :meth:`Pool.load` (holding the lock) cuts an incomplete last
  line off and moves it to ``tasks.jsonl.corrupt``. Every line before it is a whole, valid task, so the
  pool keeps whole rounds plus, at worst, the complete first lines of the interrupted round.
* **Loud on real damage.** A bad line in the middle of ``tasks.jsonl`` (not JSON, not a task, a duplicate
  id or instruction) is not a crash artefact: :meth:`Pool.load` raises :class:`PoolError` naming file and
  line, and ``load(repair=True)`` moves such lines aside and rewrites the file atomically, keeping every
  other line byte for byte.

The parts live beside this module: the lock in :mod:`selfinstruct.pool.lock`, the journals (appends,
fsync, torn-line repair, and ``tasks.jsonl`` itself) in :mod:`selfinstruct.pool.journal`, the run ledger in
:mod:`selfinstruct.pool.ledger`. :class:`Pool` composes them and is the one door: it checks the lock before
every write, and keeps the paths, the warnings and the configuration.

POSIX only (``fcntl``). Typical use::

    pool = Pool("outputs/my_pool")
    with pool.lock("generate"):
        tasks = pool.load(repair=False)
        n = pool.next_index(tasks)
        ...
        pool.append(round_tasks)
        pool.append_run({"finished_at": ..., "accepted": ...})
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from selfinstruct.errors import PoolError
from selfinstruct.pool import lock as _lock
from selfinstruct.pool.journal import (
    AppendFailed,
    TaskJournal,
    append_block,
    jsonl_block,
    read_jsonl_tolerant,
    reason,
    write_bytes_atomic,
)
from selfinstruct.pool.jsontext import JSONProblem
from selfinstruct.pool.jsontext import loads as json_loads
from selfinstruct.pool.ledger import Ledger
from selfinstruct.pool.lock import LOCK_WAIT_SECONDS, PoolLock
from selfinstruct.pool.task import Task

__all__ = [
    "CONFIG_FILE",
    "CORRUPT_SUFFIX",
    "DEFAULT_CONFIG_KEYS",
    "IGNORED_CONFIG_KEYS",
    "JUDGEMENTS_FILE",
    "LOCK_FILE",
    "LOCK_WAIT_SECONDS",
    "MACHINE_TASK_PREFIX",
    "REJECTED_FILE",
    "RUNS_FILE",
    "TASKS_FILE",
    "Pool",
    "PoolLock",
    "compare_configs",
    "machine_task_id",
]

TASKS_FILE = "tasks.jsonl"
REJECTED_FILE = "rejected.jsonl"
RUNS_FILE = "runs.jsonl"
JUDGEMENTS_FILE = "judgements.jsonl"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
CORRUPT_SUFFIX = ".corrupt"

MACHINE_TASK_PREFIX = "machine_task_"
_MACHINE_ID = re.compile(rf"{MACHINE_TASK_PREFIX}(\d+)")

# Configuration keys whose change makes a pool a mix of two different runs. The random seed is not one.
DEFAULT_CONFIG_KEYS: tuple[str, ...] = ("model", "prompts_hash", "seeds_hash")
IGNORED_CONFIG_KEYS = frozenset({"seed"})


def machine_task_id(n: int) -> str:
    """The id of the ``n``-th machine task: ``machine_task_id(123) == "machine_task_000123"``."""
    return f"{MACHINE_TASK_PREFIX}{n:06d}"


def compare_configs(
    stored: Mapping[str, Any], current: Mapping[str, Any], keys: Iterable[str] = DEFAULT_CONFIG_KEYS
) -> list[str]:
    """Human-readable differences between the stored and the current configuration, for ``keys``.

    Values are compared as JSON (a tuple equals the list it is stored as). A key missing on one side is
    shown as ``(not set)``; a key missing on both is skipped; ``seed`` is never reported. Example::

        >>> compare_configs({"model": "A", "seed": 1}, {"model": "B", "seed": 2})
        ["model: stored 'A', now 'B'"]
    """
    missing = object()
    differences = []
    for key in keys:
        if key in IGNORED_CONFIG_KEYS:
            continue
        old, new = stored.get(key, missing), current.get(key, missing)
        if old is missing and new is missing:
            continue
        if old is not missing and new is not missing and _as_json(old) == _as_json(new):
            continue
        differences.append(f"{key}: stored {_show(old, missing)}, now {_show(new, missing)}")
    return differences


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _show(value: Any, missing: object) -> str:
    if value is missing:
        return "(not set)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Pool:
    """A pool directory (see the module docstring for its layout and rules): the lock, the task journal and
    the run ledger behind one object that checks the lock before every write.

    ``warnings`` collects human-readable notes (a torn line moved aside, unreadable ledger lines skipped)
    for the caller to show; nothing here prints.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.tasks_path = self.directory / TASKS_FILE
        self.rejected_path = self.directory / REJECTED_FILE
        self.runs_path = self.directory / RUNS_FILE
        self.judgements_path = self.directory / JUDGEMENTS_FILE
        self.config_path = self.directory / CONFIG_FILE
        self.lock_path = self.directory / LOCK_FILE
        self.corrupt_path = self.directory / (TASKS_FILE + CORRUPT_SUFFIX)
        self.warnings: list[str] = []
        self._lock: PoolLock | None = None
        self._journal = TaskJournal(self.tasks_path, self.corrupt_path, self.directory, self._warn)
        self._ledger = Ledger(self.runs_path, self._warn)

    def __repr__(self) -> str:
        return f"Pool({str(self.directory)!r})"

    def _warn(self, message: str) -> None:
        self.warnings.append(message)

    # -- locking (selfinstruct.pool.lock) ----------------------------------------------------------

    @property
    def locked(self) -> bool:
        """Whether this object holds the pool's lock."""
        return self._lock is not None and self._lock.held

    def lock(self, command: str = "generate", *, wait: float = LOCK_WAIT_SECONDS) -> PoolLock:
        """Take the pool's exclusive lock (creating the directory and ``.lock`` if needed) and return it.

        Retries for ``wait`` seconds (a status probe holds the lock for microseconds), then raises
        :class:`PoolLockedError` (exit code 75, EX_TEMPFAIL) naming the holder. The lock is tied to an open
        file descriptor: the kernel releases it when this process dies, however it dies. A child created
        with ``fork()`` (not ``exec``) shares it until it exits too.
        """
        if self.locked:
            raise PoolError(f"pool {self.directory} is already locked by this process")
        self._lock = _lock.acquire(self.directory, self.lock_path, command, wait, self._warn)
        return self._lock

    def lock_holder(self) -> dict[str, Any] | None:
        """Who holds the lock: ``None`` if nobody, else the holder information (``{}`` if not known).

        Never takes the lock beyond non-blocking shared probes released at once, and never writes, so
        ``selfinstruct status`` works on a pool it may only read. Test the result with ``is None``.
        """
        return _lock.holder(self.directory, self.lock_path)

    def _require_lock(self, action: str) -> None:
        if not self.locked:
            raise PoolError(f"{action} needs the lock of pool {self.directory}: use `with pool.lock(): ...`")

    # -- tasks (selfinstruct.pool.journal) ---------------------------------------------------------

    def load(self, *, repair: bool = False) -> list[Task]:
        """Read every task of ``tasks.jsonl`` (a missing file is an empty pool).

        * An incomplete last line (no newline at the end of the file, or not valid JSON) is what a killed
          write leaves. Holding the lock, it is moved to ``tasks.jsonl.corrupt`` and cut off the file, with a
          warning; without the lock (a reader while a run may be writing) it is skipped, with a warning, and
          no file is touched.
        * A bad line anywhere else (not JSON, not a valid task, or a later copy of an id or an instruction)
          raises :class:`PoolError` naming file and line, and nothing is touched. With ``repair=True`` such
          lines are moved to ``tasks.jsonl.corrupt`` and the file is rewritten atomically without them, the
          other lines byte for byte (taking the lock for the repair if this object does not hold it).
        """
        if repair and not self.locked:
            with self.lock("repair"):
                return self.load(repair=True)
        return self._journal.read(repair=repair, may_write=self.locked)

    def read_tasks(self, *, skip_bad: bool = False) -> list[Task]:
        """Read the tasks for a reader (``status``, ``export``): like :meth:`load`, but never writes.

        An incomplete last line is skipped with a warning; a bad line elsewhere raises :class:`PoolError`,
        or with ``skip_bad=True`` is skipped and summed up in one warning (``status`` shows a damaged pool).
        """
        return self._journal.read(repair=False, may_write=False, skip_bad=skip_bad)

    def iter_tasks(self, *, strict: bool = False) -> Iterator[Task]:
        """Stream the valid tasks of ``tasks.jsonl`` for a reader that needs each task once (``status``):
        one line in memory at a time, never writes, never raises for a bad line.

        The same lines count as :meth:`read_tasks` with ``skip_bad=True`` keeps: bad lines and duplicates
        (by id, and by instruction as an 8-byte digest, so a million tasks cost tens of MB) are skipped and
        summed up in one warning; an incomplete last line (no newline, not a whole record) gets its own.
        ``strict``: a bad line or a duplicate raises :class:`PoolError` instead, as :meth:`read_tasks` does.
        """
        return self._journal.stream(strict=strict)

    def append(self, tasks: Sequence[Task]) -> None:
        """Append one round of tasks durably and all-or-nothing as far as this process can tell.

        The records are serialized first, then written with one ``write(2)`` on an ``O_APPEND`` descriptor
        and ``fsync``-ed. On any error (disk full, EIO) the file is truncated back to its size before the
        call and :class:`PoolError` is raised. Tasks that the next :meth:`load` would refuse (invalid, or a
        duplicate id or instruction of a task loaded or appended through this object) are refused before
        anything is written. Needs the lock.
        """
        self._require_lock("appending tasks")
        self._journal.append(tasks)

    @staticmethod
    def next_index(tasks: Iterable[Task]) -> int:
        """The number for the next machine task: one more than the largest ``machine_task_<n>`` id, else 0.

        Gaps are left alone (``machine_task_000003`` after ``000001`` gives 4); other ids are ignored.
        """
        numbers = [int(m.group(1)) for t in tasks if (m := _MACHINE_ID.fullmatch(t.id))]
        return max(numbers) + 1 if numbers else 0

    # -- the run ledger (selfinstruct.pool.ledger), rejected candidates, judgements, configuration ----------

    def append_rejected(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append rejected candidates (each with a ``reject_reason``) to ``rejected.jsonl``. Needs the lock.

        Best effort: whole lines, no fsync, and a failed write is undone and reported in :attr:`warnings`
        instead of stopping the run (these records are diagnostics, not the dataset).
        """
        self._require_lock("appending rejected candidates")
        block = jsonl_block(records)
        if not block:
            return
        try:
            append_block(self.rejected_path, block, sync=False, on_torn_tail="terminate")
        except AppendFailed as exc:
            self.warnings.append(f"could not record rejected candidates in {self.rejected_path}: {reason(exc.error)}")

    def append_run(self, record: Mapping[str, Any]) -> None:
        """Append one finished run's record to the ledger ``runs.jsonl`` (one line, fsync). Needs the lock."""
        self._require_lock("recording the run")
        self._ledger.append(record)

    def append_judgements(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append judgements to ``judgements.jsonl``: whole lines, one write, fsync. Needs the lock.

        A failed write is undone (the file truncated back) and raised as :class:`PoolError`: the
        judgements of that batch were not stored, and a resumed ``judge`` run scores those tasks again. A
        torn last line left by a killed writer is ended first, so it stays one unreadable line that
        :meth:`iter_judgements` skips.
        """
        self._require_lock("appending judgements")
        block = jsonl_block(records)
        if not block:
            return
        try:
            append_block(self.judgements_path, block, sync=True, on_torn_tail="terminate")
        except AppendFailed as exc:
            raise PoolError(
                f"could not record judgements in {self.judgements_path}: {reason(exc.error)}"
                + ("" if exc.restored else "; the file may end with an incomplete line (readers skip it)")
            ) from None

    def iter_judgements(self) -> Iterator[Any]:
        """Stream the JSON values of ``judgements.jsonl`` (unreadable lines skipped, with a warning)."""
        return read_jsonl_tolerant(self.judgements_path, self._warn)

    def read_runs(self) -> list[dict[str, Any]]:
        """Every run record of the ledger, oldest first. Unreadable lines are skipped; never writes."""
        return self._ledger.read()

    def iter_rejected(self) -> Iterator[dict[str, Any]]:
        """Stream the rejected candidates of ``rejected.jsonl`` (objects only; unreadable lines skipped)."""
        return (r for r in read_jsonl_tolerant(self.rejected_path, self._warn) if isinstance(r, dict))

    def read_rejected_counts(self) -> dict[str, int]:
        """How many rejected candidates there are per ``reject_reason`` (``"unknown"`` when absent)."""
        counts: Counter[str] = Counter()
        for record in read_jsonl_tolerant(self.rejected_path, self._warn):
            reason = record.get("reject_reason") if isinstance(record, dict) else None
            counts[reason if isinstance(reason, str) else "unknown"] += 1
        return dict(counts)

    def read_config(self) -> dict[str, Any] | None:
        """The configuration stored by the first run, or ``None`` if there is none yet."""
        path = self.config_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PoolError(f"cannot read {path}: {reason(exc)}") from None
        try:
            config = json_loads(data)
        except JSONProblem as exc:
            where = f"{path}:{exc.line}" if exc.line else str(path)
            raise PoolError(f"{where}: {exc}; fix or delete the file") from None
        if not isinstance(config, dict):
            raise PoolError(f"{path}: expected a JSON object, got {type(config).__name__}")
        return config

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Store the resolved configuration atomically (temporary file, fsync, rename). Needs the lock."""
        self._require_lock("writing the configuration")
        data = (json.dumps(dict(config), ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        try:
            write_bytes_atomic(self.config_path, data)
        except OSError as exc:
            raise PoolError(
                f"could not write {self.config_path}: {reason(exc)}; the previous file is unchanged"
            ) from None
