"""Tests for selfinstruct.protocol.alpaca: the one-shot prompt of complete tasks and the parser of the list."""

from __future__ import annotations

import doctest
import random
import shutil
from pathlib import Path

import pytest

import selfinstruct.protocol.alpaca as alpaca
from selfinstruct.errors import ConfigError
from selfinstruct.pool.task import Instance, Task
from selfinstruct.protocol.alpaca import (
    AlpacaTemplates,
    ParsedTask,
    completion_stop,
    parse_task_list,
    pick_demos,
    render_task,
    to_task,
)

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


def test_doctests() -> None:
    assert doctest.testmod(alpaca).failed == 0


@pytest.fixture(scope="module")
def templates() -> AlpacaTemplates:
    return AlpacaTemplates.load(PROMPTS_DIR)


SEEDS = [
    Task("Give two synonyms for the word.", [Instance("happy", "glad, cheerful")], False, "s0"),
    Task("Write a haiku about rain.", [Instance("", "Soft rain on the roof")], False, "s1"),
    Task("Classify the sentiment.", [Instance("I loved it", "Positive"), Instance("Awful", "Negative")], True, "s2"),
    Task("An empty seed.", [Instance("x", "")], False, "s3"),  # never shown: its only output is empty
]


# -- templates ------------------------------------------------------------------------------------------


def test_templates_load_and_fingerprint_per_api(templates: AlpacaTemplates) -> None:
    assert templates.fingerprint(chat=True) != templates.fingerprint(chat=False)
    assert len(templates.fingerprint(chat=False)) == 16


@pytest.mark.parametrize("missing", ["alpaca.txt", "chat/alpaca.txt"])
def test_missing_template_is_named(tmp_path: Path, missing: str) -> None:
    target = tmp_path / "p"
    shutil.copytree(PROMPTS_DIR, target)
    (target / missing).unlink()
    with pytest.raises(ConfigError, match=rf"{missing}: prompt template missing .*copy alpaca.txt"):
        AlpacaTemplates.load(target)


def test_chat_template_needs_count(tmp_path: Path) -> None:
    target = tmp_path / "p"
    shutil.copytree(PROMPTS_DIR, target)
    path = target / "chat" / "alpaca.txt"
    path.write_text(path.read_text().replace("{count}", "twenty"))
    with pytest.raises(ConfigError, match=r"placeholder \{count\}"):
        AlpacaTemplates.load(target)


def test_completion_prompt_lists_tasks_and_opens_the_next(templates: AlpacaTemplates) -> None:
    prompt = templates.completion_prompt(SEEDS[:2])
    assert "Task 1\nInstruction: Give two synonyms for the word.\nInput: happy\nOutput: glad, cheerful" in prompt
    assert "Task 2\nInstruction: Write a haiku about rain.\nInput: <none>\nOutput: Soft rain on the roof" in prompt
    assert prompt.endswith("\n\nTask 3\n")


def test_chat_prompt_asks_for_count_tasks(templates: AlpacaTemplates) -> None:
    chat = templates.chat_prompt(SEEDS[:2], count=7)
    assert [m.role for m in chat] == ["user"]
    text = chat[0].content
    assert "Task 1\nInstruction: Give two synonyms" in text
    assert 'Write 7 new tasks for the collection, numbered "Task 3" to "Task 9"' in text


def test_render_task_collapses_the_instruction_only() -> None:
    task = Task("Sum  the\nnumbers.", [Instance("1\n2", "3")])
    assert render_task(4, task) == "Task 4\nInstruction: Sum the numbers.\nInput: 1\n2\nOutput: 3"


def test_completion_stop() -> None:
    assert completion_stop(3, 20) == ("Task 24",)


def test_pick_demos_is_seeded_and_uses_one_nonempty_instance() -> None:
    pool = [Task("Pool task one here.", [Instance("", "answer")], False, "m0")]
    first = pick_demos(random.Random(1), SEEDS, pool, 2, 1)
    assert first == pick_demos(random.Random(1), SEEDS, pool, 2, 1)
    assert len(first) == 3 and "Pool task one here." in [t.instruction for t in first]
    assert all(len(t.instances) == 1 and t.instances[0].output for t in first)
    assert "An empty seed." not in [t.instruction for t in pick_demos(random.Random(2), SEEDS, [], 10, 0)]


def test_pick_demos_fills_in_with_seeds_while_the_pool_is_small() -> None:
    demos = pick_demos(random.Random(0), SEEDS, [], 2, 1)
    assert len(demos) == 3 and all(t.id.startswith("s") for t in demos)


# -- parsing --------------------------------------------------------------------------------------------


def T(instruction: str, given: str, output: str) -> ParsedTask:
    return ParsedTask(instruction, given, output)


@pytest.mark.parametrize(
    ("text", "truncated", "tasks", "unparseable", "stray"),
    [
        pytest.param(
            "Instruction: Add them.\nInput: 2, 3\nOutput: 5\n\nTask 5\nInstruction: Name a fruit.\nInput: <none>\n"
            "Output: A plum.", False, [T("Add them.", "2, 3", "5"), T("Name a fruit.", "", "A plum.")], 0, 0,
            id="continuation",
        ),
        pytest.param(
            "Sure! Here are the tasks:\n\n**Task 1**\n**Instruction:** Add them.\n**Input:** 2, 3\n**Output:** 5\n\n"
            "### Task 2\nInstruction: Say hi.\nOutput: Hi!\n\nI hope these help!",
            False, [T("Add them.", "2, 3", "5"), T("Say hi.", "", "Hi!")], 0, 0, id="chatty-markdown",
        ),
        pytest.param(
            "1. Instruction: Add them.\n1. Input: 2, 3\n1. Output: 5\n###\n2. Instruction: Say hi.\n2. Input: "
            "<noinput>\n2. Output: Hello", False, [T("Add them.", "2, 3", "5"), T("Say hi.", "", "Hello")], 0, 0,
            id="numbered-fields",
        ),
        pytest.param(
            "Instruction: List steps.\nInput: None\nOutput: 1. Boil water.\n2. Add tea.\n\nInstruction: Next one.\n"
            "Output: Done.", False, [T("List steps.", "", "1. Boil water.\n2. Add tea."), T("Next one.", "", "Done.")],
            0, 0, id="multiline-output-with-numbers",
        ),
        pytest.param(
            "Instruction: Has no output.\nInput: x\n\nInstruction: Fine task.\nOutput: ok", False,
            [T("Fine task.", "", "ok")], 1, 0, id="missing-output",
        ),
        pytest.param("Instruction: \nOutput: orphan answer", False, [], 1, 0, id="empty-instruction"),
        pytest.param("Input: stray\nOutput: no instruction at all", False, [], 1, 0, id="orphan-output"),
        pytest.param(
            "Instruction: Add.\nOutput: 5\nInput: 7\nOutput: 9", False, [T("Add.", "", "5")], 0, 2,
            id="fields-after-output-are-stray",
        ),
        pytest.param(
            "Instruction: A task.\nOutput: ok\n\nTask 6\nInstruction: Cut", True, [T("A task.", "", "ok")], 0, 0,
            id="cut-off-last",
        ),
        pytest.param("Instruction: Only one, cut.\nOutput: partial answ", True, [], 0, 0, id="only-one-cut"),
        pytest.param("I'm sorry, I can't help with that.", False, [], 0, 0, id="refusal"),
        pytest.param("", False, [], 0, 0, id="empty"),
        pytest.param("Instruction: Q.\nOutput:   \n", False, [], 1, 0, id="blank-output"),
        pytest.param(
            "<think>plan: Instruction: no\nOutput: no</think>Instruction: Real.\nOutput: yes", False,
            [T("Real.", "", "yes")], 0, 0, id="think-block",
        ),
        # An instruct model's habits (issue 20): the instruction on the header's line, a whole task on one
        # line, the instruction under the header without its label; an unreadable block is counted.
        pytest.param(
            "Here are the new tasks:\n\nTask 4: Give two synonyms for the word below.\nInput: happy\n"
            "Output: glad, cheerful\n\nTask 5: Convert 3 km to metres.\nInput: <none>\nOutput: 3,000 metres.",
            False, [T("Give two synonyms for the word below.", "happy", "glad, cheerful"),
                    T("Convert 3 km to metres.", "", "3,000 metres.")], 0, 0, id="task-n-colon-lines",
        ),
        pytest.param(
            "Task 1: Name a red fruit. Input: <none> Output: A strawberry.\n"
            "**Task 2:** Instruction: Add the numbers. Input: 2, 3 Output: 5\n"
            "3. Task 3 - Sort the list. | Input: 3, 1, 2 | Output: 1, 2, 3",
            False, [T("Name a red fruit.", "", "A strawberry."), T("Add the numbers.", "2, 3", "5"),
                    T("Sort the list.", "3, 1, 2", "1, 2, 3")], 0, 0, id="one-line-tasks",
        ),
        pytest.param(
            "Task 4\nSuggest a title for a blog post about tea.\nInput: <none>\nOutput: Steeped in Stories",
            False, [T("Suggest a title for a blog post about tea.", "", "Steeped in Stories")], 0, 0,
            id="unlabelled-instruction-under-header",
        ),
        pytest.param(
            "Task 4: Explain recursion to a child.\n\nTask 5: Name a prime.\nOutput: 7", False,
            [T("Name a prime.", "", "7")], 1, 0, id="task-line-without-output-is-counted",
        ),
        pytest.param(
            "Instruction: Explain the form.\nOutput: Write your name after Input: and the total after Output: here.",
            False, [T("Explain the form.", "", "Write your name after Input: and the total after Output: here.")],
            0, 0, id="an-output-is-never-split",
        ),
    ],
)  # fmt: skip
def test_parse_task_list(text: str, truncated: bool, tasks: list[ParsedTask], unparseable: int, stray: int) -> None:
    parsed = parse_task_list(text, truncated=truncated)
    assert parsed.tasks == tasks
    assert parsed.unparseable == unparseable
    assert parsed.stray == stray
    assert parsed.cut_off is (truncated and bool(text.strip()) and "Instruction" in text)


def test_continues_task_reads_bare_first_instruction() -> None:
    parsed = parse_task_list("Add them.\nInput: 2, 3\nOutput: 5", truncated=False, continues_task=True)
    assert parsed.tasks == [T("Add them.", "2, 3", "5")]
    assert parse_task_list("Add them.\nInput: 2, 3\nOutput: 5", truncated=False).unparseable == 1


def test_to_task_has_one_instance_and_unknown_classification() -> None:
    task = to_task(T("Add.", "1, 2", "3"))
    assert task.instances == [Instance("1, 2", "3")] and task.is_classification is None


@pytest.mark.parametrize("seed", range(20))
def test_random_garbage_never_crashes(seed: int) -> None:
    rng = random.Random(seed)
    pieces = ["Instruction:", "Input:", "Output:", "Task 3", "**", "\n", "\n\n", "1.", "x y z", "<none>", "###", ":"]
    text = "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(60))
    parsed = parse_task_list(text, truncated=rng.random() < 0.5)
    assert all(t.instruction and t.output for t in parsed.tasks)
