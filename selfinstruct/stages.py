"""The stages of one Self-Instruct request's life, as plain functions of text: build a prompt, read a
completion, decide. Nothing here knows about scheduling, engines, time or files.

A request's life, top to bottom (the scheduler in :mod:`selfinstruct.bootstrap` runs many at once):

1. :func:`sample_demos` picks the instructions shown in an instruction-generation prompt;
2. :func:`read_instruction_list` parses its completion into candidate instructions;
3. :func:`screen_instruction` applies the heuristic filters to one candidate (novelty is the index's);
4. :func:`read_classification` reads the "Is it classification?" answer;
5. :func:`read_instances` parses and filters the instances, deciding the task's fate;
6. :func:`make_task` builds the accepted :class:`~selfinstruct.task.Task` with its provenance.

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

from selfinstruct import filters as F
from selfinstruct.backends import Completion
from selfinstruct.prompts import parse_classification, parse_input_first, parse_instructions, parse_output_first
from selfinstruct.task import Instance, Task

# Notes: counted oddities that do not decide a candidate's fate.
CUT_OFF = "cut_off"  # the last item of a completion that hit max_tokens (counted, not a candidate)
UNPARSEABLE_CLASSIFICATION = "unparseable_classification"  # counted; the task is treated as "No"
UNPARSEABLE_INSTANCE = "unparseable_instance"  # an instance block without Output / Class label
STRAY_MARKER = "stray_marker"  # a field cut short by a misplaced Input:/Output:/Class label: line
OVERSIZED_COMPLETION = "oversized_completion"  # the backend cut a reply longer than max_tokens could be


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


def read_instruction_list(completion: Completion) -> InstructionList:
    """Candidates from an instruction-generation completion; a cut-off last item is dropped and noted."""
    notes: Counter[str] = Counter()
    if completion.cut:
        notes[OVERSIZED_COMPLETION] += 1
    items = parse_instructions(completion.text, truncated=False)
    if completion.finish_reason == "length" and items:
        notes[CUT_OFF] += 1
        items.pop()
    return InstructionList(items, notes)


def screen_instruction(heuristics: F.InstructionHeuristics, instruction: str) -> tuple[str, dict[str, Any]] | None:
    """None when the heuristics keep ``instruction``, else ``(reason, details for the rejected record)``."""
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


def read_classification(completion: Completion) -> Classification:
    """The Yes/No verdict; anything else is noted and read as No."""
    notes: Counter[str] = Counter()
    verdict = parse_classification(completion.text)
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


def read_instances(completion: Completion, *, output_first: bool, max_instances: int) -> InstanceVerdict:
    """Parse an instance completion (input-first or output-first) and apply the instance filters."""
    parse = parse_output_first if output_first else parse_input_first
    parsed = parse(completion.text, truncated=completion.finish_reason == "length")
    notes: Counter[str] = Counter()
    if completion.cut:
        notes[OVERSIZED_COMPLETION] += 1
    if parsed.unparseable:
        notes[UNPARSEABLE_INSTANCE] += parsed.unparseable
    if parsed.stray:
        notes[STRAY_MARKER] += parsed.stray
    report = F.clean_instances(parsed.instances, max_instances, classification=output_first)
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
    is_classification: bool,
    output_first: bool,
    classification_answer: str,
    max_similarity: float | None,
    most_similar: list[dict[str, Any]],
    demonstrations: list[str],
    run_id: str,
    round_number: int,
    model: str | None,
) -> Task:
    """An accepted task with its provenance (the id is given when it is committed to the pool)."""
    meta: dict[str, Any] = {
        "source": "machine",
        "run_id": run_id,
        "round": round_number,
        "created_at": utc_now(),
        "model": model,
        "max_similarity": max_similarity,
        "most_similar": most_similar,
        "classification_answer": classification_answer,
        "instance_format": "output_first" if output_first else "input_first",
        "demonstrations": demonstrations,
    }
    return Task(
        instruction=instruction,
        instances=instances,
        is_classification=is_classification,
        name=task_name(instruction),
        meta=meta,
    )


__all__ = [
    "CUT_OFF",
    "OVERSIZED_COMPLETION",
    "STRAY_MARKER",
    "UNPARSEABLE_CLASSIFICATION",
    "UNPARSEABLE_INSTANCE",
    "Classification",
    "InstanceVerdict",
    "InstructionList",
    "derive_seed",
    "make_task",
    "read_classification",
    "read_instances",
    "read_instruction_list",
    "sample_demos",
    "screen_instruction",
    "task_name",
]
