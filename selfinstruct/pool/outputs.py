"""The one door every output file goes through: it never replaces an input, a pool file or a device.

Scope: deciding whether a path may be written, writing it whole or not at all, and serializing writers of a
file that several exports share. Commands (``report --out``, ``export --out``, ``filter --out/--rejected``)
build their content and hand it here; what the content is, is theirs.

The rules, checked on the path *after* symbolic links are followed (``os.path.realpath`` and ``stat``):

* **never an input**: a path that is, or links to, a file the command reads (its pool's files, a seed file,
  an ``--against`` file; hard links too, by device and inode) is refused;
* **never a pool file**: ``tasks.jsonl``, ``runs.jsonl``, ``judgements.jsonl``, ``rejected.jsonl``,
  ``config.json``, the ``.lock`` and the ``*.corrupt`` archives of any directory that holds a pool (one of
  ``tasks.jsonl``, ``runs.jsonl``, ``config.json`` or ``.lock``), nor the pool directory itself;
* **a stream is written, not replaced**: when the path exists and is not a regular file (``/dev/stdout``,
  a FIFO, a terminal), a format that can be streamed (JSON Lines, JSON, HTML) is written into it; any other
  format is refused, and so is a directory;
* **whole or not at all**: a regular file is written to a temporary name beside its target (the target of
  a link: the link stays a link), fsynced, given the permissions of an ordinary new file (``0666`` less the
  umask), and renamed into place; an error leaves the old file and no temporary;
* **shared sidecars are locked**: :func:`directory_lock` holds an exclusive ``flock`` on a directory, so
  that ten exports into one directory merge their entries into its ``dataset_info.json`` one after the
  other instead of each overwriting the others' (read, merge and rename all happen under the lock).

Every refusal is an :class:`~selfinstruct.errors.OutputError` (exit 73) that names the flag and the path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from selfinstruct.errors import OutputError

#: The files of a pool directory (see :mod:`selfinstruct.pool.directory`); kept here as names so that this module
#: stays below the pool in the layers.
POOL_FILES = frozenset({"tasks.jsonl", "rejected.jsonl", "runs.jsonl", "judgements.jsonl", "config.json", ".lock"})
#: Any of these in a directory makes it a pool directory.
POOL_MARKERS = ("tasks.jsonl", "runs.jsonl", "config.json", ".lock")
CORRUPT_SUFFIX = ".corrupt"

#: How long :func:`directory_lock` waits for another export before giving up.
LOCK_WAIT_SECONDS = 60.0


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def is_pool_dir(directory: Path) -> bool:
    """Whether ``directory`` holds a pool (any of its marker files)."""
    return any(os.path.lexists(directory / name) for name in POOL_MARKERS)


def is_pool_file(path: Path) -> bool:
    """Whether ``path`` (already resolved) is a file of a pool: a pool file name in a pool directory."""
    name = path.name
    is_pool_name = name in POOL_FILES or name.endswith(CORRUPT_SUFFIX) or CORRUPT_SUFFIX + "." in name
    return is_pool_name and is_pool_dir(path.parent)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pool_inputs(directory: Path) -> list[Path]:
    """The files of the pool at ``directory`` that exist, as inputs of a command that reads it."""
    found = [directory / name for name in POOL_FILES]
    with contextlib.suppress(OSError):
        found += [p for p in directory.iterdir() if CORRUPT_SUFFIX in p.name]
    return [p for p in found if os.path.lexists(p)]


@dataclass(frozen=True)
class Target:
    """Where an output goes: ``path`` as given, ``real`` after links, ``stream`` for a device or FIFO."""

    path: Path
    real: Path
    stream: bool


def check_output(
    path: str | os.PathLike[str],
    *,
    flag: str = "--out",
    inputs: Iterable[str | os.PathLike[str]] = (),
    pools: Iterable[str | os.PathLike[str]] = (),
    stream_ok: bool = False,
    directory_ok: bool = False,
    fmt: str = "this format",
) -> Target:
    """Decide whether ``path`` may be written; raise :class:`OutputError` naming ``flag`` when not.

    ``inputs`` are files the command reads; ``pools`` pool directories it reads (all their files count as
    inputs, and the directory itself may not be replaced). ``stream_ok`` says that the content can be
    written into a non-regular file (``/dev/stdout``, a FIFO); ``fmt`` names the content in the refusal.
    ``directory_ok``: the output is a directory (a Hugging Face datasets export) and may exist as one.
    """
    given = Path(path)
    real = Path(os.path.realpath(given))
    pool_dirs = [Path(os.path.realpath(p)) for p in pools]
    input_paths = [Path(p) for p in inputs] + [f for d in pool_dirs for f in pool_inputs(d)]
    if real in pool_dirs:
        raise OutputError(
            f"{flag} {given} is the pool directory itself: it would overwrite the pool; choose a path outside it"
        )
    if is_pool_file(real):
        raise OutputError(
            f"{flag} {given} is {'a link to ' if real != given.absolute() else ''}{real}, a file of the pool in "
            f"{real.parent}: it would overwrite the pool; choose a path outside the pool's files"
        )
    mine = _identity(real)
    for inp in input_paths:
        if (mine is not None and mine == _identity(inp)) or real == Path(os.path.realpath(inp)):
            raise OutputError(
                f"{flag} {given} is {inp}, an input of this command; writing it would destroy it: choose another path"
            )
    try:
        st = os.stat(given)  # through the links: /dev/stdout's target (pipe:[...]) has no usable path
    except FileNotFoundError:
        return Target(given, real, stream=False)
    except OSError as exc:
        raise OutputError(f"{flag} {given}: {_reason(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        if directory_ok:
            return Target(given, real, stream=False)
        raise OutputError(f"{flag} {given} is a directory; name a file")
    if stat.S_ISREG(st.st_mode):
        if stream_ok and str(given.absolute()).startswith(("/dev/", "/proc/")):
            return Target(given, given, stream=True)  # /dev/stdout redirected to a file: write through it
        return Target(given, real, stream=False)
    kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) else "not a file"
    if not stream_ok:
        raise OutputError(f"{flag} {given} is {kind}, not a regular file, and {fmt} cannot be streamed: name a file")
    return Target(given, given, stream=True)


def _inherited_fd(path: Path) -> int | None:
    """The descriptor a path names when it is one of this process's own (``/dev/stdout``, ``/dev/stderr``,
    ``/dev/fd/N``, ``/proc/self/fd/N``), else None. Writing through a duplicate of that descriptor, not a
    fresh open() of its target, keeps what the shell asked for: ``>> log`` appends (a fresh open of the
    file would truncate it), and ``> out`` writes after what was printed before."""
    text = str(path.absolute())
    named = {"/dev/stdout": 1, "/dev/stderr": 2}
    if text in named:
        return named[text]
    for prefix in ("/dev/fd/", "/proc/self/fd/"):
        if text.startswith(prefix) and text[len(prefix) :].isdigit():
            return int(text[len(prefix) :])
    return None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def open_output(target: Target, *, binary: bool = False, flag: str = "--out") -> Iterator[IO[Any]]:
    """Write ``target`` (from :func:`check_output`): into the stream, or whole-or-nothing into the file.

    OSErrors become :class:`OutputError` saying that nothing was replaced.
    """
    mode = "wb" if binary else "w"
    encoding = None if binary else "utf-8"
    if target.stream:
        try:
            fd = _inherited_fd(target.path)
            if fd is not None:  # /dev/stdout and the like: the descriptor the shell opened, as it opened it
                if fd == 1:
                    with contextlib.suppress(OSError, ValueError):
                        sys.stdout.flush()  # what the command printed before goes first
                fh_cm = open(os.dup(fd), mode, encoding=encoding)  # noqa: SIM115 (closed by the with below)
            else:
                fh_cm = open(target.real, mode, encoding=encoding)  # noqa: SIM115
            with fh_cm as fh:
                yield fh
        except OSError as exc:
            raise OutputError(f"cannot write {flag} {target.path}: {_reason(exc)}") from None
        return
    real = target.real
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {flag} {target.path}: {_reason(exc)}; nothing was written") from None
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, real)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {flag} {target.path}: {_reason(exc)}; {target.path} is as it was") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(target: Target, text: str, *, flag: str = "--out") -> None:
    """Write ``text`` to ``target`` as :func:`open_output` does."""
    with open_output(target, flag=flag) as fh:
        fh.write(text)


@contextmanager
def directory_lock(directory: str | os.PathLike[str], *, wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (created if missing) for the block.

    Writers of a file shared by several outputs of that directory (LLaMA-Factory's ``dataset_info.json``)
    read, merge and replace it inside this block. A lock on the directory itself leaves no lock file behind.
    """
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise OutputError(f"cannot use the directory {d}: {_reason(exc)}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OutputError(
                        f"another export has been writing into {d} for {wait:g}s; try again when it is done"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


__all__ = [
    "POOL_FILES",
    "Target",
    "check_output",
    "directory_lock",
    "is_pool_dir",
    "is_pool_file",
    "open_output",
    "pool_inputs",
    "write_text",
]
