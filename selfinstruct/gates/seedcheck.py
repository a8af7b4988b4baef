"""``selfinstruct seeds check``: validate a seed file and describe it, before GPU hours are spent on it.

Problems (the file is invalid, exit non-zero) are collected over the whole file rather than stopping at
the first, each with ``file:line``: records that do not parse, missing or empty fields, duplicate ids,
names or instructions, classification tasks whose outputs do not look like a small label set. A file
``generate`` accepts is never invalid here: Alpaca records (no id, name or is_classification) get a
warning that says what ``generate`` does with them.
Warnings (the file is usable) point at seeds the generation filters would reject and at near-duplicate
instructions. The statistics say what the bootstrap will be shown: share of classification tasks and of
tasks with an input, instruction lengths, the most common leading words, and the most similar pairs.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputError
from selfinstruct.gates.filters import InstructionHeuristics
from selfinstruct.gates.novelty import NoveltyIndex
from selfinstruct.pool.task import Task, read_records, task_from_record

# A classification task's outputs are labels: few distinct values, each short.
MAX_LABELS = 10
MAX_LABEL_WORDS = 5
NEAR_DUPLICATE = 0.7  # the novelty threshold of the generation loop


@dataclass
class Finding:
    line: int | None
    message: str

    def render(self, path: str) -> str:
        return f"{path}:{self.line}: {self.message}" if self.line is not None else f"{path}: {self.message}"


@dataclass
class SeedReport:
    path: str
    tasks: int = 0
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    classification: int = 0
    with_input: int = 0
    instances: int = 0
    length_words: dict[str, float] = field(default_factory=dict)
    leading_words: list[tuple[str, int]] = field(default_factory=list)
    distinct_leading_words: int = 0
    similar_pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["problems"] = [f.render(self.path) for f in self.problems]
        data["warnings"] = [f.render(self.path) for f in self.warnings]
        data["leading_words"] = [{"word": w, "count": n} for w, n in self.leading_words]
        return data


def _label_problem(task: Task) -> str | None:
    outputs = [inst.output.strip() for inst in task.instances]
    distinct = set(outputs)
    if len(distinct) > MAX_LABELS:
        return f"classification task with {len(distinct)} distinct outputs: labels should be a small set"
    long = [o for o in distinct if len(o.split()) > MAX_LABEL_WORDS]
    if long:
        return f"classification task whose output {long[0][:40]!r} is not a short label"
    return None


def _count_lines(lines: list[int]) -> str:
    first = ", ".join(str(n) for n in lines[:3]) + (", ..." if len(lines) > 3 else "")
    return f"{len(lines)} record{'s' if len(lines) != 1 else ''} (line{'s' if len(lines) != 1 else ''} {first}) have"


def check_seed_file(path: str | Path, *, top_pairs: int = 10) -> SeedReport:
    """Validate and describe ``path``. Only an unreadable file raises; everything else is in the report."""
    report = SeedReport(path=str(path))
    tasks: list[tuple[int, Task]] = []
    unnamed: list[int] = []  # lines without an id or a name: generate names them seed_task_<n>
    unmarked: list[int] = []  # lines without is_classification: generate treats them as "not classification"
    bad_lines: list[InputError] = []
    try:
        for line, record in read_records(path, errors=bad_lines):
            try:
                task = task_from_record(record, path, line)
            except InputError as exc:
                report.problems.append(Finding(line, exc.problem))
                continue
            tasks.append((line, task))
            if record.get("id") in (None, "") or record.get("name") in (None, ""):
                unnamed.append(line)
            if record.get("is_classification") is None:
                unmarked.append(line)
    except InputError as exc:  # the file cannot be read, or a JSON array that does not parse
        report.problems.append(Finding(exc.line, exc.problem))
    report.problems.extend(Finding(exc.line, exc.problem) for exc in bad_lines)
    report.problems.sort(key=lambda f: f.line or 0)
    # Alpaca records (instruction, input, output) are valid seeds for generate: say what it will do with them.
    if unnamed:
        report.warnings.append(
            Finding(None, f"{_count_lines(unnamed)} no id or name; generate names them seed_task_<n> by position")
        )
    if unmarked:
        report.warnings.append(
            Finding(
                None,
                f"{_count_lines(unmarked)} no is_classification; generate treats them as not classification "
                "(instances input-first)",
            )
        )
    report.tasks = len(tasks)
    if not tasks:
        if not report.problems:
            report.problems.append(Finding(None, "the seed file holds no tasks"))
        return report

    seen: dict[str, dict[str, int]] = {"id": {}, "name": {}, "instruction": {}}
    heuristics = InstructionHeuristics()
    for line, task in tasks:
        for key, value in (("id", task.id), ("name", task.name), ("instruction", task.instruction.lower())):
            if not value:
                continue
            if value in seen[key]:
                report.problems.append(Finding(line, f"duplicate {key}: same as line {seen[key][value]}"))
            else:
                seen[key][value] = line
        if not task.instances:
            report.problems.append(Finding(line, "no instances"))
        for i, inst in enumerate(task.instances):
            if not inst.output.strip():
                report.problems.append(Finding(line, f"instances[{i}].output is empty"))
        if task.is_classification:
            problem = _label_problem(task)
            if problem:
                report.problems.append(Finding(line, problem))
        reason = heuristics(task.instruction)
        if reason is not None:
            message = f"the generation filters would reject this instruction ({reason})"
            report.warnings.append(Finding(line, message))

    only = [t for _, t in tasks]
    report.classification = sum(bool(t.is_classification) for t in only)
    report.with_input = sum(any(i.input.strip() for i in t.instances) for t in only)
    report.instances = sum(len(t.instances) for t in only)
    lengths = sorted(len(t.instruction.split()) for t in only)
    report.length_words = {
        "min": lengths[0],
        "median": statistics.median(lengths),
        "p90": lengths[min(len(lengths) - 1, int(0.9 * len(lengths)))],
        "max": lengths[-1],
    }
    leading = Counter(t.instruction.split()[0].strip(",.:;!?\"'").lower() for t in only)
    report.distinct_leading_words = len(leading)
    report.leading_words = leading.most_common(10)

    # Most similar pairs: each instruction against those before it, with the exact ROUGE-L index.
    index = NoveltyIndex(top_k=1, report_floor=0.0)  # exact nearest neighbour, whatever its score
    pairs: list[dict[str, Any]] = []
    for line, task in tasks:
        if len(index):
            result = index.query(task.instruction)
            if result.top:
                best = result.top[0]
                pairs.append({"line": line, "instruction": task.instruction, "similar_to": best.instruction,
                              "score": round(best.score, 4)})  # fmt: skip
        index.add(task.instruction)
    pairs.sort(key=lambda p: -p["score"])
    report.similar_pairs = pairs[:top_pairs]
    for pair in pairs:
        if pair["score"] > NEAR_DUPLICATE:
            message = f"near-duplicate of {pair['similar_to'][:60]!r} (ROUGE-L {pair['score']:.2f})"
            report.warnings.append(Finding(pair["line"], message))
    return report
