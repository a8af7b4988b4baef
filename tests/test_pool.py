"""Tests for selfinstruct.pool.directory: the Pool door (writers need the lock, a round trip through load and
append), rejected counts, the configuration and task numbering. The lock, the journal and the ledger have
their own files (test_lock, test_journal, test_ledger)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from poolkit import line, numbered_task

import selfinstruct.pool.journal as journal_mod
from selfinstruct.errors import PoolError
from selfinstruct.pool.directory import Pool, compare_configs, machine_task_id
from selfinstruct.pool.task import Task


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return Pool(tmp_path / "pool")


@pytest.fixture
def locked(pool: Pool) -> Iterator[Pool]:
    with pool.lock("test"):
        yield pool


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

    monkeypatch.setattr(journal_mod, "_write", full)
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
