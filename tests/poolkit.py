"""Helpers for the tests of the pool directory (test_pool, test_journal, test_lock, test_ledger): a numbered
test task that the test process and its subprocesses agree on, its JSONL line, and a Python subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from selfinstruct.pool.task import Task

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
