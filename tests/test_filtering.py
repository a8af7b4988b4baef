"""``selfinstruct filter``: heuristics and novelty over a file, in file order, outputs whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rouge_score import rouge_scorer
from typer.testing import CliRunner

from selfinstruct.cli import app
from selfinstruct.errors import InputError
from selfinstruct.gates.filtering import filter_file

CANDIDATES = [
    {"instruction": "Summarize the story of a lighthouse keeper in three sentences.", "source": "a"},
    {"instruction": "Summarize the story of a lighthouse keeper in four sentences.", "source": "b"},  # ~copy of 1
    {"instruction": "Hi there", "source": "c"},  # too short
    {"instruction": "Describe the map of an old harbour town for a visitor.", "source": "d"},  # keyword
    {"instruction": "List five board games that two people can play in under an hour.", "source": "e"},
    {"instruction": "Write a program that prints the first ten prime numbers in order.", "source": "f"},
    {"instruction": "Explain how tides work to a curious eight-year-old child.", "input": "", "output": "x"},
]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_filter_keeps_in_order_and_explains_rejections(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", CANDIDATES)
    result = filter_file(src, tmp_path / "kept.jsonl", rejected_out=tmp_path / "rejected.jsonl")
    kept = read_jsonl(tmp_path / "kept.jsonl")
    assert kept == [CANDIDATES[0], CANDIDATES[4], CANDIDATES[6]]  # unchanged records, input order
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    assert [(r["source"], r["reject_reason"]) for r in rejected] == [
        ("b", "too_similar"),
        ("c", "too_short"),
        ("d", "blocked_keyword"),
        ("f", "write_a_program"),
    ]
    similar = rejected[0]
    assert similar["most_similar"] == CANDIDATES[0]["instruction"]
    expected = rouge_scorer.RougeScorer(["rougeL"]).score(CANDIDATES[1]["instruction"], CANDIDATES[0]["instruction"])
    assert similar["similarity"] == expected["rougeL"].fmeasure
    assert result.total == 7 and result.kept == 3
    assert dict(result.rejected) == {"too_similar": 1, "too_short": 1, "blocked_keyword": 1, "write_a_program": 1}


def test_no_heuristics_applies_only_novelty(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", CANDIDATES)
    result = filter_file(src, tmp_path / "kept.jsonl", heuristics=None)
    assert dict(result.rejected) == {"too_similar": 1}
    assert len(read_jsonl(tmp_path / "kept.jsonl")) == 6


def test_against_files_and_pool_directories(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", CANDIDATES[4:5])
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps([{"instruction": CANDIDATES[4]["instruction"].upper(), "output": "x"}]))
    pool = tmp_path / "pool"
    pool.mkdir()
    write_jsonl(pool / "tasks.jsonl", [{"instruction": "Something else entirely, about rivers and boats."}])
    result = filter_file(src, tmp_path / "kept.jsonl", against=[seeds, pool])
    assert result.against == 2 and result.kept == 0 and dict(result.rejected) == {"too_similar": 1}


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_threshold_is_strictly_greater_than(tmp_path: Path, threshold: float) -> None:
    same = {"instruction": "Name three rivers that flow through more than one country."}
    src = write_jsonl(tmp_path / "in.jsonl", [same, same])
    result = filter_file(src, tmp_path / "kept.jsonl", threshold=threshold)
    # Identical strings score exactly 1.0: rejected unless the threshold is 1.0.
    assert result.kept == (2 if threshold == 1.0 else 1)


def test_json_array_in_and_out(tmp_path: Path) -> None:
    src = tmp_path / "in.json"
    src.write_text(json.dumps(CANDIDATES))
    filter_file(src, tmp_path / "kept.json")
    assert json.loads((tmp_path / "kept.json").read_text()) == [CANDIDATES[0], CANDIDATES[4], CANDIDATES[6]]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"instruction": "Fine one here please."}', "{oops"], ":2: not valid JSON"),
        (['{"prompt": "x"}', '{"prompt": "y"}'], ":1: missing field 'instruction', and no record of the file"),
        (['{"instruction": 5}'], ":1: not a string in field 'instruction', and no record of the file has one"),
        (["[1, 2]"], ":1: expected a JSON object, got int, and no record"),
        (['{"instruction": "ok here"}', '{"n": 1' + "0" * 5000 + "}"], ":2: not accepted: a number with more than"),
        (['{"instruction": "\\ud800 is lone"}'], ":1: field 'instruction' holds a lone surrogate (\\ud800)"),
        (['{"a": ' * 100_000 + "1" + "}" * 100_000], ":1: not accepted: nested more than 64 levels deep"),
        (["[" * 100_000 + "]" * 100_000], ": not accepted: nested more than 64 levels deep"),  # a JSON array file
    ],
)
def test_bad_input_names_line_and_writes_nothing(tmp_path: Path, lines: list[str], message: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    kept = tmp_path / "kept.jsonl"
    kept.write_text("previous content\n")
    with pytest.raises(InputError) as info:
        filter_file(src, kept, rejected_out=tmp_path / "rejected.jsonl")
    assert str(info.value).startswith(f"{src}{message}")
    assert kept.read_text() == "previous content\n"  # untouched
    assert not (tmp_path / "rejected.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "kept.jsonl"]  # no temporary left


def test_records_without_a_usable_instruction_are_rejected_and_the_rest_filtered(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        "\n".join(
            [
                json.dumps(CANDIDATES[0]),
                '{"instruction": "   ", "id": 1}',
                '{"prompt": "no instruction here"}',
                '{"instruction": 7}',
                "[1, 2]",
                json.dumps(CANDIDATES[4]),
            ]
        )
        + "\n"
    )
    result = filter_file(src, tmp_path / "kept.jsonl", rejected_out=tmp_path / "rejected.jsonl")
    assert read_jsonl(tmp_path / "kept.jsonl") == [CANDIDATES[0], CANDIDATES[4]]
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    assert rejected == [
        {"instruction": "   ", "id": 1, "reject_reason": "empty_instruction"},
        {"prompt": "no instruction here", "reject_reason": "no_instruction"},
        {"instruction": 7, "reject_reason": "no_instruction"},
        {"record": [1, 2], "reject_reason": "not_an_object"},
    ]
    assert result.total == 6 and result.kept == 2


def test_cli_filter(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", CANDIDATES)
    runner = CliRunner()
    result = runner.invoke(
        app, ["filter", str(src), "--out", str(tmp_path / "k.jsonl"), "--rejected", str(tmp_path / "r.jsonl")]
    )
    assert result.exit_code == 0, result.output
    assert "selfinstruct filter: kept 3 of 7, rejected 4" in result.output
    assert "too_similar" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n')
    result = runner.invoke(app, ["filter", str(bad), "--out", str(tmp_path / "k2.jsonl")])
    assert result.exit_code == 2 and f"{bad}:1: missing field 'instruction', and no record" in result.output
    assert not (tmp_path / "k2.jsonl").exists()
