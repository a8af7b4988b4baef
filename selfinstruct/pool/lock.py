"""The single-writer lock of a pool directory: taking it, releasing it, and asking who holds it.

Scope: ``flock(2)`` on the pool directory itself (which deleting or replacing ``.lock`` cannot undo), plus
``.lock``, which carries the holder's pid, hostname, started_at and command for messages and ``status`` and
is flocked too, to keep out older versions that lock only that file. The kernel drops both when the holder
dies, however it dies, so there is never a stale lock to clean up. On a filesystem that cannot lock a
directory (NFS), the lock falls back to ``.lock`` alone, with a warning.

Nothing here reads or writes the pool's data: :class:`~selfinstruct.pool.directory.Pool` takes the lock
before any write (see its module docstring for the rules that make a pool safe).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from selfinstruct.errors import PoolError, PoolLockedError
from selfinstruct.pool.journal import now, reason, sync, write_all
from selfinstruct.pool.jsontext import JSONProblem
from selfinstruct.pool.jsontext import loads as json_loads

# How long a lock keeps trying before it gives up: long enough to ride out a `selfinstruct status` probe
# (which holds a shared lock for microseconds), short enough that an overlapping cron run exits at once.
LOCK_WAIT_SECONDS = 0.1
_LOCK_RETRY_INTERVAL = 0.02

# flock(2) on a directory fails with these on filesystems that cannot lock one (NFS emulates flock with
# POSIX locks, which need a descriptor open for writing). The lock then falls back to the .lock file alone.
_NO_DIRECTORY_LOCK = {errno.EBADF, errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP}


class PoolLock:
    """A held pool lock (from :meth:`Pool.lock <selfinstruct.pool.directory.Pool.lock>`). A context manager;
    :meth:`release` is idempotent.

    ``info`` is the holder information written into the lock file: pid, hostname, started_at, command.
    The lock itself is ``flock`` on the pool *directory* (``dir_fd``), which no file deletion can undo; the
    ``.lock`` file (``note_fd``) carries the holder information and is flocked too, which keeps out an
    older selfinstruct that locks only that file.
    """

    def __init__(self, dir_fd: int | None, note_fd: int | None, info: dict[str, Any]) -> None:
        self._dir_fd = dir_fd
        self._note_fd = note_fd
        self._held = True
        self.info = info

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        """Erase the holder information, then unlock and close.

        After a crash the information stays behind with the lock free, which is why :func:`holder` probes
        the lock instead of trusting the file."""
        if not self._held:
            return
        self._held = False
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


def acquire(directory: Path, lock_path: Path, command: str, wait: float, warn: Callable[[str], None]) -> PoolLock:
    """Take the exclusive lock of the pool ``directory`` (creating it and ``lock_path`` if needed).

    Retries for ``wait`` seconds, then raises :class:`PoolLockedError` naming the holder. Notes that do not
    stop the lock (no directory locking on this filesystem, holder information not written) go to ``warn``.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PoolError(f"cannot create the pool directory {directory}: {reason(exc)}") from None
    dir_fd: int | None = None
    note_fd: int | None = None
    try:
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except NotADirectoryError:
            raise PoolError(f"{directory} is a file, not a pool directory") from None
        except OSError as exc:
            raise PoolError(f"cannot open the pool directory {directory}: {reason(exc)}") from None
        deadline = time.monotonic() + wait
        if not _flock_exclusive(dir_fd, deadline, directory, directory, lock_path):
            os.close(dir_fd)
            dir_fd = None
            warn(
                f"the filesystem of {directory} cannot lock a directory; the pool is locked through "
                f"{lock_path} alone, so do not delete that file while a run holds it"
            )
        try:
            note_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise PoolError(f"cannot open the lock file {lock_path}: {reason(exc)}") from None
        if not _flock_exclusive(note_fd, deadline, lock_path, directory, lock_path) and dir_fd is None:
            raise PoolError(f"cannot lock {directory}: its filesystem supports no flock(2)")
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "started_at": now(),
            "command": command,
        }
        try:
            os.ftruncate(note_fd, 0)
            write_all(note_fd, json.dumps(info, ensure_ascii=False).encode("utf-8") + b"\n")
            sync(note_fd)
        except OSError as exc:
            # The flock is the lock; the text is only for `status` and error messages. Keep going.
            warn(f"could not write holder information to {lock_path}: {reason(exc)}")
    except BaseException:
        for fd in (note_fd, dir_fd):  # closing also releases a flock we got
            if fd is not None:
                os.close(fd)
        raise
    return PoolLock(dir_fd, note_fd, info)


def holder(directory: Path, lock_path: Path) -> dict[str, Any] | None:
    """Who holds the lock: ``None`` if nobody, else the holder information (``{}`` if not known).

    Never takes the lock beyond non-blocking shared probes released at once, and never writes, so
    ``selfinstruct status`` works on a pool it may only read.
    """
    held = False
    for target, flags in ((directory, os.O_DIRECTORY), (lock_path, 0)):
        try:
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | flags)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PoolError(f"cannot open {target}: {reason(exc)}") from None
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
    return _read_holder(lock_path) or {}


def _flock_exclusive(fd: int, deadline: float, what: Path, directory: Path, lock_path: Path) -> bool:
    """Lock ``fd`` exclusively, retrying until ``deadline``. ``False`` if the filesystem cannot lock it."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise PoolLockedError(_locked_message(directory, _read_holder(lock_path))) from None
            time.sleep(_LOCK_RETRY_INTERVAL)
        except OSError as exc:
            if exc.errno in _NO_DIRECTORY_LOCK:
                return False
            raise PoolError(f"cannot lock {what}: {reason(exc)}") from None


def _read_holder(lock_path: Path) -> dict[str, Any] | None:
    try:
        with lock_path.open("rb") as fh:
            return _holder_from_bytes(fh.read(65536))
    except OSError:
        return None


def _holder_from_bytes(raw: bytes) -> dict[str, Any] | None:
    try:
        info = json_loads(raw)
    except JSONProblem:
        return None
    return info if isinstance(info, dict) else None


def _locked_message(directory: Path, info: dict[str, Any] | None) -> str:
    if not info or "pid" not in info:
        return f"pool {directory} is locked by another process; try again later"
    return (
        f"pool {directory} is locked by pid {info.get('pid')} on {info.get('hostname', '?')}, "
        f"running since {info.get('started_at', '?')} ({info.get('command', '?')}); try again later"
    )


def _unlock_close(fd: int) -> None:
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
