"""Every name a run can record is explained (selfinstruct.views.glossary), and status shows the explanations."""

from __future__ import annotations

import pytest

from selfinstruct import stopping
from selfinstruct.gates import filtering, filters
from selfinstruct.loop import bootstrap, stages
from selfinstruct.protocol import alpaca, chatprompts, judge
from selfinstruct.views import glossary


def constants(module: object, names: tuple[str, ...]) -> set[str]:
    return {getattr(module, name) for name in names}


RECORDED = {
    *filters.INSTRUCTION_REASONS,
    *filters.TASK_REASONS,
    *filters.INSTANCE_REASONS,
    judge.LOW_SCORE,
    judge.NO_SCORE,
    *constants(filtering, ("EMPTY_INSTRUCTION", "NO_INSTRUCTION", "NOT_AN_OBJECT")),
    *constants(
        stages,
        (
            "CUT_OFF",
            "UNPARSEABLE_CLASSIFICATION",
            "UNPARSEABLE_INSTANCE",
            "STRAY_MARKER",
            "OVERSIZED_COMPLETION",
            "CHATTER",
            "UNPARSEABLE_TASK",
            "UNSCORED_JUDGEMENT",
            "RELIST_STOPPED",
        ),
    ),
    *constants(alpaca, ("UNPARSEABLE_TASK", "STRAY_FIELD")),
    *constants(chatprompts, ("LIST_MARKER", "LIST_HEADING", "SUB_ITEM")),
    bootstrap.SURPLUS,
    bootstrap.UNFINISHED,
    *constants(bootstrap, ("TARGET_REACHED", "MAX_ROUNDS", "MAX_NEW", "TIME_LIMIT", "SATURATED", "INTERRUPTED")),
    stopping.TERMINATED,
    "error",
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_every_recorded_name_is_explained(name: str) -> None:
    assert name in glossary.ALL
    assert glossary.explain(name) and not glossary.explain(name).endswith(".")


def test_the_glossary_holds_no_name_the_code_never_records() -> None:
    assert set(glossary.ALL) == RECORDED


def test_unknown_name() -> None:
    assert "not known" in glossary.explain("from_another_tool")


def test_the_docs_table_says_the_same() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text(encoding="utf-8")
    for name, meaning in glossary.ALL.items():
        assert f"| `{name}` |" in page and meaning.replace("|", "/") in page, name
