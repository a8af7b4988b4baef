"""Export a pool as a dataset that fine-tuning tools load as they are.

Scope: read a pool (and optionally its seed tasks), select and order the examples (duplicates, one record
per instance or per task, a seeded train/validation split, shuffling), shape each example as a record of
one *format*, and write the records in one *container*, together with ready-made dataset entries for
LLaMA-Factory and Axolotl. It never takes the pool's lock and never writes inside the pool.

Formats (what one record looks like):

* ``messages``: ``{"id", "messages": [system?, user, assistant]}``, roles ``system``/``user``/``assistant``:
  TRL's conversational language-modeling type, the shape most chat templates and trainers expect;
* ``prompt-completion``: ``{"id", "prompt": [system?, user], "completion": [assistant]}``: TRL's
  conversational prompt-completion type, so the loss can fall on the completion only;
* ``openai``: ``{"messages": [...]}`` and nothing else: OpenAI's fine-tuning JSONL for chat models;
* ``alpaca``: ``{"instruction", "input", "output"}`` (plus ``"system"`` when a system prompt is given);
* ``sharegpt``: ``{"id", "conversations": [{"from": "system"?}, {"from": "human"}, {"from": "gpt"}]}``;
* ``seed``: the seed schema with every instance and the provenance fields (one record per task), so a pool
  can seed another run.

Judge scores. Scores given after the fact by ``selfinstruct judge`` live in the pool's ``judgements.jsonl``;
export merges them into each task (the ``judge`` field of a ``seed`` export) and ``min_score`` keeps only the
machine tasks whose judge scored them at least that (tasks without a score are left out too, and counted).
Seed tasks, written by people, are never judged and never dropped by it.

The user turn. Every chat format builds the user message from a task's instruction and an instance's
input by one rule: the instruction alone when the input is empty, else the instruction, a newline, and
the input (``"{instruction}\\n{input}"``). That is also how LLaMA-Factory joins an Alpaca record's
``instruction`` and ``input``, so one pool gives byte-identical prompts whichever format is exported.
``UserTurn`` holds the two templates; both can be replaced (``--template``, ``--template-no-input``). An
``alpaca`` export keeps ``instruction`` and ``input`` apart, as the format defines, unless a template is
given: then ``instruction`` holds the rendered user turn and ``input`` is empty, so a trainer's own join
cannot change it.

Containers: ``.jsonl`` (one record per line), ``.json`` (one array), ``.parquet``, or a directory written
with Hugging Face ``datasets``' ``save_to_disk`` (a ``DatasetDict`` with ``train`` and, when split,
``validation``). A file name without a suffix means the ``datasets`` directory; ``container`` overrides the
name. With a validation split, ``out.jsonl`` becomes ``out.train.jsonl`` and ``out.validation.jsonl``.

Safety: every output (data files, ``dataset_info.json``, the Axolotl block) is first written to a temporary
name beside its target and renamed into place only when all of them are complete, so a failure (read-only
directory, full disk, a value Parquet cannot hold) leaves no partial file and no stray temporary. Outputs
get the permissions of an ordinary new file (``0666`` less the umask), not the ``0600`` of a temporary file.
pyarrow and datasets are imported only when a Parquet, ``datasets`` or hub export asks for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.errors import ConfigError, InputError, OutputError, SelfInstructError
from selfinstruct.paths import default_seeds_path
from selfinstruct.pool.directory import (
    CONFIG_FILE,
    JUDGEMENTS_FILE,
    LOCK_FILE,
    REJECTED_FILE,
    RUNS_FILE,
    TASKS_FILE,
    Pool,
)
from selfinstruct.pool.inputs import read_bounded
from selfinstruct.pool.outputs import check_output, directory_lock, open_output
from selfinstruct.pool.task import Instance, Task, load_seed_tasks
from selfinstruct.protocol.judge import (
    JUDGE_FIELD,
    LOW_SCORE,
    effective_judgements,
    passes,
    read_sidecar_records,
    with_judgement,
)
from selfinstruct.protocol.judge import SCALE as JUDGE_SCALE
from selfinstruct.redact import redact, redact_value

FORMATS = ("messages", "prompt-completion", "openai", "alpaca", "sharegpt", "seed")
CONTAINERS = ("jsonl", "json", "parquet", "hf")
PER = ("instance", "task")
SPLITS = ("train", "validation")

_SUFFIX_CONTAINER = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
_CONTAINER_SUFFIX = {"jsonl": ".jsonl", "json": ".json", "parquet": ".parquet", "hf": ""}
_POOL_FILES = (TASKS_FILE, REJECTED_FILE, RUNS_FILE, CONFIG_FILE, LOCK_FILE, JUDGEMENTS_FILE)

DEFAULT_TEMPLATE = "{instruction}\n{input}"
DEFAULT_TEMPLATE_NO_INPUT = "{instruction}"

# OpenAI's fine-tuning API refuses a training file with fewer examples than this.
OPENAI_MIN_EXAMPLES = 10

#: The most bytes read from an existing dataset_info.json (LLaMA-Factory's own holds ~100 entries in ~30 KB).
INFO_LIMIT_BYTES = 64_000_000

#: Exports stream the pool (bounded memory); False loads it whole (the tests compare the two).
STREAM = True
#: Records per Parquet row group and per Arrow record batch of a streamed export.
BATCH_RECORDS = 10_000

_INSTALL_HINT = "install it with: pip install 'selfinstruct[export]'"


class ExportOutputError(OutputError):
    """An output of ``export`` cannot be written (a directory in the way, no permission, a full disk).
    Exit 73 (EX_CANTCREAT), as every output that cannot be written (:mod:`selfinstruct.pool.outputs`)."""


class HubPushError(SelfInstructError):
    """Uploading to the Hugging Face Hub failed; the local export is complete. Exit 3: a remote service."""

    exit_code = 3


# --------------------------------------------------------------------------------------------- the user turn


@dataclass(frozen=True, slots=True)
class UserTurn:
    """The one rule that turns (instruction, input) into the user message, the same in every format.

    ``template`` is used when the input is non-empty, ``template_no_input`` when it is empty. Only the
    placeholders ``{instruction}`` and ``{input}`` are replaced; any other brace is kept as written::

        >>> UserTurn().render("Translate to French.", "Good morning")
        'Translate to French.\\nGood morning'
        >>> UserTurn("{instruction}\\n\\nInput: {input}").render("Sort the list.", "3, 1, 2")
        'Sort the list.\\n\\nInput: 3, 1, 2'
    """

    template: str = DEFAULT_TEMPLATE
    template_no_input: str = DEFAULT_TEMPLATE_NO_INPUT

    def __post_init__(self) -> None:
        if "{instruction}" not in self.template or "{input}" not in self.template:
            raise ConfigError(f"--template must contain {{instruction}} and {{input}}; got {self.template!r}")
        if "{instruction}" not in self.template_no_input:
            raise ConfigError(f"--template-no-input must contain {{instruction}}; got {self.template_no_input!r}")
        if "{input}" in self.template_no_input:
            raise ConfigError("--template-no-input is used when the input is empty: it cannot contain {input}")

    @property
    def is_default(self) -> bool:
        return self.template == DEFAULT_TEMPLATE and self.template_no_input == DEFAULT_TEMPLATE_NO_INPUT

    def render(self, instruction: str, input: str) -> str:
        if not input:
            return self.template_no_input.replace("{instruction}", instruction)
        # One pass, so an instruction that itself contains "{input}" is not filled in.
        head, _, tail = self.template.partition("{instruction}")
        return head.replace("{input}", input) + instruction + tail.replace("{input}", input)


# ------------------------------------------------------------------------------------------------ options


@dataclass(slots=True)
class ExportOptions:
    """Everything ``export`` can be asked; the CLI fills it from flags, the library takes it as is."""

    fmt: str = "messages"
    container: str | None = None  # None: from the output's name
    system: str | None = None
    template: str | None = None
    template_no_input: str | None = None
    include_seeds: bool = False
    seeds: str | Path | None = None  # the seed file; None: the one the pool was made with
    per: str = "instance"
    dedup: bool = True
    validation_size: float = 0.0  # 0: no split; 0 < x < 1: a share of the tasks; an integer >= 1: a count
    shuffle: bool = False
    seed: int = 0
    trainer_configs: bool = True
    push_to_hub: str | None = None
    private: bool = False
    min_score: float | None = None  # keep machine tasks a judge scored at least this (see selfinstruct.protocol.judge)

    def check(self) -> None:
        """Raise :class:`ConfigError` for a value or a combination that cannot work, before reading anything."""
        if self.fmt not in FORMATS:
            raise ConfigError(f"unknown export format {self.fmt!r}: choose one of {', '.join(FORMATS)}")
        if self.container is not None and self.container not in CONTAINERS:
            raise ConfigError(f"unknown container {self.container!r}: choose one of {', '.join(CONTAINERS)}")
        if self.per not in PER:
            raise ConfigError(f"--per must be 'instance' or 'task', not {self.per!r}")
        v = self.validation_size
        if not math.isfinite(v) or v < 0 or (v >= 1 and not float(v).is_integer()):
            raise ConfigError(
                f"--validation-size must be a share of the tasks between 0 and 1 (0.1) or a whole number of "
                f"tasks (50), not {v:g}"
            )
        if self.fmt == "seed" and (self.template or self.template_no_input or self.system):
            raise ConfigError("--system and --template shape chat records; the seed format keeps tasks as they are")
        if self.system is not None and not self.system.strip():
            raise ConfigError("--system is empty: leave it out for no system prompt")
        if self.push_to_hub is not None and "/" not in self.push_to_hub.strip("/"):
            raise ConfigError(
                f"--push-to-hub takes a repository id such as 'user/my-dataset', not {self.push_to_hub!r}"
            )
        if self.min_score is not None and not (
            math.isfinite(self.min_score) and JUDGE_SCALE[0] <= self.min_score <= JUDGE_SCALE[1]
        ):
            raise ConfigError(
                f"--min-score must be on the judge's scale, {JUDGE_SCALE[0]} to {JUDGE_SCALE[1]}, "
                f"not {self.min_score:g}"
            )
        self.user_turn()  # validates the templates

    def user_turn(self) -> UserTurn:
        return UserTurn(self.template or DEFAULT_TEMPLATE, self.template_no_input or DEFAULT_TEMPLATE_NO_INPUT)


@dataclass(slots=True)
class ExportResult:
    """What was written. ``records`` counts records per split; ``files`` maps each split to its output."""

    files: dict[str, Path]
    records: dict[str, int]
    tasks: dict[str, int]
    container: str
    duplicates_dropped: int = 0
    below_min_score: int = 0  # machine tasks left out by --min-score: scored below it
    unscored: int = 0  # machine tasks left out by --min-score: no score (never judged, or unreadable reply)
    trainer_configs: list[Path] = field(default_factory=list)
    pushed_to: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.records.values())


# ---------------------------------------------------------------------------------------------- selection


@dataclass(slots=True)
class _Example:
    """One task with the instances that survive selection, each with its index in the task (for its id)."""

    task: Task
    instances: list[tuple[int, Instance]]


def _select(tasks: Sequence[Task], *, dedup: bool) -> tuple[list[_Example], int]:
    """Drop exact duplicate (instruction, input) pairs after their first occurrence; tasks left without an
    instance are dropped. Returns the examples and the number of instance pairs dropped."""
    seen: set[tuple[str, str]] = set()
    dropped = 0
    examples = []
    for task in tasks:
        kept = []
        for k, inst in enumerate(task.instances):
            key = (task.instruction.strip(), inst.input.strip())
            if dedup and key in seen:
                dropped += 1
                continue
            seen.add(key)
            kept.append((k, inst))
        if kept:
            examples.append(_Example(task, kept))
    return examples, dropped


def _validation_count(n_tasks: int, size: float) -> int:
    if size <= 0:
        return 0
    count = round(n_tasks * size) if size < 1 else int(size)
    count = max(count, 1)
    if count >= n_tasks:
        raise ConfigError(
            f"--validation-size {size:g} leaves no training data: the export holds {n_tasks} task"
            f"{'s' if n_tasks != 1 else ''} after de-duplication"
        )
    return count


def _split(examples: list[_Example], size: float, rng: random.Random) -> dict[str, list[_Example]]:
    """A seeded split by task, so no instruction is in both splits. Each split keeps the pool's order."""
    k = _validation_count(len(examples), size)
    if not k:
        return {"train": examples}
    chosen = set(rng.sample(range(len(examples)), k))
    return {
        "train": [e for i, e in enumerate(examples) if i not in chosen],
        "validation": [e for i, e in enumerate(examples) if i in chosen],
    }


# ------------------------------------------------------------------------------------------------ formats


class _Ids:
    """Record ids that are unique within one export, whatever ids the seed file used."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, base: str) -> str:
        candidate, n = base, 1
        while candidate in self.seen:
            n += 1
            candidate = f"{base}~{n}"
        self.seen.add(candidate)
        return candidate


def _records(examples: list[_Example], opts: ExportOptions, rng: random.Random, ids: _Ids) -> Iterator[dict[str, Any]]:
    turn = opts.user_turn()
    for position, ex in enumerate(examples):
        yield from _example_records(ex, position, opts, turn, rng, ids)


def _example_records(
    ex: _Example, position: int, opts: ExportOptions, turn: UserTurn, rng: random.Random, ids: _Ids
) -> Iterator[dict[str, Any]]:
    """The records of one example, the ``position``-th of its split."""
    fmt, system, task = opts.fmt, opts.system, ex.task
    task_id = task.id or f"task_{position}"
    if fmt == "seed":
        record = task.to_record()
        record["id"] = ids(task_id)
        record["instances"] = [inst.to_dict() for _, inst in ex.instances]
        yield record
        return
    chosen = [rng.choice(ex.instances)] if opts.per == "task" else ex.instances
    for k, inst in chosen:
        record_id = ids(task_id if opts.per == "task" else f"{task_id}-{k}")
        user = turn.render(task.instruction, inst.input)
        yield _shape(fmt, record_id, user, task, inst, system, turn.is_default)


def _shape(
    fmt: str, record_id: str, user: str, task: Task, inst: Instance, system: str | None, default_turn: bool
) -> dict[str, Any]:
    if fmt == "alpaca":
        record = (
            {"instruction": task.instruction, "input": inst.input, "output": inst.output}
            if default_turn
            else {"instruction": user, "input": "", "output": inst.output}
        )
        if system:
            record["system"] = system
        return record
    if fmt == "sharegpt":
        turns = [{"from": "system", "value": system}] if system else []
        turns += [{"from": "human", "value": user}, {"from": "gpt", "value": inst.output}]
        return {"id": record_id, "conversations": turns}
    head = [{"role": "system", "content": system}] if system else []
    prompt = [*head, {"role": "user", "content": user}]
    answer = [{"role": "assistant", "content": inst.output}]
    if fmt == "prompt-completion":
        return {"id": record_id, "prompt": prompt, "completion": answer}
    if fmt == "openai":
        return {"messages": prompt + answer}
    return {"id": record_id, "messages": prompt + answer}  # messages


# ---------------------------------------------------------------------------------------------- the input


def _load_pool(directory: Path, warnings: list[str]) -> list[Task]:
    _check_pool(directory)
    pool = Pool(directory)
    tasks = pool.read_tasks()
    warnings.extend(pool.warnings)
    return tasks


def _check_pool(directory: Path) -> None:
    if not directory.exists():
        raise InputError(directory, None, "no such pool directory")
    if not directory.is_dir():
        hint = "; pass the directory that holds it" if directory.name == TASKS_FILE else ""
        raise InputError(directory, None, f"not a pool directory (it is a file){hint}")
    if not (directory / TASKS_FILE).exists():
        raise InputError(
            directory, None, f"holds no {TASKS_FILE}: not a pool directory, or no round of a run has finished yet"
        )


def _judged(
    directory: Path, tasks: list[Task], min_score: float | None, warnings: list[str]
) -> tuple[list[Task], int, int]:
    """The tasks with their effective judgements merged in (``judgements.jsonl`` over the task records),
    those below ``min_score`` or without a score left out; and how many of each were left out."""
    pool = Pool(directory)
    sidecar, bad = read_sidecar_records(pool.iter_judgements())
    warnings.extend(pool.warnings)
    if bad:
        warnings.append(f"{pool.judgements_path}: skipped {bad} line(s) that are not judgements")
    merged = effective_judgements(tasks, sidecar)
    kept: list[Task] = []
    below = unscored = 0
    for task, judgement in zip(tasks, merged.judgements, strict=True):
        if judgement is not None and task.meta.get(JUDGE_FIELD) != judgement.to_dict():
            task = with_judgement(task, judgement)
        reason = passes(judgement, min_score)
        if reason == LOW_SCORE:
            below += 1
        elif reason is not None:
            unscored += 1
        else:
            kept.append(task)
    return kept, below, unscored


def _seed_file_of(directory: Path) -> Path:
    """The seed file a pool was made with: the last run's ``seeds`` option, if that file still has the
    fingerprint stored in the pool, else our default seeds if theirs matches. Raise when neither does."""
    from selfinstruct.pool.inputs import fingerprint as file_fingerprint

    pool = Pool(directory)
    runs = pool.read_runs()
    stored = (pool.read_config() or {}).get("seeds_hash") or (runs[-1].get("seeds_hash") if runs else None)
    candidates: list[Path] = []
    for run in reversed(runs):
        seeds = (run.get("config") or {}).get("seeds")
        if isinstance(seeds, str) and seeds:
            candidates.append(Path(seeds))
    candidates.append(default_seeds_path())
    for path in candidates:
        try:
            if path.is_file() and (stored is None or file_fingerprint(path) == stored):
                return path
        except (OSError, SelfInstructError):
            continue
    raise ConfigError(
        f"cannot tell which seed file {directory} was made with (none of {', '.join(map(str, candidates))} "
        "matches the fingerprint stored in the pool): pass it with --seeds PATH"
    )


# ---------------------------------------------------------------------------------------------- the output


def container_for(out: Path, container: str | None) -> str:
    """The container an output name asks for: ``.jsonl``/``.ndjson``, ``.json``, ``.parquet``, or no suffix
    (a ``datasets`` directory). ``container`` wins over the name."""
    if container is not None:
        return container
    suffix = out.suffix.lower()
    if suffix in _SUFFIX_CONTAINER:
        return _SUFFIX_CONTAINER[suffix]
    if out.exists() and not out.is_dir() and (not out.is_file() or str(out.absolute()).startswith(("/dev/", "/proc/"))):
        return "jsonl"  # /dev/stdout (a terminal, a pipe, or redirected to a file), a FIFO: a stream of records
    if not suffix or out.is_dir():
        return "hf"
    raise ConfigError(
        f"cannot tell the container from the name {str(out)!r}: end it in .jsonl, .json or .parquet, give a "
        "name without a suffix for a Hugging Face datasets directory, or pass --container"
    )


def _split_paths(out: Path, container: str, splits: Sequence[str]) -> dict[str, Path]:
    """Where each split goes: ``out`` itself without a split, else ``stem.train.jsonl`` and so on; the
    ``datasets`` directory holds every split itself."""
    if container == "hf" or list(splits) == ["train"]:
        return {s: out for s in splits}
    suffix = out.suffix if out.suffix.lower() in _SUFFIX_CONTAINER else _CONTAINER_SUFFIX[container]
    stem = out.name[: -len(out.suffix)] if out.suffix.lower() in _SUFFIX_CONTAINER else out.name
    return {s: out.with_name(f"{stem}.{s}{suffix}") for s in splits}


def _dataset_name(out: Path) -> str:
    return out.name[: -len(out.suffix)] if out.suffix.lower() in _SUFFIX_CONTAINER else out.name


def _check_output(out: Path, container: str, pool_dir: Path) -> None:
    # An output that is a pool file, the pool or an input is refused by selfinstruct.pool.outputs.check_output.
    if container != "hf" and out.is_dir():
        raise ExportOutputError(
            f"--out {out} is a directory: give a file name such as {out / ('train' + _CONTAINER_SUFFIX[container])}, "
            "or --container hf for a Hugging Face datasets directory"
        )
    if container == "hf" and out.exists():
        if not out.is_dir():
            raise ExportOutputError(f"--out {out} is a file; a Hugging Face datasets export is a directory")
        if any(out.iterdir()) and not (out / "dataset_dict.json").exists():
            raise ExportOutputError(
                f"--out {out} is a non-empty directory that is not a Hugging Face datasets export; refusing to "
                "replace it: choose a new or empty directory"
            )


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class _Staging:
    """Outputs written under temporary names beside their targets, renamed into place together.

    ``file(target)`` / ``directory(target)`` return a temporary path to fill; ``commit()`` gives each the
    permissions of an ordinary new file or directory and renames it over its target; ``discard()`` removes
    every temporary. Used as a context manager, an exception discards.
    """

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path, bool]] = []  # (temporary, target, is_directory)
        self.mask = _umask()

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.discard()

    def _parent(self, target: Path) -> Path:
        parent = target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportOutputError(f"cannot create the directory {parent}: {_reason(exc)}") from None
        return parent

    def file(self, target: Path) -> Path:
        parent = self._parent(target)
        try:
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        except OSError as exc:
            raise ExportOutputError(f"cannot write {target}: {_reason(exc)}") from None
        os.close(fd)
        self.staged.append((Path(name), target, False))
        return Path(name)

    def directory(self, target: Path) -> Path:
        parent = self._parent(target)
        try:
            name = tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        except OSError as exc:
            raise ExportOutputError(f"cannot write {target}: {_reason(exc)}") from None
        self.staged.append((Path(name), target, True))
        return Path(name)

    def commit(self) -> None:
        try:
            for tmp, _, is_dir in self.staged:
                os.chmod(tmp, (0o777 if is_dir else 0o666) & ~self.mask)
                if not is_dir:
                    with open(tmp, "rb") as fh:
                        os.fsync(fh.fileno())
        except OSError as exc:
            self.discard()
            raise ExportOutputError(f"cannot finish writing the export: {_reason(exc)}") from None
        try:
            for tmp, target, is_dir in self.staged:
                if is_dir and target.exists():
                    old = target.with_name(f".{target.name}.old-{os.getpid()}")
                    os.replace(target, old)
                    os.replace(tmp, target)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, target)
        except OSError as exc:
            self.discard()
            raise ExportOutputError(f"cannot move the export into place at {target}: {_reason(exc)}") from None
        self.staged.clear()

    def discard(self) -> None:
        for tmp, _, is_dir in self.staged:
            if is_dir:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        self.staged.clear()


def _write_guarded(target: Path, write: Callable[[], object]) -> None:
    try:
        write()
    except OSError as exc:
        raise ExportOutputError(f"cannot write {target}: {_reason(exc)}; nothing was written") from None


def _writer(container: str, path: Path, records: list[dict[str, Any]], fmt: str) -> Callable[[], None]:
    if container == "jsonl":
        return lambda: _write_jsonl(path, records)
    if container == "json":
        return lambda: _write_json(path, records)
    return lambda: _write_parquet(path, records, fmt)


def _dumps(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(_dumps(record))
            fh.write("\n")


def _write_json(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[\n" + ",\n".join(_dumps(r) for r in records) + ("\n]\n" if records else "]\n"))


def _columns(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with the union of all keys, missing ones as None (Arrow takes its columns from them all)."""
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    return [{k: r.get(k) for k in keys} for r in records]


def _import(name: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"{what} needs the {name.split('.')[0]} package: {_INSTALL_HINT}") from None


def _arrow_table(records: list[dict[str, Any]], fmt: str, schema: Any = None) -> Any:
    """An Arrow table of ``records``: its columns and types inferred from them all, or ``schema``'s (a record
    without one of its columns has None there; a record with a column it lacks is refused)."""
    pa = _import("pyarrow", "a Parquet or datasets export")
    try:
        if schema is None:
            return pa.Table.from_pylist(_columns(records))
        names = set(schema.names)
        for record in records:
            if not names.issuperset(record):
                raise pa.ArrowInvalid(f"columns {sorted(record)} differ from {sorted(names)}")
        return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in records], schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _unfit(exc, fmt) from None


def _unfit(exc: Exception, fmt: str) -> ConfigError:
    hint = " (the seed format's provenance fields vary from task to task: export it as .jsonl)" * (fmt == "seed")
    return ConfigError(f"these records do not fit a columnar table: {exc}{hint}")


def _write_parquet(path: Path, records: list[dict[str, Any]], fmt: str) -> None:
    pq = _import("pyarrow.parquet", "a Parquet export")
    pq.write_table(_arrow_table(records, fmt), path)


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Hide datasets' progress bars while we save or push (the library never prints), then restore them."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _dataset_dict(by_split: dict[str, list[dict[str, Any]]], fmt: str) -> Any:
    datasets = _import("datasets", "a Hugging Face datasets export")
    return datasets.DatasetDict(
        {split: datasets.Dataset(_arrow_table(records, fmt)) for split, records in by_split.items()}
    )


# ------------------------------------------------------------------------------------- trainer configs


def llamafactory_entry(fmt: str, file_name: str, *, system: bool = False) -> dict[str, Any] | None:
    """The ``dataset_info.json`` entry with which LLaMA-Factory reads one exported file, or None for a
    format it has no reader for (prompt-completion, seed). ``system``: the records carry a ``system`` field
    (an alpaca export with --system); LLaMA-Factory fails with ``KeyError: 'system'`` on a mapped column
    that the file does not have, so it is mapped only then."""
    if fmt in ("messages", "openai"):
        return {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant", "system_tag": "system"},
        }  # fmt: skip
    if fmt == "sharegpt":
        return {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                     "assistant_tag": "gpt", "system_tag": "system"},
        }  # fmt: skip
    if fmt == "alpaca":
        return {
            "file_name": file_name,
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"}
            | ({"system": "system"} if system else {}),
        }
    return None


_AXOLOTL_DS_TYPE = {"jsonl": "json", "json": "json", "parquet": "parquet"}


def axolotl_datasets(fmt: str, container: str, paths: dict[str, Path], *, system: bool = False) -> str | None:
    """An Axolotl ``datasets:`` block (and ``test_datasets:`` with a split) as YAML text, or None for a
    format Axolotl has no loader for (prompt-completion, seed).

    ``system``: the records carry a ``system`` field (an alpaca export with --system). Axolotl's ``type:
    alpaca`` never reads that field, so the block names its ``alpaca_w_system.load_instruct`` strategy
    instead: the same Alpaca instruction/input/response prompt, with a ``### System:`` section in front
    holding each record's ``system`` (that strategy requires the field, so it is named only then)."""
    if fmt in ("messages", "openai"):
        body = [
            "type: chat_template",
            "field_messages: messages",
            "message_property_mappings:",
            "  role: role",
            "  content: content",
            'roles_to_train: ["assistant"]',
        ]
    elif fmt == "sharegpt":
        body = [
            "type: chat_template",
            "field_messages: conversations",
            "message_property_mappings:",
            "  role: from",
            "  content: value",
            "roles:",
            '  system: ["system"]',
            '  user: ["human"]',
            '  assistant: ["gpt"]',
            'roles_to_train: ["assistant"]',
        ]
    elif fmt == "alpaca":
        body = ["type: alpaca_w_system.load_instruct" if system else "type: alpaca"]
    else:
        return None
    lines = [
        f"# Axolotl datasets for a `selfinstruct export --format {fmt}`; copy these keys into your Axolotl config.",
        "# Paths are absolute; edit them if you move the files.",
    ]
    for key, split in (("datasets", "train"), ("test_datasets", "validation")):
        if split not in paths:
            continue
        path = paths[split].resolve()
        lines.append(f"{key}:")
        lines.append(f"  - path: {json.dumps(str(path))}")
        if container == "hf":
            lines.append(f"    split: {split}")
        else:
            lines.append(f"    ds_type: {_AXOLOTL_DS_TYPE[container]}")
            lines.append("    split: train")
        lines.extend(f"    {line}" for line in body)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- export


def export_pool(
    directory: str | os.PathLike[str], output: str | os.PathLike[str], options: ExportOptions | None = None
) -> ExportResult:
    """Export the pool at ``directory`` to ``output`` as ``options`` say; see the module docstring.

    Raises :class:`InputError` (a missing pool, a bad seed file), :class:`ConfigError` (options),
    :class:`~selfinstruct.errors.OutputError` (an output that would replace an input or a pool file, or a
    device for a format that cannot be streamed), :class:`ExportOutputError` (an output that cannot be
    written; nothing is left half-written) and :class:`HubPushError` (the upload failed after the local
    files were written).
    """
    opts = options or ExportOptions()
    opts.check()
    pool_dir, out = Path(directory), Path(output)
    seed_path: Path | None = None
    if opts.include_seeds or opts.seeds is not None:
        seed_path = Path(opts.seeds) if opts.seeds is not None else _seed_file_of(pool_dir)
    inputs = [seed_path] if seed_path is not None else []
    # First of all, whatever the name says: never an input or a file of the pool.
    check_output(out, pools=[pool_dir], inputs=inputs, stream_ok=True, directory_ok=True)
    container = container_for(out, opts.container)
    warnings: list[str] = trainer_warnings(opts.fmt, container, system=opts.system is not None)
    if opts.push_to_hub:
        _require_hub_packages()  # before anything is read or written

    def check(path: Path, directory_ok: bool = False) -> Path:
        """Refuse a path that is an input or a pool file; the path to write (links followed)."""
        return check_output(path, pools=[pool_dir], inputs=inputs, directory_ok=directory_ok, fmt=path.name).real

    _check_output(out, container, pool_dir)
    first = check_output(
        out, pools=[pool_dir], inputs=inputs, stream_ok=container in ("jsonl", "json"),
        directory_ok=container == "hf", fmt=f"a {container} export",
    )  # fmt: skip
    if first.stream and opts.validation_size:
        raise ConfigError(f"--out {out} is a stream: a validation split needs file names (--out NAME.jsonl)")

    if STREAM:
        return _export_streaming(pool_dir, out, opts, container, first, seed_path, check, warnings)

    tasks = _load_pool(pool_dir, warnings)
    tasks, below, unscored = _judged(pool_dir, tasks, opts.min_score, warnings)
    if seed_path is not None:
        tasks = load_seed_tasks(seed_path) + tasks

    examples, dropped = _select(tasks, dedup=opts.dedup)
    del tasks
    if not examples and opts.min_score is not None and below + unscored:
        raise InputError(
            pool_dir, None, f"nothing to export: no task has a judge score of at least {opts.min_score:g} "
            f"({below} scored below it, {unscored} without a score; run `selfinstruct judge` first?)"
        )  # fmt: skip
    if not examples:
        raise InputError(pool_dir, None, "nothing to export: the pool holds no tasks yet")
    rng = random.Random(opts.seed)
    splits = _split(examples, opts.validation_size, rng)
    ids = _Ids()
    by_split: dict[str, list[dict[str, Any]]] = {}
    for name, part in splits.items():
        # Known secrets (an API key a judge's server echoed into a reply) never leave in an export.
        records = [redact_value(r) for r in _records(part, opts, random.Random(f"{opts.seed}:{name}"), ids)]
        if opts.shuffle:
            random.Random(f"{opts.seed}:shuffle:{name}").shuffle(records)
        by_split[name] = records
    if opts.fmt == "openai" and len(by_split["train"]) < OPENAI_MIN_EXAMPLES:
        warnings.append(
            f"OpenAI fine-tuning needs at least {OPENAI_MIN_EXAMPLES} training examples; this file has "
            f"{len(by_split['train'])}"
        )

    paths = _split_paths(out, container, list(by_split))
    result = ExportResult(
        files=paths,
        records={s: len(r) for s, r in by_split.items()},
        tasks={s: len(p) for s, p in splits.items()},
        container=container,
        duplicates_dropped=dropped,
        below_min_score=below,
        unscored=unscored,
        warnings=warnings,
    )
    if first.stream:
        with open_output(first) as fh:
            _stream_records(fh, container, by_split["train"])
        if opts.trainer_configs:
            warnings.append(f"no trainer configs: --out {out} is a stream, not a file they could name")
    else:
        reals = {split: check(path, container == "hf") for split, path in paths.items()}
        _refuse_config_names(out, paths, opts)
        locked = opts.trainer_configs and container != "hf"
        with directory_lock(out.parent) if locked else contextlib.nullcontext(), _Staging() as staging:
            if container == "hf":
                dataset = _dataset_dict(by_split, opts.fmt)
                tmp_dir = staging.directory(reals["train"])
                with _quiet_datasets():
                    _write_guarded(out, lambda: dataset.save_to_disk(str(tmp_dir)))
            else:
                for split, records in by_split.items():
                    tmp = staging.file(reals[split])
                    _write_guarded(paths[split], _writer(container, tmp, records, opts.fmt))
            if opts.trainer_configs:
                result.trainer_configs = _stage_trainer_configs(
                    staging, out, opts.fmt, container, paths, warnings, system=opts.system is not None, check=check
                )
            staging.commit()

    if opts.push_to_hub:
        _push(_dataset_dict(by_split, opts.fmt), opts, out)
        result.pushed_to = opts.push_to_hub
    return result


def _push(dataset: Any, opts: ExportOptions, out: Path) -> None:
    try:
        with _quiet_datasets():
            dataset.push_to_hub(opts.push_to_hub, private=opts.private)
    except Exception as exc:
        raise HubPushError(
            f"the export is written to {out}, but pushing it to the Hugging Face Hub as {opts.push_to_hub} "
            f"failed: {type(exc).__name__}: {redact(str(exc))}"
        ) from None


@dataclass(slots=True)
class _Tally:
    dropped: int = 0  # duplicate (instruction, input) pairs
    below: int = 0  # machine tasks scored below --min-score
    unscored: int = 0  # machine tasks without a score, with --min-score


def _streamed_examples(
    pool_dir: Path, seed_tasks: list[Task], sidecar: Any, opts: ExportOptions, tally: _Tally, warnings: list[str]
) -> Iterator[_Example]:
    """The examples of the export in order, the pool read as a stream (one task in memory at a time): seeds
    first, then the pool's tasks with their judgements merged and --min-score applied, duplicate (instruction,
    input) pairs dropped (remembered as 16-byte digests). The same examples, in the same order, as
    :func:`_select` over :func:`_judged` over the loaded pool."""
    pool = Pool(pool_dir)
    seen: set[bytes] = set()

    def pool_tasks() -> Iterator[Task]:
        for task in pool.iter_tasks(strict=True):
            (judgement,) = effective_judgements([task], sidecar).judgements
            if judgement is not None and task.meta.get(JUDGE_FIELD) != judgement.to_dict():
                task = with_judgement(task, judgement)
            reason = passes(judgement, opts.min_score)
            if reason == LOW_SCORE:
                tally.below += 1
            elif reason is not None:
                tally.unscored += 1
            else:
                yield task

    try:
        for task in itertools.chain(seed_tasks, pool_tasks()):
            kept = []
            for k, inst in enumerate(task.instances):
                instruction = task.instruction.strip()
                key = hashlib.blake2b(
                    f"{len(instruction)}:{instruction}\0{inst.input.strip()}".encode(), digest_size=16
                ).digest()
                if opts.dedup and key in seen:
                    tally.dropped += 1
                    continue
                seen.add(key)
                kept.append((k, inst))
            if kept:
                yield _Example(task, kept)
    finally:
        warnings.extend(w for w in pool.warnings if w not in warnings)


class _RecordWriter:
    """Records written one at a time as JSON Lines or as one JSON array (the same bytes as :func:`_write_jsonl`
    and :func:`_write_json` write for a list)."""

    def __init__(self, fh: Any, container: str) -> None:
        self.fh, self.container, self.count = fh, container, 0
        if container == "json":
            fh.write("[\n")

    def write(self, record: dict[str, Any]) -> None:
        if self.container == "json":
            self.fh.write((",\n" if self.count else "") + _dumps(record))
        else:
            self.fh.write(_dumps(record) + "\n")
        self.count += 1

    def close(self) -> None:
        if self.container == "json":
            self.fh.write("\n]\n" if self.count else "]\n")


class _ColumnSink:
    """Records written in batches of :data:`BATCH_RECORDS` as Parquet row groups (``kind="parquet"``) or
    as the record batches of an Arrow stream file, the form ``datasets`` memory-maps (``kind="arrow"``).
    The first batch fixes the columns and their types; a later batch that differs is refused."""

    def __init__(self, path: Path, fmt: str, kind: str) -> None:
        self.path, self.fmt, self.kind = path, fmt, kind
        self.batch: list[dict[str, Any]] = []
        self.writer: Any = None
        self.schema: Any = None
        self.sink: Any = None
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self.batch.append(record)
        self.count += 1
        if len(self.batch) >= BATCH_RECORDS:
            self._flush()

    def _flush(self) -> None:
        if not self.batch:
            return
        table = _arrow_table(self.batch, self.fmt, self.schema)
        self.batch = []
        if self.writer is None:
            self.schema = table.schema
            if self.kind == "parquet":
                pq = _import("pyarrow.parquet", "a Parquet export")
                self.writer = pq.ParquetWriter(str(self.path), table.schema)
            else:
                pa = _import("pyarrow", "a datasets export")
                self.sink = pa.OSFile(str(self.path), "wb")
                self.writer = pa.ipc.new_stream(self.sink, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        try:
            self._flush()
        finally:
            if self.writer is not None:
                self.writer.close()
            if self.sink is not None:
                self.sink.close()


class _SchemaProbe:
    """The columns and types of a split's records, batch by batch, in bounded memory: each batch's inferred
    schema merged into the last (a struct gains the fields a later record brings, a null column takes the
    type a later value gives, an integer column that meets a float becomes a float), as Arrow infers them
    from the whole list at once. A streamed seed export finds its schema so, before it writes."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.batch: list[dict[str, Any]] = []
        self.schema: Any = None

    def write(self, record: dict[str, Any]) -> None:
        self.batch.append(record)
        if len(self.batch) >= BATCH_RECORDS:
            self._flush()

    def _flush(self) -> None:
        if not self.batch:
            return
        pa = _import("pyarrow", "a Parquet or datasets export")
        schema = _arrow_table(self.batch, self.fmt).schema
        self.batch = []
        try:
            self.schema = schema if self.schema is None else pa.unify_schemas(
                [self.schema, schema], promote_options="permissive"
            )  # fmt: skip
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise _unfit(exc, self.fmt) from None

    def close(self) -> None:
        self._flush()


def _set_schema(writer: Any, schema: Any) -> None:
    """Fix the schema of every columnar sink behind ``writer`` before its first record."""
    for sink in writer.sinks if isinstance(writer, _Tee) else [writer]:
        if isinstance(sink, _ColumnSink):
            sink.schema = schema


class _Tee:
    """One split's records to every sink: the export file, and the Arrow file a datasets directory or a
    push to the Hub is made from."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks

    @property
    def count(self) -> int:
        return self.sinks[0].count

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class _Spool:
    """One split's records kept on disk (JSON Lines in a temporary file, and an 8-byte offset per record),
    then read back in a seeded random order: --shuffle without holding the records in memory. The order is
    the one :func:`random.Random.shuffle` gives a list of that length, so it matches the loaded export."""

    def __init__(self, directory: str) -> None:
        from array import array

        # Closed by replay() once read back; the directory it is in goes at the end of the export either way.
        self.fh = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        self.offsets = array("Q")
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self.offsets.append(self.fh.tell())
        self.fh.write(_dumps(record).encode("utf-8") + b"\n")
        self.count += 1

    def close(self) -> None:
        self.fh.flush()

    def replay(self, seed: str | None, *, last: bool = True) -> Iterator[dict[str, Any]]:
        """The records in the order ``random.Random(seed).shuffle`` gives (as written, for None); the file
        is closed after the ``last`` replay."""
        order = list(range(len(self.offsets)))
        if seed is not None:
            random.Random(seed).shuffle(order)
        for i in order:
            self.fh.seek(self.offsets[i])
            yield json.loads(self.fh.readline())
        if last:
            self.fh.close()


def _arrow_datasets(paths: dict[str, Path]) -> Any:
    """A ``DatasetDict`` over the Arrow stream files of the splits, memory-mapped, not loaded."""
    datasets = _import("datasets", "a Hugging Face datasets export")
    return datasets.DatasetDict({split: datasets.Dataset.from_file(str(path)) for split, path in paths.items()})


def _export_streaming(
    pool_dir: Path,
    out: Path,
    opts: ExportOptions,
    container: str,
    first: Any,
    seed_path: Path | None,
    check: Callable[..., Path],
    warnings: list[str],
) -> ExportResult:
    """An export streamed: the pool is read twice (once to count the examples for the split, once to write
    them), so memory stays bounded by what is remembered per task (a digest per instruction and input, the
    record ids), not by the pool. Parquet is written in row groups; a datasets directory and a push to the
    Hub are made from Arrow files written in record batches and memory-mapped; --shuffle spools each split
    to a temporary file and reads it back in a seeded order of byte offsets. JSON Lines and JSON are the
    bytes the in-memory path writes; the columnar outputs hold the same rows."""
    _check_pool(pool_dir)
    jpool = Pool(pool_dir)
    sidecar, bad = read_sidecar_records(jpool.iter_judgements())
    warnings.extend(jpool.warnings)
    if bad:
        warnings.append(f"{jpool.judgements_path}: skipped {bad} line(s) that are not judgements")
    seed_tasks = load_seed_tasks(seed_path) if seed_path is not None else []

    tally = _Tally()
    n = sum(1 for _ in _streamed_examples(pool_dir, seed_tasks, sidecar, opts, tally, warnings))
    if not n and opts.min_score is not None and tally.below + tally.unscored:
        raise InputError(
            pool_dir, None, f"nothing to export: no task has a judge score of at least {opts.min_score:g} "
            f"({tally.below} scored below it, {tally.unscored} without a score; run `selfinstruct judge` first?)"
        )  # fmt: skip
    if not n:
        raise InputError(pool_dir, None, "nothing to export: the pool holds no tasks yet")
    k = _validation_count(n, opts.validation_size)
    chosen = set(random.Random(opts.seed).sample(range(n), k)) if k else set()
    splits = ["train", "validation"] if k else ["train"]
    paths = _split_paths(out, container, splits)
    result = ExportResult(
        files=paths, records=dict.fromkeys(splits, 0), tasks=dict.fromkeys(splits, 0), container=container,
        duplicates_dropped=tally.dropped, below_min_score=tally.below, unscored=tally.unscored, warnings=warnings,
    )  # fmt: skip
    turn, ids = opts.user_turn(), _Ids()
    rngs = {split: random.Random(f"{opts.seed}:{split}") for split in splits}
    work = contextlib.ExitStack()  # temporary files: the --shuffle spools, the Arrow files of datasets
    scratch = work.enter_context(tempfile.TemporaryDirectory(prefix="selfinstruct-export-"))
    arrow_paths = {split: Path(scratch) / f"{split}.arrow" for split in splits}
    need_arrow = container == "hf" or bool(opts.push_to_hub)
    # The seed format's provenance fields vary from task to task, so a columnar table of it needs every
    # record's columns before its first row group: its records are spooled and read twice.
    probed = opts.fmt == "seed" and (container == "parquet" or need_arrow)

    def write_all(writers: dict[str, Any]) -> None:
        """Every record into ``writers`` (one per split), shuffled first with --shuffle."""
        if need_arrow:
            writers = {
                split: _Tee([*([w] if container != "hf" else []), _ColumnSink(arrow_paths[split], opts.fmt, "arrow")])
                for split, w in writers.items()
            }
        spooled = opts.shuffle or probed
        targets: dict[str, Any] = {s: _Spool(scratch) for s in splits} if spooled else writers
        again = _Tally()
        for i, ex in enumerate(_streamed_examples(pool_dir, seed_tasks, sidecar, opts, again, [])):
            split = "validation" if i in chosen else "train"
            for record in _example_records(ex, result.tasks[split], opts, turn, rngs[split], ids):
                targets[split].write(redact_value(record))
            result.tasks[split] += 1
        if spooled:
            for split, spool in targets.items():
                spool.close()
                order = f"{opts.seed}:shuffle:{split}" if opts.shuffle else None
                if probed:  # the seed format's columns: read once for the schema, in the order written
                    probe = _SchemaProbe(opts.fmt)
                    for record in spool.replay(order, last=False):
                        probe.write(record)
                    probe.close()
                    _set_schema(writers[split], probe.schema)
                for record in spool.replay(order):
                    writers[split].write(record)
        for writer in writers.values():
            writer.close()
        result.records = {split: writer.count for split, writer in writers.items()}

    def sink(split: str, tmp: Path, files: contextlib.ExitStack) -> Any:
        if container == "parquet":
            return _ColumnSink(tmp, opts.fmt, "parquet")
        if container == "hf":
            return None  # the datasets directory is saved from the split's Arrow file
        return _RecordWriter(files.enter_context(open(tmp, "w", encoding="utf-8")), container)

    with work:
        if first.stream:
            with open_output(first) as fh:
                write_all({"train": _RecordWriter(fh, container)})
            if opts.trainer_configs:
                warnings.append(f"no trainer configs: --out {out} is a stream, not a file they could name")
        else:
            reals = {split: check(path, container == "hf") for split, path in paths.items()}
            _refuse_config_names(out, paths, opts)
            locked = opts.trainer_configs and container != "hf"
            with directory_lock(out.parent) if locked else contextlib.nullcontext(), _Staging() as staging:
                tmps = {} if container == "hf" else {split: staging.file(reals[split]) for split in splits}
                with contextlib.ExitStack() as files:
                    try:
                        write_all({s: sink(s, tmps.get(s, Path()), files) for s in splits})
                    except OSError as exc:
                        raise ExportOutputError(f"cannot write {out}: {_reason(exc)}; nothing was written") from None
                if container == "hf":
                    tmp_dir = staging.directory(reals["train"])
                    with _quiet_datasets():
                        dataset = _arrow_datasets(arrow_paths)
                        _write_guarded(out, lambda: dataset.save_to_disk(str(tmp_dir)))
                if opts.trainer_configs:
                    result.trainer_configs = _stage_trainer_configs(
                        staging, out, opts.fmt, container, paths, warnings, system=opts.system is not None, check=check
                    )
                staging.commit()
        if opts.push_to_hub:
            _push(_arrow_datasets(arrow_paths), opts, out)
            result.pushed_to = opts.push_to_hub
    if opts.fmt == "openai" and result.records["train"] < OPENAI_MIN_EXAMPLES:
        warnings.append(
            f"OpenAI fine-tuning needs at least {OPENAI_MIN_EXAMPLES} training examples; this file has "
            f"{result.records['train']}"
        )
    return result


def _refuse_config_names(out: Path, paths: dict[str, Path], opts: ExportOptions) -> None:
    sidecar_names = {"dataset_info.json", f"{_dataset_name(out)}.axolotl.yml"} if opts.trainer_configs else set()
    for path in paths.values():
        if path.name in sidecar_names:
            raise OutputError(
                f"--out {path} is the name of a trainer config that export writes beside it; choose another "
                "name, or pass --no-trainer-configs"
            )


def _stream_records(fh: Any, container: str, records: list[dict[str, Any]]) -> None:
    if container == "jsonl":
        for record in records:
            fh.write(_dumps(record))
            fh.write("\n")
    else:
        fh.write("[\n" + ",\n".join(_dumps(r) for r in records) + ("\n]\n" if records else "]\n"))


def _require_hub_packages() -> None:
    """--push-to-hub needs datasets and huggingface_hub (the export extra): say which one is missing before
    anything is written."""
    import importlib.util

    missing = [name for name in ("datasets", "huggingface_hub", "pyarrow") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"--push-to-hub needs the {', '.join(missing)} package{'s' if len(missing) > 1 else ''}: {_INSTALL_HINT}; "
            "nothing was written"
        )


#: Which exported formats each trainer reads (checked in the trainers themselves; see docs).
TRAINER_FORMATS = {
    "TRL": ("messages", "prompt-completion", "openai"),
    "LLaMA-Factory": ("messages", "openai", "alpaca", "sharegpt"),
    "Axolotl": ("messages", "openai", "alpaca", "sharegpt"),
    "OpenAI fine-tuning": ("openai",),
}


def trainer_warnings(fmt: str, container: str, *, system: bool) -> list[str]:
    """What a trainer would do silently with this export: the warnings ``export`` prints before it writes."""
    warnings = []
    if fmt == "sharegpt":
        warnings.append(
            "TRL does not read sharegpt records (from/value turns): its chat template skips the human/gpt turns "
            "and trains on the system prompt alone; for TRL export --format messages or prompt-completion"
        )
    if fmt == "openai" and container != "jsonl":
        warnings.append(f"OpenAI fine-tuning takes JSONL files only; this {container} export will be refused there")
    return warnings


def _stage_trainer_configs(
    staging: _Staging,
    out: Path,
    fmt: str,
    container: str,
    paths: dict[str, Path],
    warnings: list[str],
    *,
    system: bool = False,
    check: Callable[[Path], Path] = lambda p: p,
) -> list[Path]:
    written: list[Path] = []
    if fmt == "seed":
        return written  # a seed file is for selfinstruct, not for a trainer
    if fmt == "prompt-completion":
        warnings.append(
            "no LLaMA-Factory or Axolotl config: they read messages, openai, sharegpt or alpaca exports; "
            "prompt-completion is for TRL"
        )
        return written
    name = _dataset_name(out)
    # LLaMA-Factory reads files named relative to the directory of dataset_info.json; it cannot read a
    # save_to_disk directory (its loader wants one file type per folder), so no entry is written for one.
    if container == "hf":
        warnings.append("no LLaMA-Factory entry: it cannot read a datasets directory (export .jsonl for it)")
    else:
        info_path = out.parent / "dataset_info.json"
        check(info_path)
        entries: dict[str, Any] = {}
        if info_path.exists():
            try:
                entries = json.loads(read_bounded(info_path, limit=INFO_LIMIT_BYTES, what="a dataset_info.json"))
            except (InputError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                why = exc.problem if isinstance(exc, InputError) else exc
                raise ExportOutputError(
                    f"{info_path} exists but cannot be read as JSON ({why}); fix it, move it, or pass "
                    "--no-trainer-configs"
                ) from None
            if not isinstance(entries, dict):
                raise ExportOutputError(f"{info_path} is not a JSON object; fix it, or pass --no-trainer-configs")
        for split, path in paths.items():
            key = name if split == "train" else f"{name}_{split}"
            entries[key] = llamafactory_entry(fmt, path.name, system=system)
        tmp = staging.file(info_path)
        text = json.dumps(entries, ensure_ascii=False, indent=2) + "\n"
        _write_guarded(info_path, lambda: tmp.write_text(text, encoding="utf-8"))
        written.append(info_path)

    block = axolotl_datasets(fmt, container, paths, system=system)
    if block is not None:
        yml = out.parent / f"{name}.axolotl.yml"
        check(yml)
        tmp = staging.file(yml)
        _write_guarded(yml, lambda: tmp.write_text(block, encoding="utf-8"))
        written.append(yml)
    return written
