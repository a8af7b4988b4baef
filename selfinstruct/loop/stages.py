"""The stages of one Self-Instruct request's life, as plain functions of text: build a prompt, read a
completion, decide. Nothing here knows about scheduling, engines, time or files.

The readers take ``chat=True`` for a chat model's replies (:mod:`selfinstruct.protocol.chatprompts` undoes the chat
habits first). Two more lives share the same scheduler: the Alpaca method's one request of complete tasks
(:func:`read_task_list`, :func:`screen_alpaca_task`, :func:`make_alpaca_task`) and the judge's one request
per finished task (:func:`read_judgement`).

A request's life, top to bottom (the scheduler in :mod:`selfinstruct.loop.bootstrap` runs many at once):

1. :func:`sample_demos` picks the instructions shown in an instruction-generation prompt;
2. :func:`read_instruction_list` parses its completion into candidate instructions;
3. :func:`screen_instruction` applies the heuristic filters to one candidate (novelty is the index's);
4. :func:`read_classification` reads the "Is it classification?" answer;
5. :func:`read_instances` parses and filters the instances, deciding the task's fate;
6. :func:`make_task` builds the accepted :class:`~selfinstruct.pool.task.Task` with its provenance.

Randomness comes in only through the ``random.Random`` a caller passes, and :func:`derive_seed` turns a
run's seed and a request's position into that request's own seed, so that a request's prompt and sampling
seed depend on its place in the submission order and on nothing that happens at run time.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from selfinstruct.engines import Completion
from selfinstruct.gates import filters as F
from selfinstruct.pool.task import Instance, Task
from selfinstruct.protocol.alpaca import parse_task_list
from selfinstruct.protocol.chatprompts import (
    LIST_MARKER,
    parse_chat_classification,
    parse_chat_instances,
    parse_chat_list,
)
from selfinstruct.protocol.judge import JUDGE_FIELD, Judgement
from selfinstruct.protocol.prompts import (
    parse_classification,
    parse_input_first,
    parse_instructions,
    parse_output_first,
)

# Notes: counted oddities that do not decide a candidate's fate.
CUT_OFF = "cut_off"  # the last item of a completion that hit max_tokens (counted, not a candidate)
UNPARSEABLE_CLASSIFICATION = "unparseable_classification"  # counted; the task is treated as "No"
UNPARSEABLE_INSTANCE = "unparseable_instance"  # an instance block without Output / Class label
STRAY_MARKER = "stray_marker"  # a field cut short by a misplaced Input:/Output:/Class label: line
OVERSIZED_COMPLETION = "oversized_completion"  # the backend cut a reply longer than max_tokens could be
CHATTER = "chatter"  # lines of a chat reply outside its list (a preamble, a closing remark)
# A prefilled reply ended by the stop string of a demonstration it began to write again: the item number it
# left is not a list marker of the model's but the start of a copy that was never written.
RELIST_STOPPED = "relist_stopped"
_DANGLING_NUMBER = re.compile(r"(?:^|\n)\s*\d+[.)]\s*$")
UNPARSEABLE_TASK = "unparseable_task"  # an Alpaca-list block with no instruction or no output
UNSCORED_JUDGEMENT = "unscored_judgement"  # a judge's reply without a readable score (kept without --min-score)


def derive_seed(*parts: object) -> int:
    """A 31-bit seed that depends only on ``parts`` (stable across runs, machines and Python versions).

    >>> derive_seed(7, "instructions", 0) == derive_seed(7, "instructions", 0) != derive_seed(7, "instructions", 1)
    True
    """
    digest = hashlib.sha256("/".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def sample_demos(
    rng: random.Random, seeds: Sequence[Task], pool: Sequence[Task], num_seed: int, num_machine: int
) -> list[str]:
    """Instructions for one prompt: ``num_machine`` from the pool (fewer while it is small: seeds fill in)
    and the rest from the seeds, shuffled. Samples positions, so a huge pool is never copied."""
    n_machine = min(num_machine, len(pool))
    n_seed = min(num_seed + num_machine - n_machine, len(seeds))
    demos = [seeds[i].instruction for i in rng.sample(range(len(seeds)), n_seed)]
    demos += [pool[i].instruction for i in rng.sample(range(len(pool)), n_machine)]
    rng.shuffle(demos)
    return demos


@dataclass(frozen=True, slots=True)
class InstructionList:
    items: list[str]
    notes: Counter[str]


def read_instruction_list(completion: Completion, *, chat: bool = False, prefix: str = "") -> InstructionList:
    """Candidates from an instruction-generation completion; a cut-off last item is dropped and noted.
    ``prefix``: what a chat reply continues (the item number a prefilled reply ends with), read before it."""
    notes: Counter[str] = Counter()
    if completion.cut:
        notes[OVERSIZED_COMPLETION] += 1
    if chat:
        reply = parse_chat_list(prefix + completion.text, truncated=False)
        items = reply.items
        if reply.chatter:
            notes[CHATTER] += reply.chatter
        notes.update(reply.notes)
        stopped = prefix and completion.finish_reason == "stop" and _DANGLING_NUMBER.search(prefix + completion.text)
        if stopped and notes[LIST_MARKER]:
            notes[LIST_MARKER] -= 1
            notes[RELIST_STOPPED] += 1
            if not notes[LIST_MARKER]:
                del notes[LIST_MARKER]
    else:
        items = parse_instructions(completion.text, truncated=False)
    if completion.finish_reason == "length" and items:
        notes[CUT_OFF] += 1
        items.pop()
    return InstructionList(items, notes)


def screen_instruction(
    heuristics: F.InstructionHeuristics, instruction: str, demos: Sequence[str] = ()
) -> tuple[str, dict[str, Any]] | None:
    """None when the heuristics keep ``instruction``, else ``(reason, details for the rejected record)``.
    A repeat of one of ``demos`` (the demonstrations its prompt showed) is ``demo_copy``, checked first."""
    copied = F.copied_demo(instruction, demos) if demos else None
    if copied is not None:
        return F.DEMO_COPY, {"demonstration": copied}
    reason = heuristics(instruction)
    if reason is None:
        return None
    if reason == F.BLOCKED_KEYWORD:
        return reason, {"keyword": heuristics.blocked_keyword(instruction)}
    return reason, {}


@dataclass(frozen=True, slots=True)
class Classification:
    is_classification: bool
    answer: str
    notes: Counter[str]


def read_classification(completion: Completion, *, chat: bool = False) -> Classification:
    """The Yes/No verdict; anything else is noted and read as No."""
    notes: Counter[str] = Counter()
    verdict = (parse_chat_classification if chat else parse_classification)(completion.text)
    if verdict is None:
        notes[UNPARSEABLE_CLASSIFICATION] += 1
    if completion.cut:
        notes[OVERSIZED_COMPLETION] += 1
    return Classification(bool(verdict), completion.text.strip()[:200], notes)


@dataclass(frozen=True, slots=True)
class InstanceVerdict:
    """Kept instances, or the task-level ``reason`` it is rejected for; ``notes`` counts dropped instances."""

    instances: list[Instance]
    reason: str | None
    notes: Counter[str]


def read_instances(
    completion: Completion,
    *,
    output_first: bool,
    max_instances: int,
    chat: bool = False,
    demos: Sequence[Task] = (),
) -> InstanceVerdict:
    """Parse an instance completion (input-first or output-first) and apply the instance filters; an
    instance copied from one of ``demos`` (the tasks its prompt showed) is dropped as another task's."""
    truncated = completion.finish_reason == "length"
    if chat:
        parsed = parse_chat_instances(completion.text, truncated=truncated, output_first=output_first)
    else:
        parse = parse_output_first if output_first else parse_input_first
        parsed = parse(completion.text, truncated=truncated)
    notes: Counter[str] = Counter()
    if completion.cut:
        notes[OVERSIZED_COMPLETION] += 1
    if parsed.unparseable:
        notes[UNPARSEABLE_INSTANCE] += parsed.unparseable
    if parsed.stray:
        notes[STRAY_MARKER] += parsed.stray
    shown = [inst for task in demos for inst in task.instances]
    report = F.clean_instances(parsed.instances, max_instances, classification=output_first, demos=shown)
    notes.update(report.dropped)
    return InstanceVerdict(report.kept, report.task_reason, notes)


def task_name(instruction: str, words: int = 6) -> str:
    """A snake_case name from the first words of an instruction.

    >>> task_name("Rewrite the sentence below in the passive voice, please.")
    'rewrite_the_sentence_below_in_the'
    """
    tokens = re.findall(r"[a-z0-9]+", instruction.lower())
    return "_".join(tokens[:words]) or "task"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_task(
    instruction: str,
    instances: list[Instance],
    *,
    is_classification: bool | None,
    instance_format: str,
    classification_answer: str | None,
    max_similarity: float | None,
    most_similar: list[dict[str, Any]],
    demonstrations: list[str],
    run_id: str,
    round_number: int,
    model: str | None,
    method: str | None = None,
) -> Task:
    """An accepted task with its provenance (the id is given when it is committed to the pool).

    ``instance_format`` is ``input_first``, ``output_first`` or ``alpaca``; ``classification_answer`` is
    None (and left out) when the method did not ask; ``method`` is recorded when it is not self-instruct.
    """
    meta: dict[str, Any] = {
        "source": "machine",
        "run_id": run_id,
        "round": round_number,
        "created_at": utc_now(),
        "model": model,
        **({"method": method} if method else {}),
        "max_similarity": max_similarity,
        "most_similar": most_similar,
        **({"classification_answer": classification_answer} if classification_answer is not None else {}),
        "instance_format": instance_format,
        "demonstrations": demonstrations,
    }
    return Task(
        instruction=instruction,
        instances=instances,
        is_classification=is_classification,
        name=task_name(instruction),
        meta=meta,
    )


# -- the Alpaca method ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlpacaItem:
    """One complete task read from an Alpaca list: instruction, and its one instance."""

    instruction: str
    instance: Instance


@dataclass(frozen=True, slots=True)
class TaskListRead:
    items: list[AlpacaItem]
    notes: Counter[str]


def read_task_list(completion: Completion, *, chat: bool) -> TaskListRead:
    """Complete tasks from an Alpaca one-shot completion. A cut-off last task is dropped and noted, blocks
    without an instruction or output are noted (``unparseable_task``), never fatal."""
    notes: Counter[str] = Counter()
    if completion.cut:
        notes[OVERSIZED_COMPLETION] += 1
    parsed = parse_task_list(completion.text, truncated=completion.finish_reason == "length", continues_task=not chat)
    if parsed.cut_off:
        notes[CUT_OFF] += 1
    if parsed.unparseable:
        notes[UNPARSEABLE_TASK] += parsed.unparseable
    if parsed.stray:
        notes[STRAY_MARKER] += parsed.stray
    return TaskListRead([AlpacaItem(t.instruction, t.instance()) for t in parsed.tasks], notes)


def screen_alpaca_task(item: AlpacaItem, demos: Sequence[Task] = ()) -> InstanceVerdict:
    """The instance filters on the task's one instance (empty output, output equal to the input, an input
    copied from one of ``demos``, the tasks the prompt showed)."""
    shown = [inst for task in demos for inst in task.instances]
    report = F.clean_instances([item.instance], 1, demos=shown)
    return InstanceVerdict(report.kept, report.task_reason, Counter(report.dropped))


def make_alpaca_task(
    item: AlpacaItem,
    *,
    max_similarity: float | None,
    most_similar: list[dict[str, Any]],
    demonstrations: list[str],
    run_id: str,
    round_number: int,
    model: str | None,
) -> Task:
    """An accepted Alpaca task: one instance, ``is_classification`` unknown (this method does not ask)."""
    return make_task(
        item.instruction,
        [item.instance],
        is_classification=None,
        instance_format="alpaca",
        classification_answer=None,
        max_similarity=max_similarity,
        most_similar=most_similar,
        demonstrations=demonstrations,
        run_id=run_id,
        round_number=round_number,
        model=model,
        method="alpaca",
    )


# -- the judge -------------------------------------------------------------------------------------------


def read_judgement(completion: Completion, *, model: str, rubric: str, chat: bool) -> tuple[Judgement, Counter[str]]:
    """The judge's verdict on a task; a reply without a readable score is noted (its judgement has score
    None and keeps the reply)."""
    notes: Counter[str] = Counter()
    judgement = Judgement.from_reply(completion.text, model=model, rubric=rubric, after_score=not chat)
    if judgement.score is None:
        notes[UNSCORED_JUDGEMENT] += 1
    if completion.cut:
        notes[OVERSIZED_COMPLETION] += 1
    return judgement, notes


def attach_judgement(task: Task, judgement: Judgement) -> None:
    """Store the judgement in the task record (its ``judge`` field)."""
    task.meta[JUDGE_FIELD] = judgement.to_dict()


__all__ = [
    "CHATTER",
    "CUT_OFF",
    "OVERSIZED_COMPLETION",
    "STRAY_MARKER",
    "UNPARSEABLE_CLASSIFICATION",
    "UNPARSEABLE_INSTANCE",
    "UNPARSEABLE_TASK",
    "UNSCORED_JUDGEMENT",
    "AlpacaItem",
    "Classification",
    "InstanceVerdict",
    "InstructionList",
    "TaskListRead",
    "attach_judgement",
    "derive_seed",
    "make_alpaca_task",
    "make_task",
    "read_classification",
    "read_instances",
    "read_instruction_list",
    "read_judgement",
    "read_task_list",
    "sample_demos",
    "screen_alpaca_task",
    "screen_instruction",
    "task_name",
]
