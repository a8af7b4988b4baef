"""``selfinstruct status``: a read-only report on a pool directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfinstruct.errors import PoolError
from selfinstruct.pool.directory import Pool
from selfinstruct.views.status import pool_status


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


def test_status_counts_judgements(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selfinstruct.cli import app
    from selfinstruct.pool.task import Instance, Task
    from selfinstruct.protocol.judge import Judgement, with_judgement

    tasks = [Task(f"Describe item {i} in plain words.", [Instance("", "x")], False, f"machine_task_{i:06d}")
             for i in range(4)]  # fmt: skip
    tasks[0] = with_judgement(tasks[0], Judgement(5, "", "m", "r", "t"))
    pool = Pool(tmp_path / "pool")
    with pool.lock():
        pool.append(tasks)
        pool.append_judgements(
            [
                {"id": t.id, "instruction": t.instruction, **Judgement(s, "", "m", "r", "t").to_dict()}
                for t, s in ((tasks[1], 2), (tasks[2], None))
            ]
        )
    judged = pool_status(pool.directory)["judged"]
    assert judged == {"judged": 3, "scored": 2, "mean_score": 3.5, "scores": {"2": 1, "5": 1}}
    result = CliRunner().invoke(app, ["status", str(pool.directory)])
    assert "judged: 3 of 4 tasks, 2 with a score (mean 3.50; 2:1 5:1)" in result.output


def test_status_without_judgements(tmp_path: Path) -> None:
    pool = Pool(tmp_path / "pool")
    with pool.lock():
        pool.append_run({"run_id": "r1"})
    assert pool_status(pool.directory)["judged"] == {"judged": 0, "scored": 0, "mean_score": None, "scores": {}}


def test_status_explains_every_reason_note_and_exit(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selfinstruct.cli import app

    pool = Pool(tmp_path / "pool")
    with pool.lock():
        pool.append_run({"run_id": "r1", "exit_reason": "max_rounds", "accepted": 1, "candidates": 6,
                         "rejected": {"one_label": 4}, "notes": {"over_limit": 3, "duplicate_instance": 2},
                         "surplus": {"surplus": 1}, "target": 10})  # fmt: skip
        pool.append_run({"run_id": "r2", "exit_reason": "time_limit", "notes": {"over_limit": 1, "bad": "x"}})
    report = pool_status(pool.directory)
    assert report["notes"] == {"over_limit": 4, "duplicate_instance": 2} and report["surplus"] == {"surplus": 1}
    assert set(report["explained"]) == {"one_label", "over_limit", "duplicate_instance", "surplus", "max_rounds",
                                        "time_limit"}  # fmt: skip
    result = CliRunner().invoke(app, ["status", str(pool.directory)])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert "note over_limit: 4 (an instance beyond max_instances (default 5) was dropped)" in lines
    assert "rejected one_label: 4 (a classification task whose instances all carry the same label)" in lines
    assert "exit time_limit: --time-limit passed; requests in flight were cancelled, finished tasks kept" in lines
    assert any(line.startswith("not used surplus: 1 (a finished task beyond") for line in lines)
