"""The one reader of files the user names: bounded in size, clear about what it refuses.

Scope: getting the bytes of a seed file, a candidate file, an ``--against`` file, a ``--config`` file or a
prompt template into memory without letting the file decide how much memory that takes. Parsing is the
caller's (:mod:`selfinstruct.pool.task`, :mod:`selfinstruct.config`).

* a regular file larger than its limit is refused before a byte is read, with its size and the limit;
* a character or block device (``/dev/zero``, ``/dev/urandom``, a disk), a directory or a socket is refused
  at once: such a file has no end, or is not a file;
* a FIFO or pipe (``<(zcat seeds.jsonl.gz)``, ``/dev/stdin`` fed by a pipe) is read up to the limit and
  refused beyond it.

Limits: :data:`DATA_LIMIT_MB` for data files (seeds, candidates, ``--against``; override with the
environment variable ``SELFINSTRUCT_MAX_INPUT_MB``) and :data:`SMALL_LIMIT_BYTES` for a config file or a
prompt template, which are a few kilobytes when they are what they claim to be.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from selfinstruct.errors import InputError

#: Data files (seeds, candidates, --against), in MB (10**6 bytes); SELFINSTRUCT_MAX_INPUT_MB overrides it.
DATA_LIMIT_MB = 2000
LIMIT_ENV = "SELFINSTRUCT_MAX_INPUT_MB"
#: A --config file or a prompt template.
SMALL_LIMIT_BYTES = 4_000_000

_CHUNK = 1 << 20


def data_limit() -> int:
    """The byte limit for data files: ``SELFINSTRUCT_MAX_INPUT_MB`` if set to a positive number, else the default."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    try:
        mb = float(raw) if raw else DATA_LIMIT_MB
    except ValueError:
        mb = DATA_LIMIT_MB
    return int((mb if mb > 0 else DATA_LIMIT_MB) * 1_000_000)


def _size(n: int) -> str:
    return f"{n / 1_000_000:,.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode) or stat.S_ISFIFO(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISCHR(mode):
        return "is a character device (like /dev/zero), not a file: it has no end"
    if stat.S_ISBLK(mode):
        return "is a block device, not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    return "is not a regular file"


def _limit_hint(limit: int | None) -> str:
    if limit is None:
        return f"; set {LIMIT_ENV} to raise the limit"
    return ""


def read_bounded(path: str | os.PathLike[str], *, limit: int | None = None, what: str = "a data file") -> bytes:
    """The bytes of ``path``, or :class:`InputError` when it is too large, endless, or not a file.

    ``limit`` in bytes; ``None`` means :func:`data_limit` (``SELFINSTRUCT_MAX_INPUT_MB``).
    """
    p = Path(path)
    cap = data_limit() if limit is None else limit
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(p, None, "file not found") from None
    except IsADirectoryError:
        raise InputError(p, None, "is a directory, not a file") from None
    except OSError as exc:
        raise InputError(p, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        problem = _kind(st.st_mode)
        if problem:
            raise InputError(p, None, problem)
        if stat.S_ISREG(st.st_mode) and st.st_size > cap:
            raise InputError(
                p, None, f"is {_size(st.st_size)}, more than the {_size(cap)} allowed for {what}{_limit_hint(limit)}"
            )
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(_CHUNK, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise InputError(p, None, f"holds more than the {_size(cap)} allowed for {what}{_limit_hint(limit)}")
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(p, None, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def fingerprint(path: str | os.PathLike[str], *, limit: int | None = None) -> str:
    """The first 16 hex digits of the SHA-256 of a file, read as :func:`read_bounded` reads it."""
    return hashlib.sha256(read_bounded(path, limit=limit)).hexdigest()[:16]


__all__ = ["DATA_LIMIT_MB", "LIMIT_ENV", "SMALL_LIMIT_BYTES", "data_limit", "fingerprint", "read_bounded"]
