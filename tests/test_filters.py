"""Tests for selfinstruct.gates.filters: the instruction heuristics and the instance filters, by exact reason code."""

from __future__ import annotations

import pytest

from selfinstruct.gates.filters import (
    BLOCKED_KEYWORD,
    CONFLICTING_OUTPUTS,
    DEFAULT_BLOCKED_KEYWORDS,
    DUPLICATE_INSTANCE,
    EMPTY_OUTPUT,
    INSTANCE_REASONS,
    INSTRUCTION_REASONS,
    NO_VALID_INSTANCE,
    ONE_LABEL,
    OUTPUT_EQUALS_INPUT,
    OVER_LIMIT,
    STARTS_WITH_NON_ASCII,
    STARTS_WITH_PUNCTUATION,
    TASK_REASONS,
    TOO_LONG,
    TOO_SHORT,
    WRITE_A_PROGRAM,
    InstructionHeuristics,
    blocked_keyword_pattern,
    clean_instances,
)
from selfinstruct.pool.task import Instance

HEURISTICS = InstructionHeuristics()


def words(n: int) -> str:
    """An innocuous instruction of exactly ``n`` words."""
    return " ".join(["Summarise"] + ["text"] * (n - 1))


def test_reason_codes_are_stable() -> None:
    assert INSTRUCTION_REASONS == (
        "demo_copy", "too_short", "too_long", "blocked_keyword", "write_a_program", "starts_with_punctuation",
        "starts_with_non_ascii", "too_similar",
    )  # fmt: skip
    assert TASK_REASONS == ("no_valid_instance", "conflicting_outputs", "one_label", "demo_instance")
    assert INSTANCE_REASONS == (
        "empty_output", "output_equals_input", "duplicate_instance", "over_limit", "copied_instance",
    )  # fmt: skip


# -- InstructionHeuristics: one parametrized table of (instruction, exact reason) ----------------------


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        # length: at most 3 words is too short, more than 150 too long
        ("", TOO_SHORT),
        ("   \n ", TOO_SHORT),
        ("Summarise", TOO_SHORT),
        (words(3), TOO_SHORT),
        ("  Name  three\n\tfruits  ", TOO_SHORT),
        (words(4), None),
        ("Name four red fruits", None),
        (words(150), None),
        (words(151), TOO_LONG),
        (words(400), TOO_LONG),
        # ordinary instructions pass
        ("Summarise the paragraph below in one sentence.", None),
        ("Explain the mapping between keys and values in a dictionary.", None),
        ("Write a short profile of a famous scientist.", None),
        ("Describe a graphic novel you would like to read.", None),
        ("Name a drawback of remote work for new employees.", None),
        ("Give advice to someone who wants to go home early.", None),
        ("Tell me where to go next weekend.", None),
        ("Explain how to write a program in Python.", None),
        ("Write program that prints hello.", None),
        # write a program, case-insensitive, at the start only
        ("Write a program that sorts a list of numbers.", WRITE_A_PROGRAM),
        ("write A PROGRAM to reverse a string.", WRITE_A_PROGRAM),
        ("   Write a program which counts vowels.", WRITE_A_PROGRAM),
        # a plain prefix test, as in the original Self-Instruct code (not a whole-word match)
        ("Write a programme that adds two numbers.", WRITE_A_PROGRAM),
        ("Write a programming joke about off-by-one errors.", WRITE_A_PROGRAM),
        # first character
        ("*Summarise the text below briefly.", STARTS_WITH_PUNCTUATION),
        ('"Translate this sentence into French please."', STARTS_WITH_PUNCTUATION),
        ("- List three uses of salt.", STARTS_WITH_PUNCTUATION),
        ("1. List three uses of salt.", None),
        ("¿Cuál es la capital de Francia?", STARTS_WITH_NON_ASCII),
        ("Écris un poème sur la mer.", STARTS_WITH_NON_ASCII),
        ("“Explain” the quote below in plain words.", STARTS_WITH_NON_ASCII),
        ("Explain the quote “less is more” in plain words.", None),
        # filter order: length first, then keywords, then write-a-program, then first character
        ("Draw a cat", TOO_SHORT),
        ("Write a program that draws a picture.", BLOCKED_KEYWORD),
        ("*Plot the data in the table below.", BLOCKED_KEYWORD),
        ("¿Dónde está el map de la ciudad?", BLOCKED_KEYWORD),
    ],
)
def test_instruction_reason(instruction: str, reason: str | None) -> None:
    assert HEURISTICS.reason(instruction) == reason
    assert HEURISTICS(instruction) == reason


@pytest.mark.parametrize("keyword", [k for k in DEFAULT_BLOCKED_KEYWORDS if k != "go to"])
@pytest.mark.parametrize(
    "template",
    [
        "Describe the {} in a few sentences please.",
        "Describe the {} in a few sentences please.".upper(),
        "{} something interesting about the ocean.",
        "Tell me about this {}.",
        "Tell me about this ({}) thing.",
    ],
    ids=["middle", "upper", "start", "before-period", "in-parens"],
)
def test_each_default_keyword_is_blocked_as_whole_word(keyword: str, template: str) -> None:
    text = template.format(keyword.capitalize() if template.startswith("{}") else keyword)
    assert HEURISTICS(text) == BLOCKED_KEYWORD
    assert HEURISTICS.blocked_keyword(text) == keyword


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("Explain how to go to the station from here.", "go to"),
        ("Explain how to GO TO the station from here.", "go to"),
        ("Explain how to go   to the station from here.", "go to"),
        ("Explain how to go\nto the station from here.", "go to"),
        ("Explain how to go \t to the station from here.", "go to"),
        ("Describe these images in three words.", "images"),
        ("Describe this IMAGE in three words.", "image"),
        ("Compare the two graphs and summarise them.", "graphs"),
        ("Read the map-reading guide and summarise it.", "map"),
        ("Summarise the music and the video below.", "music"),  # the first one in the text
        ("Summarise the video and the music below.", "video"),
    ],
)
def test_blocked_keyword_variants(text: str, keyword: str) -> None:
    assert HEURISTICS(text) == BLOCKED_KEYWORD
    assert HEURISTICS.blocked_keyword(text) == keyword


@pytest.mark.parametrize(
    "text",
    [
        "Explain the mapping between keys and values.",
        "Write a short profile of a famous scientist.",
        "Describe a graphic novel you would like to read.",
        "Explain what a graphical user interface does.",
        "Summarise the imagery in the poem below.",
        "Name a drawback of working from home.",
        "Explain why a plotline needs conflict and resolution.",
        "Give some videography tips for beginners in words.",
        "Summarise this audiobook review in one line.",
        "Suggest a good place to go tomorrow evening.",
        "Name an algorithm to find the shortest route.",
        "List a few ways a cargo tower handles freight.",
        "Explain how a bitmap differs from other data.",
        "Explain what a filename extension tells a user.",
    ],
)
def test_keywords_do_not_match_inside_other_words(text: str) -> None:
    assert HEURISTICS.blocked_keyword(text) is None
    assert HEURISTICS(text) is None


def test_blocked_keyword_none_for_clean_text() -> None:
    assert HEURISTICS.blocked_keyword("Summarise the paragraph below.") is None


def test_custom_keyword_list_replaces_defaults() -> None:
    h = InstructionHeuristics(blocked_keywords=("Table", "spread sheet"))
    assert h("Describe the image of a sunset in words.") is None
    assert h("Convert the TABLE below into prose.") == BLOCKED_KEYWORD
    assert h.blocked_keyword("Convert the TABLE below into prose.") == "table"
    assert h.blocked_keyword("Summarise the spread\n  sheet below please.") == "spread sheet"
    assert h.blocked_keyword("Summarise the tables below please.") is None


@pytest.mark.parametrize("keywords", [(), ("", "  ")], ids=["empty", "blank-only"])
def test_empty_keyword_list_blocks_nothing(keywords: tuple[str, ...]) -> None:
    h = InstructionHeuristics(blocked_keywords=keywords)
    assert h.blocked_keyword("Describe the image and the video in words.") is None
    assert h("Describe the image and the video in words.") is None
    assert blocked_keyword_pattern(keywords) is None
    # the other filters still run
    assert h("Draw it") == TOO_SHORT
    assert h("Write a program that draws a graph.") == WRITE_A_PROGRAM


def test_custom_word_limits() -> None:
    h = InstructionHeuristics(min_words=2, max_words=5)
    assert h("Summarise") == TOO_SHORT
    assert h("Summarise this") is None
    assert h(words(5)) is None
    assert h(words(6)) == TOO_LONG


def test_blocked_keyword_pattern_prefers_longest_at_same_position() -> None:
    pattern = blocked_keyword_pattern(["image", "images", "  MAP  "])
    assert pattern is not None
    match = pattern.search("three Images and a map")
    assert match is not None and match.group(0) == "Images"
    assert [m.group(0) for m in pattern.finditer("map maps mapping")] == ["map"]


# -- clean_instances -----------------------------------------------------------------------------------


def I(inp: str, out: str) -> Instance:  # noqa: E743 - short name keeps the tables readable
    return Instance(inp, out)


@pytest.mark.parametrize(
    ("instances", "kept", "dropped"),
    [
        ([I("a", "b")], [I("a", "b")], {}),
        ([I("a", "b"), I("c", "")], [I("a", "b")], {EMPTY_OUTPUT: 1}),
        ([I("a", "b"), I("c", " \n\t")], [I("a", "b")], {EMPTY_OUTPUT: 1}),
        ([I("a", "b"), I("same", "same")], [I("a", "b")], {OUTPUT_EQUALS_INPUT: 1}),
        ([I("a", "b"), I(" same ", "same\n")], [I("a", "b")], {OUTPUT_EQUALS_INPUT: 1}),
        ([I("a", "b"), I("a", "b"), I("a", "b")], [I("a", "b")], {DUPLICATE_INSTANCE: 2}),
        ([I("a", "b"), I(" a", "b \n")], [I("a", "b")], {DUPLICATE_INSTANCE: 1}),
        ([I("", "x"), I("", "x")], [I("", "x")], {DUPLICATE_INSTANCE: 1}),
        (
            [I("a", "b"), I("c", ""), I("d", "d"), I("a", "b"), I("e", "f")],
            [I("a", "b"), I("e", "f")],
            {EMPTY_OUTPUT: 1, OUTPUT_EQUALS_INPUT: 1, DUPLICATE_INSTANCE: 1},
        ),
    ],
    ids=[
        "clean",
        "empty-output",
        "blank-output",
        "output-equals-input",
        "output-equals-input-after-strip",
        "duplicates",
        "duplicate-after-strip",
        "duplicate-empty-input",
        "mixed",
    ],
)
def test_clean_instances_drops_by_reason(
    instances: list[Instance], kept: list[Instance], dropped: dict[str, int]
) -> None:
    report = clean_instances(instances)
    assert report.kept == kept
    assert report.dropped == dropped
    assert report.task_reason is None


def test_clean_instances_strips_whitespace() -> None:
    report = clean_instances([I("  2 + 2\n", "\t4  "), I("", "\n  A haiku\nin two lines \n")])
    assert report.kept == [I("2 + 2", "4"), I("", "A haiku\nin two lines")]


def test_empty_input_equal_to_output_is_not_output_equals_input() -> None:
    # An empty input never "equals" an output: an empty output is dropped as empty_output instead.
    assert clean_instances([I("", "")]).dropped == {EMPTY_OUTPUT: 1}


def test_clean_instances_preserves_order() -> None:
    instances = [I(f"in {i}", f"out {i}") for i in (3, 1, 4, 5, 9)]
    assert clean_instances(instances).kept == instances


@pytest.mark.parametrize(
    ("n", "max_instances", "kept", "over"),
    [(5, 5, 5, 0), (6, 5, 5, 1), (9, 5, 5, 4), (3, 1, 1, 2), (2, 3, 2, 0)],
)
def test_clean_instances_over_limit(n: int, max_instances: int, kept: int, over: int) -> None:
    instances = [I(f"in {i}", f"out {i}") for i in range(n)]
    report = clean_instances(instances, max_instances=max_instances)
    assert report.kept == instances[:kept]
    assert report.dropped == ({OVER_LIMIT: over} if over else {})
    assert report.task_reason is None


def test_over_limit_counts_only_valid_instances() -> None:
    instances = [I("a", ""), *(I(f"in {i}", f"out {i}") for i in range(7)), I("in 0", "out 0")]
    report = clean_instances(instances, max_instances=5)
    assert report.kept == [I(f"in {i}", f"out {i}") for i in range(5)]
    assert report.dropped == {EMPTY_OUTPUT: 1, DUPLICATE_INSTANCE: 1, OVER_LIMIT: 2}


def test_default_max_instances_is_five() -> None:
    report = clean_instances([I(f"in {i}", f"out {i}") for i in range(8)])
    assert len(report.kept) == 5
    assert report.dropped == {OVER_LIMIT: 3}


@pytest.mark.parametrize(
    ("instances", "dropped"),
    [
        ([I("a", "b"), I("a", "c")], {}),
        ([I("x", ""), I("a", "b"), I("c", "d"), I(" a ", "B")], {EMPTY_OUTPUT: 1}),
        ([I("a", "b"), I("a", "b"), I("a", "c"), I("e", "f")], {DUPLICATE_INSTANCE: 1}),
    ],
    ids=["two-outputs", "case-differs", "after-duplicate"],
)
def test_conflicting_outputs_rejects_task(instances: list[Instance], dropped: dict[str, int]) -> None:
    report = clean_instances(instances)
    assert report.task_reason == CONFLICTING_OUTPUTS
    assert report.kept == []
    assert report.dropped == dropped


def test_empty_input_may_have_several_outputs() -> None:
    instances = [I("", "Roses are red."), I("", "The sea is wide."), I("  ", "Stars at night.")]
    report = clean_instances(instances)
    assert report.task_reason is None
    assert report.kept == [I("", "Roses are red."), I("", "The sea is wide."), I("", "Stars at night.")]


def test_same_output_for_different_inputs_is_fine() -> None:
    report = clean_instances([I("great film", "Positive"), I("loved it", "Positive")])
    assert report.task_reason is None
    assert len(report.kept) == 2


@pytest.mark.parametrize(
    ("instances", "dropped"),
    [
        ([], {}),
        ([I("a", "")], {EMPTY_OUTPUT: 1}),
        ([I("a", " "), I("b", "b"), I("", "")], {EMPTY_OUTPUT: 2, OUTPUT_EQUALS_INPUT: 1}),
    ],
    ids=["no-instances", "only-empty", "all-invalid"],
)
def test_no_valid_instance(instances: list[Instance], dropped: dict[str, int]) -> None:
    report = clean_instances(instances)
    assert report.task_reason == NO_VALID_INSTANCE
    assert report.kept == []
    assert report.dropped == dropped


def test_clean_instances_does_not_modify_its_argument() -> None:
    instances = [I(" a ", " b "), I("a", "b")]
    clean_instances(instances)
    assert instances == [I(" a ", " b "), I("a", "b")]


@pytest.mark.parametrize(
    ("instances", "reason"),
    [
        ([I("great", "Positive"), I("awful", "Negative")], None),
        ([I("great", "Positive"), I("loved it", "Positive")], ONE_LABEL),
        ([I("great", "Positive")], ONE_LABEL),
        ([I("great", "Positive"), I("loved it", " Positive ")], ONE_LABEL),
        ([I("great", "Positive"), I("bad", "")], ONE_LABEL),
    ],
    ids=["two-labels", "one-label", "single-instance", "same-after-strip", "other-label-dropped"],
)
def test_classification_needs_two_labels(instances: list[Instance], reason: str | None) -> None:
    report = clean_instances(instances, classification=True)
    assert report.task_reason == reason
    assert report.kept == ([] if reason else instances)


def test_one_label_is_fine_for_open_tasks() -> None:
    assert clean_instances([I("great", "Positive"), I("loved it", "Positive")]).task_reason is None


# -- copies of demonstrations (a chat model re-lists what it was shown) --------------------------------

DEMO_INSTRUCTIONS = ["Name three rivers in Africa.", "Explain why the moon shows phases to a child in two sentences."]


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("Name three rivers in Africa.", "Name three rivers in Africa."),
        ("name three RIVERS in africa!", "Name three rivers in Africa."),
        ("Explain why the moon shows phases to a child in two short sentences.", DEMO_INSTRUCTIONS[1]),
        ("Name three rivers in Asia.", None),
        ("Explain why the sky is blue.", None),
        ("", None),
        ("!!!", None),
    ],
)
def test_copied_demo(candidate: str, expected: str | None) -> None:
    from selfinstruct.gates.filters import copied_demo

    assert copied_demo(candidate, DEMO_INSTRUCTIONS) == expected


SHOWN = [
    I("She don't know where the keys is.", "Ungrammatical"),
    I("", "Roses are red and violets are blue."),
]


@pytest.mark.parametrize(
    ("instances", "classification", "kept", "reason", "dropped"),
    [
        # the case: another task's demonstration input, verbatim
        ([I("She don't know where the keys is.", "Ungrammatical")], False, [], "demo_instance", {"copied_instance": 1}),
        ([I("she don't know where the keys is", "Agree")], True, [], "demo_instance", {"copied_instance": 1}),
        (
            [I("She don't know where the keys is.", "x"), I("The cat sat.", "y")],
            False,
            [I("The cat sat.", "y")],
            None,
            {"copied_instance": 1},
        ),
        (
            [I("", "Roses are red and violets are blue.")],
            False,
            [],
            "demo_instance",
            {"copied_instance": 1},
        ),
        ([I("", "Ungrammatical")], False, [I("", "Ungrammatical")], None, {}),  # a short answer repeats honestly
        (
            [I("Keys are here.", "Ungrammatical"), I("Keys is here.", "Grammatical")],
            True,
            [I("Keys are here.", "Ungrammatical"), I("Keys is here.", "Grammatical")],
            None,
            {},
        ),  # labels repeat
        ([I("She don't know where the keys is.", "")], False, [], "no_valid_instance", {"empty_output": 1}),
    ],
)
def test_instances_copied_from_a_demonstration(
    instances: list[Instance], classification: bool, kept: list[Instance], reason: str | None, dropped: dict[str, int]
) -> None:
    report = clean_instances(instances, 5, classification=classification, demos=SHOWN)
    assert (report.kept, report.task_reason, report.dropped) == (kept, reason, dropped)
