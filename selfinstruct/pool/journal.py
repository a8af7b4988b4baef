"""The journals of a pool directory: append-only JSON Lines files that survive kill -9 and full disks.

Scope: how a line gets into a pool file and how a damaged file is read back, nothing about what the lines
mean beyond "a task" for ``tasks.jsonl``:

* **Appends** (:func:`append_block`): a block of whole lines in one ``write(2)`` on an ``O_APPEND``
  descriptor, ``fsync`` where asked; on any error the file is truncated back to its size before the call.
* **Atomic replacement** (:func:`write_bytes_atomic`): temporary file, fsync, rename, fsync the directory.
* **Tolerant reading** (:func:`read_jsonl_tolerant`): the side files (ledger, rejected, judgements) skip
  unreadable lines with one warning.
* **The task journal** (:class:`TaskJournal`, ``tasks.jsonl``): loading with duplicate checks, refusing to
  append after a foreign writer, and **torn-line repair**: an incomplete last line (what a killed write
  leaves) is moved to ``tasks.jsonl.corrupt`` and cut off; bad lines elsewhere are loud, or moved aside by
  ``repair``.

Locking is not done here: :class:`~selfinstruct.pool.directory.Pool` checks its lock before calling anything
that writes. POSIX only. ``_write`` and ``_fsync`` are indirections so tests can inject failures (ENOSPC
half-way through a write, EIO from fsync).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputError, PoolError
from selfinstruct.pool.jsontext import JSONProblem
from selfinstruct.pool.jsontext import loads as json_loads
from selfinstruct.pool.task import Task, task_from_record
from selfinstruct.redact import redact_value
from selfinstruct.safetext import clean_value

# Indirections so tests can inject failures (ENOSPC half-way through a write, EIO from fsync).
_write = os.write
_fsync = os.fsync


def now() -> str:
    """The local time as ISO 8601 to the second, with its offset (for notes and holder information)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def reason(exc: OSError) -> str:
    """An OSError as the few words a message needs (``No space left on device``)."""
    return exc.strerror or str(exc)


def sync(fd: int) -> None:
    """``fsync`` through the test indirection."""
    _fsync(fd)


def sync_dir(directory: Path) -> None:
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


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``, looping on short writes (a nearly full disk writes what fits, then fails)."""
    view = memoryview(data)
    while view:
        written = _write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file a path named, and how long it was: enough to notice another writer."""

    device: int
    inode: int
    size: int
    changed_ns: int  # st_ctime: any write, even one that reuses a freed inode at the same size, moves it

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns)


class AppendFailed(Exception):
    """An append failed; ``restored`` says whether the file was truncated back to its old size."""

    def __init__(self, error: OSError, restored: bool, undo_error: OSError | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.restored = restored
        self.undo_error = undo_error


class TornTail(Exception):
    """The file does not end with a newline, so an append would glue onto an incomplete line."""


def append_block(path: Path, block: bytes, *, sync: bool, on_torn_tail: str) -> FileIdentity:
    """Append ``block`` with one write on an ``O_APPEND`` descriptor; on any failure truncate back.

    ``on_torn_tail`` decides what happens when the file does not end with a newline: ``"refuse"`` raises
    :class:`TornTail`, ``"terminate"`` writes a newline first so the new lines stay whole (the old
    incomplete line stays, isolated, for tolerant readers to skip). Raises :class:`AppendFailed` on OSError.
    """
    created = not path.exists()
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise AppendFailed(exc, restored=True, undo_error=None) from exc
    try:
        size = 0
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                if on_torn_tail == "refuse":
                    raise TornTail()
                block = b"\n" + block
            write_all(fd, block)
            if sync:
                _fsync(fd)
            identity = FileIdentity.of(os.fstat(fd))
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
                raise AppendFailed(exc, restored=undo_error is None, undo_error=undo_error) from exc
            raise
    finally:
        os.close(fd)
    if created and sync:
        sync_dir(path.parent)
    return identity


def jsonl_block(records: Iterable[Mapping[str, Any]], *, clean: bool = False) -> bytes:
    """Records as JSON Lines in UTF-8 (non-ASCII kept as is), ready for one append. Known secrets (an API key
    a server echoed into a reply) are replaced (:mod:`selfinstruct.redact`); ``clean`` also drops escape
    sequences and control characters from every string (the ledger, which ``status`` shows)."""
    values = (redact_value(dict(r)) for r in records)
    if clean:
        values = (clean_value(v) for v in values)
    return "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values).encode("utf-8")


def write_bytes_atomic(path: Path, data: bytes) -> None:
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
            write_all(fd, data)
            os.fchmod(fd, mode)
            _fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    sync_dir(path.parent)


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


def parse_json_line(raw: bytes) -> tuple[Any, str | None]:
    """``(value, None)`` for a line holding one acceptable JSON value, else ``(None, why_not)``."""
    try:
        return json_loads(raw), None
    except JSONProblem as exc:
        return None, str(exc)


def _parse_task_line(raw: bytes, path: Path, number: int) -> tuple[Task | None, str | None]:
    """``(task, None)`` for a line holding a valid task record, else ``(None, why_not)``."""
    record, problem = parse_json_line(raw)
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


@dataclass(frozen=True, slots=True)
class _BadLine:
    number: int
    start: int
    end: int
    problem: str


class TaskJournal:
    """``tasks.jsonl``, the journal of accepted tasks: read, checked, appended, repaired.

    It remembers the ids and instruction keys it loaded or appended, so :meth:`append` never writes a
    duplicate that the next load would refuse, and the file as it last loaded or wrote it, so :meth:`append`
    refuses after a foreign writer. Whether it may write is the caller's to decide (the pool's lock).
    ``directory`` is the pool's, for messages; ``warn`` receives notes (a torn line moved aside).
    """

    def __init__(self, path: Path, corrupt_path: Path, directory: Path, warn: Callable[[str], None]) -> None:
        self.path = path
        self.corrupt_path = corrupt_path
        self.directory = directory
        self._warn = warn
        # Ids and instruction keys loaded or appended through this object.
        self._ids: set[str] = set()
        self._instructions: set[str] = set()
        # tasks.jsonl as this object last loaded or wrote it; append() refuses if the file on disk differs.
        self._known: FileIdentity | None = None
        self._loaded = False

    def stream(self, *, strict: bool = False) -> Iterator[Task]:
        """Stream the valid tasks of ``tasks.jsonl`` for a reader that needs each task once (``status``):
        one line in memory at a time, never writes, never raises for a bad line.

        The same lines count as :meth:`read` with ``skip_bad=True`` keeps: bad lines and duplicates
        (by id, and by instruction as an 8-byte digest, so a million tasks cost tens of MB) are skipped and
        summed up in one warning; an incomplete last line (no newline, not a whole record) gets its own.
        ``strict``: a bad line or a duplicate raises :class:`PoolError` instead, as :meth:`read` does.
        """
        path = self.path
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return
        except IsADirectoryError:
            raise PoolError(f"{path} is a directory, not the pool's task file") from None
        except OSError as exc:
            raise PoolError(f"cannot read {path}: {reason(exc)}") from None
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
                    self._warn(
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
                if strict and task is None and parse_json_line(raw)[1] is not None:
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
            self._warn(
                f"{path}:{held[0]}: skipped an incomplete last line ({held[1]}); a run may be writing it right "
                "now, or was killed while writing it (the next run moves it aside)"
            )
        if bad and first_bad:
            self._warn(
                f"{path}: skipped {bad} bad line{'s' if bad != 1 else ''} (line {first_bad[0]}: {first_bad[1]}); "
                f"`selfinstruct repair {self.directory}` moves {'it' if bad == 1 else 'them'} aside to "
                f"{self.corrupt_path}"
            )

    def read(self, *, repair: bool, may_write: bool, skip_bad: bool = False) -> list[Task]:
        """Every task of the file (see :meth:`Pool.load <selfinstruct.pool.directory.Pool.load>`); ``may_write``
        says whether a torn last line may be moved aside, ``repair`` whether bad lines may be."""
        path = self.path
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
            raise PoolError(f"cannot read {path}: {reason(exc)}") from None
        try:
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read()
            known: FileIdentity | None = FileIdentity.of(os.fstat(fd))
        except OSError as exc:
            raise PoolError(f"cannot read {path}: {reason(exc)}") from None
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
            self._warn(
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
            self._warn(
                f"{path}:{torn.number}: skipped an incomplete last line ({torn.problem}); a run may be "
                "writing it right now, or was killed while writing it (the next run moves it aside)"
            )
        elif torn or bad:
            self._move_aside(data, bad, torn)
            known = self._stat()
        elif unterminated and may_write:
            # A complete, valid task without its newline: another program appended it. Keep it, end the line.
            line = data.count(b"\n") + 1
            try:
                append_block(path, b"", sync=True, on_torn_tail="terminate")  # writes the missing newline
            except AppendFailed as exc:
                raise PoolError(f"could not end the last line of {path} with a newline: {reason(exc.error)}") from None
            self._warn(
                f"{path}:{line}: the last task had no newline at the end (written by another program?); added one"
            )
            known = self._stat()

        self._ids = set(first_id)
        self._instructions = set(first_instruction)
        self._known = known if may_write else None
        self._loaded = may_write
        return tasks

    def _stat(self) -> FileIdentity | None:
        try:
            return FileIdentity.of(os.stat(self.path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PoolError(f"cannot read {self.path}: {reason(exc)}") from None

    def _check_unchanged(self) -> None:
        """Refuse to append when ``tasks.jsonl`` is not the file this object loaded and wrote (a foreign writer).

        The lock keeps other selfinstruct runs out; this catches everything else (a script appending, a
        user replacing the file, a second writer that got in through a filesystem without locks). Every task
        in the file was then either loaded or appended by this object, so the duplicate checks of
        :meth:`append` see the whole file.
        """
        now = self._stat()
        if now == self._known:
            return
        path = self.path
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
            record, json_problem = parse_json_line(data[start:])
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
            _, json_problem = parse_json_line(data[start:end])
            if json_problem is None:
                return None
            problem = json_problem
        return _BadLine(data.count(b"\n", 0, start) + 1, start, len(data), problem)

    def _move_aside(self, data: bytes, bad: list[_BadLine], torn: _BadLine | None) -> None:
        """Copy bad lines to ``.corrupt`` (fsync), then drop them from ``tasks.jsonl``. Needs the lock.

        The copy comes first, so a crash in between duplicates a line in ``.corrupt`` instead of losing it.
        """
        path, moved = self.path, [*bad, *([torn] if torn else [])]
        when = now()
        notes = []
        for line in moved:
            raw = data[line.start : line.end]
            notes.append(f"# {when} {path.name}:{line.number} {line.problem}\n".encode())
            notes.append(raw if raw.endswith(b"\n") else raw + b"\n")
        try:
            append_block(self.corrupt_path, b"".join(notes), sync=True, on_torn_tail="terminate")
        except AppendFailed as exc:
            lines = f"{len(moved)} bad line{'s' if len(moved) != 1 else ''}"
            raise PoolError(
                f"could not move {lines} of {path} to {self.corrupt_path}: {reason(exc.error)}; {path} is unchanged"
            ) from None

        try:
            if bad:
                dropped = {b.start for b in bad}
                body_end = torn.start if torn else len(data)
                keep = [data[s:e] for _, s, e in _lines(data, body_end) if s not in dropped]
                write_bytes_atomic(path, b"".join(keep))
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
                f"could not rewrite {path} without its bad lines: {reason(exc)}; the file is unchanged "
                f"(copies of the lines are in {self.corrupt_path})"
            ) from None

        for line in bad:
            self._warn(f"{path}:{line.number}: {line.problem}; moved to {self.corrupt_path}")
        if torn:
            self._warn(
                f"{path}:{torn.number}: an incomplete last line ({torn.problem}), left by an interrupted "
                f"write, was moved to {self.corrupt_path}"
            )

    def append(self, tasks: Sequence[Task]) -> None:
        """Append one round of tasks durably and all-or-nothing as far as this process can tell.

        The records are serialized first, then written with one ``write(2)`` on an ``O_APPEND`` descriptor
        and ``fsync``-ed. On any error (disk full, EIO) the file is truncated back to its size before the
        call and :class:`PoolError` is raised. Tasks that the next :meth:`read` would refuse (invalid, or a
        duplicate id or instruction of a task loaded or appended through this object) are refused before
        anything is written. The caller holds the pool's lock.
        """
        if not tasks:
            return
        path = self.path
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
            self._known = append_block(path, block, sync=True, on_torn_tail="refuse")
        except TornTail:
            raise PoolError(
                f"{path} ends with an incomplete line; load() the pool under its lock first to move it aside"
            ) from None
        except AppendFailed as exc:
            if exc.restored:
                # Our own undo (ftruncate) touched the file: it is still the file we know, at its old size.
                with contextlib.suppress(PoolError):
                    self._known = self._stat()
                raise PoolError(
                    f"could not append {what} to {path}: {reason(exc.error)}; the pool is unchanged"
                ) from None
            undo = reason(exc.undo_error) if exc.undo_error else "unknown error"
            raise PoolError(
                f"could not append {what} to {path}: {reason(exc.error)}; undoing the partial write also "
                f"failed ({undo}), so the file may end with an incomplete line (the next run moves it aside)"
            ) from None
        self._ids, self._instructions = ids, instructions
        self._loaded = True  # the file holds what was loaded plus what this object wrote


def read_jsonl_tolerant(path: Path, warn: Callable[[str], None]) -> Iterator[Any]:
    """Stream the JSON values of a JSONL file, skipping unreadable lines (one warning for all of them
    except an incomplete last line, which a writer may be in the middle of)."""
    skipped = 0
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise PoolError(f"cannot read {path}: {reason(exc)}") from None
    with fh:
        for raw in fh:
            if not raw.strip():
                continue
            value, problem = parse_json_line(raw)
            if problem is None:
                yield value
            elif raw.endswith(b"\n"):
                skipped += 1
    if skipped:
        warn(f"{path}: skipped {skipped} unreadable line{'s' if skipped != 1 else ''}")
