"""A pool directory: the only state of a ``selfinstruct generate`` run, grown over many runs.

Users grow a pool over days from cron: runs overlap, get killed with SIGKILL, hit full disks. This module
keeps the pool readable through all of that. It reads and writes files; it does not generate, filter or
print (warnings are collected as strings in :attr:`Pool.warnings` for the CLI to show).

Layout of a pool directory::

    tasks.jsonl          accepted machine tasks, one seed-schema record per line (Task.to_record), append-only
    rejected.jsonl       rejected candidates with a "reject_reason" field; append-only, best effort
    runs.jsonl           the run ledger: one line per finished run (a dict given by the caller)
    config.json          the resolved configuration stored by the first run (written atomically)
    .lock                the lock file; while held it contains the holder's pid, hostname, started_at, command
    tasks.jsonl.corrupt  lines moved out of tasks.jsonl, each after a "# <when> tasks.jsonl:<line> <why>"
                         note line, the bad line itself kept byte for byte (so this file is not JSONL)

Rules that make this safe:

* **One writer.** Every method that writes needs the lock held by the same :class:`Pool` object
  (``with pool.lock(): ...``), else :class:`PoolError`. The lock is ``flock(2)`` on ``.lock``: the kernel
  drops it when the holder dies, so there is never a stale lock to clean up. Readers (``selfinstruct
  status``) need no lock: :meth:`Pool.lock_holder` probes it, :meth:`Pool.load` without the lock never
  modifies a file.
* **Whole lines.** :meth:`Pool.append` writes a round as one ``write(2)`` on an ``O_APPEND`` descriptor,
  then ``fsync``; on any error it truncates the file back to its size before the call. A process killed
  mid-write can still leave a partial block: :meth:`Pool.load` (holding the lock) cuts an incomplete last
  line off and moves it to ``tasks.jsonl.corrupt``. Every line before it is a whole, valid task, so the
  pool keeps whole rounds plus, at worst, the complete first lines of the interrupted round.
* **Loud on real damage.** A bad line in the middle of ``tasks.jsonl`` (not JSON, not a task, a duplicate
  id or instruction) is not a crash artefact: :meth:`Pool.load` raises :class:`PoolError` naming file and
  line, and ``load(repair=True)`` moves such lines aside and rewrites the file atomically, keeping every
  other line byte for byte.

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

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from selfinstruct.errors import InputError, PoolError, PoolLockedError
from selfinstruct.task import Task, task_from_record

TASKS_FILE = "tasks.jsonl"
REJECTED_FILE = "rejected.jsonl"
RUNS_FILE = "runs.jsonl"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
CORRUPT_SUFFIX = ".corrupt"

MACHINE_TASK_PREFIX = "machine_task_"
_MACHINE_ID = re.compile(rf"{MACHINE_TASK_PREFIX}(\d+)")

# How long lock() keeps trying before it gives up: long enough to ride out a `selfinstruct status` probe
# (which holds a shared lock for microseconds), short enough that an overlapping cron run exits at once.
LOCK_WAIT_SECONDS = 0.1
_LOCK_RETRY_INTERVAL = 0.02

# Configuration keys whose change makes a pool a mix of two different runs. The random seed is not one.
DEFAULT_CONFIG_KEYS: tuple[str, ...] = ("model", "prompts_hash", "seeds_hash")
IGNORED_CONFIG_KEYS = frozenset({"seed"})

# Indirections so tests can inject failures (ENOSPC half-way through a write, EIO from fsync).
_write = os.write
_fsync = os.fsync


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


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _fsync_dir(directory: Path) -> None:
    """Make a created or renamed directory entry durable. Best effort: not every filesystem allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        _fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``, looping on short writes (a nearly full disk writes what fits, then fails)."""
    view = memoryview(data)
    while view:
        written = _write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


class _AppendFailed(Exception):
    """An append failed; ``restored`` says whether the file was truncated back to its old size."""

    def __init__(self, error: OSError, restored: bool, undo_error: OSError | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.restored = restored
        self.undo_error = undo_error


class _TornTail(Exception):
    """The file does not end with a newline, so an append would glue onto an incomplete line."""


def _append_block(path: Path, block: bytes, *, sync: bool, on_torn_tail: str) -> None:
    """Append ``block`` with one write on an ``O_APPEND`` descriptor; on any failure truncate back.

    ``on_torn_tail`` decides what happens when the file does not end with a newline: ``"refuse"`` raises
    :class:`_TornTail`, ``"terminate"`` writes a newline first so the new lines stay whole (the old
    incomplete line stays, isolated, for tolerant readers to skip). Raises :class:`_AppendFailed` on OSError.
    """
    created = not path.exists()
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise _AppendFailed(exc, restored=True, undo_error=None) from exc
    try:
        size = 0
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                if on_torn_tail == "refuse":
                    raise _TornTail()
                block = b"\n" + block
            _write_all(fd, block)
            if sync:
                _fsync(fd)
        except BaseException as exc:
            # Also on KeyboardInterrupt between two short writes: never leave half a block behind.
            undo_error = None
            try:
                os.ftruncate(fd, size)
            except OSError as undo_exc:
                undo_error = undo_exc
            else:
                if sync:
                    with contextlib.suppress(OSError):  # the file reads as before; durability is best effort
                        _fsync(fd)
            if isinstance(exc, OSError):
                raise _AppendFailed(exc, restored=undo_error is None, undo_error=undo_error) from exc
            raise
    finally:
        os.close(fd)
    if created and sync:
        _fsync_dir(path.parent)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temporary file beside it, fsync, rename, fsync the directory.

    A crash or an error at any point leaves ``path`` as it was. The file keeps its permission bits.
    """
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            _fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _lines(data: bytes, stop: int | None = None) -> Iterator[tuple[int, int, int]]:
    """Yield ``(line_number, start, end)`` for every line of ``data[:stop]``; ``end`` includes the newline.

    Only ``\\n`` ends a line: JSON written with ``ensure_ascii=False`` may hold U+2028 or U+0085 raw, which
    ``str.splitlines`` would wrongly split on.
    """
    stop = len(data) if stop is None else stop
    start, number = 0, 0
    while start < stop:
        number += 1
        newline = data.find(b"\n", start, stop)
        end = stop if newline < 0 else newline + 1
        yield number, start, end
        start = end


def _parse_json_line(raw: bytes) -> tuple[Any, str | None]:
    """``(value, None)`` for a line holding one JSON value, else ``(None, why_not)``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} (column {exc.colno})"


def _parse_task_line(raw: bytes, path: Path, number: int) -> tuple[Task | None, str | None]:
    """``(task, None)`` for a line holding a valid task record, else ``(None, why_not)``."""
    record, problem = _parse_json_line(raw)
    if problem is not None:
        return None, problem
    try:
        return task_from_record(record, path, number), None
    except InputError as exc:
        return None, exc.problem


def _instruction_key(instruction: str) -> str:
    """Two instructions are duplicates when equal after case folding and collapsing whitespace."""
    return " ".join(instruction.casefold().split())


def _holder_from_bytes(raw: bytes) -> dict[str, Any] | None:
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


@dataclass(frozen=True, slots=True)
class _BadLine:
    number: int
    start: int
    end: int
    problem: str


class PoolLock:
    """A held pool lock (from :meth:`Pool.lock`). A context manager; :meth:`release` is idempotent.

    ``info`` is the holder information written into the lock file: pid, hostname, started_at, command.
    """

    def __init__(self, pool: Pool, fd: int, info: dict[str, Any]) -> None:
        self._pool = pool
        self._fd: int | None = fd
        self.info = info

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Erase the holder information, then unlock and close.

        After a crash the information stays behind with the lock free, which is why
        :meth:`Pool.lock_holder` probes the lock instead of trusting the file."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._pool._lock is self:
            self._pool._lock = None
        with contextlib.suppress(OSError):  # only advisory text; the flock below is what matters
            os.ftruncate(fd, 0)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> PoolLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class Pool:
    """A pool directory (see the module docstring for its layout and rules).

    ``warnings`` collects human-readable notes (a torn line moved aside, unreadable ledger lines skipped)
    for the caller to show; nothing here prints.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.tasks_path = self.directory / TASKS_FILE
        self.rejected_path = self.directory / REJECTED_FILE
        self.runs_path = self.directory / RUNS_FILE
        self.config_path = self.directory / CONFIG_FILE
        self.lock_path = self.directory / LOCK_FILE
        self.corrupt_path = self.directory / (TASKS_FILE + CORRUPT_SUFFIX)
        self.warnings: list[str] = []
        self._lock: PoolLock | None = None
        # Ids and instruction keys loaded or appended through this object, so append() never writes a
        # duplicate that the next load() would refuse.
        self._ids: set[str] = set()
        self._instructions: set[str] = set()

    def __repr__(self) -> str:
        return f"Pool({str(self.directory)!r})"

    # -- locking -----------------------------------------------------------------------------------

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
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise PoolError(f"cannot open the lock file {self.lock_path}: {_reason(exc)}") from None
        try:
            self._flock_exclusive(fd, wait)
            info: dict[str, Any] = {
                "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "started_at": _now(),
                "command": command,
            }
            try:
                os.ftruncate(fd, 0)
                _write_all(fd, json.dumps(info, ensure_ascii=False).encode("utf-8") + b"\n")
                _fsync(fd)
            except OSError as exc:
                # The flock is the lock; the text is only for `status` and error messages. Keep going.
                self.warnings.append(f"could not write holder information to {self.lock_path}: {_reason(exc)}")
        except BaseException:
            os.close(fd)  # also releases the flock if we got it
            raise
        self._lock = PoolLock(self, fd, info)
        return self._lock

    def _flock_exclusive(self, fd: int, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder_from_bytes(os.pread(fd, 65536, 0))
                    raise PoolLockedError(self._locked_message(holder)) from None
                time.sleep(_LOCK_RETRY_INTERVAL)
            except OSError as exc:
                raise PoolError(f"cannot lock {self.lock_path}: {_reason(exc)}") from None

    def _locked_message(self, holder: dict[str, Any] | None) -> str:
        if not holder or "pid" not in holder:
            return f"pool {self.directory} is locked by another process; try again later"
        return (
            f"pool {self.directory} is locked by pid {holder.get('pid')} on {holder.get('hostname', '?')}, "
            f"running since {holder.get('started_at', '?')} ({holder.get('command', '?')}); try again later"
        )

    def lock_holder(self) -> dict[str, Any] | None:
        """Who holds the lock: ``None`` if nobody, else the holder information (``{}`` if not yet written).

        Never takes the lock beyond a non-blocking shared probe released at once, and never writes, so
        ``selfinstruct status`` works on a pool it may only read. Test the result with ``is None``.
        """
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PoolError(f"cannot open the lock file {self.lock_path}: {_reason(exc)}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _holder_from_bytes(os.pread(fd, 65536, 0)) or {}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _require_lock(self, action: str) -> None:
        if not self.locked:
            raise PoolError(f"{action} needs the lock of pool {self.directory}: use `with pool.lock(): ...`")

    # -- tasks -------------------------------------------------------------------------------------

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
        return self._read_tasks(repair=repair, may_write=self.locked)

    def read_tasks(self) -> list[Task]:
        """Read the tasks for a reader (``status``, ``export``): like :meth:`load`, but never writes.

        An incomplete last line is skipped with a warning; a bad line elsewhere raises :class:`PoolError`.
        """
        return self._read_tasks(repair=False, may_write=False)

    def _read_tasks(self, *, repair: bool, may_write: bool) -> list[Task]:
        path = self.tasks_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._ids, self._instructions = set(), set()
            return []
        except OSError as exc:
            raise PoolError(f"cannot read {path}: {_reason(exc)}") from None

        torn = self._find_torn_tail(data)
        body_end = torn.start if torn else len(data)
        tasks: list[Task] = []
        bad: list[_BadLine] = []
        first_id: dict[str, int] = {}
        first_instruction: dict[str, int] = {}
        for number, start, end in _lines(data, body_end):
            raw = data[start:end]
            if not raw.strip():
                continue
            task, problem = _parse_task_line(raw, path, number)
            if task is not None:
                key = _instruction_key(task.instruction)
                if task.id and task.id in first_id:
                    problem = f"duplicate id {task.id!r} (also on line {first_id[task.id]})"
                elif key in first_instruction:
                    problem = f"duplicate instruction (also on line {first_instruction[key]})"
                else:
                    if task.id:
                        first_id[task.id] = number
                    first_instruction[key] = number
                    tasks.append(task)
            if problem is not None:
                bad.append(_BadLine(number, start, end, problem))

        if bad and not repair:
            shown = "; ".join(f"{path}:{b.number}: {b.problem}" for b in bad[:5])
            more = f" (and {len(bad) - 5} more bad lines)" if len(bad) > 5 else ""
            it = "it" if len(bad) == 1 else "them"
            raise PoolError(f"{shown}{more}; run with --repair to move {it} aside")

        if torn and not may_write:
            self.warnings.append(
                f"{path}:{torn.number}: skipped an incomplete last line ({torn.problem}); a run may be "
                "writing it right now, or was killed while writing it (the next run moves it aside)"
            )
        elif torn or bad:
            self._move_aside(data, bad, torn)

        self._ids = set(first_id)
        self._instructions = set(first_instruction)
        return tasks

    @staticmethod
    def _find_torn_tail(data: bytes) -> _BadLine | None:
        """The last line if it is what an interrupted write leaves: no final newline, or not JSON.

        The returned line reaches to the end of the file (blank lines after it go with it).
        """
        if not data.endswith(b"\n"):
            if not data:
                return None
            start = data.rfind(b"\n") + 1
            problem = "no newline at the end of the file"
        else:
            end = len(data)
            while True:  # walk back over blank lines to the last line with content
                start = data.rfind(b"\n", 0, end - 1) + 1
                if data[start:end].strip():
                    break
                if start == 0:
                    return None
                end = start
            _, json_problem = _parse_json_line(data[start:end])
            if json_problem is None:
                return None
            problem = json_problem
        return _BadLine(data.count(b"\n", 0, start) + 1, start, len(data), problem)

    def _move_aside(self, data: bytes, bad: list[_BadLine], torn: _BadLine | None) -> None:
        """Copy bad lines to ``.corrupt`` (fsync), then drop them from ``tasks.jsonl``. Needs the lock.

        The copy comes first, so a crash in between duplicates a line in ``.corrupt`` instead of losing it.
        """
        path, moved = self.tasks_path, [*bad, *([torn] if torn else [])]
        when = _now()
        notes = []
        for line in moved:
            raw = data[line.start : line.end]
            notes.append(f"# {when} {path.name}:{line.number} {line.problem}\n".encode())
            notes.append(raw if raw.endswith(b"\n") else raw + b"\n")
        try:
            _append_block(self.corrupt_path, b"".join(notes), sync=True, on_torn_tail="terminate")
        except _AppendFailed as exc:
            lines = f"{len(moved)} bad line{'s' if len(moved) != 1 else ''}"
            raise PoolError(
                f"could not move {lines} of {path} to {self.corrupt_path}: {_reason(exc.error)}; {path} is unchanged"
            ) from None

        try:
            if bad:
                dropped = {b.start for b in bad}
                body_end = torn.start if torn else len(data)
                keep = [data[s:e] for _, s, e in _lines(data, body_end) if s not in dropped]
                _write_bytes_atomic(path, b"".join(keep))
            elif torn:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    if os.fstat(fd).st_size != len(data):
                        raise PoolError(f"{path} changed while it was being repaired; is another writer active?")
                    os.ftruncate(fd, torn.start)
                    _fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise PoolError(
                f"could not rewrite {path} without its bad lines: {_reason(exc)}; the file is unchanged "
                f"(copies of the lines are in {self.corrupt_path})"
            ) from None

        for line in bad:
            self.warnings.append(f"{path}:{line.number}: {line.problem}; moved to {self.corrupt_path}")
        if torn:
            self.warnings.append(
                f"{path}:{torn.number}: an incomplete last line ({torn.problem}), left by an interrupted "
                f"write, was moved to {self.corrupt_path}"
            )

    def append(self, tasks: Sequence[Task]) -> None:
        """Append one round of tasks durably and all-or-nothing as far as this process can tell.

        The records are serialized first, then written with one ``write(2)`` on an ``O_APPEND`` descriptor
        and ``fsync``-ed. On any error (disk full, EIO) the file is truncated back to its size before the
        call and :class:`PoolError` is raised. Tasks that the next :meth:`load` would refuse (invalid, or a
        duplicate id or instruction of a task loaded or appended through this object) are refused before
        anything is written. Needs the lock.
        """
        self._require_lock("appending tasks")
        if not tasks:
            return
        path = self.tasks_path
        ids, instructions = set(self._ids), set(self._instructions)
        lines = []
        for task in tasks:
            record = task.to_record()
            try:
                task_from_record(record, path)
            except InputError as exc:
                raise PoolError(f"refusing to append task {task.id!r} to {path}: {exc.problem}") from None
            key = _instruction_key(task.instruction)
            if (task.id and task.id in ids) or key in instructions:
                what = f"id {task.id!r}" if task.id in ids else f"instruction {task.instruction[:60]!r}"
                raise PoolError(f"refusing to append task {task.id!r} to {path}: duplicate {what}")
            if task.id:
                ids.add(task.id)
            instructions.add(key)
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        block = "".join(lines).encode("utf-8")

        what = f"{len(tasks)} task{'s' if len(tasks) != 1 else ''}"
        try:
            _append_block(path, block, sync=True, on_torn_tail="refuse")
        except _TornTail:
            raise PoolError(
                f"{path} ends with an incomplete line; load() the pool under its lock first to move it aside"
            ) from None
        except _AppendFailed as exc:
            if exc.restored:
                raise PoolError(
                    f"could not append {what} to {path}: {_reason(exc.error)}; the pool is unchanged"
                ) from None
            undo = _reason(exc.undo_error) if exc.undo_error else "unknown error"
            raise PoolError(
                f"could not append {what} to {path}: {_reason(exc.error)}; undoing the partial write also "
                f"failed ({undo}), so the file may end with an incomplete line (the next run moves it aside)"
            ) from None
        self._ids, self._instructions = ids, instructions

    @staticmethod
    def next_index(tasks: Iterable[Task]) -> int:
        """The number for the next machine task: one more than the largest ``machine_task_<n>`` id, else 0.

        Gaps are left alone (``machine_task_000003`` after ``000001`` gives 4); other ids are ignored.
        """
        numbers = [int(m.group(1)) for t in tasks if (m := _MACHINE_ID.fullmatch(t.id))]
        return max(numbers) + 1 if numbers else 0

    # -- rejected candidates, run ledger, configuration ---------------------------------------------

    def append_rejected(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append rejected candidates (each with a ``reject_reason``) to ``rejected.jsonl``. Needs the lock.

        Best effort: whole lines, no fsync, and a failed write is undone and reported in :attr:`warnings`
        instead of stopping the run (these records are diagnostics, not the dataset).
        """
        self._require_lock("appending rejected candidates")
        block = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        if not block:
            return
        try:
            _append_block(self.rejected_path, block, sync=False, on_torn_tail="terminate")
        except _AppendFailed as exc:
            self.warnings.append(f"could not record rejected candidates in {self.rejected_path}: {_reason(exc.error)}")

    def append_run(self, record: Mapping[str, Any]) -> None:
        """Append one finished run's record to the ledger ``runs.jsonl`` (one line, fsync). Needs the lock."""
        self._require_lock("recording the run")
        line = (json.dumps(dict(record), ensure_ascii=False) + "\n").encode("utf-8")
        try:
            _append_block(self.runs_path, line, sync=True, on_torn_tail="terminate")
        except _AppendFailed as exc:
            raise PoolError(f"could not record the run in {self.runs_path}: {_reason(exc.error)}") from None

    def read_runs(self) -> list[dict[str, Any]]:
        """Every run record of the ledger, oldest first. Unreadable lines are skipped; never writes."""
        return [r for r in self._read_jsonl_tolerant(self.runs_path) if isinstance(r, dict)]

    def iter_rejected(self) -> Iterator[dict[str, Any]]:
        """Stream the rejected candidates of ``rejected.jsonl`` (objects only; unreadable lines skipped)."""
        return (r for r in self._read_jsonl_tolerant(self.rejected_path) if isinstance(r, dict))

    def read_rejected_counts(self) -> dict[str, int]:
        """How many rejected candidates there are per ``reject_reason`` (``"unknown"`` when absent)."""
        counts: Counter[str] = Counter()
        for record in self._read_jsonl_tolerant(self.rejected_path):
            reason = record.get("reject_reason") if isinstance(record, dict) else None
            counts[reason if isinstance(reason, str) else "unknown"] += 1
        return dict(counts)

    def _read_jsonl_tolerant(self, path: Path) -> Iterator[Any]:
        """Stream the JSON values of a JSONL file, skipping unreadable lines (one warning for all of them
        except an incomplete last line, which a writer may be in the middle of)."""
        skipped = 0
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise PoolError(f"cannot read {path}: {_reason(exc)}") from None
        with fh:
            for raw in fh:
                if not raw.strip():
                    continue
                value, problem = _parse_json_line(raw)
                if problem is None:
                    yield value
                elif raw.endswith(b"\n"):
                    skipped += 1
        if skipped:
            self.warnings.append(f"{path}: skipped {skipped} unreadable line{'s' if skipped != 1 else ''}")

    def read_config(self) -> dict[str, Any] | None:
        """The configuration stored by the first run, or ``None`` if there is none yet."""
        path = self.config_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            why = _reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
            raise PoolError(f"cannot read {path}: {why}") from None
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PoolError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}; fix or delete the file") from None
        if not isinstance(config, dict):
            raise PoolError(f"{path}: expected a JSON object, got {type(config).__name__}")
        return config

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Store the resolved configuration atomically (temporary file, fsync, rename). Needs the lock."""
        self._require_lock("writing the configuration")
        data = (json.dumps(dict(config), ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        try:
            _write_bytes_atomic(self.config_path, data)
        except OSError as exc:
            raise PoolError(
                f"could not write {self.config_path}: {_reason(exc)}; the previous file is unchanged"
            ) from None
