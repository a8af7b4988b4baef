"""A rating sheet for people: the paper's human check of generated tasks, drawn and read back.

The Self-Instruct paper rated 200 random tasks, one random instance each, with three yes/no questions
(:data:`selfinstruct.views.quality.QUESTION_TEXT`) and reported four shares: valid instruction, valid input,
valid output, all three valid. :func:`draw_sheet` draws a seeded sample of ``n`` tasks and, for each, picks
one instance to rate (seeded too); the sheet shows every instance for context. It is written twice, with
the same rows:

* ``rating_sheet.csv`` for a spreadsheet: one row per task; ``rate_instance`` (1-based) says which
  instance the input and output questions are about; the answer columns ``valid_instruction``,
  ``valid_input`` and ``valid_output`` are left empty for ``yes`` or ``no``.
* ``rating_sheet.jsonl`` for tools: the same, with the instances as a list and the answers under
  ``answers``: ``{"instruction": null, "input": null, "output": null}``.

:func:`read_ratings` reads either file back once filled in (``yes``/``no``/``y``/``n``/``true``/
``false``/``1``/``0``, empty or ``?`` for unanswered) and gives the four shares with Wilson 95%
intervals. Anything else in an answer cell is an :class:`InputError` naming the file, line and field.

Scope: the sheet's rows and their reading; the CLI writes the files.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputError
from selfinstruct.pool.task import Task
from selfinstruct.views.quality import QUESTION_TEXT, QUESTIONS, all_valid, proportion

SHEET_SCHEMA = "selfinstruct-rating-sheet/1"
ANSWER_COLUMNS = {q: f"valid_{q}" for q in QUESTIONS}
_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0"}
_BLANK = {"", "?", "-"}


def draw_sheet(tasks: Sequence[Task] | Callable[[], Iterable[Task]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` tasks (all if fewer) drawn with ``random.Random(seed)``, each with one instance to rate.

    ``tasks``: the tasks, or a function that streams them (called twice: once to count, once to pick the
    drawn ones), so that a pool of any size needs memory for the ``n`` drawn tasks only. Both give the
    same sheet."""
    total = len(tasks) if isinstance(tasks, Sequence) else sum(1 for _ in tasks())
    rng = random.Random(seed)
    picks = sorted(rng.sample(range(total), min(n, total)))
    if isinstance(tasks, Sequence):
        drawn = {k: tasks[k] for k in picks}
    else:
        wanted = set(picks)
        drawn = {k: task for k, task in enumerate(tasks()) if k in wanted}
    rows = []
    for k in picks:
        task = drawn[k]
        rate = rng.randrange(len(task.instances)) + 1 if task.instances else 0
        rows.append(
            {
                "schema": SHEET_SCHEMA,
                "task_id": task.id,
                "instruction": task.instruction,
                "is_classification": task.is_classification,
                "instances": [i.to_dict() for i in task.instances],
                "rate_instance": rate,
                "questions": dict(QUESTION_TEXT),
                "answers": {q: None for q in QUESTIONS},
            }
        )
    return rows


def sheet_jsonl(rows: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def sheet_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    most = max((len(r["instances"]) for r in rows), default=0)
    head = ["task_id", "instruction", "is_classification", "rate_instance"]
    head += [f"{side}_{k}" for k in range(1, most + 1) for side in ("input", "output")]
    head += list(ANSWER_COLUMNS.values())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for r in rows:
        cells = [r["task_id"], r["instruction"], {True: "yes", False: "no"}.get(r["is_classification"], ""),
                 r["rate_instance"]]  # fmt: skip
        for k in range(most):
            inst = r["instances"][k] if k < len(r["instances"]) else {"input": "", "output": ""}
            cells += [inst["input"], inst["output"]]
        cells += [{True: "yes", False: "no"}.get(r["answers"][q], "") for q in QUESTIONS]
        writer.writerow(cells)
    # The questions, as a last comment-like row would break spreadsheets: they go in the header's names
    # (valid_instruction ...) and in the JSONL; the CSV stays one row per task.
    return buf.getvalue()


def _answer(value: Any, path: Path, line: int, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().casefold()
    if text in _YES:
        return True
    if text in _NO:
        return False
    if text in _BLANK:
        return None
    shown = str(value)[:40]
    raise InputError(path, line, f"field {field!r}: {shown!r} is not an answer (yes, no, or empty)")


def _read_rows(path: Path) -> list[tuple[int, str, dict[str, bool | None]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"cannot read the rating sheet: {exc}") from None
    out: list[tuple[int, str, dict[str, bool | None]]] = []
    if path.suffix.lower() in (".jsonl", ".json") or text.lstrip().startswith("{"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, number, f"not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("task_id"), str):
                raise InputError(path, number, "field 'task_id': missing (a line of rating_sheet.jsonl has one)")
            answers = record.get("answers")
            if not isinstance(answers, dict):
                raise InputError(path, number, "field 'answers': missing or not an object")
            said = {q: _answer(answers.get(q), path, number, f"answers.{q}") for q in QUESTIONS}
            out.append((number, record["task_id"], said))
        return out
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("task_id", *ANSWER_COLUMNS.values()) if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(path, 1, f"missing column(s) {', '.join(missing)} (the header rating_sheet.csv has)")
    for row in reader:
        number = reader.line_num
        task_id = (row.get("task_id") or "").strip()
        if not task_id:
            raise InputError(path, number, "field 'task_id': empty")
        out.append((number, task_id, {q: _answer(row.get(c), path, number, c) for q, c in ANSWER_COLUMNS.items()}))
    return out


def read_ratings(path: str | Path, known_ids: set[str] | None = None) -> dict[str, Any]:
    """The paper's four shares from a filled sheet (CSV or JSONL), with Wilson 95% intervals.

    A question counts the rows that answer it; "all three" counts rows with a "no" or three answers. Rows naming
    a task the pool does not hold (``known_ids``) are counted apart and left out; a task rated twice
    counts once (the last row)."""
    file = Path(path)
    rows = _read_rows(file)
    latest: dict[str, dict[str, bool | None]] = {}
    unknown = 0
    for _, task_id, answers in rows:
        if known_ids is not None and task_id not in known_ids:
            unknown += 1
            continue
        latest[task_id] = answers
    answers_list = list(latest.values())
    out: dict[str, Any] = {"path": str(file), "rows": len(rows), "tasks": len(latest), "unknown_tasks": unknown}
    for q in QUESTIONS:
        said = [a[q] for a in answers_list if a[q] is not None]
        out[q] = proportion(sum(1 for x in said if x), len(said))
    out["all"] = all_valid(answers_list)
    out["unanswered"] = sum(1 for a in answers_list if all(a[q] is None for q in QUESTIONS))
    return out
