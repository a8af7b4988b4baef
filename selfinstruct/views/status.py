"""What ``selfinstruct status`` reports about a pool directory, as one JSON-ready dict.

Reads only: never takes the pool's lock, never repairs a file. A damaged pool is still shown: bad lines of
``tasks.jsonl`` and an unreadable ``config.json`` become entries of ``warnings`` instead of an error. The
acceptance rate of a run is accepted tasks over candidate instructions parsed from the model's output.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from selfinstruct.errors import PoolError
from selfinstruct.pool.directory import Pool
from selfinstruct.protocol.judge import effective_judgements, read_sidecar_records
from selfinstruct.views.glossary import explain


def _count(value: Any) -> int:
    """A count from a ledger line that another tool may have written: anything but an int counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _seconds(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def pool_status(directory: str | Path, *, last_runs: int = 10) -> dict[str, Any]:
    pool = Pool(directory)
    if not pool.directory.is_dir():
        what = "is a file, not a pool directory" if pool.directory.exists() else "no such pool directory"
        raise PoolError(f"{pool.directory}: {what}")
    runs = pool.read_runs()
    rejected: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    surplus: Counter[str] = Counter()
    for run in runs:
        for key, total in (("rejected", rejected), ("notes", notes), ("surplus", surplus)):
            counts = run.get(key)
            if isinstance(counts, dict):
                total.update({str(k): _count(v) for k, v in counts.items() if _count(v)})
    recent = []
    for run in runs[-last_runs:]:
        candidates = _count(run.get("candidates"))
        accepted = _count(run.get("accepted"))
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
            | {
                "acceptance_rate": accepted / candidates if candidates else 0.0,
                "seconds": _seconds(run.get("seconds")),
            }
        )
    try:
        stored = pool.read_config() or {}
    except PoolError as exc:
        pool.warnings.append(str(exc))
        stored = {}
    config = stored.get("config")
    config = config if isinstance(config, dict) else {}
    target = runs[-1].get("target") if runs else config.get("num_instructions")
    # The tasks stream through once (a pool of a million tasks is counted in bounded memory): each is
    # counted and its effective judgement (the sidecar's, else the record's) tallied, nothing kept.
    sidecar, _ = read_sidecar_records(pool.iter_judgements())
    pool_size = judged = 0
    scores: Counter[float] = Counter()
    for task in pool.iter_tasks():
        pool_size += 1
        (judgement,) = effective_judgements([task], sidecar).judgements
        if judgement is not None:
            judged += 1
            if judgement.score is not None:
                scores[judgement.score] += 1
    scored = sum(scores.values())
    return {
        "directory": str(pool.directory),
        "pool_size": pool_size,
        "target": target,
        "model": stored.get("model"),
        "lock_holder": pool.lock_holder(),
        "runs_total": len(runs),
        "runs": recent,
        "rejected": dict(rejected.most_common()),
        "notes": dict(notes.most_common()),
        "surplus": dict(surplus.most_common()),
        # what each name shown above means (selfinstruct.views.glossary)
        "explained": {
            name: explain(name)
            for name in sorted({*rejected, *notes, *surplus, *(str(r.get("exit_reason")) for r in recent)})
        },
        "rejected_logged": pool.read_rejected_counts(),
        "judged": {
            "judged": judged,
            "scored": scored,
            "mean_score": sum(k * v for k, v in scores.items()) / scored if scored else None,
            "scores": {str(k): scores[k] for k in sorted(scores)},
        },
        "warnings": list(pool.warnings),
    }
