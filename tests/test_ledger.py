"""Tests for selfinstruct.pool.ledger: the run ledger runs.jsonl (round trip, a torn last line skipped by
readers and not glued onto by the next run)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from selfinstruct.pool.directory import Pool


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return Pool(tmp_path / "pool")


@pytest.fixture
def locked(pool: Pool) -> Iterator[Pool]:
    with pool.lock("test"):
        yield pool


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
