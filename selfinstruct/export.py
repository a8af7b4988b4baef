"""Export a pool to the record formats fine-tuning tools read: Alpaca, ShareGPT, or our seed schema.

Reads ``tasks.jsonl`` without taking the pool's lock (appends are whole lines, so a reader sees whole
rounds; a torn last line from a crashed writer is skipped, not repaired: repairing is the writer's job).
The output is written to a temporary file and renamed into place.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selfinstruct.errors import ConfigError
from selfinstruct.pool import Pool
from selfinstruct.task import Task, load_seed_tasks, write_json_atomic, write_jsonl_atomic

FORMATS = ("alpaca", "sharegpt", "seed")


def _records(tasks: list[Task], fmt: str) -> Iterator[dict[str, Any]]:
    for task in tasks:
        if fmt == "seed":
            yield task.to_record()
            continue
        for rec in task.to_alpaca():
            if fmt == "alpaca":
                yield rec
            else:
                prompt = rec["instruction"] + (f"\n\n{rec['input']}" if rec["input"] else "")
                yield {
                    "id": task.id,
                    "conversations": [
                        {"from": "human", "value": prompt},
                        {"from": "gpt", "value": rec["output"]},
                    ],
                }


def export_pool(
    directory: str | Path, output: str | Path, *, fmt: str = "alpaca", include_seeds: str | Path | None = None
) -> int:
    """Write the pool (and optionally a seed file's tasks first) to ``output``; return the record count."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    tasks = load_seed_tasks(include_seeds) if include_seeds else []
    tasks += Pool(directory).read_tasks()
    records = list(_records(tasks, fmt))
    out = Path(output)
    if out.suffix == ".json":
        write_json_atomic(out, records)
        return len(records)
    return write_jsonl_atomic(out, records)
