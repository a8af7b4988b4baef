"""Tests for selfinstruct.protocol.prompts: loading templates, rendering prompts, and parsing completions back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from selfinstruct.errors import ConfigError
from selfinstruct.paths import default_prompts_dir
from selfinstruct.pool.task import Instance, Task
from selfinstruct.protocol.prompts import (
    CLASSIFICATION_STOP,
    INSTANCE_STOP,
    INSTRUCTION_STOP,
    TEMPLATE_FILES,
    ParsedInstances,
    PromptTemplates,
    one_line,
    parse_classification,
    parse_input_first,
    parse_instructions,
    parse_output_first,
    render_input_first,
    render_output_first,
)

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"

# Minimal in-memory templates: the rendered prompt is exactly the examples plus the new instruction.
BARE = PromptTemplates(
    instruction_generation="{examples}",
    classification="{examples}Task: {instruction}\nIs it classification?",
    instances_input_first="{examples}Task: {instruction}",
    instances_output_first="{examples}Task: {instruction}",
)


@pytest.fixture(scope="module")
def templates() -> PromptTemplates:
    return PromptTemplates.load(PROMPTS_DIR)


@pytest.fixture
def prompt_copy(tmp_path: Path) -> Path:
    """A writable copy of the project's prompts/ directory."""
    target = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, target)
    return target


def I(inp: str, out: str) -> Instance:  # noqa: E743 - short name keeps the tables readable
    return Instance(inp, out)


# -- loading -------------------------------------------------------------------------------------------


def test_project_templates_load(templates: PromptTemplates) -> None:
    assert templates.source == str(PROMPTS_DIR)
    for key, filename in TEMPLATE_FILES.items():
        text = getattr(templates, key)
        assert text == (PROMPTS_DIR / filename).read_text(encoding="utf-8")
        assert "{examples}" in text
    for key in ("classification", "instances_input_first", "instances_output_first"):
        assert "{instruction}" in getattr(templates, key)


def test_default_prompts_dir_is_the_project_directory() -> None:
    assert default_prompts_dir().resolve() == PROMPTS_DIR


@pytest.mark.parametrize("filename", sorted(TEMPLATE_FILES.values()))
def test_missing_template_file(prompt_copy: Path, filename: str) -> None:
    (prompt_copy / filename).unlink()
    with pytest.raises(ConfigError) as info:
        PromptTemplates.load(prompt_copy)
    assert str(info.value) == (
        f"{prompt_copy / filename}: prompt template missing (expected {filename} in {prompt_copy})"
    )


@pytest.mark.parametrize(
    ("filename", "placeholder"),
    [
        ("instruction_generation.txt", "{examples}"),
        ("classification.txt", "{examples}"),
        ("classification.txt", "{instruction}"),
        ("instances_input_first.txt", "{examples}"),
        ("instances_input_first.txt", "{instruction}"),
        ("instances_output_first.txt", "{examples}"),
        ("instances_output_first.txt", "{instruction}"),
    ],
)
def test_missing_placeholder(prompt_copy: Path, filename: str, placeholder: str) -> None:
    path = prompt_copy / filename
    path.write_text(path.read_text(encoding="utf-8").replace(placeholder, "{other}"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        PromptTemplates.load(prompt_copy)
    assert str(info.value) == f"{path}: the template must contain the placeholder {placeholder}"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        PromptTemplates.load(tmp_path / "nowhere")
    assert str(info.value) == f"{tmp_path / 'nowhere'}: prompt directory not found"


def test_fingerprint(templates: PromptTemplates, prompt_copy: Path) -> None:
    fp = templates.fingerprint()
    assert len(fp) == 16
    assert int(fp, 16) >= 0
    copy = PromptTemplates.load(prompt_copy)
    assert copy.source != templates.source
    assert copy.fingerprint() == fp  # the location does not count, only the texts
    for filename in TEMPLATE_FILES.values():
        path = prompt_copy / filename
        original = path.read_text(encoding="utf-8")
        path.write_text(original + " ", encoding="utf-8")
        assert PromptTemplates.load(prompt_copy).fingerprint() != fp, filename
        path.write_text(original, encoding="utf-8")
    assert PromptTemplates.load(prompt_copy).fingerprint() == fp


def test_fingerprint_separates_fields() -> None:
    a = PromptTemplates("{examples}x", "y{examples}{instruction}", *["{examples}{instruction}"] * 2)
    b = PromptTemplates("{examples}", "xy{examples}{instruction}", *["{examples}{instruction}"] * 2)
    assert a.fingerprint() != b.fingerprint()


# -- instruction_prompt --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 8, 12])
def test_instruction_prompt_numbering(templates: PromptTemplates, n: int) -> None:
    demos = [f"Instruction number {i}  with\n extra\twhitespace." for i in range(1, n + 1)]
    prompt = templates.instruction_prompt(demos)
    assert prompt.endswith(f"\n{n + 1}.")
    assert prompt.startswith(templates.instruction_generation.split("{examples}")[0])
    lines = prompt.splitlines()
    items = lines[len(lines) - n - 1 :]
    assert items == [f"{i}. Instruction number {i} with extra whitespace." for i in range(1, n + 1)] + [f"{n + 1}."]


def test_instruction_prompt_bare() -> None:
    assert BARE.instruction_prompt(["  Say hi. ", "Count\n\nto three."]) == "1. Say hi.\n2. Count to three.\n3."


def test_instruction_prompt_continuation_parses() -> None:
    prompt = BARE.instruction_prompt(["Say hi.", "Add two numbers."])
    completion = " Name a red fruit.\n4. Translate 'cat' into German.\n5. Sort the list below."
    assert parse_instructions(completion, truncated=False) == [
        "Name a red fruit.",
        "Translate 'cat' into German.",
        "Sort the list below.",
    ]
    assert prompt.endswith("3.")


# -- classification_prompt -----------------------------------------------------------------------------


def test_classification_prompt(templates: PromptTemplates) -> None:
    demos = [
        Task("Is the review  positive\nor negative?", [I("Great!", "Positive")], is_classification=True),
        Task("Write a haiku about rain.", [I("", "...")], is_classification=False),
        Task("Unknown kind of task here.", [], is_classification=None),
    ]
    prompt = templates.classification_prompt(demos, "  Decide whether the\nsentence is sarcastic. ")
    assert prompt.endswith("Is it classification?")
    assert (
        "Task: Is the review positive or negative?\nIs it classification? Yes\n\n"
        "Task: Write a haiku about rain.\nIs it classification? No\n\n"
        "Task: Unknown kind of task here.\nIs it classification? No\n\n"
        "Task: Decide whether the sentence is sarcastic.\nIs it classification?"
    ) in prompt
    assert prompt.count("Is it classification?") == 4


def test_classification_prompt_without_demos() -> None:
    assert BARE.classification_prompt([], "Say hi.") == "Task: Say hi.\nIs it classification?"


def test_fill_does_not_substitute_inside_inserted_values() -> None:
    # A demonstration that itself contains "{instruction}" keeps it; only the template's placeholder is filled.
    demo = Task("Complete the letter: Dear {instruction}, thank you.", [I("", "x")], is_classification=False)
    prompt = BARE.classification_prompt([demo], "New {examples} task.")
    assert prompt == (
        "Task: Complete the letter: Dear {instruction}, thank you.\nIs it classification? No\n\n"
        "Task: New {examples} task.\nIs it classification?"
    )


# -- instance_prompt -----------------------------------------------------------------------------------

OPEN_DEMOS = [
    Task("Add the two numbers.", [I("2 3", "5"), I("10 -4", "6")], is_classification=False),
    Task("Write a two-line poem about  tea.", [I("", "Steam curls up slowly,\nwarm leaves.")]),
]
CLF_DEMOS = [
    Task("Classify the  sentiment.", [I("I loved it.", "Positive"), I("", "Neutral")], is_classification=True),
]


def test_instance_prompt_input_first(templates: PromptTemplates) -> None:
    prompt = templates.instance_prompt(OPEN_DEMOS, "Reverse the\nword.", classification=False)
    assert prompt.startswith(templates.instances_input_first.split("{examples}")[0])
    assert prompt.endswith("\nTask: Reverse the word.\n")
    assert (
        "Task: Add the two numbers.\n"
        "Example 1\nInput: 2 3\nOutput: 5\n\n"
        "Example 2\nInput: 10 -4\nOutput: 6\n\n"
        "Task: Write a two-line poem about tea.\n"
        "Example 1\nOutput: Steam curls up slowly,\nwarm leaves.\n\n"
        "Task: Reverse the word.\n"
    ) in prompt
    assert "Class label:" not in prompt


def test_instance_prompt_output_first(templates: PromptTemplates) -> None:
    prompt = templates.instance_prompt(CLF_DEMOS, "Is the email spam?", classification=True)
    assert prompt.startswith(templates.instances_output_first.split("{examples}")[0])
    assert prompt.endswith("\nTask: Is the email spam?\n")
    assert (
        "Task: Classify the sentiment.\n"
        "Example 1\nClass label: Positive\nInput: I loved it.\n\n"
        "Example 2\nClass label: Neutral\n\n"
        "Task: Is the email spam?\n"
    ) in prompt
    assert "Output:" not in prompt


@pytest.mark.parametrize("classification", [False, True])
def test_instance_prompt_without_demos(classification: bool) -> None:
    assert BARE.instance_prompt([], "Say hi.", classification=classification) == "Task: Say hi.\n"


def test_render_input_first_omits_blank_input_line() -> None:
    task = Task("Tell a joke.", [I("  \n", " Why did the chicken cross the road? ")])
    assert render_input_first(task) == "Task: Tell a joke.\nExample 1\nOutput: Why did the chicken cross the road?\n"


def test_render_output_first_omits_blank_input_line() -> None:
    task = Task("Pick a label.", [I("", "Yes"), I("x", "No")])
    assert render_output_first(task) == (
        "Task: Pick a label.\nExample 1\nClass label: Yes\n\nExample 2\nClass label: No\nInput: x\n"
    )


# -- render / parse round trips ------------------------------------------------------------------------


def strip_task_header(rendered: str) -> str:
    header, _, rest = rendered.partition("\n")
    assert header.startswith("Task: ")
    return rest


@pytest.mark.parametrize(
    "instances",
    [
        [I("2 3", "5")],
        [I("", "A self-contained answer.")],
        [I("2 3", "5"), I("", "no input here"), I("10 -4", "6")],
        [I("", "Line one.\nLine two.\n\nAfter a blank line.")],
        [I("def f():\n    return 1", "The function\nreturns 1.\n  - indented bullet")],
        [I("Numbers:\n1. one\n2. two", "Sum: 3"), I("a", "b"), I("c", "d"), I("e", "f"), I("g", "h")],
        [I("Text with Input inside", "Output is the word Output.")],
    ],
    ids=["one", "no-input", "mixed", "multiline-output", "code", "five-examples", "marker-words-inline"],
)
def test_input_first_round_trip(instances: list[Instance]) -> None:
    rendered = render_input_first(Task("Do the task.", instances))
    parsed = parse_input_first(strip_task_header(rendered), truncated=False)
    assert parsed == ParsedInstances(instances, 0)


@pytest.mark.parametrize(
    "instances",
    [
        [I("I loved it.", "Positive")],
        [I("I loved it.", "Positive"), I("Terrible.", "Negative"), I("", "Neutral")],
        [I("Dear team,\nthe meeting moved.\n\nRegards", "Work email")],
        # only the first "Input:" line of a block is the marker; later ones belong to the input
        [I("Subject: offer\nInput: quoted marker line", "Spam")],
    ],
    ids=["one", "three-with-empty-input", "multiline-input", "input-marker-inside-input"],
)
def test_output_first_round_trip(instances: list[Instance]) -> None:
    rendered = render_output_first(Task("Label it.", instances, is_classification=True))
    parsed = parse_output_first(strip_task_header(rendered), truncated=False)
    assert parsed == ParsedInstances(instances, 0)


def test_full_prompt_completion_round_trip(templates: PromptTemplates) -> None:
    # What a model would write after the prompt is the next demo block minus its "Task:" header.
    target = Task("Convert the temperature to Fahrenheit.", [I("0 C", "32 F"), I("100 C", "212 F")])
    prompt = templates.instance_prompt(OPEN_DEMOS, target.instruction, classification=False)
    rendered = render_input_first(target)
    assert prompt.endswith(rendered.partition("\n")[0] + "\n")
    assert parse_input_first(strip_task_header(rendered), truncated=False).instances == target.instances


# -- parse_instructions --------------------------------------------------------------------------------


THREE = ["Name a red fruit.", "Add 2 and 3.", "Sort the list."]


@pytest.mark.parametrize(
    ("text", "truncated", "expected"),
    [
        (" Name a red fruit.\n10. Add 2 and 3.\n11. Sort the list.", False, THREE),
        (" Name a red fruit.\n10) Add 2 and 3.\n11)Sort the list.", False, THREE),
        (" Name a red fruit.\n 10 . Add 2 and 3.\n\t11\t) Sort the list.", False, THREE),
        (" Name a red fruit.\n10. Add 2 and 3.\n11. Descri", True, ["Name a red fruit.", "Add 2 and 3."]),
        (" Name a red fruit.", True, []),
        (" Name a red fruit.", False, ["Name a red fruit."]),
        ("", False, []),
        ("", True, []),
        ("   \n  ", False, []),
        ("\n10. Add 2 and 3.\n11. Sort the list.", False, ["Add 2 and 3.", "Sort the list."]),
        ("\nName a red fruit.\n10. Add 2 and 3.", False, ["Name a red fruit.", "Add 2 and 3."]),
        ("9. Name a red fruit.\n10. Add 2 and 3.", False, ["Name a red fruit.", "Add 2 and 3."]),
        (" Explain the\n  next   idea\tclearly.\n10. Add.", False, ["Explain the next idea clearly.", "Add."]),
        (" Name a red fruit.\n10.\n11. Add 2 and 3.", False, ["Name a red fruit.", "Add 2 and 3."]),
        (" Round 3.5 to an integer.\n10. Add 2.5 and 3.", False, ["Round 3.5 to an integer.", "Add 2.5 and 3."]),
    ],
    ids=[
        "dot",
        "paren",
        "spaced",
        "truncated",
        "truncated-single",
        "single",
        "empty",
        "empty-truncated",
        "blank",
        "starts-with-newline",
        "starts-with-newline-unnumbered",
        "repeats-own-number",
        "collapses-whitespace",
        "empty-item-skipped",
        "decimals-inline",
    ],
)  # fmt: skip
def test_parse_instructions(text: str, truncated: bool, expected: list[str]) -> None:
    assert parse_instructions(text, truncated=truncated) == expected


def test_instruction_stop_sequences() -> None:
    assert "\n\n" in INSTRUCTION_STOP
    assert "\n16" in INSTRUCTION_STOP
    assert CLASSIFICATION_STOP == ("\n",)
    assert INSTANCE_STOP == ("Example 6", "\nTask:")


# -- parse_classification ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Yes", True),
        ("Yes", True),
        ("YES", True),
        ("yes.", True),
        (" Yes, it is a classification task.", True),
        ("\n Yes", True),
        (" No", False),
        ("no.", False),
        (" NO\n", False),
        ("No, it is open-ended.", False),
        ("Maybe", None),
        ("Yesterday", None),
        ("Not really", None),
        ("", None),
        ("   ", None),
        ("1. Yes", None),
        ("- No", None),
    ],
)
def test_parse_classification(text: str, expected: bool | None) -> None:
    assert parse_classification(text) is expected


# -- parse_input_first ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "truncated", "instances", "unparseable"),
    [
        ("Example 1\nInput: 2+2\nOutput: 4\n\nExample 2\nOutput: 7", False, [I("2+2", "4"), I("", "7")], 0),
        ("Example 1\nInput: 2+2\nOutput: 4\n\nExample 2\nInput: 3+3", False, [I("2+2", "4")], 1),
        ("Example 1\nInput: a\n\nExample 2\nInput: b\n\nExample 3\nOutput: c", False, [I("", "c")], 2),
        ("Example 1\nInput: 2+2\nOutput: 4\n\nExample 2\nInput: 3+3\nOut", True, [I("2+2", "4")], 0),
        ("Example 1\nInput: 2+2\nOutput: 4\n\nExample 2\nInput: 3+3\nOutput: 6", True, [I("2+2", "4")], 0),
        ("Example 1\nInput: 2+2\nOutput: 4", True, [], 0),
        ("", False, [], 0),
        ("", True, [], 0),
        ("  \n\n", False, [], 0),
        ("Just some text without markers.", False, [], 1),
        ("Input: 5\nOutput: 25", False, [I("5", "25")], 0),
        ("Output: Hello there.", False, [I("", "Hello there.")], 0),
        ("\nExample 1:\n  Input : x\n  Output : y\n", False, [I("x", "y")], 0),
        ("Example 1\nInput: x\nOutput:\n\nExample 2\nInput: y\nOutput: z", False, [I("x", ""), I("y", "z")], 0),
        ("Example 1\nOutput: first\nline\n\nsecond para\n", False, [I("", "first\nline\n\nsecond para")], 0),
        ("Example 1\nInput: q\nOutput: a\nOutput: b", False, [I("q", "a")], 0),
        ("Example 1\nInput: q\nOutput: a\nInput: r\nOutput: b", False, [I("q", "a")], 0),
    ],
    ids=[
        "docstring",
        "missing-output",
        "two-missing",
        "truncated-drops-partial",
        "truncated-drops-complete-last",
        "truncated-single",
        "empty",
        "empty-truncated",
        "blank",
        "no-markers",
        "no-example-header",
        "output-only",
        "colon-and-indent",
        "empty-output-kept",
        "multiline-output",
        "second-output-cut",
        "headerless-second-example-cut",
    ],
)  # fmt: skip
def test_parse_input_first(text: str, truncated: bool, instances: list[Instance], unparseable: int) -> None:
    parsed = parse_input_first(text, truncated=truncated)
    assert (parsed.instances, parsed.unparseable) == (instances, unparseable)


@pytest.mark.parametrize(
    ("text", "stray"),
    [
        ("Example 1\nInput: q\nOutput: a", 0),
        ("Example 1\nInput: q\nOutput: a\nOutput: b", 1),
        ("Example 1\nInput: q\nOutput: a\nOutput: b\n\nExample 2\nInput: r\nOutput: c\nClass label: X", 2),
        ("Example 1\nInput: q\nOutput: a\nTask: Another task", 1),
    ],
)
def test_parse_input_first_counts_stray_markers(text: str, stray: int) -> None:
    assert parse_input_first(text, truncated=False).stray == stray


@pytest.mark.parametrize(
    "no_input",
    ["None", "none", "N/A", "n/a", "NA", "<noinput>", "<NoInput>", "No input", "No input.", "(none)", "null",
     "-", "", "   "],
)  # fmt: skip
def test_parse_input_first_normalises_no_input(no_input: str) -> None:
    text = f"Example 1\nInput: {no_input}\nOutput: A poem.\n"
    assert parse_input_first(text, truncated=False).instances == [I("", "A poem.")]


@pytest.mark.parametrize("real_input", ["Nonetheless, go.", "NAN", "0", "None of these."])
def test_parse_input_first_keeps_real_input(real_input: str) -> None:
    text = f"Example 1\nInput: {real_input}\nOutput: x\n"
    assert parse_input_first(text, truncated=False).instances == [I(real_input, "x")]


# -- parse_output_first --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "truncated", "instances", "unparseable"),
    [
        (
            "Class label: Spam\nInput: Win now\n\nClass label: Ham\nInput: Hi",
            False,
            [I("Win now", "Spam"), I("Hi", "Ham")],
            0,
        ),
        ("Class label: Spam\nInput: Win now\n\nClass label: Ham\nInput: H", True, [I("Win now", "Spam")], 0),
        ("Class label: Spam\nInput: Win now", True, [], 0),
        ("Class label: Neutral\n\nClass label: Good\nInput: Nice", False, [I("", "Neutral"), I("Nice", "Good")], 0),
        ("Class label:\nInput: orphan\n\nClass label: Ham\nInput: Hi", False, [I("Hi", "Ham")], 1),
        ("Class label: Spam\nInput: N/A", False, [I("", "Spam")], 0),
        ("Class label: Spam\nInput: <noinput>", False, [I("", "Spam")], 0),
        ("Class label:  Very\n  positive \nInput: x", False, [I("x", "Very positive")], 0),
        ("  Class label : Spam\n  Input : x", False, [I("x", "Spam")], 0),
        ("Preamble text.\nClass label: Spam\nInput: x", False, [I("x", "Spam")], 0),
        ("Input: Win now\nOutput: Spam", False, [], 1),
        ("Some text with no labels at all.", False, [], 1),
        ("Some text with no labels at all.", True, [], 1),
        ("", False, [], 0),
        ("\n  \n", False, [], 0),
        (
            "Example 1\nClass label: Big\nInput: 5000\n\nExample 2\nClass label: Small\nInput: 3\nOutput: 1000",
            False,
            [I("5000", "Big"), I("3", "Small")],
            0,
        ),
        ("Class label: Spam\nOutput: Spam\nInput: Win", False, [I("Win", "Spam")], 0),
    ],
    ids=[
        "docstring",
        "truncated",
        "truncated-single",
        "no-input",
        "empty-label",
        "na-input",
        "noinput-input",
        "multiline-label",
        "indented-markers",
        "preamble-ignored",
        "input-first-shape",
        "no-labels",
        "no-labels-truncated",
        "empty",
        "blank",
        "example-headers-and-stray-output",
        "stray-output-in-label",
    ],
)  # fmt: skip
def test_parse_output_first(text: str, truncated: bool, instances: list[Instance], unparseable: int) -> None:
    parsed = parse_output_first(text, truncated=truncated)
    assert (parsed.instances, parsed.unparseable) == (instances, unparseable)


@pytest.mark.parametrize(
    ("text", "stray"),
    [
        ("Class label: A\nInput: x", 0),
        ("Class label: A\nInput: x\nOutput: 1000", 1),
        ("Class label: A\nOutput: A\nInput: x\nOutput: y", 2),
    ],
)
def test_parse_output_first_counts_stray_markers(text: str, stray: int) -> None:
    assert parse_output_first(text, truncated=False).stray == stray


# -- helpers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [(" a\n  b ", "a b"), ("", ""), ("\t\n", ""), ("one", "one"), ("x\u00a0y", "x y")],
)
def test_one_line(text: str, expected: str) -> None:
    assert one_line(text) == expected
