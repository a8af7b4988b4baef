"""The quality part of ``selfinstruct report``: the judge's scores, the paper's Table 1, and cheap signals.

* **Judge scores** where a judge scored the pool (``judgements.jsonl`` from ``selfinstruct judge``, or the
  ``judge`` field ``generate --judge-model`` writes into a task; the later word wins, as in
  :func:`selfinstruct.protocol.judge.effective_judgements`): the distribution of scores, the share at or above each
  bar, the same by round and by task type. Where a judgement carries the three separate answers
  (``"verdicts": {"instruction": true|false|null, "input": ..., "output": ...}``), the paper's Table 2
  from them: the share of valid instructions, inputs, outputs, and of tasks valid in all three, with
  Wilson 95% intervals.
* **Table 1** of the paper: instruction, instance and classification counts, empty inputs per instance,
  mean word lengths.
* **Signals that need no judge**, each a per-task flag (so the Parquet export can filter on it): every
  output of a task the same (non-classification tasks), an output equal to its input or to the
  instruction, an output that stops mid-sentence (a heuristic: 20 words or more and no closing
  punctuation), a non-empty input repeated in other tasks, a classification task with one label only.

Scope: counting. Nothing here reads files or prints.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from selfinstruct.pool.task import Task
from selfinstruct.protocol.judge import JUDGE_FIELD, SCALE, Judgement

QUESTIONS = ("instruction", "input", "output")
# The paper's three questions (Wang et al. 2022, section 4.2), as a rater or a judge answers them.
QUESTION_TEXT = {
    "instruction": "Does the instruction describe a valid task?",
    "input": "Is the input appropriate for the instruction?",
    "output": "Is the output a correct and acceptable response to the instruction and input?",
}
SIGNALS = {
    "identical_outputs": "every output the same (non-classification tasks of 2+ instances)",
    "output_is_input": "an output equal to its input",
    "output_is_instruction": "an output equal to the instruction",
    "truncated_output": "an output that stops mid-sentence (20+ words, no closing punctuation; a heuristic)",
    "repeated_input": "a non-empty input that other tasks have too",
    "one_label": "a classification task of 2+ instances with one label only",
}
TRUNCATION_WORDS = 20
_CLOSERS = tuple(".!?…\"'”’)]}>`*|;:-_=")
MAX_ROUND_ROWS = 12


def norm(text: str) -> str:
    """Case and whitespace folded, for "the same text" comparisons."""
    return " ".join(text.casefold().split())


def wilson(yes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``yes / n`` (95% by default); ``(0, 1)`` when ``n`` is 0.

    >>> [round(x, 3) for x in wilson(54, 100)]
    [0.442, 0.635]
    """
    if n <= 0:
        return 0.0, 1.0
    p = yes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(yes: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(yes, n)
    return {"yes": yes, "n": n, "share": round(yes / n, 4) if n else None, "low": round(lo, 4), "high": round(hi, 4)}


def all_valid(answers: Sequence[Mapping[str, bool | None]]) -> dict[str, Any]:
    """The share of tasks valid in all three: a "no" to any question decides it; otherwise all three need
    an answer (a task with an unanswered question and no "no" is left out)."""
    decided = [a for a in answers if any(a[q] is False for q in QUESTIONS) or all(a[q] is not None for q in QUESTIONS)]
    return proportion(sum(1 for a in decided if all(a[q] for q in QUESTIONS)), len(decided))


# ------------------------------------------------------------------------------------------------ judge


def judge_records(tasks: Sequence[Task], sidecar: Iterable[Any]) -> list[dict[str, Any] | None]:
    """Each task's judgement as its raw record (None: not judged): the latest ``judgements.jsonl`` line
    for its id when that line's instruction matches, else the task's own ``judge`` field."""
    latest: dict[str, Mapping[str, Any]] = {}
    for record in sidecar:
        if isinstance(record, Mapping) and isinstance(record.get("id"), str) and Judgement.from_dict(record):
            latest[record["id"]] = record
    out: list[dict[str, Any] | None] = []
    for task in tasks:
        line = latest.get(task.id)
        if line is not None and line.get("instruction") == task.instruction:
            out.append(dict(line))
            continue
        own = task.meta.get(JUDGE_FIELD)
        out.append(dict(own) if isinstance(own, Mapping) and Judgement.from_dict(own) is not None else None)
    return out


def score_of(record: Mapping[str, Any] | None) -> float | None:
    judgement = Judgement.from_dict(record) if record is not None else None
    return None if judgement is None else judgement.score


def verdicts_of(record: Mapping[str, Any] | None) -> dict[str, bool | None] | None:
    """The three separate answers of a judgement, when it has them (``{"instruction": True, ...}``)."""
    raw = record.get("verdicts") if record is not None else None
    if not isinstance(raw, Mapping):
        return None
    return {q: raw.get(q) if isinstance(raw.get(q), bool) else None for q in QUESTIONS}


def _score_key(score: float) -> str:
    return f"{score:g}"


def _bars(scores: Sequence[float]) -> dict[str, float]:
    low, high = SCALE
    n = len(scores)
    return {str(bar): round(sum(s >= bar for s in scores) / n, 4) if n else 0.0 for bar in range(low + 1, high + 1)}


def _group_rows(label: str, scores: Sequence[float], judged: int) -> dict[str, Any]:
    return {
        "group": label,
        "judged": judged,
        "scored": len(scores),
        "mean": round(sum(scores) / len(scores), 3) if scores else None,
        "at_or_above": _bars(scores),
    }


def table2(records: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The paper's Table 2 from judgements that answer the three questions apart; None when none does."""
    answered = [v for v in map(verdicts_of, records) if v is not None]
    if not answered:
        return None
    out = {}
    for q in QUESTIONS:
        said = [v[q] for v in answered if v[q] is not None]
        out[q] = proportion(sum(1 for x in said if x), len(said))
    out["all"] = all_valid(answered)
    return {"tasks": len(answered), **out}


def judge_section(
    tasks: Sequence[Task], records: Sequence[Mapping[str, Any] | None], rounds: Sequence[int | None]
) -> dict[str, Any] | None:
    """Scores by value, at or above each bar, by round (grouped) and by task type; None if nothing is judged."""
    judged = [i for i, r in enumerate(records) if r is not None]
    if not judged:
        return None
    scores = {i: s for i in judged if (s := score_of(records[i])) is not None}
    values = list(scores.values())
    problems = Counter(str(records[i].get("problem") or "no_score") for i in judged if i not in scores)  # type: ignore[union-attr]
    models = Counter(str(records[i].get("model", "")) for i in judged)  # type: ignore[union-attr]
    by_round: list[dict[str, Any]] = []
    known = sorted({r for i in judged if (r := rounds[i]) is not None})
    if known:
        size = max(1, math.ceil(len(known) / MAX_ROUND_ROWS))
        for k in range(0, len(known), size):
            chunk = set(known[k : k + size])
            members = [i for i in judged if rounds[i] in chunk]
            label = f"{min(chunk)}" if len(chunk) == 1 else f"{min(chunk)}–{max(chunk)}"
            by_round.append(_group_rows(label, [scores[i] for i in members if i in scores], len(members)))
    kinds = (("classification", True), ("not classification", False), ("unknown", None))
    by_type = []
    for label, flag in kinds:
        members = [i for i in judged if tasks[i].is_classification is flag]
        if members:
            by_type.append(_group_rows(label, [scores[i] for i in members if i in scores], len(members)))
    return {
        "tasks": len(tasks),
        "judged": len(judged),
        "scored": len(values),
        "problems": dict(problems.most_common()),
        "models": dict(models.most_common()),
        "scale": list(SCALE),
        "distribution": {_score_key(k): v for k, v in sorted(Counter(values).items())},
        "mean": round(sum(values) / len(values), 3) if values else None,
        "at_or_above": _bars(values),
        "by_round": by_round,
        "by_type": by_type,
        "table2": table2(records),
    }


# ------------------------------------------------------------------------------------------------ table 1


def table1(
    tasks: Sequence[Task], input_words: Sequence[int], output_words: Sequence[int], instruction_words: Sequence[int]
) -> dict[str, Any]:
    """The quantities of the paper's Table 1 for this pool, from the word counts (whitespace-separated) of
    the instructions, of the non-empty inputs and of every output."""
    instances = len(output_words)
    clf = sum(1 for t in tasks if t.is_classification)
    unknown = sum(1 for t in tasks if t.is_classification is None)

    def mean(values: Sequence[int]) -> float | None:
        return round(sum(values) / len(values), 2) if values else None

    return {
        "instructions": len(tasks),
        "classification": clf,
        "non_classification": len(tasks) - clf - unknown,
        "unknown_type": unknown,
        "instances": instances,
        "instances_empty_input": instances - len(input_words),
        "mean_instruction_words": mean(instruction_words),
        "mean_input_words": mean(input_words),
        "mean_output_words": mean(output_words),
    }


# ------------------------------------------------------------------------------------------------ signals


def _truncated(output: str) -> bool:
    text = output.rstrip()
    if not text or text.endswith(_CLOSERS) or text[-1].isdigit():
        return False
    return len(text.split(maxsplit=TRUNCATION_WORDS)) >= TRUNCATION_WORDS


def signal_flags(tasks: Sequence[Task]) -> dict[str, list[bool]]:
    """Per signal of :data:`SIGNALS`, one flag per task."""
    inputs = [[norm(i.input) for i in t.instances] for t in tasks]  # "" for an empty input
    seen_in: dict[str, set[int]] = {}
    for k, keys in enumerate(inputs):
        for key in keys:
            if key:
                seen_in.setdefault(key, set()).add(k)
    repeated = {key for key, where in seen_in.items() if len(where) > 1}
    flags: dict[str, list[bool]] = {name: [] for name in SIGNALS}
    for task, ins in zip(tasks, inputs, strict=True):
        outs = [norm(i.output) for i in task.instances]
        many = len(outs) > 1
        instruction = norm(task.instruction)
        flags["identical_outputs"].append(many and not task.is_classification and len(set(outs)) == 1)
        flags["output_is_input"].append(any(i and i == o for i, o in zip(ins, outs, strict=True)))
        flags["output_is_instruction"].append(instruction in outs)
        flags["truncated_output"].append(any(_truncated(i.output) for i in task.instances))
        flags["repeated_input"].append(any(i in repeated for i in ins if i))
        flags["one_label"].append(bool(task.is_classification) and many and len(set(outs)) == 1)
    return flags


def signals_section(
    tasks: Sequence[Task], flags: Mapping[str, Sequence[bool]], examples: int, clip: Any
) -> dict[str, Any]:
    n = len(tasks)
    out = {}
    for name, what in SIGNALS.items():
        hits = [k for k, flag in enumerate(flags[name]) if flag]
        out[name] = {
            "what": what,
            "count": len(hits),
            "share": round(len(hits) / n, 4) if n else 0.0,
            "examples": [
                {
                    "id": tasks[k].id,
                    "instruction": clip(tasks[k].instruction, 300),
                    "instances": [
                        {"input": clip(i.input, 200), "output": clip(i.output, 200)} for i in tasks[k].instances[:3]
                    ],
                }
                for k in hits[:examples]
            ],
        }
    return out
