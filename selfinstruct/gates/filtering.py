"""``selfinstruct filter``: the generation loop's instruction filters applied to a file of candidates.

Candidates are taken in file order. Each goes through the heuristic filters (unless disabled), then the
ROUGE-L novelty check against every instruction of the ``--against`` files and every candidate kept
before it; it is rejected when F > threshold. Kept records are written unchanged, in input order;
rejected ones get ``reject_reason`` and, for novelty, ``most_similar`` and ``similarity``. Both outputs
are written to a temporary file and renamed, so a failure leaves nothing half-written.

Records may be in any schema with an ``instruction`` string (seed schema, Alpaca, ShareGPT-like
exports with an extra field): other fields are kept untouched. A record without a usable instruction is
rejected with a reason (``empty_instruction``, ``no_instruction``, ``not_an_object``) and the run goes on;
only a file in which no record has an instruction at all is refused, as the wrong file.

The outputs are staged as temporary files beside their targets and renamed into place only when every
one of them was written, so a full disk, a read-only directory or an unwritable ``--rejected`` leaves
every existing file as it was. An output that names the input (or an ``--against`` file) is refused.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.errors import ConfigError, InputError, OutputError
from selfinstruct.gates.filters import TOO_SIMILAR, InstructionHeuristics
from selfinstruct.gates.novelty import NoveltyIndex
from selfinstruct.pool.outputs import Target, check_output, open_output
from selfinstruct.pool.task import read_records

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


EMPTY_INSTRUCTION = "empty_instruction"
NO_INSTRUCTION = "no_instruction"
NOT_AN_OBJECT = "not_an_object"


def _candidate_problem(record: Any) -> str | None:
    """Why a record cannot be filtered (a reject reason), or None when it has a usable instruction."""
    if not isinstance(record, dict):
        return NOT_AN_OBJECT
    instruction = record.get("instruction")
    if not isinstance(instruction, str):
        return NO_INSTRUCTION
    if not instruction.strip():
        return EMPTY_INSTRUCTION
    return None


def _source_path(path: str | Path) -> Path:
    """A pool directory stands for its ``tasks.jsonl``."""
    p = Path(path)
    if not p.is_dir():
        return p
    if not (p / "tasks.jsonl").is_file():
        raise InputError(p, None, "is a directory, not a file, and holds no tasks.jsonl (so it is not a pool)")
    return p / "tasks.jsonl"


def read_instructions(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """The records of a JSONL or JSON-array file that have a non-empty ``instruction`` string.

    A pool directory stands for its ``tasks.jsonl``. Records without one are left out; a file in which
    no record has an ``instruction`` string raises :class:`InputError` naming the first record.
    """
    p = _source_path(path)
    records = list(read_records(p))
    _require_some_instruction(p, records)
    return [(line, rec) for line, rec in records if _candidate_problem(rec) is None]


def _require_some_instruction(path: Path, records: list[tuple[int, Any]]) -> None:
    if not records or any(_candidate_problem(rec) in (None, EMPTY_INSTRUCTION) for _, rec in records):
        return
    line, first = records[0]
    if not isinstance(first, dict):
        problem = f"expected a JSON object, got {type(first).__name__}"
    else:
        value = first.get("instruction")
        problem = "missing field 'instruction'" if value is None else "not a string in field 'instruction'"
    raise InputError(path, line, f"{problem}, and no record of the file has one: is this the right file?")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _check_outputs(source: Path, against: Sequence[Path], outputs: Sequence[tuple[str, Path]]) -> list[Target]:
    """Refuse outputs that would overwrite an input, a pool file or each other, or that cannot be files
    (:func:`selfinstruct.pool.outputs.check_output`); a FIFO or ``/dev/stdout`` is written into."""
    targets = []
    for flag, out in outputs:
        for what, inp in [("the input", source)] + [("an --against file", a) for a in against]:
            if _same_file(out, inp):
                raise OutputError(f"{flag} {out} is {what}: filtering a file into itself would destroy it")
        if out.is_dir():
            raise OutputError(f"{flag} {out} is a directory; name a .jsonl or .json file")
        targets.append(check_output(out, flag=flag, inputs=[source, *against], stream_ok=True))
    if len(outputs) == 2 and _same_file(outputs[0][1], outputs[1][1]):
        raise OutputError(f"--out and --rejected name the same file {outputs[0][1]}")
    return targets


def _dump(fh: Any, path: Path, records: Sequence[Any]) -> None:
    if path.suffix == ".json":
        json.dump(list(records), fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    else:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def _stage(path: Path, records: Sequence[Any]) -> str:
    """Write ``records`` to a temporary file beside ``path`` (fsynced, mode 0666 & ~umask); return its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            _dump(fh, path, records)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # like any file the user creates: readable by a training job
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _write_outputs(outputs: Sequence[tuple[str, Target, Sequence[Any]]]) -> None:
    """Stage every output file, then rename them all into place: each file is whole, and none is replaced
    unless every one could be written. A stream (FIFO, ``/dev/stdout``) is written last, directly."""
    staged: list[tuple[str, Path]] = []
    try:
        for flag, target, records in outputs:
            if target.stream:
                continue
            path = target.real
            try:
                staged.append((_stage(path, records), path))
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise OutputError(f"cannot write {flag} {path}: {reason}; no output file was changed") from None
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for flag, target, records in outputs:
        if target.stream:
            with open_output(target, flag=flag) as fh:
                _dump(fh, target.path, records)


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
    check_threshold(threshold)
    source_path = _source_path(source)
    against_paths = [_source_path(a) for a in against]
    outputs = [("--out", Path(out))] + ([("--rejected", Path(rejected_out))] if rejected_out is not None else [])
    targets = _check_outputs(source_path, against_paths, outputs)
    # Read and validate everything before writing anything.
    records = list(read_records(source_path))
    _require_some_instruction(source_path, records)
    reference = [rec["instruction"] for path in against_paths for _, rec in read_instructions(path)]
    result = FilterResult(total=len(records), against=len(reference))
    index = NoveltyIndex(reference, threshold=threshold, top_k=3)

    rejected: list[tuple[int, Any]] = []  # (position in the input, record) to restore file order
    candidates: list[tuple[int, dict[str, Any]]] = []
    for position, (_, record) in enumerate(records):
        problem = _candidate_problem(record)
        if problem is None:
            candidates.append((position, record))
            continue
        shown = {**record, "reject_reason": problem} if isinstance(record, dict) else {"record": record}
        shown.setdefault("reject_reason", problem)
        rejected.append((position, shown))
        result.rejected[problem] += 1

    kept: list[dict[str, Any]] = []
    for start in range(0, len(candidates), CHUNK):
        chunk = candidates[start : start + CHUNK]
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
    written: list[tuple[str, Target, Sequence[Any]]] = [("--out", targets[0], kept)]
    if rejected_out is not None:
        written.append(("--rejected", targets[1], [record for _, record in rejected]))
    _write_outputs(written)
    result.kept = len(kept)
    return result


def check_threshold(threshold: float) -> None:
    """The ROUGE-L threshold must be a finite number in [0, 1] (F is a share)."""
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ConfigError(f"--threshold must be between 0 and 1 (a ROUGE-L F score), got {threshold!r}")
