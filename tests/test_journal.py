"""Tests for selfinstruct.pool.journal: loading and repairing tasks.jsonl (torn last lines moved aside, bad
lines loud or repaired, duplicates), crash-safe appends (injected ENOSPC/EIO, an interrupt between short
writes, SIGKILL mid-append) and the strings a loaded pool shares."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from poolkit import TASK_SOURCE, line, numbered_task, python

import selfinstruct.pool.journal as journal_mod
from selfinstruct.errors import PoolError
from selfinstruct.pool.directory import Pool, machine_task_id
from selfinstruct.pool.task import Instance, Task


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return Pool(tmp_path / "pool")


@pytest.fixture
def locked(pool: Pool) -> Iterator[Pool]:
    with pool.lock("test"):
        yield pool


@pytest.mark.parametrize(
    "meta",
    [
        {"source": "machine", "run_id": "r1", "model": "m", "demonstrations": ["Seed one.", "Describe item number 0"],
         "most_similar": [{"instruction": "Describe item number 0 in detail.", "score": 0.5}, "odd", {"x": 1}]},
        {"source": "machine", "demonstrations": "not a list", "most_similar": None, "model": None},
        {},
    ],
)  # fmt: skip
def test_loaded_tasks_share_equal_strings_and_keep_their_records(locked: Pool, meta: dict[str, Any]) -> None:
    tasks = [numbered_task(i) for i in range(3)]
    for task in tasks[1:]:
        task.meta.update(json.loads(json.dumps(meta)))
    locked.append(tasks)
    loaded = Pool(locked.directory).load()
    assert [t.to_record() for t in loaded] == [t.to_record() for t in tasks]
    if meta.get("run_id"):
        assert loaded[1].meta["run_id"] is loaded[2].meta["run_id"]
        assert loaded[1].meta["demonstrations"][0] is loaded[2].meta["demonstrations"][0]
        # An instruction named in another task's provenance is the task's own string object.
        assert loaded[1].meta["most_similar"][0]["instruction"] is loaded[0].instruction


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        (b'{"id": "machine_task_000003", "instruc', "no newline at the end of the file"),
        (b"\x00" * 300, "no newline at the end of the file"),  # size grew, data never reached the disk
        (b'{"id": "machine_task_000003", "instruc\n', "not valid JSON"),
        (b"   ", "no newline at the end of the file"),
    ],
)
def test_torn_last_line_is_moved_aside_and_cut_off(locked: Pool, tail: bytes, why: str) -> None:
    good = b"".join(line(numbered_task(i)) for i in range(3))
    locked.tasks_path.write_bytes(good + tail)
    tasks = locked.load()
    assert [t.id for t in tasks] == [machine_task_id(i) for i in range(3)]
    assert locked.tasks_path.read_bytes() == good
    corrupt = locked.corrupt_path.read_bytes()
    note, _, moved = corrupt.partition(b"\n")
    assert b"tasks.jsonl:4" in note and why.encode() in note and note.startswith(b"# ")
    assert moved == tail if tail.endswith(b"\n") else moved == tail + b"\n"
    assert len(locked.warnings) == 1
    assert "tasks.jsonl:4" in locked.warnings[0] and "moved to" in locked.warnings[0]
    # The next append continues cleanly and the next load sees no problem.
    locked.append([numbered_task(3)])
    assert len(Pool(locked.directory).load()) == 4


def test_a_whole_task_without_its_newline_is_kept_and_the_line_ended(locked: Pool) -> None:
    # Another tool appended a valid task and left out the newline: a complete line, not an interrupted write.
    good = b"".join(line(numbered_task(i)) for i in range(3))
    locked.tasks_path.write_bytes(good + line(numbered_task(3)).rstrip(b"\n"))
    reader = Pool(locked.directory)
    assert [t.id for t in reader.read_tasks()] == [machine_task_id(i) for i in range(4)]
    assert reader.warnings == []  # a reader keeps it and says nothing: it is a valid task
    tasks = locked.load()
    assert [t.id for t in tasks] == [machine_task_id(i) for i in range(4)]
    assert locked.tasks_path.read_bytes() == good + line(numbered_task(3))
    assert not locked.corrupt_path.exists()
    assert "tasks.jsonl:4" in locked.warnings[0] and "no newline" in locked.warnings[0]
    locked.append([numbered_task(4)])
    assert len(Pool(locked.directory).load()) == 5


def test_torn_last_line_without_the_lock_is_skipped_and_nothing_is_written(pool: Pool) -> None:
    pool.directory.mkdir()
    content = line(numbered_task(0)) + b'{"id": "machine_ta'
    pool.tasks_path.write_bytes(content)
    assert [t.id for t in pool.load()] == [machine_task_id(0)]
    assert pool.tasks_path.read_bytes() == content
    assert not pool.corrupt_path.exists()
    assert "skipped an incomplete last line" in pool.warnings[0]


def test_read_tasks_never_writes_even_holding_the_lock(locked: Pool) -> None:
    content = line(numbered_task(0)) + b'{"id": "machine_ta'
    locked.tasks_path.write_bytes(content)
    assert [t.id for t in locked.read_tasks()] == [machine_task_id(0)]
    assert locked.tasks_path.read_bytes() == content
    assert "skipped an incomplete last line" in locked.warnings[0]
    locked.tasks_path.write_bytes(b"bad\n" + content)
    with pytest.raises(PoolError, match=r"tasks\.jsonl:1: not valid JSON"):
        locked.read_tasks()


@given(
    good=st.integers(0, 3),
    tail=st.binary(min_size=1, max_size=200).filter(lambda b: b"\n" not in b),
)
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
def test_any_partial_last_line_is_moved_aside(good: int, tail: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pool = Pool(tmp)
        prefix = b"".join(line(numbered_task(i)) for i in range(good))
        pool.tasks_path.write_bytes(prefix + tail)
        with pool.lock():
            assert len(pool.load()) == good
        assert pool.tasks_path.read_bytes() == prefix
        assert pool.corrupt_path.read_bytes().endswith(b"\n" + tail + b"\n")


def test_bad_middle_line_raises_naming_file_and_line(pool: Pool) -> None:
    pool.directory.mkdir()
    content = line(numbered_task(0)) + b"this is not json\n" + line(numbered_task(1))
    pool.tasks_path.write_bytes(content)
    with pytest.raises(PoolError) as exc_info:
        pool.load()
    message = str(exc_info.value)
    assert f"{pool.tasks_path}:2: not valid JSON" in message
    assert f"`selfinstruct repair {pool.directory}` moves it aside" in message
    assert exc_info.value.exit_code == 4
    assert pool.tasks_path.read_bytes() == content  # untouched, even holding the lock:
    with pool.lock(), pytest.raises(PoolError):
        pool.load()
    assert pool.tasks_path.read_bytes() == content
    assert not pool.corrupt_path.exists()


def test_invalid_record_in_the_middle_names_the_field(pool: Pool) -> None:
    pool.directory.mkdir()
    pool.tasks_path.write_bytes(line(numbered_task(0)) + b'{"id": "x", "instances": []}\n' + line(numbered_task(1)))
    with pytest.raises(PoolError, match=r"tasks\.jsonl:2: missing field 'instruction'"):
        pool.load()


def test_repair_moves_bad_lines_aside_and_keeps_the_rest_byte_for_byte(pool: Pool) -> None:
    pool.directory.mkdir()
    # Hand-formatted lines (odd spacing, ASCII escapes, a blank line) must survive the rewrite unchanged.
    odd = b'{"id": "hand_1",   "instruction": "Sort these \\u00e9 words alphabetically.", "instances": []}\n'
    good = [line(numbered_task(0)), odd, b"\n", line(numbered_task(1))]
    bad = [b"garbage\n", b'{"id": "x", "instances": []}\n']
    pool.tasks_path.write_bytes(good[0] + bad[0] + good[1] + good[2] + bad[1] + good[3])
    pool.tasks_path.chmod(0o640)

    tasks = pool.load(repair=True)  # takes the lock for the repair, then releases it

    assert [t.id for t in tasks] == [machine_task_id(0), "hand_1", machine_task_id(1)]
    assert pool.tasks_path.read_bytes() == b"".join(good)
    assert pool.tasks_path.stat().st_mode & 0o777 == 0o640
    corrupt = pool.corrupt_path.read_bytes().splitlines(keepends=True)
    assert corrupt[1] == bad[0] and corrupt[3] == bad[1]
    assert b"tasks.jsonl:2 not valid JSON" in corrupt[0]
    assert b"tasks.jsonl:5 missing field 'instruction'" in corrupt[2]
    assert len(pool.warnings) == 2
    assert pool.lock_holder() is None and not pool.locked
    assert len(Pool(pool.directory).load()) == 3
    assert not list(pool.directory.glob(".tasks.jsonl.*.tmp"))


def test_repair_also_handles_a_torn_tail(locked: Pool) -> None:
    locked.tasks_path.write_bytes(line(numbered_task(0)) + b"junk\n" + line(numbered_task(1)) + b'{"id"')
    assert len(locked.load(repair=True)) == 2
    assert locked.tasks_path.read_bytes() == line(numbered_task(0)) + line(numbered_task(1))
    assert locked.corrupt_path.read_bytes().count(b"\n# ") + 1 == 2


def test_duplicate_id_is_reported_with_both_lines(pool: Pool) -> None:
    pool.directory.mkdir()
    copy = numbered_task(0)
    copy.instruction = "A different instruction with the same id."
    pool.tasks_path.write_bytes(line(numbered_task(0)) + line(numbered_task(1)) + line(copy))
    with pytest.raises(PoolError) as exc_info:
        pool.load()
    assert "tasks.jsonl:3: duplicate id 'machine_task_000000' (also on line 1)" in str(exc_info.value)
    assert [t.instruction for t in pool.load(repair=True)] == [
        numbered_task(0).instruction,
        numbered_task(1).instruction,
    ]
    assert pool.corrupt_path.read_bytes().endswith(line(copy))


def test_duplicate_instruction_ignores_case_and_spacing(pool: Pool) -> None:
    pool.directory.mkdir()
    first = Task("Name three   primary colors.", [Instance("", "red")], id="a")
    second = Task("name three primary COLORS.", [Instance("", "blue")], id="b")
    pool.tasks_path.write_bytes(line(first) + line(second))
    with pytest.raises(PoolError, match=r"tasks\.jsonl:2: duplicate instruction \(also on line 1\)"):
        pool.load()
    assert [t.id for t in pool.load(repair=True)] == ["a"]


def test_many_bad_lines_are_summarised(pool: Pool) -> None:
    pool.directory.mkdir()
    pool.tasks_path.write_bytes(b"bad\n" * 8 + line(numbered_task(0)))
    with pytest.raises(PoolError, match=r"\(and 3 more bad lines\); `selfinstruct repair .*` moves them aside"):
        pool.load()


def test_enospc_mid_write_leaves_the_file_byte_identical(locked: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    locked.append([numbered_task(i) for i in range(3)])
    before = locked.tasks_path.read_bytes()
    calls = []

    def nearly_full_disk(fd: int, data: memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return os.write(fd, data[: len(data) // 2])  # a short write: what fitted
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal_mod, "_write", nearly_full_disk)
    with pytest.raises(PoolError) as exc_info:
        locked.append([numbered_task(i) for i in range(3, 8)])
    assert len(calls) == 2
    assert exc_info.value.exit_code == 4
    assert str(exc_info.value) == (
        f"could not append 5 tasks to {locked.tasks_path}: No space left on device; the pool is unchanged"
    )
    assert locked.tasks_path.read_bytes() == before

    monkeypatch.undo()  # space freed: the same round can be appended again
    locked.append([numbered_task(i) for i in range(3, 8)])
    assert len(Pool(locked.directory).load()) == 8


def test_fsync_failure_rolls_back(locked: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    locked.append([numbered_task(0)])
    before = locked.tasks_path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(journal_mod, "_fsync", failing_fsync)
    with pytest.raises(PoolError, match="Input/output error; the pool is unchanged"):
        locked.append([numbered_task(1)])
    assert locked.tasks_path.read_bytes() == before


def test_interrupt_between_short_writes_rolls_back(locked: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def interrupted(fd: int, data: memoryview) -> int:
        calls.append(1)
        if len(calls) == 1:
            return os.write(fd, data[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(journal_mod, "_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        locked.append([numbered_task(0)])
    assert locked.tasks_path.read_bytes() == b""


def test_append_refuses_what_load_would_refuse(locked: Pool) -> None:
    locked.append([numbered_task(0)])
    with pytest.raises(PoolError, match="duplicate id 'machine_task_000000'"):
        locked.append([numbered_task(0)])
    twin = Task(numbered_task(1).instruction.upper(), [Instance("", "x")], id="other")
    with pytest.raises(PoolError, match="duplicate instruction"):
        locked.append([numbered_task(1), twin])
    with pytest.raises(PoolError, match="field 'instruction' is empty"):
        locked.append([Task("   ", [Instance("", "x")], id="blank")])
    assert len(Pool(locked.directory).load()) == 1  # nothing of the refused rounds was written


def test_append_refuses_to_glue_onto_a_torn_line(locked: Pool) -> None:
    locked.tasks_path.write_bytes(line(numbered_task(0)) + b'{"id": "machi')
    with pytest.raises(PoolError, match="has not loaded: load"):
        locked.append([numbered_task(1)])


APPENDER = (
    TASK_SOURCE
    + """
import os, sys, time
import selfinstruct.pool.journal
from selfinstruct.pool.directory import Pool
chunk = int(sys.argv[2])
if chunk:  # a slow disk taking short writes: a wide window for the kill to land mid-round

    def slow_write(fd, data):
        time.sleep(0.0002)
        return os.write(fd, data[:chunk])

    selfinstruct.pool.journal._write = slow_write
pool = Pool(sys.argv[1])
with pool.lock("appender"):
    n = pool.next_index(pool.load())
    print("ready", flush=True)
    while True:
        size = 1 + n % 7
        pool.append([numbered_task(i) for i in range(n, n + size)])
        n += size
"""
)


def test_sigkill_during_appends_leaves_whole_valid_tasks(pool: Pool) -> None:
    rng = random.Random(20240501)
    expected_lines: list[bytes] = []
    for run in range(8):
        appender = python(APPENDER, str(pool.directory), "256" if run % 2 else "0")
        assert appender.stdout is not None
        assert appender.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.005, 0.08))
        appender.send_signal(signal.SIGKILL)
        appender.wait()

        with pool.lock("check"):
            tasks = pool.load()  # moves a torn tail aside, if the kill left one
        # A prefix of the numbered sequence: no gaps, no duplicates, every record complete and exact.
        assert [t.id for t in tasks] == [machine_task_id(i) for i in range(len(tasks))]
        assert [t.to_record() for t in tasks] == [numbered_task(i).to_record() for i in range(len(tasks))]
        expected_lines = [line(numbered_task(i)) for i in range(len(tasks))]
        assert pool.tasks_path.read_bytes() == b"".join(expected_lines)
    assert len(expected_lines) > 0

    # Whatever was moved aside is an incomplete piece of the task that was being written. (Most kills of
    # the slow-disk runs land mid-write, about 70% on a laptop; not asserted, as it depends on timing.)
    corrupt = pool.corrupt_path.read_bytes() if pool.corrupt_path.exists() else b""
    for chunk in filter(None, corrupt.split(b"# ")):
        note, _, moved = chunk.partition(b"\n")
        number = int(note.split(b"tasks.jsonl:")[1].split()[0]) - 1
        assert moved.endswith(b"\n") and line(numbered_task(number)).startswith(moved[:-1])
