"""A language model as judge: a rubric prompt, the reading of its verdict, and the judgement stored with a task.

The rubric (``prompts/judge.txt``, placeholder ``{task}``) asks three questions of a finished task -- is the
instruction a sensible task; does each input fit it; is each output correct and complete -- and wants a
whole number from 1 to 5 and a one-sentence reason. A chat model gets the rubric as the user's message; a
base model gets the same text followed by ``Score:``, which it continues.

Judges are chatty, so :func:`parse_verdict` looks for the score where models put it (``Score: 4``,
``**Score:** 4/5``, ``I would rate this 4 out of 5``, a bare ``4`` when continuing ``Score:``) and for the
reason after ``Reason:`` (else the words after the score). A reply with no readable score, or a score off
the scale (``Score: 9``, ``7/10``), is a :class:`Judgement` with ``score`` None and a ``problem``: counted and
kept for inspection, never a crash.

A judgement lives in one of two places, with the same fields:

* in the task record's ``judge`` field, when ``generate --judge-model`` judged the task before accepting it;
* in the pool's ``judgements.jsonl``, one line per judgement keyed by task id, when ``selfinstruct judge``
  scored the pool afterwards (:mod:`selfinstruct.loop.judging`); the task lines themselves are never rewritten.

:func:`effective_judgements` merges the two for readers (``export --min-score``, ``status``): the later word
wins, and a sidecar line whose instruction no longer matches its task is ignored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from selfinstruct.engines import Sampling
from selfinstruct.engines.chat import Chat, user_chat
from selfinstruct.pool.task import Task
from selfinstruct.protocol.chatprompts import fingerprint, load_template, strip_chat_markup
from selfinstruct.protocol.prompts import _fill, one_line

JUDGE_FILE = "judge.txt"
JUDGE_FIELD = "judge"  # the task record's field holding its judgement
SCALE = (1, 5)

# Reasons a task is rejected for when generate runs with --min-score.
LOW_SCORE = "low_score"  # the judge scored it below --min-score
NO_SCORE = "no_score"  # the judge's reply held no readable score on the scale

# Why a reply gave no score (the judgement's ``problem``; the reply itself is kept as ``raw``).
PROBLEM_NO_SCORE = "no_score"  # no number where a score would be
PROBLEM_OFF_SCALE = "off_scale"  # a number, but not from 1 to 5 (``Score: 9``, ``8/10``)

MAX_REASON_CHARS = 300
MAX_RAW_CHARS = 2000

#: The judge's sampling: greedy, a short answer. A base model continuing "Score:" stops at a blank line.
JUDGE_MAX_TOKENS = 128
COMPLETION_STOP = ("\n\n", "\nTask", "\nInstruction:")


def judge_sampling(*, chat: bool, max_tokens: int = JUDGE_MAX_TOKENS) -> Sampling:
    """Greedy decoding; a chat model may talk before its score, so it gets no blank-line stop."""
    return Sampling(max_tokens=max_tokens, temperature=0.0, stop=() if chat else COMPLETION_STOP)


@dataclass(frozen=True)
class JudgeTemplate:
    """The rubric prompt, loaded from a prompts directory."""

    text: str
    source: str = "<memory>"

    @classmethod
    def load(cls, prompts_dir: str | Path) -> JudgeTemplate:
        path = Path(prompts_dir) / JUDGE_FILE
        hint = f"copy {JUDGE_FILE} from selfinstruct's prompts folder into your --prompts directory"
        return cls(load_template(path, ("{task}",), hint), str(path))

    def fingerprint(self) -> str:
        """Identifies the rubric: a judgement made with another rubric is not this judge's."""
        return fingerprint(self.text)

    def user_message(self, task: Task) -> str:
        return _fill(self.text, task=render_for_judge(task)).strip()

    def completion_prompt(self, task: Task) -> str:
        """For a base model: the rubric, then ``Score:`` to continue."""
        return self.user_message(task) + "\n\nScore:"

    def chat_prompt(self, task: Task) -> Chat:
        return user_chat(self.user_message(task))

    def prompt(self, task: Task, *, chat: bool) -> str | Chat:
        return self.chat_prompt(task) if chat else self.completion_prompt(task)


def render_for_judge(task: Task) -> str:
    """The task as the judge sees it: the instruction, then each instance's input (when any) and output.

    >>> from selfinstruct.pool.task import Instance
    >>> print(render_for_judge(Task("Add the numbers.", [Instance("2, 3", "5"), Instance("", "0")])))
    Instruction: Add the numbers.
    Example 1
    Input: 2, 3
    Output: 5
    Example 2
    Output: 0
    """
    lines = [f"Instruction: {one_line(task.instruction)}"]
    several = len(task.instances) > 1
    for n, inst in enumerate(task.instances, start=1):
        if several:
            lines.append(f"Example {n}")
        if inst.input.strip():
            lines.append(f"Input: {inst.input.strip()}")
        lines.append(f"Output: {inst.output.strip()}")
    return "\n".join(lines)


# -- reading a verdict ---------------------------------------------------------------------------------

_NUMBER = r"(\d+(?:\.\d+)?)(?!\.?\d)"  # never a part of a longer number
# A number that starts a range ("from 1 to 5", "1-5") is the rubric's scale echoed, not a score.
_OUT_OF = rf"(?:[ \t]*(?:/|out[ \t]+of|of)[ \t]*{_NUMBER})?(?![ \t]*(?:to|-|–)[ \t]*\d)"
# "Score: 4" at the start of a line (after a bullet or quote mark): where a judge that follows the rubric puts it.
_SCORE_AT_LINE = re.compile(
    rf"^[ \t>*\-]*(?:final[ \t]+|overall[ \t]+)?(?:score|rating)[ \t*]*[:=][ \t]*\**[ \t]*{_NUMBER}{_OUT_OF}",
    re.I | re.M,
)
_SCORE_LINE = re.compile(rf"\b(?:score|rating)[ \t]*(?:is|of)?[ \t]*[:=\-]?[ \t]*\**[ \t]*{_NUMBER}{_OUT_OF}", re.I)
_RATED = re.compile(rf"\b(?:rate|rated|give|gives|score|scores)\b[^.\n\d]{{0,40}}?\b{_NUMBER}{_OUT_OF}", re.I)
_FRACTION = re.compile(rf"\b{_NUMBER}[ \t]*(?:/|out[ \t]+of)[ \t]*{_NUMBER}", re.I)
_LEADING = re.compile(rf"^[ \t\n*]*{_NUMBER}{_OUT_OF}\b", re.I)
# A chat reply that opens with its number alone ("4", "4/5 - fine", "**5**"), not a numbered line ("1. The ...").
_BARE = re.compile(rf"^[ \t\n*]*{_NUMBER}{_OUT_OF}[ \t*]*(?=$|\n|[,;:\-–][ \t])", re.I)
# A reason ends at a blank line or where the judge starts over (another Score/Rating/Reason line).
_REASON = re.compile(
    r"\b(?:reason|explanation|justification|because)[ \t]*:?[ \t]*(.+?)"
    r"(?=\n[ \t]*\n|\n[ \t]*(?:score|rating|reason)\b|\Z)",
    re.I | re.S,
)
# The rubric's three questions, answered one per line: "Instruction valid: yes", "Valid input: none".
_ANSWER = r"(yes|no|true|false|none|n/?a|not[ \t]+applicable)\b"
_VERDICT_LINE = re.compile(
    rf"^[ \t>*\-]*(?:(?:is[ \t]+the[ \t]+)?(instruction|input|output)s?[ \t]+(?:is[ \t]+)?valid|valid[ \t]+"
    rf"(instruction|input|output)s?)[ \t*]*[:=\-?]?[ \t*]*{_ANSWER}",
    re.I | re.M,
)
_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.S)
_YES = {"yes": True, "true": True, "no": False, "false": False}
VERDICT_KEYS = ("instruction", "input", "output")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a judge's reply says: a score on the scale (or None), a reason, and why the score is missing
    (:data:`PROBLEM_NO_SCORE` or :data:`PROBLEM_OFF_SCALE`). ``verdicts`` holds the answers to the rubric's
    three questions (valid instruction, input, output: True, False, or None for "no input" or no answer)
    when the reply gave at least one, else None."""

    score: float | None
    reason: str
    problem: str | None = None
    verdicts: dict[str, bool | None] | None = None


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() else value


def _truth(value: Any) -> bool | None:
    """A yes/no answer as True/False; anything else ("none", "n/a", a number) is None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _YES.get(value.strip().lower())
    return None


def _json_verdict(body: str) -> tuple[Any, str, dict[str, bool | None]] | None:
    """A JSON object in the reply (``{"score": 4, "reason": "..."}``): its score value (unchecked), reason
    and question answers; None when the reply holds no such object."""
    spans = [body[body.find("{") : body.rfind("}") + 1]] if "{" in body else []
    spans += [m.group(0) for m in _JSON_OBJECT.finditer(body)]
    for span in spans:
        try:
            value = json.loads(span)
        except ValueError:
            continue
        if not isinstance(value, dict):
            continue
        fields = {str(k).strip().lower().replace(" ", "_"): v for k, v in value.items()}
        score = next((fields[k] for k in ("score", "rating", "overall_score", "overall") if k in fields), None)
        if score is None:
            continue
        reason = next((fields[k] for k in ("reason", "explanation", "justification", "rationale") if k in fields), "")
        answers: dict[str, bool | None] = {}
        for key in VERDICT_KEYS:
            for name in (key, f"valid_{key}", f"{key}_valid", f"is_{key}_valid"):
                if name in fields:
                    answers[key] = _truth(fields[name])
                    break
        return score, reason if isinstance(reason, str) else str(reason), answers
    return None


def _line_verdicts(body: str) -> dict[str, bool | None]:
    answers: dict[str, bool | None] = {}
    for match in _VERDICT_LINE.finditer(body):
        key = (match.group(1) or match.group(2)).lower()
        answers.setdefault(key, _truth(match.group(3)))
    return answers


def _on_scale(raw: Any, scale: Any = None) -> tuple[float | int | None, str | None]:
    """A score read from text or JSON, checked against the scale: (score, None) or (None, problem)."""
    if isinstance(raw, str):  # a JSON score written as text: "4", "4/5"
        leading = _LEADING.match(raw.strip())
        if leading is None:
            return None, PROBLEM_NO_SCORE
        raw, scale = leading.group(1), leading.group(2)
    try:
        value = float(raw)
        if scale is not None and float(scale) != SCALE[1]:
            return None, PROBLEM_OFF_SCALE
    except (TypeError, ValueError, OverflowError):
        return None, PROBLEM_NO_SCORE
    if isinstance(raw, bool) or not math.isfinite(value):
        return None, PROBLEM_NO_SCORE if isinstance(raw, bool) else PROBLEM_OFF_SCALE
    if not SCALE[0] <= value <= SCALE[1]:
        return None, PROBLEM_OFF_SCALE
    return (int(value) if value.is_integer() else value), None


def parse_verdict(text: str, *, after_score: bool = False) -> Verdict:
    """Read the score, reason and the three questions' answers from a judge's reply. ``after_score``: the
    prompt ended with ``Score:``, so the reply may start with the number itself. Whatever the judge wrote
    around its score -- a sentence, Markdown, a JSON object, a reasoning block, a bare digit -- is read, or
    the verdict says why not (``problem``); this never raises.

    >>> parse_verdict(" 4\\nReason: Clear task, correct answer.", after_score=True)
    Verdict(score=4, reason='Clear task, correct answer.', problem=None, verdicts=None)
    >>> parse_verdict("Sure! **Score:** 2/5\\n**Reason:** the output is wrong.").score
    2
    >>> parse_verdict("I would rate this task 5 out of 5 because it is clear.").score
    5
    >>> parse_verdict('{"score": 3, "reason": "the output is incomplete", "output": false}').verdicts
    {'output': False}
    >>> v = parse_verdict("Score: 2\\nInstruction valid: yes\\nInput valid: none\\nOutput valid: no\\nReason: x")
    >>> v.score, v.verdicts, v.reason
    (2, {'instruction': True, 'input': None, 'output': False}, 'x')
    >>> parse_verdict("Score: 8/10").problem, parse_verdict("Score: 0").problem
    ('off_scale', 'off_scale')
    >>> parse_verdict("This task is great!").problem
    'no_score'
    """
    try:
        return _parse_verdict(text, after_score=after_score)
    except (RecursionError, ValueError, TypeError, OverflowError):  # pragma: no cover - a guard, not a path
        return Verdict(None, "", PROBLEM_NO_SCORE)


def _parse_verdict(text: str, *, after_score: bool) -> Verdict:
    body = strip_chat_markup(text)
    answers = _line_verdicts(body)
    found = _json_verdict(body) if "{" in body else None
    if found is not None:
        raw_score, reason, json_answers = found
        answers = {**answers, **json_answers}
        score, problem = _on_scale(raw_score)
        return Verdict(score, _clip(one_line(reason)), problem, _ordered(answers))
    prose = _VERDICT_LINE.sub("", body) if answers else body
    match = None
    if after_score:
        match = _LEADING.match(prose)
    for pattern in (_SCORE_AT_LINE, _SCORE_LINE, _RATED, _FRACTION):
        if match is not None:
            break
        match = pattern.search(prose)
    if match is None:
        match = _BARE.match(prose)  # a chat model answering with the bare number
    reason = _reason(prose, match.end() if match else 0)
    if match is None:
        return Verdict(None, reason, PROBLEM_NO_SCORE, _ordered(answers))
    score, problem = _on_scale(match.group(1), match.group(2))
    return Verdict(score, reason, problem, _ordered(answers))


def _ordered(answers: dict[str, bool | None]) -> dict[str, bool | None] | None:
    """The answers in the rubric's order; None when the reply answered none of the questions."""
    return {k: answers[k] for k in VERDICT_KEYS if k in answers} or None


def _reason(body: str, after: int) -> str:
    found = _REASON.search(body)
    text = found.group(1) if found else body[after:]
    return _clip(one_line(text).lstrip(" .,:;-)*").replace("**", ""))


def _clip(text: str) -> str:
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1].rstrip() + "…"
    return text


# -- the judgement record ------------------------------------------------------------------------------


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Judgement:
    """One judge's verdict on one task, with who judged (model and rubric fingerprint) and when.

    ``raw`` keeps the judge's reply (cut to 2,000 characters) for audit. ``verdicts`` holds the answers to
    the rubric's three questions when the reply gave them: ``{"instruction": true|false|null, "input": ...,
    "output": ...}`` (null: no input to judge, or no answer), the paper's Table 2 from a judge.
    """

    score: float | None
    reason: str
    model: str
    rubric: str
    judged_at: str
    problem: str | None = None
    raw: str | None = None
    verdicts: dict[str, bool | None] | None = None

    @classmethod
    def from_reply(cls, text: str, *, model: str, rubric: str, after_score: bool) -> Judgement:
        verdict = parse_verdict(text, after_score=after_score)
        full = None
        if verdict.verdicts is not None:
            full = {key: verdict.verdicts.get(key) for key in VERDICT_KEYS}
        return cls(verdict.score, verdict.reason, model, rubric, utc_now(), verdict.problem, text[:MAX_RAW_CHARS], full)

    @property
    def identity(self) -> tuple[str, str]:
        """Which judge: the model and the rubric."""
        return (self.model, self.rubric)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "score": self.score,
            "reason": self.reason,
            "model": self.model,
            "rubric": self.rubric,
            "judged_at": self.judged_at,
        }
        if self.verdicts is not None:
            record["verdicts"] = dict(self.verdicts)
        if self.problem is not None:
            record["problem"] = self.problem
        if self.raw is not None:
            record["raw"] = self.raw
        return record

    @classmethod
    def from_dict(cls, value: Any) -> Judgement | None:
        """A judgement from a stored dict; None when it is not one (a hand-edited or foreign field). A
        ``verdicts`` field that is not a mapping of the three questions to true, false or null is ignored."""
        if not isinstance(value, Mapping):
            return None
        score = value.get("score")
        if isinstance(score, bool) or not (score is None or isinstance(score, (int, float))):
            return None
        if isinstance(score, float) and not math.isfinite(score):
            return None
        strings = {k: value.get(k) for k in ("reason", "model", "rubric", "judged_at")}
        if not all(isinstance(v, str) for v in strings.values()):
            return None
        problem, raw, stored = value.get("problem"), value.get("raw"), value.get("verdicts")
        verdicts: dict[str, bool | None] | None = None
        if isinstance(stored, Mapping) and all(
            stored.get(k) is None or isinstance(stored.get(k), bool) for k in VERDICT_KEYS
        ):
            verdicts = {k: stored.get(k) for k in VERDICT_KEYS}
        return cls(
            score,
            str(strings["reason"]),
            str(strings["model"]),
            str(strings["rubric"]),
            str(strings["judged_at"]),
            problem if isinstance(problem, str) else None,
            raw if isinstance(raw, str) else None,
            verdicts,
        )

    def to_sidecar(self, task: Task) -> dict[str, Any]:
        """A line of ``judgements.jsonl``: the task's id and instruction (to notice a mismatch), then the
        judgement's fields."""
        return {"id": task.id, "instruction": task.instruction, **self.to_dict()}


def passes(judgement: Judgement | None, min_score: float | None) -> str | None:
    """None when the task clears the bar (or there is none), else the rejection reason.

    >>> j = Judgement(3, "", "m", "r", "t")
    >>> passes(j, None), passes(j, 3), passes(j, 4), passes(Judgement(None, "", "m", "r", "t"), 1)
    (None, None, 'low_score', 'no_score')
    """
    if min_score is None:
        return None
    if judgement is None or judgement.score is None:
        return NO_SCORE
    return None if judgement.score >= min_score else LOW_SCORE


def embedded_judgement(task: Task) -> Judgement | None:
    """The judgement stored in the task record by ``generate --judge-model``, if any."""
    return Judgement.from_dict(task.meta.get(JUDGE_FIELD))


@dataclass(frozen=True, slots=True)
class SidecarLine:
    """A line of ``judgements.jsonl`` as read back: the task id and instruction it names, its judgement."""

    task_id: str
    instruction: str
    judgement: Judgement


def read_sidecar_records(records: Iterable[Any]) -> tuple[dict[str, SidecarLine], int]:
    """The latest judgement per task id from ``judgements.jsonl`` records, and how many records were not
    judgements (skipped)."""
    latest: dict[str, SidecarLine] = {}
    bad = 0
    for record in records:
        judgement = Judgement.from_dict(record)
        task_id = record.get("id") if isinstance(record, Mapping) else None
        instruction = record.get("instruction") if isinstance(record, Mapping) else None
        if judgement is None or not isinstance(task_id, str) or not task_id or not isinstance(instruction, str):
            bad += 1
            continue
        latest[task_id] = SidecarLine(task_id, instruction, judgement)
    return latest, bad


@dataclass(frozen=True, slots=True)
class Merged:
    """Every task's effective judgement (None: not judged), and sidecar lines that name no task of the pool
    (``orphans``: an id not in the pool, or an instruction that does not match the task with that id)."""

    judgements: list[Judgement | None]
    orphans: int


def effective_judgements(tasks: Sequence[Task], sidecar: Mapping[str, SidecarLine]) -> Merged:
    """Each task's judgement: the sidecar's latest line for its id (written after the task, so it is the
    later word) when its instruction matches, else the one in the record."""
    used = 0
    out: list[Judgement | None] = []
    for task in tasks:
        line = sidecar.get(task.id)
        if line is not None and line.instruction == task.instruction:
            used += 1
            out.append(line.judgement)
        else:
            out.append(embedded_judgement(task))
    return Merged(out, len(sidecar) - used)


def with_judgement(task: Task, judgement: Judgement | None) -> Task:
    """The task with ``judgement`` in its ``judge`` field (a copy; the original is untouched)."""
    meta = dict(task.meta)
    if judgement is None:
        meta.pop(JUDGE_FIELD, None)
    else:
        meta[JUDGE_FIELD] = judgement.to_dict()
    return Task(task.instruction, list(task.instances), task.is_classification, task.id, task.name, meta)


__all__ = [
    "JUDGE_FIELD",
    "JUDGE_FILE",
    "LOW_SCORE",
    "NO_SCORE",
    "PROBLEM_NO_SCORE",
    "PROBLEM_OFF_SCALE",
    "SCALE",
    "VERDICT_KEYS",
    "JudgeTemplate",
    "Judgement",
    "Merged",
    "SidecarLine",
    "Verdict",
    "effective_judgements",
    "embedded_judgement",
    "judge_sampling",
    "parse_verdict",
    "passes",
    "read_sidecar_records",
    "render_for_judge",
    "with_judgement",
]
