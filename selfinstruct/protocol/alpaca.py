"""The Alpaca one-shot method: one prompt shows a few complete tasks and the model writes many more complete
tasks (instruction, input, output) in one numbered list. Rendering that prompt and reading the list back.

Compared with Self-Instruct's three requests per task (instruction list, "is it classification?",
instances), one request here yields up to ``count`` finished tasks, each with one instance; what is lost is
the separate, greedy instance step and the classification-aware output-first format.

The list format (the same for base and chat models)::

    Task 4
    Instruction: Give two synonyms for the word below.
    Input: happy
    Output: glad, cheerful

A task that needs no input says ``Input: <none>`` (or leaves the line out). For a base model the prompt
(``prompts/alpaca.txt``, with ``{examples}``) lists the demonstrations as tasks 1..k and ends with the
header ``Task k+1``, so the model continues the list. For a chat model the user's message
(``prompts/chat/alpaca.txt``, with ``{examples}``, ``{count}`` and optionally ``{first}``/``{last}``) shows
them and asks for tasks
``1..count``. :func:`parse_task_list` reads both, tolerating what models do to the format: Markdown
(``**Instruction:**``, ``### Task 5``), ``5. Instruction:`` instead of a header, missing headers, the
instruction on the header's line (``Task 5: Name ...``) or under it without its label, a whole task on one
line (``Task 5: ... Input: ... Output: ...``), chatter before and after, a list cut off at ``max_tokens``.
Blocks it cannot read are counted (``unparseable_task``), never fatal and never dropped silently.

This module renders and parses; filtering and novelty are the loop's (the same as Self-Instruct's).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfinstruct.engines.chat import Chat, user_chat
from selfinstruct.pool.task import Instance, Task
from selfinstruct.protocol.chatprompts import (
    CHAT_DIR,
    fingerprint,
    load_template,
    strip_chat_markup,
    strip_closing_remark,
)
from selfinstruct.protocol.prompts import _fill, one_line

ALPACA_FILE = "alpaca.txt"
NO_INPUT = "<none>"

#: Defaults of the Alpaca recipe: three seed tasks shown, twenty new tasks asked for.
DEFAULT_DEMOS = 3
DEFAULT_COUNT = 20

# Cut-off notes and reasons counted by the parser.
UNPARSEABLE_TASK = "unparseable_task"  # a block with no instruction or no output
STRAY_FIELD = "stray_field"  # a second Instruction/Input field inside a task: cut off there


@dataclass(frozen=True)
class AlpacaTemplates:
    """The one-shot template for completions and for chat, loaded from a prompts directory."""

    completion: str
    chat: str
    source: str = "<memory>"

    @classmethod
    def load(cls, prompts_dir: str | Path) -> AlpacaTemplates:
        root = Path(prompts_dir)
        hint = "copy alpaca.txt and chat/alpaca.txt from selfinstruct's prompts folder into your --prompts directory"
        return cls(
            completion=load_template(root / ALPACA_FILE, ("{examples}",), hint),
            chat=load_template(root / CHAT_DIR / ALPACA_FILE, ("{examples}", "{count}"), hint),
            source=str(root),
        )

    def fingerprint(self, *, chat: bool) -> str:
        """The hash of the template a run uses (the completion one or the chat one)."""
        return fingerprint(self.chat if chat else self.completion)

    def completion_prompt(self, demos: Sequence[Task]) -> str:
        """Demonstrations as tasks ``1..k``, ending with the header ``Task k+1`` for the model to continue.

        >>> t = AlpacaTemplates("Tasks:\\n\\n{examples}", "")
        >>> print(t.completion_prompt([Task("Say hi.", [Instance("", "Hi!")])]))
        Tasks:
        <BLANKLINE>
        Task 1
        Instruction: Say hi.
        Input: <none>
        Output: Hi!
        <BLANKLINE>
        Task 2
        <BLANKLINE>
        """
        blocks = "".join(render_task(n, t) + "\n\n" for n, t in enumerate(demos, start=1))
        return _fill(self.completion, examples=blocks).rstrip() + f"\n\nTask {len(demos) + 1}\n"

    def chat_prompt(self, demos: Sequence[Task], count: int = DEFAULT_COUNT) -> Chat:
        """The demonstrations in the user's message (tasks ``1..k``), asking for ``count`` new tasks; the
        optional placeholders ``{first}`` and ``{last}`` number them on from the examples."""
        blocks = "\n\n".join(render_task(n, t) for n, t in enumerate(demos, start=1))
        first, last = len(demos) + 1, len(demos) + count
        return user_chat(_fill(self.chat, examples=blocks, count=str(count), first=str(first), last=str(last)).strip())


def render_task(number: int, task: Task) -> str:
    """One complete task of the list (its first instance)."""
    inst = task.instances[0] if task.instances else Instance("", "")
    return (
        f"Task {number}\nInstruction: {one_line(task.instruction)}\n"
        f"Input: {inst.input.strip() or NO_INPUT}\nOutput: {inst.output.strip()}"
    )


def completion_stop(num_demos: int, count: int) -> tuple[str, ...]:
    """Stop sequences for a base model: the header after the last task asked for.

    >>> completion_stop(3, 20)
    ('Task 24',)
    """
    return (f"Task {num_demos + count + 1}",)


def pick_demos(
    rng: random.Random, seeds: Sequence[Task], pool: Sequence[Task], num_seed: int, num_machine: int
) -> list[Task]:
    """Complete tasks for one prompt: ``num_machine`` from the pool (seeds fill in while it is small) and the
    rest from the seeds, each cut to one instance drawn at random, shuffled. Tasks without an instance with a
    non-empty output are never shown (they would teach an empty answer)."""
    usable_seeds = [t for t in seeds if any(i.output.strip() for i in t.instances)]
    n_machine = min(num_machine, len(pool))
    n_seed = min(num_seed + num_machine - n_machine, len(usable_seeds))
    chosen = [usable_seeds[i] for i in rng.sample(range(len(usable_seeds)), n_seed)]
    chosen += [pool[i] for i in rng.sample(range(len(pool)), n_machine)]
    rng.shuffle(chosen)
    demos = []
    for task in chosen:
        good = [i for i in task.instances if i.output.strip()] or [Instance("", "")]
        demos.append(Task(task.instruction, [rng.choice(good)], task.is_classification, task.id, task.name))
    return demos


# -- parsing --------------------------------------------------------------------------------------------

_HEADER = re.compile(r"^[ \t]*(?:Task|Example)[ \t]*#?\d+[ \t]*[.:)]?[ \t]*$", re.MULTILINE | re.IGNORECASE)
# A field marker at the start of a line, optionally after the task's number ("5. Instruction:", Alpaca's own
# "5. Input:"); group 1 is the field's name.
_FIELD = re.compile(
    r"^[ \t]*(?:\d+[ \t]*[.)][ \t]*)?(Instruction|Input|Output)[ \t]*:[ \t]*", re.MULTILINE | re.IGNORECASE
)
_NO_INPUT = {"", "<none>", "none", "<noinput>", "no input", "n/a", "na", "(none)", "null", "-", "<no input>", "nothing"}


# A numbered task line that holds the instruction itself: "Task 4: Give two synonyms ...", "**Task 4:** ...",
# "5. Task 5 - ..."; group 1 the indentation, group 2 the text after the number.
_TASK_LINE = re.compile(
    r"^([ \t]*)(?:\d+[ \t]*[.)][ \t]*)?(?:\*\*|__)?(?:Task|Example)[ \t]*#?\d+[ \t]*[:.)\-–](?:\*\*|__)?[ \t]*(\S.*)$",
    re.MULTILINE | re.IGNORECASE,
)
# A header whose next line is the instruction without its label ("Task 4\nGive two synonyms ..."): group 1.
_UNLABELLED = re.compile(
    r"^[ \t]*(?:Task|Example)[ \t]*#?\d+[ \t]*[.:)]?[ \t]*\n"
    r"(?![ \t]*(?:\d+[ \t]*[.)][ \t]*)?(?:Instruction|Input|Output)[ \t]*:)[ \t]*(\S.*)$",
    re.MULTILINE | re.IGNORECASE,
)
# A field marker inside a line, after other text: where a one-line task ("Instruction: ... Input: ...
# Output: ...") is split.
_INLINE_FIELD = re.compile(r"[ \t]*[|;]?[ \t]+(?=(?:Input|Output)[ \t]*:)", re.IGNORECASE)
_FIELD_LINE = re.compile(r"^([ \t]*(?:Instruction|Input)[ \t]*:)(.*)$", re.MULTILINE | re.IGNORECASE)


def _task_line(match: re.Match[str]) -> str:
    """``Task 4: <text>`` as the field it stands for: ``Instruction: <text>``."""
    text = match.group(2)
    return match.group(1) + (text if _FIELD.match(text) else "Instruction: " + text)


def _inline_fields(body: str) -> str:
    """Put each field of a one-line task on its own line: ``Instruction: a Input: b Output: c`` becomes three
    lines. Only an ``Instruction:`` or ``Input:`` line is split (an output may mention "Input:" freely)."""

    def split(match: re.Match[str]) -> str:
        return match.group(1) + _INLINE_FIELD.sub("\n", match.group(2))

    return _FIELD_LINE.sub(split, body)


@dataclass(frozen=True, slots=True)
class ParsedTask:
    """One complete task read from the list."""

    instruction: str
    input: str
    output: str

    def instance(self) -> Instance:
        return Instance(self.input, self.output)


@dataclass(frozen=True, slots=True)
class TaskList:
    """What :func:`parse_task_list` found: the tasks in order, blocks it could not read (``unparseable``:
    no instruction or no output), fields a stray marker cut short (``stray``), and whether a cut-off last
    task was dropped (``cut_off``)."""

    tasks: list[ParsedTask]
    unparseable: int = 0
    stray: int = 0
    cut_off: bool = False


def _clean_input(text: str) -> str:
    text = text.strip()
    return "" if text.lower().strip(".").strip() in _NO_INPUT else text


def parse_task_list(text: str, *, truncated: bool, continues_task: bool = False) -> TaskList:
    """Read complete tasks from a model's list.

    Tasks are delimited by ``Instruction:`` fields (headers such as ``Task 5`` are dropped, so a missing
    header costs nothing). Within a task, ``Input:`` and ``Output:`` follow; the output runs to the next
    task. A second ``Instruction:`` or ``Input:`` after the output starts the next task or is stray; an
    ``Output:`` before any ``Input:`` means the task has no input. ``continues_task``: the prompt ended with
    a header, so the text may start with the first task's ``Instruction:`` line directly (it always does in
    this format; the flag only matters for text that starts with bare words, read as that instruction).

    >>> r = parse_task_list("Instruction: Add the numbers.\\nInput: 2, 3\\nOutput: 5\\n\\nTask 5\\n"
    ...                     "Instruction: Name a red fruit.\\nInput: <none>\\nOutput: A strawberry.\\n\\nTask 6\\n"
    ...                     "Instruction: Count the", truncated=True)
    >>> [(t.instruction, t.input, t.output) for t in r.tasks], r.cut_off
    ([('Add the numbers.', '2, 3', '5'), ('Name a red fruit.', '', 'A strawberry.')], True)
    """
    body = _HEADER.sub("", _UNLABELLED.sub(r"Instruction: \1", strip_chat_markup(text)))
    body = _inline_fields(_TASK_LINE.sub(_task_line, body))
    if continues_task and not _FIELD.match(body.lstrip("\n")) and body.strip():
        body = "Instruction: " + body.lstrip()
    marks = list(_FIELD.finditer(body))
    # Group fields into tasks: each Instruction starts one; fields before the first Instruction are chatter
    # unless they hold an Output (a task whose Instruction line was lost: unparseable).
    groups: list[list[tuple[str, int, int]]] = []
    orphan = False
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(body)
        name = mark.group(1).lower()
        if name == "instruction":
            groups.append([])
        elif not groups:
            orphan = orphan or name == "output"
            continue
        groups[-1].append((name, mark.end(), end))
    tasks: list[ParsedTask] = []
    bad = int(orphan)
    stray = 0
    cut = False
    for n, group in enumerate(groups):
        last = n == len(groups) - 1
        if last and truncated:
            cut = True  # the model was stopped inside this task (or just after it: its output may be short)
            break
        fields: dict[str, str] = {}
        for name, start, end in group:
            value = body[start:end]
            if name in fields:
                stray += 1  # a repeated field: keep the first, drop this one
                continue
            if name == "instruction" and "output" in fields:
                stray += 1
                continue
            if name == "input" and "output" in fields:
                stray += 1  # an Input after the Output: the output already ended
                continue
            fields[name] = value
        instruction = one_line(fields.get("instruction", ""))
        output = strip_closing_remark(fields.get("output", "")) if last else fields.get("output", "").strip()
        if not instruction or "output" not in fields or not output:
            bad += 1
            continue
        tasks.append(ParsedTask(instruction, _clean_input(fields.get("input", "")), output))
    return TaskList(tasks, bad, stray, cut)


def to_task(parsed: ParsedTask) -> Task:
    """A :class:`Task` with one instance; whether it is classification is unknown (None) in this method."""
    return Task(parsed.instruction, [parsed.instance()], None)


__all__ = [
    "ALPACA_FILE",
    "DEFAULT_COUNT",
    "DEFAULT_DEMOS",
    "NO_INPUT",
    "STRAY_FIELD",
    "UNPARSEABLE_TASK",
    "AlpacaTemplates",
    "ParsedTask",
    "TaskList",
    "completion_stop",
    "parse_task_list",
    "pick_demos",
    "render_task",
    "to_task",
]
