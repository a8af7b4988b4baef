"""selfinstruct.safetext: what a terminal would obey is removed, everything else is kept."""

from __future__ import annotations

import pytest
from rich.console import Console

from selfinstruct.safetext import clean, clean_value, markup


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text, kept\nwith\ttabs", "plain text, kept\nwith\ttabs"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b[2J\x1b[Hcleared", "cleared"),
        ("\x1b]0;new title\x07after", "after"),
        ("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x9b31mC1 CSI", "C1 CSI"),
        ("\x9d0;title\x9cC1 OSC", "C1 OSC"),
        ("\x1bPdcs payload\x1b\\after", "after"),
        ("over\rwrite", "overwrite"),
        ("bell\x07 and nul\x00", "bell and nul"),
        ("\u202egnp.exe", "gnp.exe"),
        ("a lone escape at the end \x1b", "a lone escape at the end "),
        ("unterminated \x1b]0;title", "unterminated "),
        ("日本語 and émoji 🙂", "日本語 and émoji 🙂"),
        ("", ""),
    ],
)
def test_clean(text: str, expected: str) -> None:
    assert clean(text) == expected


@pytest.mark.parametrize("text", ["[INST] hi [/INST]", "[/]", "[a, b]", "[bold]x[/bold]", "\\[x]", "[link=x]y"])
def test_markup_prints_the_text_as_written(text: str) -> None:
    console = Console(width=200, record=True, color_system=None)
    console.print(f"[bold]said:[/] {markup(text)}")
    assert console.export_text().rstrip("\n") == f"said: {text}"


def test_clean_value_cleans_keys_and_nested_strings() -> None:
    value = {"a\x1b[1m": ["x\x07", {"y": "z\x9b"}], "n": 3, "none": None}
    assert clean_value(value) == {"a": ["x", {"y": "z"}], "n": 3, "none": None}
