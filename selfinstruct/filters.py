"""Heuristic filters for generated instructions and their instances.

Every filter returns ``None`` to keep or a short reason code to reject; the loop counts rejections by
code, shows them in the run summary and writes the rejected records out. Reason codes are stable strings
(they appear in ``rejected.jsonl`` and the run ledger), listed in :data:`INSTRUCTION_REASONS` and
:data:`TASK_REASONS`.

The thresholds follow the Self-Instruct paper's generation pipeline: at most 3 or more than 150 words,
a list of keywords a text-only model cannot act on, "Write a program", and a first character that is
punctuation or not ASCII. The novelty check (ROUGE-L > 0.7) lives in :mod:`selfinstruct.novelty`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from selfinstruct.task import Instance

# Keywords that point at inputs or outputs a text-only language model cannot handle.
DEFAULT_BLOCKED_KEYWORDS: tuple[str, ...] = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
)  # fmt: skip

MIN_WORDS = 4  # "≤ 3 words" is rejected
MAX_WORDS = 150

# Instruction-level reason codes, in the order the filters run.
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
BLOCKED_KEYWORD = "blocked_keyword"
WRITE_A_PROGRAM = "write_a_program"
STARTS_WITH_PUNCTUATION = "starts_with_punctuation"
STARTS_WITH_NON_ASCII = "starts_with_non_ascii"
TOO_SIMILAR = "too_similar"  # decided by the novelty index
INSTRUCTION_REASONS = (
    TOO_SHORT, TOO_LONG, BLOCKED_KEYWORD, WRITE_A_PROGRAM, STARTS_WITH_PUNCTUATION, STARTS_WITH_NON_ASCII,
    TOO_SIMILAR,
)  # fmt: skip

# Task-level reason codes, decided after instance generation.
NO_VALID_INSTANCE = "no_valid_instance"
CONFLICTING_OUTPUTS = "conflicting_outputs"
ONE_LABEL = "one_label"  # a classification task whose instances all carry the same label
TASK_REASONS = (NO_VALID_INSTANCE, CONFLICTING_OUTPUTS, ONE_LABEL)

InstructionFilter = Callable[[str], str | None]


def blocked_keyword_pattern(keywords: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex matching any keyword as a whole word (``map`` but not ``mapping``)."""
    words = sorted({k.strip().lower() for k in keywords if k.strip()}, key=len, reverse=True)
    if not words:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in words)
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


@dataclass(frozen=True)
class InstructionHeuristics:
    """The heuristic instruction filter, configured once and applied to many instructions.

    >>> InstructionHeuristics()("Draw a cat")
    'too_short'
    >>> InstructionHeuristics()("Describe the map of a small town in words.")
    'blocked_keyword'
    >>> InstructionHeuristics()("Summarise the paragraph below in one sentence.") is None
    True
    """

    blocked_keywords: tuple[str, ...] = DEFAULT_BLOCKED_KEYWORDS
    min_words: int = MIN_WORDS
    max_words: int = MAX_WORDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pattern", blocked_keyword_pattern(self.blocked_keywords))

    def __call__(self, instruction: str) -> str | None:
        return self.reason(instruction)

    def reason(self, instruction: str) -> str | None:
        text = instruction.strip()
        n_words = len(text.split())
        if n_words < self.min_words or not text:
            return TOO_SHORT
        if n_words > self.max_words:
            return TOO_LONG
        if self.blocked_keyword(text) is not None:
            return BLOCKED_KEYWORD
        if text.lower().startswith("write a program"):
            return WRITE_A_PROGRAM
        if text[0] in string.punctuation:
            return STARTS_WITH_PUNCTUATION
        if not text[0].isascii():
            return STARTS_WITH_NON_ASCII
        return None

    def blocked_keyword(self, instruction: str) -> str | None:
        """The first blocked keyword found in ``instruction`` (lower-cased), or None."""
        pattern: re.Pattern[str] | None = getattr(self, "_pattern")  # noqa: B009 - set in __post_init__
        if pattern is None:
            return None
        match = pattern.search(instruction)
        return " ".join(match.group(0).lower().split()) if match else None


@dataclass(frozen=True, slots=True)
class InstanceReport:
    """What :func:`clean_instances` kept and dropped, with counts by reason."""

    kept: list[Instance]
    dropped: dict[str, int]
    task_reason: str | None  # None: the task stays; else NO_VALID_INSTANCE or CONFLICTING_OUTPUTS


# Instance-level reason codes (instances dropped; the task may still stay).
EMPTY_OUTPUT = "empty_output"
OUTPUT_EQUALS_INPUT = "output_equals_input"
DUPLICATE_INSTANCE = "duplicate_instance"
OVER_LIMIT = "over_limit"
INSTANCE_REASONS = (EMPTY_OUTPUT, OUTPUT_EQUALS_INPUT, DUPLICATE_INSTANCE, OVER_LIMIT)


def clean_instances(
    instances: Sequence[Instance], max_instances: int = 5, *, classification: bool = False
) -> InstanceReport:
    """Apply the instance filters of the paper, in order.

    Drops instances with an empty output, with the output equal to the input, and exact copies; rejects
    the whole task when two instances share a non-empty input but disagree on the output (ambiguous)
    or when nothing valid is left; keeps at most ``max_instances``. A ``classification`` task must show at
    least two different labels among what it keeps: a label set of one teaches nothing (``one_label``).

    >>> r = clean_instances([Instance("a", "b"), Instance("a", "b"), Instance("c", "")])
    >>> [i.output for i in r.kept], r.dropped, r.task_reason
    (['b'], {'duplicate_instance': 1, 'empty_output': 1}, None)
    """
    dropped: dict[str, int] = {}

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    kept: list[Instance] = []
    seen: set[tuple[str, str]] = set()
    output_by_input: dict[str, str] = {}
    for inst in instances:
        inp, out = inst.input.strip(), inst.output.strip()
        if not out:
            drop(EMPTY_OUTPUT)
            continue
        if inp and inp == out:
            drop(OUTPUT_EQUALS_INPUT)
            continue
        if (inp, out) in seen:
            drop(DUPLICATE_INSTANCE)
            continue
        # An empty input may legitimately have several outputs (a self-contained "write a haiku" task);
        # a real input with two different outputs makes the task ambiguous.
        if inp and output_by_input.setdefault(inp, out) != out:
            return InstanceReport([], dropped, CONFLICTING_OUTPUTS)
        seen.add((inp, out))
        kept.append(Instance(inp, out))
    if len(kept) > max_instances:
        dropped[OVER_LIMIT] = len(kept) - max_instances
        kept = kept[:max_instances]
    if not kept:
        return InstanceReport([], dropped, NO_VALID_INSTANCE)
    if classification and len({i.output for i in kept}) < 2:
        return InstanceReport([], dropped, ONE_LABEL)
    return InstanceReport(kept, dropped, None)
