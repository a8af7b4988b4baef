"""Cron-grade behaviour of ``selfinstruct generate`` as real processes: kill -9 at any moment, overlapping
runs, SIGTERM. The model is the loopback server, slowed down so that the kills land mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakelm import FakeLM
from paperlm import PaperLM
from seedsets import write_seeds

from selfinstruct.pool.directory import Pool

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
pytestmark = pytest.mark.slow


def start(lm: FakeLM, seeds: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    """A run with few requests in flight, so that tasks are committed (and kills land) throughout the run."""
    cmd = [
        sys.executable, "-m", "selfinstruct", "generate", "--base-url", lm.base_url, "--seeds", str(seeds),
        "--out", str(out), "--prompts", str(PROMPTS), "--batch-size", "2", "--concurrency", "4", "--window", "8",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def check_pool(out: Path) -> list[dict[str, Any]]:
    """The pool file is valid JSONL with no duplicate id or instruction (after the writer's own repair)."""
    raw = (out / "tasks.jsonl").read_text(encoding="utf-8") if (out / "tasks.jsonl").exists() else ""
    lines = [line for line in raw.split("\n") if line]
    tasks = []
    for line in lines[:-1]:  # every line but a possibly torn last one must parse
        tasks.append(json.loads(line))
    if lines:
        try:
            tasks.append(json.loads(lines[-1]))
        except json.JSONDecodeError:
            assert not raw.endswith("\n"), "a complete last line must be valid JSON"
    assert len({t["id"] for t in tasks}) == len(tasks)
    assert len({t["instruction"].lower() for t in tasks}) == len(tasks)
    return tasks


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    return write_seeds(tmp_path / "seeds.jsonl")


def test_kill_9_at_several_moments_then_resume_reaches_target(seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    with FakeLM(respond=PaperLM(), delay=0.03) as lm:
        for moment in (0.0, 0.07, 0.13, 0.2, 0.31):
            size = _size(out / "tasks.jsonl")
            proc = start(lm, seeds, out, "--num-instructions", "400")
            # Kill mid-run whatever the machine's load: once this run has written, at varying offsets.
            deadline = time.monotonic() + 60
            while _size(out / "tasks.jsonl") <= size and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
            time.sleep(moment)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            check_pool(out)
        # The next run repairs a torn tail (if any), continues the numbering and reaches the target.
        before = len(Pool(out).read_tasks())
        assert before > 0, "the kills should land after some rounds were written"
        proc = start(lm, seeds, out, "--num-instructions", str(before + 12))
        output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    tasks = check_pool(out)
    assert len(tasks) == before + 12
    numbers = [int(t["id"].rsplit("_", 1)[1]) for t in tasks]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert (out / "tasks.jsonl").read_text().endswith("\n")


def test_overlapping_runs_exactly_one_writes(seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    # Slow enough that the winner still holds the lock when the loser starts (each run takes 2+ rounds).
    with FakeLM(respond=PaperLM(), delay=0.15) as lm:
        for attempt in range(6):
            target = 8 * (attempt + 1)
            procs = [start(lm, seeds, out, "--num-instructions", str(target)) for _ in range(2)]
            results = [(p.wait(timeout=120), p.stdout.read() if p.stdout else "") for p in procs]
            codes = sorted(code for code, _ in results)
            assert codes == [0, 75], results
            locked = next(text for code, text in results if code == 75)
            assert "locked by pid" in locked
            assert len(check_pool(out)) == target
    runs = Pool(out).read_runs()
    assert len(runs) == 6 and all(r["exit_reason"] == "target_reached" for r in runs)


def test_sigterm_finishes_cleanly_and_is_recorded(seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    with FakeLM(respond=PaperLM(), delay=0.05) as lm:
        proc = start(lm, seeds, out, "--num-instructions", "100000")  # a target it cannot reach first
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _size(out / "tasks.jsonl") == 0:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "selfinstruct generate: terminated;" in output
    (run,) = Pool(out).read_runs()
    assert run["exit_reason"] == "terminated"
    assert len(check_pool(out)) == run["pool_after"] == run["accepted"]
