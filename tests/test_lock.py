"""Tests for selfinstruct.pool.lock: the flock-based single-writer lock across processes (exclusive, released
by SIGKILL, raced by two processes), the holder information and the probe readers use."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from poolkit import python

from selfinstruct.errors import PoolError, PoolLockedError
from selfinstruct.pool.directory import Pool


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return Pool(tmp_path / "pool")


@pytest.fixture
def locked(pool: Pool) -> Iterator[Pool]:
    with pool.lock("test"):
        yield pool


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
