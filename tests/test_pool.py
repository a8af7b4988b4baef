"""Tests for selfinstruct.pool.directory: loading and repairing tasks.jsonl, the flock-based lock across processes,
crash-safe appends (injected ENOSPC/EIO, SIGKILL mid-append), the run ledger, rejected counts and config."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import selfinstruct.pool.directory as pool_mod
from selfinstruct.errors import PoolError, PoolLockedError
from selfinstruct.pool.directory import Pool, compare_configs, machine_task_id
from selfinstruct.pool.task import Instance, Task

# One definition of the numbered test task, executed here and inside the subprocesses, so both sides agree
# on what task n looks like. Lengths vary so that some rounds span several pages (a SIGKILL can cut a
# multi-page write short); U+2028 checks that lines are split on "\n" only.
TASK_SOURCE = """
from selfinstruct.pool.directory import machine_task_id
from selfinstruct.pool.task import Instance, Task

def numbered_task(i):
    filler = " ".join(["word"] * (i * 37 % 400))
    return Task(
        instruction=f"Describe item number {i} in detail. {filler}".strip(),
        instances=[Instance("", f"output {i} \\u00fc\\u2028")],
        is_classification=False,
        id=machine_task_id(i),
        name=machine_task_id(i),
        meta={"source": "machine", "round": i // 5},
    )
"""
_namespace: dict[str, Any] = {}
exec(TASK_SOURCE, _namespace)
numbered_task = _namespace["numbered_task"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def line(task: Task) -> bytes:
    return (json.dumps(task.to_record(), ensure_ascii=False) + "\n").encode("utf-8")


def python(script: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=REPO_ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        **kwargs,
    )


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return Pool(tmp_path / "pool")


@pytest.fixture
def locked(pool: Pool) -> Iterator[Pool]:
    with pool.lock("test"):
        yield pool


# -- load ----------------------------------------------------------------------------------------


def test_missing_file_is_an_empty_pool(pool: Pool) -> None:
    assert pool.load() == []
    assert not pool.directory.exists()  # reading creates nothing
    assert pool.warnings == []


def test_append_then_load_roundtrip(locked: Pool) -> None:
    tasks = [numbered_task(i) for i in range(7)]
    locked.append(tasks[:3])
    locked.append(tasks[3:])
    loaded = Pool(locked.directory).load()
    assert [t.to_record() for t in loaded] == [t.to_record() for t in tasks]
    assert locked.tasks_path.read_bytes() == b"".join(map(line, tasks))
    assert locked.warnings == []


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


# -- lock ----------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from selfinstruct.pool.directory import Pool
lock = Pool(sys.argv[1]).lock("holder-test")
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_is_exclusive_across_processes_and_released_by_sigkill(pool: Pool) -> None:
    holder = python(HOLDER, str(pool.directory))
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(PoolLockedError) as exc_info:
            pool.lock()
        message = str(exc_info.value)
        assert exc_info.value.exit_code == 75
        assert f"locked by pid {holder.pid} on {socket.gethostname()}" in message
        assert "(holder-test); try again later" in message
        info = pool.lock_holder()
        assert info is not None and info["pid"] == holder.pid and info["command"] == "holder-test"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    # The kernel dropped the lock with the process: no stale-lock cleanup, no waiting.
    assert pool.lock_holder() is None  # even though the dead holder's info is still in the file
    with pool.lock("after-kill", wait=0):
        info = pool.lock_holder()
        assert info is not None and info["pid"] == os.getpid() and info["command"] == "after-kill"


RACER = """
import sys, time
from selfinstruct.errors import PoolLockedError
from selfinstruct.pool.directory import Pool
pool, lock = Pool(sys.argv[1]), None
for command in sys.stdin:
    name, _, arg = command.strip().partition(" ")
    if name == "try":
        while time.time() < float(arg):
            pass
        try:
            lock = pool.lock("race", wait=0)
            print("won", flush=True)
        except PoolLockedError:
            print("lost", flush=True)
    elif name == "release":
        if lock is not None:
            lock.release()
            lock = None
        print("released", flush=True)
"""


def test_exactly_one_of_two_racing_processes_gets_the_lock(pool: Pool) -> None:
    racers = [python(RACER, str(pool.directory)) for _ in range(2)]
    try:
        for _ in range(20):
            start = time.time() + 0.03  # both spin until the same instant, then try
            for racer in racers:
                assert racer.stdin is not None
                racer.stdin.write(f"try {start}\n")
                racer.stdin.flush()
            results = sorted(racer.stdout.readline().strip() for racer in racers if racer.stdout)
            assert results == ["lost", "won"]
            for racer in racers:
                assert racer.stdin is not None and racer.stdout is not None
                racer.stdin.write("release\n")
                racer.stdin.flush()
                assert racer.stdout.readline().strip() == "released"
    finally:
        for racer in racers:
            racer.kill()
            racer.wait()


def test_lock_holder_and_holder_info(pool: Pool) -> None:
    assert pool.lock_holder() is None  # no lock file yet
    with pool.lock("generate") as lock:
        assert pool.locked and lock.held
        info = pool.lock_holder()
        assert info == lock.info
        assert set(info) == {"pid", "hostname", "started_at", "command"}
        assert "T" in info["started_at"]
        assert json.loads(pool.lock_path.read_text()) == info
    assert not pool.locked and not lock.held
    assert pool.lock_holder() is None
    assert pool.lock_path.read_bytes() == b""  # info erased on release
    lock.release()  # idempotent


def test_second_lock_in_the_same_process(pool: Pool) -> None:
    with pool.lock():
        with pytest.raises(PoolError, match="already locked by this process"):
            pool.lock()
        with pytest.raises(PoolLockedError, match=f"pid {os.getpid()}"):
            Pool(pool.directory).lock(wait=0)


def test_holder_without_info_is_another_process(pool: Pool) -> None:
    pool.directory.mkdir()
    fd = os.open(pool.lock_path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a holder that has not written its info yet
        with pytest.raises(PoolLockedError, match=r"is locked by another process; try again later"):
            pool.lock(wait=0)
        assert pool.lock_holder() == {}
    finally:
        os.close(fd)


def test_lock_waits_out_a_status_probe(pool: Pool) -> None:
    pool.directory.mkdir()
    fd = os.open(pool.lock_path, os.O_RDONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a slow `status` probe, released after 30 ms
    timer = threading.Timer(0.03, os.close, args=(fd,))
    timer.start()
    try:
        with pool.lock(wait=2.0):  # generous, for a loaded CI machine; the probe ends after 30 ms
            assert pool.locked
    finally:
        timer.join()


# -- append --------------------------------------------------------------------------------------


def test_writers_need_the_lock(pool: Pool) -> None:
    for write in (
        lambda: pool.append([numbered_task(0)]),
        lambda: pool.append_run({"accepted": 1}),
        lambda: pool.append_rejected([{"reject_reason": "too_short"}]),
        lambda: pool.write_config({"model": "m"}),
    ):
        with pytest.raises(PoolError, match="needs the lock"):
            write()
    assert not pool.directory.exists()


def test_enospc_mid_write_leaves_the_file_byte_identical(locked: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    locked.append([numbered_task(i) for i in range(3)])
    before = locked.tasks_path.read_bytes()
    calls = []

    def nearly_full_disk(fd: int, data: memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return os.write(fd, data[: len(data) // 2])  # a short write: what fitted
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pool_mod, "_write", nearly_full_disk)
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

    monkeypatch.setattr(pool_mod, "_fsync", failing_fsync)
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

    monkeypatch.setattr(pool_mod, "_write", interrupted)
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
import selfinstruct.pool.directory
from selfinstruct.pool.directory import Pool
chunk = int(sys.argv[2])
if chunk:  # a slow disk taking short writes: a wide window for the kill to land mid-round

    def slow_write(fd, data):
        time.sleep(0.0002)
        return os.write(fd, data[:chunk])

    selfinstruct.pool.directory._write = slow_write
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


# -- ledger, rejected, config, numbering ---------------------------------------------------------


def test_run_ledger_roundtrip_and_torn_last_line(locked: Pool) -> None:
    assert locked.read_runs() == []
    locked.append_run({"run": 1, "accepted": 10, "model": "ünï"})
    locked.append_run({"run": 2, "accepted": 0})
    with locked.runs_path.open("ab") as fh:
        fh.write(b'{"run": 3, "acc')  # killed while writing the ledger
    before = locked.runs_path.read_bytes()
    assert [r["run"] for r in Pool(locked.directory).read_runs()] == [1, 2]
    assert locked.runs_path.read_bytes() == before  # readers never write
    locked.append_run({"run": 4})  # starts on a fresh line
    reader = Pool(locked.directory)
    assert [r["run"] for r in reader.read_runs()] == [1, 2, 4]
    assert reader.warnings == [f"{locked.runs_path}: skipped 1 unreadable line"]


def test_rejected_counts(locked: Pool) -> None:
    assert locked.read_rejected_counts() == {}
    locked.append_rejected([{"instruction": "a", "reject_reason": "too_short"}])
    locked.append_rejected(
        [{"instruction": "b", "reject_reason": "too_similar"}, {"instruction": "c", "reject_reason": "too_short"}]
    )
    locked.append_rejected([{"instruction": "d"}])
    locked.append_rejected([])
    with locked.rejected_path.open("ab") as fh:
        fh.write(b'{"instruction": "e", "reject_rea')
    assert locked.read_rejected_counts() == {"too_short": 2, "too_similar": 1, "unknown": 1}


def test_rejected_write_failure_is_a_warning(locked: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    locked.append_rejected([{"reject_reason": "too_long"}])
    before = locked.rejected_path.read_bytes()

    def full(fd: int, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pool_mod, "_write", full)
    locked.append_rejected([{"reject_reason": "too_short"}])
    assert locked.rejected_path.read_bytes() == before
    assert "No space left on device" in locked.warnings[-1]


def test_config_roundtrip(pool: Pool) -> None:
    assert pool.read_config() is None
    config = {"model": "meta-llama/Llama-3.1-8B", "seed": 0, "thresholds": [0.7, 3], "note": "ü"}
    with pool.lock():
        pool.write_config(config)
    assert pool.read_config() == config
    assert not list(pool.directory.glob(".config.json.*"))
    pool.config_path.write_text("{oops")
    with pytest.raises(PoolError, match=r"config\.json:1: not valid JSON"):
        pool.read_config()


def test_compare_configs() -> None:
    stored = {"model": "A", "prompts_hash": "p1", "seeds_hash": "s1", "seed": 1, "stops": ["\n"]}
    assert compare_configs(stored, dict(stored, seed=2)) == []
    assert compare_configs(stored, dict(stored, model="B", seeds_hash="s2")) == [
        "model: stored 'A', now 'B'",
        "seeds_hash: stored 's1', now 's2'",
    ]
    assert compare_configs(stored, {"model": "A", "prompts_hash": "p1"}) == ["seeds_hash: stored 's1', now (not set)"]
    assert compare_configs(stored, dict(stored, stops=("\n",), seed=5), keys=("stops", "seed")) == []
    assert compare_configs({}, {}) == []


def test_next_index() -> None:
    def ids(*names: str) -> list[Task]:
        return [Task("x", id=name) for name in names]

    assert Pool.next_index([]) == 0
    assert Pool.next_index(ids("seed_task_0", "seed_task_7")) == 0
    assert Pool.next_index(ids("machine_task_000000", "machine_task_000003", "machine_task_000001")) == 4
    assert Pool.next_index(ids("machine_task_12x", "machine_task_", "machine_task_1234567")) == 1234568
    assert machine_task_id(42) == "machine_task_000042"
