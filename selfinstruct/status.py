"""What ``selfinstruct status`` reports about a pool directory, as one JSON-ready dict.

Reads only: never takes the pool's lock, never repairs a file. The acceptance rate of a run is accepted
tasks over candidate instructions parsed from the model's output in that run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from selfinstruct.errors import PoolError
from selfinstruct.pool import Pool


def pool_status(directory: str | Path, *, last_runs: int = 10) -> dict[str, Any]:
    pool = Pool(directory)
    if not pool.directory.is_dir():
        raise PoolError(f"{pool.directory}: no such pool directory")
    tasks = pool.read_tasks()
    runs = pool.read_runs()
    rejected: Counter[str] = Counter()
    for run in runs:
        rejected.update(run.get("rejected") or {})
    recent = []
    for run in runs[-last_runs:]:
        candidates = int(run.get("candidates") or 0)
        accepted = int(run.get("accepted") or 0)
        recent.append(
            {
                key: run.get(key)
                for key in (
                    "run_id",
                    "started_at",
                    "ended_at",
                    "seconds",
                    "exit_reason",
                    "error",
                    "model",
                    "seed",
                    "rounds",
                    "accepted",
                    "candidates",
                    "pool_before",
                    "pool_after",
                    "prompt_tokens",
                    "completion_tokens",
                )
            }
            | {"acceptance_rate": accepted / candidates if candidates else 0.0}
        )
    stored = pool.read_config() or {}
    target = runs[-1].get("target") if runs else (stored.get("config") or {}).get("num_instructions")
    return {
        "directory": str(pool.directory),
        "pool_size": len(tasks),
        "target": target,
        "model": stored.get("model"),
        "lock_holder": pool.lock_holder(),
        "runs_total": len(runs),
        "runs": recent,
        "rejected": dict(rejected.most_common()),
        "rejected_logged": pool.read_rejected_counts(),
    }
