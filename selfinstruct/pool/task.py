"""The task record and its file formats.

One record type, :class:`Task`, flows through the whole library; raw dicts exist only where files are read
or written. Three on-disk shapes are understood:

* the **seed schema** of the Self-Instruct repository, one task per JSONL line::

      {"id": "seed_task_0", "name": "...", "instruction": "...", "is_classification": false,
       "instances": [{"input": "", "output": "..."}]}

  Machine-generated tasks use the same schema plus provenance fields (``source``, ``round``, ...), which
  are kept in :attr:`Task.meta` and written back unchanged;
* **Alpaca** records (``instruction``, ``input``, ``output``), as JSONL or one JSON array: each record is a
  task with one instance;
* anything else with an ``instruction`` field, for ``selfinstruct filter`` (see :func:`read_records`).

Errors name the file, the line (for JSONL; the array index for a JSON array) and the field.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import jsonlines

from selfinstruct.errors import InputError
from selfinstruct.pool.inputs import read_bounded
from selfinstruct.pool.jsontext import JSONProblem, decode_utf8
from selfinstruct.pool.jsontext import loads as json_loads

_dumps = functools.partial(json.dumps, ensure_ascii=False)

# Fields of the seed schema; anything else on a record is provenance and goes to Task.meta.
_CORE_FIELDS = ("id", "name", "instruction", "instances", "is_classification")


@dataclass(frozen=True, slots=True)
class Instance:
    """One input/output example of a task. ``input`` is "" when the instruction is self-contained."""

    input: str
    output: str

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "output": self.output}


@dataclass(slots=True)
class Task:
    """An instruction with its instances.

    ``is_classification`` is None until known (Alpaca records do not say). ``meta`` holds every other
    field of the record: for machine tasks the provenance written by the bootstrap loop.
    """

    instruction: str
    instances: list[Instance] = field(default_factory=list)
    is_classification: bool | None = None
    id: str = ""
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_machine(self) -> bool:
        return self.meta.get("source") == "machine"

    def to_record(self) -> dict[str, Any]:
        """The seed-schema dict, core fields first, then ``meta`` in its own order."""
        record: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "instruction": self.instruction,
            "instances": [inst.to_dict() for inst in self.instances],
            "is_classification": self.is_classification,
        }
        record.update(self.meta)
        return record

    def to_alpaca(self) -> list[dict[str, str]]:
        """One Alpaca record (``instruction``, ``input``, ``output``) per instance."""
        return [
            {"instruction": self.instruction, "input": inst.input, "output": inst.output} for inst in self.instances
        ]


def _require_str(record: dict[str, Any], key: str, path: object, line: int, *, allow_empty: bool) -> str:
    if key not in record:
        raise InputError(path, line, f"missing field {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise InputError(path, line, f"field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InputError(path, line, f"field {key!r} is empty")
    return value


def task_from_record(record: Any, path: object = "<record>", line: int = 0) -> Task:
    """Build a :class:`Task` from a seed-schema or Alpaca record; raise :class:`InputError` on bad fields."""
    if not isinstance(record, dict):
        raise InputError(path, line, f"expected a JSON object, got {type(record).__name__}")
    instruction = _require_str(record, "instruction", path, line, allow_empty=False).strip()

    if "instances" in record:
        raw_instances = record["instances"]
        if not isinstance(raw_instances, list):
            raise InputError(path, line, "field 'instances' must be a list of {input, output} objects")
        instances = []
        for i, raw in enumerate(raw_instances):
            if not isinstance(raw, dict):
                raise InputError(path, line, f"instances[{i}] must be an object with 'input' and 'output'")
            inp = raw.get("input", "")
            if not isinstance(inp, str):
                raise InputError(path, line, f"instances[{i}].input must be a string")
            out = raw.get("output")
            if not isinstance(out, str):
                raise InputError(path, line, f"instances[{i}].output is missing or not a string")
            instances.append(Instance(inp, out))
        meta = {k: v for k, v in record.items() if k not in _CORE_FIELDS}
    elif "output" in record:  # Alpaca
        inp = record.get("input", "")
        if inp is None:
            inp = ""
        if not isinstance(inp, str):
            raise InputError(path, line, "field 'input' must be a string")
        out = _require_str(record, "output", path, line, allow_empty=True)
        instances = [Instance(inp, out)]
        meta = {k: v for k, v in record.items() if k not in (*_CORE_FIELDS, "input", "output")}
    else:
        raise InputError(path, line, "record has neither 'instances' (seed schema) nor 'output' (Alpaca)")

    is_clf = record.get("is_classification")
    if is_clf is not None and not isinstance(is_clf, bool):
        raise InputError(path, line, "field 'is_classification' must be true, false or absent")
    task_id = record.get("id", "")
    name = record.get("name", "")
    return Task(
        instruction=instruction,
        instances=instances,
        is_classification=is_clf,
        id=str(task_id) if task_id is not None else "",
        name=str(name) if name is not None else "",
        meta=meta,
    )


def read_text_file(path: str | os.PathLike[str], *, limit: int | None = None, what: str = "a data file") -> str:
    """The text of a file the user named, or :class:`InputError` saying plainly why it cannot be read.

    Read by :func:`selfinstruct.pool.inputs.read_bounded`: at most ``limit`` bytes (default: the data-file limit,
    ``SELFINSTRUCT_MAX_INPUT_MB``), and never from a device such as ``/dev/zero``."""
    p = Path(path)
    data = read_bounded(p, limit=limit, what=what)
    try:
        return decode_utf8(data)
    except JSONProblem as exc:
        raise InputError(p, None, str(exc)) from None


def read_records(path: str | os.PathLike[str], *, errors: list[InputError] | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for every record of a JSONL file or a JSON array file.

    JSONL is the default; a file whose first non-blank character is ``[`` is read as one JSON array, and the
    "line" is then the 1-based index in the array. Blank lines are skipped. Every value goes through
    :func:`selfinstruct.pool.jsontext.loads` (limits on nesting, huge numbers, lone surrogates). A line that is
    not acceptable JSON raises :class:`InputError` naming the line, or, when ``errors`` is a list, is
    appended to it and skipped (JSONL only: a broken array has no next record).
    """
    p = Path(path)
    text = read_text_file(p)

    if text.lstrip().startswith("["):
        try:
            data = json_loads(text)
        except JSONProblem as exc:
            raise InputError(p, exc.line, str(exc)) from None
        if not isinstance(data, list):
            raise InputError(p, None, "expected a JSON array of records")
        yield from enumerate(data, start=1)
        return

    # Only "\n" ends a line: str.splitlines() would also split on U+2028, U+0085, ... which JSON written
    # with ensure_ascii=False (write_jsonl_atomic) holds raw inside strings.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json_loads(line)
        except JSONProblem as exc:
            error = InputError(p, lineno, str(exc))
            if errors is None:
                raise error from None
            errors.append(error)
            continue
        yield lineno, value


def load_tasks(path: str | os.PathLike[str], *, what: str = "task file") -> list[Task]:
    """Read every task of a seed-schema or Alpaca file. Raises :class:`InputError` if the file holds none."""
    tasks = [task_from_record(rec, path, line) for line, rec in read_records(path)]
    if not tasks:
        raise InputError(path, None, f"the {what} holds no tasks")
    return tasks


#: The most characters one seed task may hold (instruction, inputs and outputs together): each seed is a
#: demonstration in prompts, so a 10 MB seed would cost millions of prompt tokens per request. The
#: paper's 175 seeds hold at most ~2,000. SELFINSTRUCT_MAX_SEED_CHARS overrides it.
MAX_SEED_CHARS = 20_000
SEED_CHARS_ENV = "SELFINSTRUCT_MAX_SEED_CHARS"


def max_seed_chars() -> int:
    """:data:`MAX_SEED_CHARS`, or ``SELFINSTRUCT_MAX_SEED_CHARS`` when that is a positive integer."""
    raw = os.environ.get(SEED_CHARS_ENV, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else MAX_SEED_CHARS


def seed_chars(task: Task) -> int:
    """How many characters a seed task adds to a prompt: its instruction and every input and output."""
    return len(task.instruction) + sum(len(i.input) + len(i.output) for i in task.instances)


def load_seed_tasks(path: str | os.PathLike[str]) -> list[Task]:
    """Load seed tasks and give each an id and name if it lacks them (Alpaca seeds have neither).

    A seed larger than :func:`max_seed_chars` is refused, naming its line."""
    limit = max_seed_chars()
    tasks = []
    for line, rec in read_records(path):
        task = task_from_record(rec, path, line)
        if seed_chars(task) > limit:
            raise InputError(
                path, line, f"this seed task holds {seed_chars(task):,} characters, more than the {limit:,} "
                f"allowed (every seed is a demonstration in prompts); set {SEED_CHARS_ENV} to raise the limit"
            )  # fmt: skip
        tasks.append(task)
    if not tasks:
        raise InputError(path, None, "the seed file holds no tasks")
    for i, task in enumerate(tasks):
        if not task.id:
            task.id = f"seed_task_{i}"
        if not task.name:
            task.name = f"seed_task_{i}"
        task.meta.setdefault("source", "seed")
    return tasks


@contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[TextIO]:
    """Open a temporary file beside ``path`` for writing; on success fsync it and rename it into place.

    A crash or an exception inside the ``with`` block leaves ``path`` as it was, and no temporary file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    """Write records as JSONL, atomically (see :func:`atomic_writer`). Returns the number written."""
    count = 0
    with atomic_writer(path) as fh, jsonlines.Writer(fh, dumps=_dumps) as writer:
        for record in records:
            writer.write(record)
            count += 1
    return count


def write_json_atomic(path: str | os.PathLike[str], value: Any) -> None:
    """Write one JSON value (an array of records, a config), atomically."""
    with atomic_writer(path) as fh:
        json.dump(value, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
