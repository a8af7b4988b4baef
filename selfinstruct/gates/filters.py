"""Heuristic filters for generated instructions and their instances.

Every filter returns ``None`` to keep or a short reason code to reject; the loop counts rejections by
code, shows them in the run summary and writes the rejected records out. Reason codes are stable strings
(they appear in ``rejected.jsonl`` and the run ledger), listed in :data:`INSTRUCTION_REASONS` and
:data:`TASK_REASONS`.

The thresholds follow the Self-Instruct paper's generation pipeline: at most 3 or more than 150 words,
a list of keywords a text-only model cannot act on, "Write a program", and a first character that is
punctuation or not ASCII. The novelty check (ROUGE-L > 0.7) lives in :mod:`selfinstruct.gates.novelty`.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from selfinstruct.pool.task import Instance

# Keywords that point at inputs or outputs a text-only language model cannot handle.
DEFAULT_BLOCKED_KEYWORDS: tuple[str, ...] = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
)  # fmt: skip

MIN_WORDS = 4  # "≤ 3 words" is rejected
MAX_WORDS = 150

# Instruction-level reason codes, in the order the filters run.
DEMO_COPY = "demo_copy"  # the candidate repeats one of the demonstrations its prompt showed
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
BLOCKED_KEYWORD = "blocked_keyword"
WRITE_A_PROGRAM = "write_a_program"
STARTS_WITH_PUNCTUATION = "starts_with_punctuation"
STARTS_WITH_NON_ASCII = "starts_with_non_ascii"
TOO_SIMILAR = "too_similar"  # decided by the novelty index
INSTRUCTION_REASONS = (
    DEMO_COPY, TOO_SHORT, TOO_LONG, BLOCKED_KEYWORD, WRITE_A_PROGRAM, STARTS_WITH_PUNCTUATION, STARTS_WITH_NON_ASCII,
    TOO_SIMILAR,
)  # fmt: skip

# Task-level reason codes, decided after instance generation.
NO_VALID_INSTANCE = "no_valid_instance"
CONFLICTING_OUTPUTS = "conflicting_outputs"
ONE_LABEL = "one_label"  # a classification task whose instances all carry the same label
DEMO_INSTANCE = "demo_instance"  # every instance was copied from a demonstration of another task
TASK_REASONS = (NO_VALID_INSTANCE, CONFLICTING_OUTPUTS, ONE_LABEL, DEMO_INSTANCE)

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
COPIED_INSTANCE = "copied_instance"  # an instance taken verbatim from a demonstration of another task
INSTANCE_REASONS = (EMPTY_OUTPUT, OUTPUT_EQUALS_INPUT, DUPLICATE_INSTANCE, OVER_LIMIT, COPIED_INSTANCE)

#: ROUGE-L from which a candidate counts as a copy of a demonstration (a near-verbatim repeat; the novelty
#: threshold, 0.7 by default, rejects looser likeness as ``too_similar``).
DEMO_COPY_THRESHOLD = 0.9
#: Words a no-input output needs before it can count as copied (short answers such as "Yes" repeat honestly).
COPIED_OUTPUT_MIN_WORDS = 4


def _norm(text: str) -> str:
    """Lower case, words only: the form two texts are compared in for a copy."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def copied_demo(instruction: str, demos: Sequence[str]) -> str | None:
    """The demonstration ``instruction`` repeats (the same words, or ROUGE-L of at least
    :data:`DEMO_COPY_THRESHOLD`), or None. A chat model often re-lists the examples it was shown before
    writing its own: those are copies, not failed attempts at novelty.

    >>> copied_demo("1) Name three rivers in Africa!", ["Summarise the text.", "Name three rivers in Africa."])
    'Name three rivers in Africa.'
    >>> copied_demo("Name three rivers in Asia.", ["Name three rivers in Africa."]) is None
    True
    """
    from selfinstruct.gates.novelty import lcs_fmeasure, rouge_tokens

    key = _norm(instruction)
    if not key:
        return None
    for demo in demos:
        if _norm(demo) == key:
            return demo
    tokens = rouge_tokens(instruction)
    for demo in demos:
        other = _demo_tokens(demo)
        # The F-measure is at most 2 min(m, n) / (m + n): skip the LCS where lengths alone rule a copy out.
        if 2 * min(len(tokens), len(other)) < DEMO_COPY_THRESHOLD * (len(tokens) + len(other)):
            continue
        if lcs_fmeasure(tokens, other) >= DEMO_COPY_THRESHOLD:
            return demo
    return None


@functools.lru_cache(maxsize=4096)
def _demo_tokens(demo: str) -> tuple[str, ...]:
    """A demonstration's ROUGE tokens: every candidate of a request is compared with the same few."""
    from selfinstruct.gates.novelty import rouge_tokens

    return tuple(rouge_tokens(demo))


def copied_instance(instance: Instance, demos: Sequence[Instance], *, classification: bool) -> bool:
    """Whether ``instance`` was copied from a demonstration's instance: its input is a demonstration's input
    word for word, or (without an input, not classification) its output of at least
    :data:`COPIED_OUTPUT_MIN_WORDS` words is a demonstration's output. A classification label alone never
    counts: labels repeat by design.

    >>> demo = [Instance("She don't know where the keys is.", "Ungrammatical")]
    >>> copied_instance(Instance("She don't know where the keys is.", "Agree"), demo, classification=False)
    True
    >>> copied_instance(Instance("The keys are on the table.", "Ungrammatical"), demo, classification=True)
    False
    """
    inp = _norm(instance.input)
    if inp:
        return any(inp == _norm(d.input) for d in demos)
    if classification:
        return False
    out = _norm(instance.output)
    return len(out.split()) >= COPIED_OUTPUT_MIN_WORDS and any(
        not _norm(d.input) and out == _norm(d.output) for d in demos
    )


def clean_instances(
    instances: Sequence[Instance],
    max_instances: int = 5,
    *,
    classification: bool = False,
    demos: Sequence[Instance] = (),
) -> InstanceReport:
    """Apply the instance filters of the paper, in order.

    Drops instances with an empty output, with the output equal to the input, and exact copies; rejects
    the whole task when two instances share a non-empty input but disagree on the output (ambiguous)
    or when nothing valid is left; keeps at most ``max_instances``. A ``classification`` task must show at
    least two different labels among what it keeps: a label set of one teaches nothing (``one_label``).
    An instance copied from ``demos`` (the demonstrations' instances, see :func:`copied_instance`) belongs to
    another task: it is dropped (``copied_instance``), and a task left with nothing but such copies is
    rejected as ``demo_instance``.

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
        if demos and copied_instance(inst, demos, classification=classification):
            drop(COPIED_INSTANCE)
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
        copies_only = dropped.get(COPIED_INSTANCE, 0) and dropped.get(COPIED_INSTANCE) == sum(dropped.values())
        return InstanceReport([], dropped, DEMO_INSTANCE if copies_only else NO_VALID_INSTANCE)
    if classification and len({i.output for i in kept}) < 2:
        return InstanceReport([], dropped, ONE_LABEL)
    return InstanceReport(kept, dropped, None)
