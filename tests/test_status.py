"""``selfinstruct status``: a read-only report on a pool directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfinstruct.errors import PoolError
from selfinstruct.pool import Pool
from selfinstruct.status import pool_status


def test_status_of_a_pool_with_runs(tmp_path: Path) -> None:
    pool = Pool(tmp_path / "pool")
    with pool.lock():
        pool.append_run({"run_id": "r1", "exit_reason": "max_rounds", "accepted": 3, "candidates": 12,
                         "rejected": {"too_similar": 5, "too_short": 4}, "target": 50})  # fmt: skip
        pool.append_run({"run_id": "r2", "exit_reason": "saturated", "accepted": 0, "candidates": 0,
                         "rejected": {"too_similar": 2}, "target": 50})  # fmt: skip
        report = pool_status(pool.directory)
        assert report["lock_holder"] is not None and report["lock_holder"]["pid"]
    report = pool_status(pool.directory, last_runs=1)
    assert report["lock_holder"] is None
    assert report["pool_size"] == 0 and report["target"] == 50 and report["runs_total"] == 2
    assert [r["run_id"] for r in report["runs"]] == ["r2"]
    assert report["runs"][0]["acceptance_rate"] == 0.0
    assert report["rejected"] == {"too_similar": 7, "too_short": 4}
    full = pool_status(pool.directory)
    assert full["runs"][0]["acceptance_rate"] == 0.25


def test_status_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(PoolError, match="no such pool directory"):
        pool_status(tmp_path / "nope")
