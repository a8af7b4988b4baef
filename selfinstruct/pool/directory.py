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
import hashlib
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
from selfinstruct.pool.jsontext import JSONProblem
from selfinstruct.pool.jsontext import loads as json_loads
from selfinstruct.pool.task import Task, task_from_record
from selfinstruct.redact import redact_value
from selfinstruct.safetext import clean_value

TASKS_FILE = "tasks.jsonl"
REJECTED_FILE = "rejected.jsonl"
RUNS_FILE = "runs.jsonl"
JUDGEMENTS_FILE = "judgements.jsonl"
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


@dataclass(frozen=True, slots=True)
class _FileIdentity:
    """Which file a path named, and how long it was: enough to notice another writer."""

    device: int
    inode: int
    size: int
    changed_ns: int  # st_ctime: any write, even one that reuses a freed inode at the same size, moves it

    @classmethod
    def of(cls, st: os.stat_result) -> _FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns)


class _AppendFailed(Exception):
    """An append failed; ``restored`` says whether the file was truncated back to its old size."""

    def __init__(self, error: OSError, restored: bool, undo_error: OSError | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.restored = restored
        self.undo_error = undo_error


class _TornTail(Exception):
    """The file does not end with a newline, so an append would glue onto an incomplete line."""


def _append_block(path: Path, block: bytes, *, sync: bool, on_torn_tail: str) -> _FileIdentity:
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
            identity = _FileIdentity.of(os.fstat(fd))
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
    return identity


def _jsonl(records: Iterable[Mapping[str, Any]], *, clean: bool = False) -> bytes:
    """Records as JSON Lines in UTF-8 (non-ASCII kept as is), ready for one append. Known secrets (an API key
    a server echoed into a reply) are replaced (:mod:`selfinstruct.redact`); ``clean`` also drops escape
    sequences and control characters from every string (the ledger, which ``status`` shows)."""
    values = (redact_value(dict(r)) for r in records)
    if clean:
        values = (clean_value(v) for v in values)
    return "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values).encode("utf-8")


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
    """``(value, None)`` for a line holding one acceptable JSON value, else ``(None, why_not)``."""
    try:
        return json_loads(raw), None
    except JSONProblem as exc:
        return None, str(exc)


def _parse_task_line(raw: bytes, path: Path, number: int) -> tuple[Task | None, str | None]:
    """``(task, None)`` for a line holding a valid task record, else ``(None, why_not)``."""
    record, problem = _parse_json_line(raw)
    if problem is not None:
        return None, problem
    try:
        return task_from_record(record, path, number), None
    except InputError as exc:
        return None, exc.problem


class _StringSharer:
    """Makes equal strings of a pool's tasks one object: most of a machine task's provenance repeats text
    held elsewhere (``most_similar`` and ``demonstrations`` name earlier pool and seed instructions; run id,
    model, source and format repeat on every line), and JSON parsing makes a fresh copy of each. Sharing
    them takes a loaded pool from about 7.3 KB to about 3.5 KB per task (measured on 100,000 synthesized
    tasks with a run's provenance)."""

    _REPEATED = ("source", "run_id", "model", "instance_format", "classification_answer", "method")

    def __init__(self) -> None:
        self._memo: dict[str, str] = {}

    def text(self, value: Any) -> Any:
        return self._memo.setdefault(value, value) if isinstance(value, str) else value

    def task(self, task: Task) -> Task:
        text, meta = self.text, task.meta
        task.instruction = text(task.instruction)
        for key in self._REPEATED:
            if key in meta:
                meta[key] = text(meta[key])
        demos = meta.get("demonstrations")
        if isinstance(demos, list):
            meta["demonstrations"] = [text(d) for d in demos]
        similar = meta.get("most_similar")
        if isinstance(similar, list):
            for entry in similar:
                if isinstance(entry, dict) and "instruction" in entry:
                    entry["instruction"] = text(entry["instruction"])
        return task


def _instruction_key(instruction: str) -> str:
    """Two instructions are duplicates when equal after case folding and collapsing whitespace."""
    return " ".join(instruction.casefold().split())


def _holder_from_bytes(raw: bytes) -> dict[str, Any] | None:
    try:
        info = json_loads(raw)
    except JSONProblem:
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
    The lock itself is ``flock`` on the pool *directory* (``dir_fd``), which no file deletion can undo; the
    ``.lock`` file (``note_fd``) carries the holder information and is flocked too, which keeps out an
    older selfinstruct that locks only that file.
    """

    def __init__(self, pool: Pool, dir_fd: int | None, note_fd: int | None, info: dict[str, Any]) -> None:
        self._pool = pool
        self._dir_fd = dir_fd
        self._note_fd = note_fd
        self._held = True
        self.info = info

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        """Erase the holder information, then unlock and close.

        After a crash the information stays behind with the lock free, which is why
        :meth:`Pool.lock_holder` probes the lock instead of trusting the file."""
        if not self._held:
            return
        self._held = False
        if self._pool._lock is self:
            self._pool._lock = None
        note_fd, dir_fd, self._note_fd, self._dir_fd = self._note_fd, self._dir_fd, None, None
        if note_fd is not None:
            with contextlib.suppress(OSError):  # only advisory text; the flocks are what matter
                os.ftruncate(note_fd, 0)
            _unlock_close(note_fd)
        if dir_fd is not None:
            _unlock_close(dir_fd)

    def __enter__(self) -> PoolLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _unlock_close(fd: int) -> None:
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# flock(2) on a directory fails with these on filesystems that cannot lock one (NFS emulates flock with
# POSIX locks, which need a descriptor open for writing). The lock then falls back to the .lock file alone.
_NO_DIRECTORY_LOCK = {errno.EBADF, errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP}


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
        self.judgements_path = self.directory / JUDGEMENTS_FILE
        self.config_path = self.directory / CONFIG_FILE
        self.lock_path = self.directory / LOCK_FILE
        self.corrupt_path = self.directory / (TASKS_FILE + CORRUPT_SUFFIX)
        self.warnings: list[str] = []
        self._lock: PoolLock | None = None
        # Ids and instruction keys loaded or appended through this object, so append() never writes a
        # duplicate that the next load() would refuse.
        self._ids: set[str] = set()
        self._instructions: set[str] = set()
        # tasks.jsonl as this object last loaded or wrote it; append() refuses if the file on disk differs.
        self._known: _FileIdentity | None = None
        self._loaded = False

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
        except OSError as exc:
            raise PoolError(f"cannot create the pool directory {self.directory}: {_reason(exc)}") from None
        dir_fd: int | None = None
        note_fd: int | None = None
        try:
            try:
                dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except NotADirectoryError:
                raise PoolError(f"{self.directory} is a file, not a pool directory") from None
            except OSError as exc:
                raise PoolError(f"cannot open the pool directory {self.directory}: {_reason(exc)}") from None
            deadline = time.monotonic() + wait
            if not self._flock_exclusive(dir_fd, deadline, self.directory):
                os.close(dir_fd)
                dir_fd = None
                self.warnings.append(
                    f"the filesystem of {self.directory} cannot lock a directory; the pool is locked through "
                    f"{self.lock_path} alone, so do not delete that file while a run holds it"
                )
            try:
                note_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                raise PoolError(f"cannot open the lock file {self.lock_path}: {_reason(exc)}") from None
            if not self._flock_exclusive(note_fd, deadline, self.lock_path) and dir_fd is None:
                raise PoolError(f"cannot lock {self.directory}: its filesystem supports no flock(2)")
            info: dict[str, Any] = {
                "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "started_at": _now(),
                "command": command,
            }
            try:
                os.ftruncate(note_fd, 0)
                _write_all(note_fd, json.dumps(info, ensure_ascii=False).encode("utf-8") + b"\n")
                _fsync(note_fd)
            except OSError as exc:
                # The flock is the lock; the text is only for `status` and error messages. Keep going.
                self.warnings.append(f"could not write holder information to {self.lock_path}: {_reason(exc)}")
        except BaseException:
            for fd in (note_fd, dir_fd):  # closing also releases a flock we got
                if fd is not None:
                    os.close(fd)
            raise
        self._lock = PoolLock(self, dir_fd, note_fd, info)
        return self._lock

    def _flock_exclusive(self, fd: int, deadline: float, what: Path) -> bool:
        """Lock ``fd`` exclusively, retrying until ``deadline``. ``False`` if the filesystem cannot lock it."""
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PoolLockedError(self._locked_message(self._read_holder())) from None
                time.sleep(_LOCK_RETRY_INTERVAL)
            except OSError as exc:
                if exc.errno in _NO_DIRECTORY_LOCK:
                    return False
                raise PoolError(f"cannot lock {what}: {_reason(exc)}") from None

    def _read_holder(self) -> dict[str, Any] | None:
        try:
            with self.lock_path.open("rb") as fh:
                return _holder_from_bytes(fh.read(65536))
        except OSError:
            return None

    def _locked_message(self, holder: dict[str, Any] | None) -> str:
        if not holder or "pid" not in holder:
            return f"pool {self.directory} is locked by another process; try again later"
        return (
            f"pool {self.directory} is locked by pid {holder.get('pid')} on {holder.get('hostname', '?')}, "
            f"running since {holder.get('started_at', '?')} ({holder.get('command', '?')}); try again later"
        )

    def lock_holder(self) -> dict[str, Any] | None:
        """Who holds the lock: ``None`` if nobody, else the holder information (``{}`` if not known).

        Never takes the lock beyond non-blocking shared probes released at once, and never writes, so
        ``selfinstruct status`` works on a pool it may only read. Test the result with ``is None``.
        """
        held = False
        for target, flags in ((self.directory, os.O_DIRECTORY), (self.lock_path, 0)):
            try:
                fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | flags)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise PoolError(f"cannot open {target}: {_reason(exc)}") from None
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    held = True
                except OSError:
                    continue  # this filesystem cannot lock it: the other probe decides
                else:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
            if held:
                break
        if not held:
            return None
        return self._read_holder() or {}

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

    def read_tasks(self, *, skip_bad: bool = False) -> list[Task]:
        """Read the tasks for a reader (``status``, ``export``): like :meth:`load`, but never writes.

        An incomplete last line is skipped with a warning; a bad line elsewhere raises :class:`PoolError`,
        or with ``skip_bad=True`` is skipped and summed up in one warning (``status`` shows a damaged pool).
        """
        return self._read_tasks(repair=False, may_write=False, skip_bad=skip_bad)

    def iter_tasks(self, *, strict: bool = False) -> Iterator[Task]:
        """Stream the valid tasks of ``tasks.jsonl`` for a reader that needs each task once (``status``):
        one line in memory at a time, never writes, never raises for a bad line.

        The same lines count as :meth:`read_tasks` with ``skip_bad=True`` keeps: bad lines and duplicates
        (by id, and by instruction as an 8-byte digest, so a million tasks cost tens of MB) are skipped and
        summed up in one warning; an incomplete last line (no newline, not a whole record) gets its own.
        ``strict``: a bad line or a duplicate raises :class:`PoolError` instead, as :meth:`read_tasks` does.
        """
        path = self.tasks_path
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return
        except IsADirectoryError:
            raise PoolError(f"{path} is a directory, not the pool's task file") from None
        except OSError as exc:
            raise PoolError(f"cannot read {path}: {_reason(exc)}") from None
        ids: set[str] = set()
        keys: set[bytes] = set()
        bad = 0
        first_bad: tuple[int, str] | None = None
        held: tuple[int, str] | None = None  # strict: a line that is not JSON, an error unless it is the last
        with fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                if held is not None:
                    raise PoolError(
                        f"{path}:{held[0]}: {held[1]}; `selfinstruct repair {self.directory}` moves it aside to "
                        f"{self.corrupt_path}"
                    )
                task, problem = _parse_task_line(raw, path, number)
                if not raw.endswith(b"\n") and task is None:
                    self.warnings.append(
                        f"{path}:{number}: skipped an incomplete last line ({problem}); a run may be writing it "
                        "right now, or was killed while writing it (the next run moves it aside)"
                    )
                    break
                if task is not None:
                    key = hashlib.blake2b(_instruction_key(task.instruction).encode(), digest_size=8).digest()
                    if task.id and task.id in ids:
                        problem, task = f"duplicate id {task.id!r}", None
                    elif key in keys:
                        problem, task = "duplicate instruction", None
                    else:
                        if task.id:
                            ids.add(task.id)
                        keys.add(key)
                        yield task
                        continue
                if strict and task is None and _parse_json_line(raw)[1] is not None:
                    held = (number, problem or "not JSON")  # torn by a killed writer if nothing follows
                    continue
                if strict:
                    raise PoolError(
                        f"{path}:{number}: {problem}; `selfinstruct repair {self.directory}` moves it aside to "
                        f"{self.corrupt_path}"
                    )
                bad += 1
                first_bad = first_bad or (number, problem or "not a task")
        if held is not None:
            self.warnings.append(
                f"{path}:{held[0]}: skipped an incomplete last line ({held[1]}); a run may be writing it right "
                "now, or was killed while writing it (the next run moves it aside)"
            )
        if bad and first_bad:
            self.warnings.append(
                f"{path}: skipped {bad} bad line{'s' if bad != 1 else ''} (line {first_bad[0]}: {first_bad[1]}); "
                f"`selfinstruct repair {self.directory}` moves {'it' if bad == 1 else 'them'} aside to "
                f"{self.corrupt_path}"
            )

    def _read_tasks(self, *, repair: bool, may_write: bool, skip_bad: bool = False) -> list[Task]:
        path = self.tasks_path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._ids, self._instructions = set(), set()
            self._known = None
            self._loaded = may_write
            return []
        except IsADirectoryError:
            raise PoolError(f"{path} is a directory, not the pool's task file") from None
        except OSError as exc:
            raise PoolError(f"cannot read {path}: {_reason(exc)}") from None
        try:
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read()
            known: _FileIdentity | None = _FileIdentity.of(os.fstat(fd))
        except OSError as exc:
            raise PoolError(f"cannot read {path}: {_reason(exc)}") from None
        finally:
            os.close(fd)

        torn = self._find_torn_tail(data)
        body_end = torn.start if torn else len(data)
        share = _StringSharer()
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
                    tasks.append(share.task(task))
            if problem is not None:
                bad.append(_BadLine(number, start, end, problem))

        if bad and skip_bad:
            first = bad[0]
            self.warnings.append(
                f"{path}: skipped {len(bad)} bad line{'s' if len(bad) != 1 else ''} (line {first.number}: "
                f"{first.problem}); `selfinstruct repair {self.directory}` moves "
                f"{'it' if len(bad) == 1 else 'them'} aside to {self.corrupt_path}"
            )
            bad = []
        if bad and not repair:
            shown = "; ".join(f"{path}:{b.number}: {b.problem}" for b in bad[:5])
            more = f" (and {len(bad) - 5} more bad lines)" if len(bad) > 5 else ""
            it = "it" if len(bad) == 1 else "them"
            raise PoolError(
                f"{shown}{more}; `selfinstruct repair {self.directory}` moves {it} aside to {self.corrupt_path}"
            )

        unterminated = not torn and data and not data.endswith(b"\n")
        if torn and not may_write:
            self.warnings.append(
                f"{path}:{torn.number}: skipped an incomplete last line ({torn.problem}); a run may be "
                "writing it right now, or was killed while writing it (the next run moves it aside)"
            )
        elif torn or bad:
            self._move_aside(data, bad, torn)
            known = self._stat_tasks()
        elif unterminated and may_write:
            # A complete, valid task without its newline: another program appended it. Keep it, end the line.
            line = data.count(b"\n") + 1
            try:
                _append_block(path, b"", sync=True, on_torn_tail="terminate")  # writes the missing newline
            except _AppendFailed as exc:
                raise PoolError(f"could not end the last line of {path} with a newline: {_reason(exc.error)}") from None
            self.warnings.append(
                f"{path}:{line}: the last task had no newline at the end (written by another program?); added one"
            )
            known = self._stat_tasks()

        self._ids = set(first_id)
        self._instructions = set(first_instruction)
        self._known = known if may_write else None
        self._loaded = may_write
        return tasks

    def _stat_tasks(self) -> _FileIdentity | None:
        try:
            return _FileIdentity.of(os.stat(self.tasks_path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PoolError(f"cannot read {self.tasks_path}: {_reason(exc)}") from None

    def _check_unchanged(self) -> None:
        """Refuse to append when ``tasks.jsonl`` is not the file this object loaded and wrote (a foreign writer).

        The lock keeps other selfinstruct runs out; this catches everything else (a script appending, a
        user replacing the file, a second writer that got in through a filesystem without locks). Every task
        in the file was then either loaded or appended by this object, so the duplicate checks of
        :meth:`append` see the whole file.
        """
        now = self._stat_tasks()
        if now == self._known:
            return
        path = self.tasks_path
        if not self._loaded:
            raise PoolError(f"{path} holds tasks this Pool object has not loaded: load() it under its lock first")
        if self._known is None:
            what = "appeared"
        elif now is None:
            what = "was deleted or moved away"
        elif (now.device, now.inode) != (self._known.device, self._known.inode):
            what = "was replaced by another file"
        elif now.size < self._known.size:
            what = f"shrank from {self._known.size} to {now.size} bytes"
        elif now.size > self._known.size:
            what = f"grew by {now.size - self._known.size} bytes that this run did not write"
        else:
            what = "was rewritten (or replaced by another file)"
        raise PoolError(
            f"{path} {what} while this run held the pool's lock: another program is writing to the pool. "
            "Stopping before appending, so that no task is written twice; the next run loads the file as it is"
        )

    @staticmethod
    def _find_torn_tail(data: bytes) -> _BadLine | None:
        """The last line if it is what an interrupted write leaves: no final newline, or not JSON.

        The returned line reaches to the end of the file (blank lines after it go with it).
        """
        if not data.endswith(b"\n"):
            if not data:
                return None
            start = data.rfind(b"\n") + 1
            record, json_problem = _parse_json_line(data[start:])
            if json_problem is None and isinstance(record, dict):
                # Whole JSON: a complete line whose writer left out the newline, not an interrupted write
                # (ours writes each line with its newline in one call). Judged like any other line.
                return None
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
            record = redact_value(task.to_record())
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
        self._check_unchanged()
        try:
            self._known = _append_block(path, block, sync=True, on_torn_tail="refuse")
        except _TornTail:
            raise PoolError(
                f"{path} ends with an incomplete line; load() the pool under its lock first to move it aside"
            ) from None
        except _AppendFailed as exc:
            if exc.restored:
                # Our own undo (ftruncate) touched the file: it is still the file we know, at its old size.
                with contextlib.suppress(PoolError):
                    self._known = self._stat_tasks()
                raise PoolError(
                    f"could not append {what} to {path}: {_reason(exc.error)}; the pool is unchanged"
                ) from None
            undo = _reason(exc.undo_error) if exc.undo_error else "unknown error"
            raise PoolError(
                f"could not append {what} to {path}: {_reason(exc.error)}; undoing the partial write also "
                f"failed ({undo}), so the file may end with an incomplete line (the next run moves it aside)"
            ) from None
        self._ids, self._instructions = ids, instructions
        self._loaded = True  # the file holds what was loaded plus what this object wrote

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
        block = _jsonl(records)
        if not block:
            return
        try:
            _append_block(self.rejected_path, block, sync=False, on_torn_tail="terminate")
        except _AppendFailed as exc:
            self.warnings.append(f"could not record rejected candidates in {self.rejected_path}: {_reason(exc.error)}")

    def append_run(self, record: Mapping[str, Any]) -> None:
        """Append one finished run's record to the ledger ``runs.jsonl`` (one line, fsync). Needs the lock."""
        self._require_lock("recording the run")
        line = _jsonl([record], clean=True)
        try:
            _append_block(self.runs_path, line, sync=True, on_torn_tail="terminate")
        except _AppendFailed as exc:
            raise PoolError(f"could not record the run in {self.runs_path}: {_reason(exc.error)}") from None

    def append_judgements(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append judgements to ``judgements.jsonl``: whole lines, one write, fsync. Needs the lock.

        A failed write is undone (the file truncated back) and raised as :class:`PoolError`: the
        judgements of that batch were not stored, and a resumed ``judge`` run scores those tasks again. A
        torn last line left by a killed writer is ended first, so it stays one unreadable line that
        :meth:`iter_judgements` skips.
        """
        self._require_lock("appending judgements")
        block = _jsonl(records)
        if not block:
            return
        try:
            _append_block(self.judgements_path, block, sync=True, on_torn_tail="terminate")
        except _AppendFailed as exc:
            raise PoolError(
                f"could not record judgements in {self.judgements_path}: {_reason(exc.error)}"
                + ("" if exc.restored else "; the file may end with an incomplete line (readers skip it)")
            ) from None

    def iter_judgements(self) -> Iterator[Any]:
        """Stream the JSON values of ``judgements.jsonl`` (unreadable lines skipped, with a warning)."""
        return self._read_jsonl_tolerant(self.judgements_path)

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
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PoolError(f"cannot read {path}: {_reason(exc)}") from None
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
            _write_bytes_atomic(self.config_path, data)
        except OSError as exc:
            raise PoolError(
                f"could not write {self.config_path}: {_reason(exc)}; the previous file is unchanged"
            ) from None
