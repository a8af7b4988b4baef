"""``selfinstruct filter``: the generation loop's instruction filters applied to a file of candidates.

Candidates are taken in file order. Each goes through the heuristic filters (unless disabled), then the
ROUGE-L novelty check against every instruction of the ``--against`` files and every candidate kept
before it; it is rejected when F > threshold. Kept records are written unchanged, in input order;
rejected ones get ``reject_reason`` and, for novelty, ``most_similar`` and ``similarity``. Both outputs
are written to a temporary file and renamed, so a failure leaves nothing half-written.

Records may be in any schema with an ``instruction`` string (seed schema, Alpaca, ShareGPT-like
exports with an extra field): other fields are kept untouched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputError
from selfinstruct.filters import TOO_SIMILAR, InstructionHeuristics
from selfinstruct.novelty import NoveltyIndex
from selfinstruct.task import read_records, write_json_atomic, write_jsonl_atomic

Progress = Callable[[int, int], None]
"""``progress(done, total)`` after each chunk of candidates."""

CHUNK = 2048
DEFAULT_HEURISTICS = InstructionHeuristics()


@dataclass
class FilterResult:
    total: int = 0
    kept: int = 0
    against: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def read_instructions(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """Records of a JSONL or JSON-array file, each checked for a non-empty ``instruction`` string.

    A pool directory stands for its ``tasks.jsonl``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "tasks.jsonl"
    records = []
    for line, record in read_records(p):
        if not isinstance(record, dict):
            raise InputError(p, line, f"expected a JSON object, got {type(record).__name__}")
        instruction = record.get("instruction")
        if not isinstance(instruction, str):
            problem = "missing field" if instruction is None else "not a string in field"
            raise InputError(p, line, f"{problem} 'instruction'")
        if not instruction.strip():
            raise InputError(p, line, "field 'instruction' is empty")
        records.append((line, record))
    return records


def _write(path: Path, records: Sequence[dict[str, Any]]) -> None:
    if path.suffix == ".json":
        write_json_atomic(path, list(records))
    else:
        write_jsonl_atomic(path, records)


def filter_file(
    source: str | Path,
    out: str | Path,
    *,
    rejected_out: str | Path | None = None,
    against: Sequence[str | Path] = (),
    threshold: float = 0.7,
    heuristics: InstructionHeuristics | None = DEFAULT_HEURISTICS,
    progress: Progress | None = None,
) -> FilterResult:
    """Filter ``source`` into ``out`` (and ``rejected_out``). Pass ``heuristics=None`` for novelty only."""
    # Read and validate everything before writing anything.
    candidates = read_instructions(source)
    reference = [rec["instruction"] for path in against for _, rec in read_instructions(path)]
    result = FilterResult(total=len(candidates), against=len(reference))
    index = NoveltyIndex(reference, threshold=threshold, top_k=3)

    kept: list[dict[str, Any]] = []
    rejected: list[tuple[int, dict[str, Any]]] = []  # (position in the input, record) to restore file order
    for start in range(0, len(candidates), CHUNK):
        chunk = list(enumerate((rec for _, rec in candidates[start : start + CHUNK]), start=start))
        survivors: list[tuple[int, dict[str, Any]]] = []
        for position, record in chunk:
            reason = heuristics(record["instruction"]) if heuristics is not None else None
            if reason is None:
                survivors.append((position, record))
            else:
                rejected.append((position, {**record, "reject_reason": reason}))
                result.rejected[reason] += 1
        # In file order: each survivor against the reference and every candidate kept before it.
        scores = index.filter_batch([r["instruction"] for _, r in survivors], add=True)
        for (position, record), res in zip(survivors, scores, strict=True):
            if res.max_score > threshold:
                top = res.top[0] if res.top else None
                rejected.append(
                    (
                        position,
                        {
                            **record,
                            "reject_reason": TOO_SIMILAR,
                            "most_similar": top.instruction if top else None,
                            "similarity": res.max_score,
                        },
                    )
                )
                result.rejected[TOO_SIMILAR] += 1
            else:
                kept.append(record)  # survivors come in file order, so kept stays in file order
        if progress is not None:
            progress(min(start + CHUNK, len(candidates)), len(candidates))

    rejected.sort(key=lambda pair: pair[0])
    _write(Path(out), kept)
    if rejected_out is not None:
        _write(Path(rejected_out), [record for _, record in rejected])
    result.kept = len(kept)
    return result
