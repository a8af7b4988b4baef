"""Tests for selfinstruct.protocol.chatprompts: chat templates of the four stages, and reading chat replies."""

from __future__ import annotations

import doctest
import shutil
from pathlib import Path

import pytest

import selfinstruct.protocol.chatprompts as chatprompts
from selfinstruct.errors import ConfigError, InputError
from selfinstruct.pool.task import Instance, Task
from selfinstruct.protocol.chatprompts import (
    ASK,
    CHAT_TEMPLATE_FILES,
    PREFILL,
    PREFILL_TEMPLATE_FILE,
    ChatTemplates,
    parse_chat_classification,
    parse_chat_instances,
    parse_chat_list,
    strip_chat_markup,
)

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


def test_doctests() -> None:
    assert doctest.testmod(chatprompts).failed == 0


@pytest.fixture(scope="module")
def templates() -> ChatTemplates:
    return ChatTemplates.load(PROMPTS_DIR)


@pytest.fixture
def prompt_copy(tmp_path: Path) -> Path:
    target = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, target)
    return target


# -- loading -------------------------------------------------------------------------------------------


def test_project_templates_load_and_fingerprint(templates: ChatTemplates) -> None:
    assert templates.source.endswith("chat")
    assert len(templates.fingerprint()) == 16
    assert templates.fingerprint() == ChatTemplates.load(PROMPTS_DIR).fingerprint()


def test_fingerprint_changes_with_any_template(prompt_copy: Path, templates: ChatTemplates) -> None:
    path = prompt_copy / "chat" / "classification.txt"
    path.write_text(path.read_text() + "\nBe careful.\n")
    assert ChatTemplates.load(prompt_copy).fingerprint() != templates.fingerprint()


def test_missing_chat_directory_says_what_to_copy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"chat prompt templates not found .*copy the folder prompts/chat"):
        ChatTemplates.load(tmp_path)


@pytest.mark.parametrize("name", sorted(CHAT_TEMPLATE_FILES.values()))
def test_missing_file_is_named(prompt_copy: Path, name: str) -> None:
    (prompt_copy / "chat" / name).unlink()
    with pytest.raises(ConfigError, match=rf"{name}: prompt template missing"):
        ChatTemplates.load(prompt_copy)


@pytest.mark.parametrize(
    ("name", "placeholder"),
    [
        ("instruction_generation.txt", "{count}"),
        ("instruction_generation.txt", "{examples}"),
        ("classification.txt", "{instruction}"),
        ("instances_output_first.txt", "{examples}"),
    ],
)
def test_missing_placeholder_is_named(prompt_copy: Path, name: str, placeholder: str) -> None:
    path = prompt_copy / "chat" / name
    path.write_text(path.read_text().replace(placeholder, "x"))
    with pytest.raises(ConfigError, match=rf"{name}: the template must contain the placeholder \{placeholder}"):
        ChatTemplates.load(prompt_copy)


def test_prefill_template_is_optional_unless_the_prefill_form_is_asked_for(prompt_copy: Path) -> None:
    (prompt_copy / "chat" / PREFILL_TEMPLATE_FILE).unlink()
    templates = ChatTemplates.load(prompt_copy)
    assert templates.form == ASK and not templates.can_prefill
    with pytest.raises(ConfigError, match=rf"{PREFILL_TEMPLATE_FILE}: prompt template missing .*--chat-form ask"):
        ChatTemplates.load(prompt_copy, form=PREFILL)
    with pytest.raises(ConfigError, match=PREFILL_TEMPLATE_FILE):
        templates.with_form(PREFILL)


def test_prefill_template_needs_its_total(prompt_copy: Path) -> None:
    path = prompt_copy / "chat" / PREFILL_TEMPLATE_FILE
    path.write_text(path.read_text().replace("{total}", "sixteen"))
    with pytest.raises(ConfigError, match=r"the template must contain the placeholder \{total\}"):
        ChatTemplates.load(prompt_copy)


def test_unknown_form_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown chat form 'continue'"):
        ChatTemplates.load(PROMPTS_DIR, form="continue")


def test_fingerprint_tells_the_forms_apart(prompt_copy: Path, templates: ChatTemplates) -> None:
    prefill = templates.with_form(PREFILL)
    assert prefill.fingerprint() != templates.fingerprint()
    # The ask form's hash is the four templates' hash pools recorded before the prefill form existed...
    assert templates.fingerprint() == chatprompts.fingerprint(*(getattr(templates, key) for key in CHAT_TEMPLATE_FILES))
    # ... and does not change with the prefill template, which it does not use; the prefill form's does.
    path = prompt_copy / "chat" / PREFILL_TEMPLATE_FILE
    path.write_text(path.read_text() + "\nShort ones.\n")
    assert ChatTemplates.load(prompt_copy).fingerprint() == templates.fingerprint()
    assert ChatTemplates.load(prompt_copy, form=PREFILL).fingerprint() != prefill.fingerprint()


def test_non_utf8_template_is_an_input_error(prompt_copy: Path) -> None:
    (prompt_copy / "chat" / "classification.txt").write_bytes(b"\xff\xfe{examples}{instruction}")
    with pytest.raises(InputError, match=r"classification\.txt"):
        ChatTemplates.load(prompt_copy)


# -- rendering -----------------------------------------------------------------------------------------

YES = Task("Classify the review as positive or negative.", [Instance("Great!", "Positive")], True)
NO = Task("Write a haiku about rain.", [Instance("", "Rain on the roof...")], False)


def test_instruction_chat_is_one_user_message_with_numbered_demos(templates: ChatTemplates) -> None:
    chat = templates.instruction_chat(["Say hi to   me.", "Add two numbers."], count=5)
    assert [m.role for m in chat] == ["user"]
    text = chat[0].content
    assert "1. Say hi to me.\n2. Add two numbers." in text
    assert "Add 5 new requests" in text and "numbered 3 to 7" in text
    assert "{" not in text


@pytest.mark.parametrize(
    ("demos", "count"), [(["Say hi to   me.", "Add two numbers."], 5), (["Add two numbers."] * 8, 8)]
)
def test_prefill_instruction_chat_opens_the_reply_with_the_demos(
    templates: ChatTemplates, demos: list[str], count: int
) -> None:
    chat = templates.with_form(PREFILL).instruction_chat(demos, count=count)
    assert [m.role for m in chat] == ["user", "assistant"]
    request, reply = chat[0].content, chat[1].content
    assert f"numbered list of {len(demos) + count} varied requests" in request
    assert "{" not in request and demos[0].split()[0] not in request  # the demonstrations are in the reply only
    lines = reply.split("\n")
    assert lines == [f"{i}. {' '.join(d.split())}" for i, d in enumerate(demos, start=1)] + [f"{len(demos) + 1}."]
    assert templates.with_form(PREFILL).reply_prefix(demos) == f"{len(demos) + 1}."
    assert templates.reply_prefix(demos) == ""


def test_prefill_reply_is_read_with_its_prefix(templates: ChatTemplates) -> None:
    prefill = templates.with_form(PREFILL)
    demos = ["Say hi.", "Add two numbers."]
    reply = " Write a limerick about a cat.\n4. Sort the list below.\n5.\n6. Name a prime number.\n\nI hope these help!"
    parsed = parse_chat_list(prefill.reply_prefix(demos) + reply, truncated=False)
    assert parsed.items == ["Write a limerick about a cat.", "Sort the list below.", "Name a prime number."]
    assert parsed.notes == {"list_marker": 1} and parsed.chatter == 1


def test_classification_chat_shows_demos_and_asks(templates: ChatTemplates) -> None:
    text = templates.classification_chat([YES, NO], "Is this  email spam?")[0].content
    assert f"Task: {YES.instruction}\nIs it classification? Yes" in text
    assert f"Task: {NO.instruction}\nIs it classification? No" in text
    assert "Task: Is this email spam?\nIs it classification?" in text


@pytest.mark.parametrize("classification", [False, True])
def test_instance_chat_uses_the_matching_format(templates: ChatTemplates, classification: bool) -> None:
    demo = YES if classification else NO
    text = templates.instance_chat([demo], "Sort the fruit by colour.", classification=classification)[0].content
    assert ("Class label: Positive" in text) is classification
    assert ("Output: Rain on the roof..." in text) is (not classification)
    assert "Task: Sort the fruit by colour." in text


def test_demonstration_holding_a_placeholder_is_not_filled_again(templates: ChatTemplates) -> None:
    text = templates.instruction_chat(["Explain {count} and {examples} literally."], count=3)[0].content
    assert "1. Explain {count} and {examples} literally." in text


# -- reading replies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "truncated", "items", "chatter"),
    [
        ("1. Add two numbers.\n2. Name a red fruit.", False, ["Add two numbers.", "Name a red fruit."], 0),
        ("Sure! Here are two:\n\n1. A b c d.\n2. E f g h.\n\nHope this helps!", False, ["A b c d.", "E f g h."], 2),
        ("1) First one here.\n2) Second one here.", False, ["First one here.", "Second one here."], 0),
        ("- Bullet task one.\n* Bullet task two.", False, ["Bullet task one.", "Bullet task two."], 0),
        ("1. **Poem:** Write a poem.\n\n2. __Sum__ the list.", False, ["Write a poem.", "Sum the list."], 0),
        ("1. Starts here\n   and goes on.\n2. Next.", False, ["Starts here and goes on.", "Next."], 0),
        ("1. Whole item.\n2. Cut off in the mid", True, ["Whole item."], 0),
        ("<think>\n1. not this\n</think>\n1. This one.", False, ["This one."], 0),
        ("```\n1. Fenced item.\n```", False, ["Fenced item."], 0),
        ("I cannot help with that.", False, [], 1),
        ("", False, [], 0),
        ("1.   \n2. Real.", False, ["Real."], 0),  # an empty item is a list marker, noted
        ("<think>never closed 1. x", False, [], 0),
    ],
)
def test_parse_chat_list(reply: str, truncated: bool, items: list[str], chatter: int) -> None:
    parsed = parse_chat_list(reply, truncated=truncated)
    assert parsed.items == items
    assert parsed.chatter == chatter


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes", True),
        ("No.", False),
        ("**Yes**", True),
        ("Answer: No", False),
        ("This is a classification task, so yes.", True),
        ("It is open-ended: no, not classification. Yes-men disagree.", False),
        ("<think>Maybe yes?</think>No", False),
        ("Maybe", None),
        ("Not sure", None),
        ("", None),
        ("Yesterday it rained.", None),
    ],
)
def test_parse_chat_classification(reply: str, expected: bool | None) -> None:
    assert parse_chat_classification(reply) is expected


@pytest.mark.parametrize(
    ("reply", "output_first", "instances", "unparseable"),
    [
        ("Example 1\nInput: 2+2\nOutput: 4", False, [Instance("2+2", "4")], 0),
        ("Here you go!\n\n### Example 1\n**Input:** 2+2\n**Output:** 4", False, [Instance("2+2", "4")], 0),
        ("example 1\ninput: a\noutput: b", False, [Instance("a", "b")], 0),
        ("Sure:\nExample 1\nOutput: A haiku.\n\nExample 2\nOutput: Another.", False,
         [Instance("", "A haiku."), Instance("", "Another.")], 0),
        ("```\nExample 1\nInput: x\nOutput: y\n```", False, [Instance("x", "y")], 0),
        ("Example 1\nInput: only input", False, [], 1),
        ("I can't do that.", False, [], 1),
        ("Of course!\n\nExample 1\n**Class label:** Spam\n**Input:** Win now\n\nExample 2\nClass label: Ham\nInput: Hi",
         True, [Instance("Win now", "Spam"), Instance("Hi", "Ham")], 0),
        ("Class label: Spam\nInput: Win now", True, [Instance("Win now", "Spam")], 0),
        ("Nothing useful", True, [], 1),
    ],
)  # fmt: skip
def test_parse_chat_instances(reply: str, output_first: bool, instances: list[Instance], unparseable: int) -> None:
    parsed = parse_chat_instances(reply, truncated=False, output_first=output_first)
    assert parsed.instances == instances
    assert parsed.unparseable == unparseable


def test_parse_chat_instances_drops_a_cut_off_last_example() -> None:
    reply = "Example 1\nInput: a\nOutput: b\n\nExample 2\nInput: c\nOutput: d is"
    assert parse_chat_instances(reply, truncated=True, output_first=False).instances == [Instance("a", "b")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("**Output:** x", "Output: x"),
        ("__Input__: y", "Input: y"),
        ("## Example 3", "Example 3"),
        ("*Example 2*", "Example 2"),
        ("Use **bold** words", "Use **bold** words"),
        ("<THINK>a</THINK>b", "b"),
    ],
)
def test_strip_chat_markup(text: str, expected: str) -> None:
    assert strip_chat_markup(text) == expected


# -- replies of a real instruct model (written after Qwen2.5-Coder-0.5B-Instruct's habits) -----------------

DEMOS = ["Suggest a name for a bakery that sells only bread.", "Explain why the moon shows phases."]

RELISTS_THE_DEMOS = """Sure! Here are the requests:

1. Suggest a name for a bakery that sells only bread.
2. Explain why the moon shows phases.
3. Convert 72 degrees Fahrenheit to Celsius and show the steps.
4. Write a short apology email for missing a meeting.
"""

BARE_NUMBERS = """3.
Describe how a bill becomes a law in two sentences.
4.
5.
List four uses of baking soda around the house.
6
"""

NESTED = """### New requests

1. **Analysis:**
   - Explanation: compares two things.
   - Compare the causes of the two world wars.
2. Writing:
   * Draft a limerick about a lazy cat.
3. Request: "Summarise the plot of Hamlet in three sentences."
4. "Give three tips for a first job interview." - practical advice
5. **Code:** Write a Python function that reverses a string.

Let me know if you want more!"""


@pytest.mark.parametrize(
    ("reply", "items", "notes"),
    [
        (
            RELISTS_THE_DEMOS,
            [
                *DEMOS,
                "Convert 72 degrees Fahrenheit to Celsius and show the steps.",
                "Write a short apology email for missing a meeting.",
            ],
            {},
        ),
        (
            BARE_NUMBERS,
            ["Describe how a bill becomes a law in two sentences.", "List four uses of baking soda around the house."],
            {"list_marker": 2},
        ),
        (
            NESTED,
            [
                "Summarise the plot of Hamlet in three sentences.",
                "Give three tips for a first job interview.",
                "Write a Python function that reverses a string.",
            ],
            {"list_heading": 2, "sub_item": 3},
        ),
        (
            "Task 3: Name the largest planet.\nTask 4: Spell 'necessary' backwards.",
            ["Name the largest planet.", "Spell 'necessary' backwards."],
            {},
        ),
        ("1. 2. 3.", [], {"list_marker": 1}),
        ("- \n- —\n- Name a prime number above 50.", ["Name a prime number above 50."], {"list_marker": 2}),
    ],
    ids=["relists-demos", "bare-numbers", "nested", "task-labels", "numbers-only", "empty-bullets"],
)
def test_chat_list_of_an_instruct_model(reply: str, items: list[str], notes: dict[str, int]) -> None:
    parsed = parse_chat_list(reply, truncated=False)
    assert parsed.items == items
    assert parsed.notes == notes


def test_relisted_demonstrations_are_demo_copies_not_novelty_failures() -> None:
    from selfinstruct.engines import Completion
    from selfinstruct.gates.filters import InstructionHeuristics
    from selfinstruct.loop.stages import read_instruction_list, screen_instruction

    listed = read_instruction_list(Completion(RELISTS_THE_DEMOS, "stop"), chat=True)
    reasons = [screen_instruction(InstructionHeuristics(), item, DEMOS) for item in listed.items]
    assert [r[0] if r else None for r in reasons] == ["demo_copy", "demo_copy", None, None]
    assert reasons[0] == ("demo_copy", {"demonstration": DEMOS[0]})


@pytest.mark.parametrize(
    ("reply", "finish", "items", "notes"),
    [
        (" Name a prime.\n10. Sort the words.", "stop", ["Name a prime.", "Sort the words."], {}),
        (" Name a prime.\n10. Sort the", "length", ["Name a prime."], {"cut_off": 1}),
        ("\n10. Sort the words.", "stop", ["Sort the words."], {"list_marker": 1}),
        ("", "stop", [], {"relist_stopped": 1}),
        (" Name a prime.\n10. ", "stop", ["Name a prime."], {"relist_stopped": 1}),
        (" Name a prime.\n10.", "length", [], {"list_marker": 1, "cut_off": 1}),
    ],
    ids=["continued", "cut-off", "number-left-empty", "stopped-at-once", "stopped-at-a-copy", "cut-at-a-number"],
)
def test_a_continued_reply_is_read_with_the_number_it_continues(
    reply: str, finish: str, items: list[str], notes: dict[str, int]
) -> None:
    from selfinstruct.engines import Completion
    from selfinstruct.loop.stages import read_instruction_list

    listed = read_instruction_list(Completion(reply, finish), chat=True, prefix="9.")
    assert listed.items == items
    assert dict(listed.notes) == notes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Request: "Summarise the plot of Hamlet."', "Summarise the plot of Hamlet."),
        ("“Name three rivers in Africa.”", "Name three rivers in Africa."),
        ("'List two prime numbers.' (easy)", "List two prime numbers."),
        ('New task 9: "Sort these words."', "Sort these words."),
        ('Say "hello" in French.', 'Say "hello" in French.'),  # quotes inside the item stay
        ('"Hi" is a greeting; explain its origin.', '"Hi" is a greeting; explain its origin.'),
        ("**Brainstorm:** Ten names for a cafe.", "Ten names for a cafe."),
        ("Instruction: Count the vowels in a word.", "Count the vowels in a word."),
    ],
)
def test_unwrap_item(text: str, expected: str) -> None:
    from selfinstruct.protocol.chatprompts import unwrap_item

    assert unwrap_item(text) == expected
