"""Tests for selfinstruct.protocol.judge: the rubric prompt, reading verdicts, and the judgement record."""

from __future__ import annotations

import doctest
import math
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

import selfinstruct.protocol.judge as judge_module
from selfinstruct.errors import ConfigError
from selfinstruct.pool.task import Instance, Task, task_from_record
from selfinstruct.protocol.judge import (
    JUDGE_FIELD,
    LOW_SCORE,
    NO_SCORE,
    PROBLEM_NO_SCORE,
    PROBLEM_OFF_SCALE,
    Judgement,
    JudgeTemplate,
    effective_judgements,
    embedded_judgement,
    judge_sampling,
    parse_verdict,
    passes,
    read_sidecar_records,
    render_for_judge,
    with_judgement,
)

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
TASK = Task("Add the two numbers.", [Instance("2, 3", "5")], False, "machine_task_000001", "add")


def test_doctests() -> None:
    assert doctest.testmod(judge_module).failed == 0


# -- the rubric ------------------------------------------------------------------------------------------


def test_template_renders_for_both_apis() -> None:
    template = JudgeTemplate.load(PROMPTS_DIR)
    completion = template.prompt(TASK, chat=False)
    chat = template.prompt(TASK, chat=True)
    assert isinstance(completion, str) and completion.endswith("Reason: one short sentence\n\nScore:")
    assert "Instruction: Add the two numbers.\nInput: 2, 3\nOutput: 5" in completion
    assert isinstance(chat, tuple) and chat[0].role == "user"
    assert chat[0].content == completion.removesuffix("\n\nScore:")
    assert "correct and complete" in chat[0].content and "{task}" not in chat[0].content


def test_template_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"judge.txt: prompt template missing"):
        JudgeTemplate.load(tmp_path)
    shutil.copy(PROMPTS_DIR / "judge.txt", tmp_path / "judge.txt")
    (tmp_path / "judge.txt").write_text("no placeholder here")
    with pytest.raises(ConfigError, match=r"placeholder \{task\}"):
        JudgeTemplate.load(tmp_path)


def test_fingerprint_identifies_the_rubric() -> None:
    assert JudgeTemplate("A {task}").fingerprint() != JudgeTemplate("B {task}").fingerprint()


def test_render_for_judge_numbers_several_instances_only() -> None:
    assert render_for_judge(TASK) == "Instruction: Add the two numbers.\nInput: 2, 3\nOutput: 5"
    two = Task("Say it.", [Instance("", "a"), Instance("b", "c")])
    assert render_for_judge(two) == "Instruction: Say it.\nExample 1\nOutput: a\nExample 2\nInput: b\nOutput: c"


@pytest.mark.parametrize(("chat", "stop"), [(False, ("\n\n", "\nTask", "\nInstruction:")), (True, ())])
def test_judge_sampling_is_greedy(chat: bool, stop: tuple[str, ...]) -> None:
    sampling = judge_sampling(chat=chat, max_tokens=64)
    assert sampling.temperature == 0 and sampling.max_tokens == 64 and sampling.stop == stop


# -- verdicts --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "after_score", "score", "reason", "problem"),
    [
        (" 4\nReason: Clear and correct.", True, 4, "Clear and correct.", None),
        (" 5", True, 5, "", None),
        (" 3.5\nReason: ok", True, 3.5, "ok", None),
        ("Score: 2\nReason: The output is wrong.", False, 2, "The output is wrong.", None),
        ("**Score:** 4/5\n**Reason:** fine", False, 4, "fine", None),
        ("Score: 4 out of 5. Reason: fine", False, 4, "fine", None),
        ("Sure! Let me evaluate.\n\nScore: 1\nReason: nonsense task", False, 1, "nonsense task", None),
        ("Rating: 3\nExplanation: usable", False, 3, "usable", None),
        ("I would rate this task a 5 out of 5 because it is clear.", False, 5, "it is clear.", None),
        ("4/5 - good task", False, 4, "good task", None),
        ("5", False, 5, "", None),
        ("The score is 2. The input does not fit.", False, 2, "The input does not fit.", None),
        ("Score: 8/10", False, None, "", PROBLEM_OFF_SCALE),
        ("Score: 0\nReason: broken", False, None, "broken", PROBLEM_OFF_SCALE),
        ("Score: 17", False, None, "", PROBLEM_OFF_SCALE),
        (" 99999999999999999999999999\nReason: x", True, None, "x", PROBLEM_OFF_SCALE),
        ("This task looks fine to me overall", False, None, "This task looks fine to me overall", PROBLEM_NO_SCORE),
        ("", False, None, "", PROBLEM_NO_SCORE),
        ("Score: N/A", False, None, "Score: N/A", PROBLEM_NO_SCORE),
        ("<think>score 1?</think>Score: 4\nReason: good", False, 4, "good", None),
        ("Score: 3\nReason: first.\nScore: 5\nReason: second.", False, 3, "first.", None),
    ],
)
def test_parse_verdict(reply: str, after_score: bool, score: float | None, reason: str, problem: str | None) -> None:
    verdict = parse_verdict(reply, after_score=after_score)
    assert (verdict.score, verdict.reason, verdict.problem) == (score, reason, problem)


def test_long_reason_is_cut() -> None:
    verdict = parse_verdict("Score: 3\nReason: " + "word " * 200)
    assert len(verdict.reason) == 300 and verdict.reason.endswith("…")


def test_score_types() -> None:
    assert isinstance(parse_verdict("Score: 4.0").score, int)
    assert isinstance(parse_verdict("Score: 4.5").score, float)


# -- records ---------------------------------------------------------------------------------------------


def test_judgement_from_reply_keeps_the_raw_reply_for_audit() -> None:
    good = Judgement.from_reply(" 4\nReason: ok", model="m", rubric="r", after_score=True)
    bad = Judgement.from_reply("x" * 5000, model="m", rubric="r", after_score=True)
    assert good.score == 4 and good.raw == " 4\nReason: ok" and good.to_dict()["raw"] == good.raw
    assert "verdicts" not in good.to_dict() and "problem" not in good.to_dict()
    assert bad.score is None and bad.problem == PROBLEM_NO_SCORE and bad.raw == "x" * 2000
    assert Judgement.from_dict(good.to_dict()) == good
    assert Judgement.from_dict(bad.to_dict()) == bad


@pytest.mark.parametrize(
    "value",
    [
        None,
        "4",
        [],
        {"score": 4},
        {"score": True, "reason": "", "model": "m", "rubric": "r", "judged_at": "t"},
        {"score": "4", "reason": "", "model": "m", "rubric": "r", "judged_at": "t"},
        {"score": math.inf, "reason": "", "model": "m", "rubric": "r", "judged_at": "t"},
        {"score": 4, "reason": 7, "model": "m", "rubric": "r", "judged_at": "t"},
    ],
)
def test_from_dict_rejects_what_is_not_a_judgement(value: Any) -> None:
    assert Judgement.from_dict(value) is None


def test_judgement_round_trips_through_a_task_record() -> None:
    judgement = Judgement(4, "ok", "m", "r", "2026-01-01T00:00:00+00:00")
    task = with_judgement(TASK, judgement)
    assert TASK.meta == {}  # a copy
    back = task_from_record(task.to_record())
    assert embedded_judgement(back) == judgement
    assert JUDGE_FIELD not in with_judgement(task, None).meta


@pytest.mark.parametrize(
    ("score", "bar", "expected"),
    [(4, None, None), (4, 4, None), (4.5, 4, None), (3, 4, LOW_SCORE), (None, 1, NO_SCORE), (None, None, None)],
)
def test_passes(score: float | None, bar: float | None, expected: str | None) -> None:
    assert passes(Judgement(score, "", "m", "r", "t"), bar) == expected


def test_passes_without_a_judgement() -> None:
    assert passes(None, 3) == NO_SCORE and passes(None, None) is None


def _line(task_id: Any, instruction: Any, score: float | None, model: str = "m") -> dict[str, Any]:
    return {"id": task_id, "instruction": instruction, **Judgement(score, "", model, "r", "t").to_dict()}


def test_sidecar_keeps_the_latest_line_per_task_and_counts_junk() -> None:
    records = [
        _line("a", "A", 2),
        _line("a", "A", 5),
        _line("b", "B", 3),
        {"id": "c"},
        "junk",
        _line("", "X", 1),
        _line(7, "X", 1),
        _line("d", None, 1),
    ]
    latest, bad = read_sidecar_records(records)
    assert {k: v.judgement.score for k, v in latest.items()} == {"a": 5, "b": 3}
    assert bad == 5


def test_effective_judgements_prefer_matching_sidecar_lines() -> None:
    embedded = Judgement(1, "", "gen", "r", "t")
    tasks = [
        with_judgement(Task("A", [Instance("", "x")], id="a"), embedded),
        Task("B", [Instance("", "y")], id="b"),
        with_judgement(Task("C", [Instance("", "z")], id="c"), embedded),
    ]
    sidecar, _ = read_sidecar_records([_line("a", "A", 5), _line("c", "not C", 4), _line("zzz", "Z", 3)])
    merged = effective_judgements(tasks, sidecar)
    assert [j.score if j else None for j in merged.judgements] == [5, None, 1]
    assert merged.orphans == 2


# -- what a real instruct judge writes around its score (issue 20) -------------------------------------------

QWEN_REASONING = """To rate this task, let's go through the rubric:

1. The instruction is clear and sensible.
2. The input fits: it is a sentence to correct.
3. The output is correct.

Score: 5
Reason: All three hold."""


@pytest.mark.parametrize(
    ("reply", "score", "verdicts", "problem"),
    [
        ("4", 4, None, None),
        ("**4**", 4, None, None),
        ("Score: 4/5", 4, None, None),
        ("The task deserves a 3 out of 5 because the output is thin.", 3, None, None),
        ('{"score": 2, "reason": "wrong answer"}', 2, None, None),
        ('```json\n{"Score": "4/5", "Reason": "fine", "instruction": "yes", "input": null, "output": true}\n```', 4,
         {"instruction": True, "input": None, "output": True}, None),
        ('Here you go: {"rating": 5, "explanation": "good"} Hope it helps.', 5, None, None),
        ('{"score": 9}', None, None, "off_scale"),
        ('{"score": "high"}', None, None, "no_score"),
        ('{"score": true}', None, None, "no_score"),
        ('{"reason": "no score here"}\nScore: 3', 3, None, None),
        ("{not json at all} Score: 2", 2, None, None),
        (QWEN_REASONING, 5, None, None),
        ("<think>A score of 1 would mean nonsense; this is fine.</think>\nScore: 4\nReason: ok", 4, None, None),
        ("Score: 3\nInstruction valid: yes\nInput valid: no\nOutput valid: yes\nReason: the input does not fit.", 3,
         {"instruction": True, "input": False, "output": True}, None),
        ("**Score:** 2\n**Instruction valid:** Yes\n**Input valid:** None (no input)\n**Output valid:** No", 2,
         {"instruction": True, "input": None, "output": False}, None),
        ("Valid instruction: no\nScore: 1", 1, {"instruction": False, "input": None, "output": None}, None),
        ("1. The instruction is clear.\n2. The input fits.\n3. The output is right.", None, None, "no_score"),
        ("Task: Rate the task.\nScore: a whole number from 1 to 5\nReason: one short sentence", None, None,
         "no_score"),
    ],
)  # fmt: skip
def test_real_judge_replies(
    reply: str, score: float | None, verdicts: dict[str, Any] | None, problem: str | None
) -> None:
    judgement = Judgement.from_reply(reply, model="m", rubric="r", after_score=False)
    assert (judgement.score, judgement.problem) == (score, problem)
    assert judgement.verdicts == verdicts
    assert judgement.raw == reply  # kept for audit, scored or not
    record = judgement.to_dict()
    assert ("verdicts" in record) is (verdicts is not None)
    assert Judgement.from_dict(record) == judgement


@pytest.mark.parametrize("seed", range(30))
def test_judge_garbage_never_crashes(seed: int) -> None:
    rng = random.Random(seed)
    pieces = ["Score:", "{", "}", '"score":', "4", "/5", "out of", "Reason:", "Valid input:", "yes", "null", "\n",
              "**", "<think>", "</think>", "9" * 400, "1e999", "-", "NaN", '"', ":", "[", "]"]  # fmt: skip
    text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40)))
    verdict = parse_verdict(text)
    assert verdict.score is None or 1 <= verdict.score <= 5
    assert verdict.problem in (None, "no_score", "off_scale")


@pytest.mark.parametrize(
    "stored",
    [{"instruction": "yes"}, {"instruction": 1}, ["instruction"], "all valid"],
)
def test_foreign_verdicts_are_ignored_not_fatal(stored: Any) -> None:
    record = {**Judgement(4, "", "m", "r", "t").to_dict(), "verdicts": stored}
    judgement = Judgement.from_dict(record)
    assert judgement is not None and judgement.score == 4 and judgement.verdicts is None


def test_the_three_question_rubric_is_a_drop_in_judge_txt(tmp_path: Path) -> None:
    """prompts/judge_questions.txt, copied over judge.txt, asks the paper's three questions after the score."""
    target = tmp_path / "prompts"
    target.mkdir()
    shutil.copy(PROMPTS_DIR / "judge_questions.txt", target / "judge.txt")
    template = JudgeTemplate.load(target)
    assert template.fingerprint() != JudgeTemplate.load(PROMPTS_DIR).fingerprint()
    prompt = template.completion_prompt(Task("Add the numbers.", [Instance("2, 3", "5")]))
    assert prompt.endswith("\n\nScore:") and "Output valid: yes or no" in prompt
    reply = " 4\nInstruction valid: yes\nInput valid: yes\nOutput valid: no\nReason: the sum is fine but terse."
    judgement = Judgement.from_reply(reply, model="m", rubric=template.fingerprint(), after_score=True)
    assert judgement.score == 4 and judgement.verdicts == {"instruction": True, "input": True, "output": False}
