"""The project's own seed set must pass the bars of a good bootstrap start, and ``seeds check`` must judge
seed files correctly."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from rouge_score import rouge_scorer
from typer.testing import CliRunner

from selfinstruct.cli import app
from selfinstruct.gates.filters import InstructionHeuristics, clean_instances
from selfinstruct.gates.seedcheck import check_seed_file
from selfinstruct.paths import default_seeds_path
from selfinstruct.pool.task import Task, load_seed_tasks


@pytest.fixture(scope="module")
def seeds() -> list[Task]:
    return load_seed_tasks(default_seeds_path())


def test_size_and_unique_ids_and_names(seeds: list[Task]) -> None:
    assert len(seeds) >= 175
    assert len({t.id for t in seeds}) == len(seeds)
    assert len({t.name for t in seeds}) == len(seeds)
    assert all(t.name.replace("_", "").isalnum() and t.name.islower() for t in seeds)


def test_every_instruction_passes_the_heuristic_filters(seeds: list[Task]) -> None:
    heuristics = InstructionHeuristics()
    rejected = {t.name: heuristics(t.instruction) for t in seeds if heuristics(t.instruction)}
    assert rejected == {}


def test_no_two_instructions_are_close(seeds: list[Task]) -> None:
    # The reference scorer itself, every pair: the pool must start diverse.
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    close = [
        (a.name, b.name, round(f, 3))
        for a, b in combinations(seeds, 2)
        if (f := scorer.score(a.instruction, b.instruction)["rougeL"].fmeasure) > 0.5
    ]
    assert close == []


def test_leading_words_are_diverse(seeds: list[Task]) -> None:
    leading = Counter(t.instruction.split()[0].strip(",.:;!?").lower() for t in seeds)
    assert len(leading) >= 60


def test_mix_of_classification_and_inputs(seeds: list[Task]) -> None:
    assert all(isinstance(t.is_classification, bool) for t in seeds)
    classification = [t for t in seeds if t.is_classification]
    assert 20 <= len(classification) <= 40
    no_input = [t for t in seeds if not any(i.input.strip() for i in t.instances)]
    assert 0.25 <= len(no_input) / len(seeds) <= 0.45
    assert all(1 <= len(t.instances) <= 3 for t in seeds)
    assert all(i.output.strip() for t in seeds for i in t.instances)


def test_tasks_with_an_input_show_at_least_two_distinct_examples(seeds: list[Task]) -> None:
    # Input-first demonstrations render every instance of a seed; a seed with a single example teaches the
    # model to write a single example. Empty-input tasks keep one: a second empty input would look like a
    # conflicting output.
    with_input = [t for t in seeds if not t.is_classification and any(i.input.strip() for i in t.instances)]
    assert len(with_input) >= 90
    thin = [t.name for t in with_input if len({i.input.strip() for i in t.instances}) < 2]
    assert thin == []
    mixed = [t.name for t in with_input if not all(i.input.strip() for i in t.instances)]
    assert mixed == []


def test_the_instance_filters_keep_every_seed_instance(seeds: list[Task]) -> None:
    # The seeds are the model's examples of good instances: the filters applied to generated ones must agree.
    judged = {t.name: clean_instances(t.instances) for t in seeds}
    dropped = {name: (r.task_reason, r.dropped) for name, r in judged.items() if r.task_reason or r.dropped}
    assert dropped == {}
    assert all(len(judged[t.name].kept) == len(t.instances) for t in seeds)


def test_most_input_first_demonstrations_are_compact(seeds: list[Task]) -> None:
    # Bootstrap prefers demonstrations of at most 1,200 characters (inputs + outputs) when there are enough.
    non_classification = [t for t in seeds if not t.is_classification]
    compact = [t for t in non_classification if sum(len(i.input) + len(i.output) for i in t.instances) <= 1200]
    assert len(compact) > len(non_classification) / 2


def test_classification_outputs_come_from_a_named_label_set(seeds: list[Task]) -> None:
    for task in (t for t in seeds if t.is_classification):
        labels = {i.output.strip() for i in task.instances}
        assert len(labels) <= 10, task.name
        for label in labels:
            assert label.lower() in task.instruction.lower(), (task.name, label)


def test_check_of_the_project_seed_file_is_clean() -> None:
    report = check_seed_file(default_seeds_path())
    assert report.ok and report.problems == [] and report.warnings == []
    assert report.tasks >= 175 and report.distinct_leading_words >= 60
    assert report.similar_pairs and all(p["score"] <= 0.5 for p in report.similar_pairs)


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _task(i: int, **fields: Any) -> dict[str, Any]:
    base = {
        "id": f"t{i}", "name": f"task_{i}", "instruction": f"Describe option number {i} of the menu in detail.",
        "instances": [{"input": "", "output": f"Option {i} is soup."}], "is_classification": False,
    }  # fmt: skip
    return base | fields


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        ([_task(0), _task(1, id="t0")], ":2: duplicate id: same as line 1"),
        ([_task(0), _task(1, name="task_0")], ":2: duplicate name: same as line 1"),
        ([_task(0), _task(1, instruction=_task(0)["instruction"].upper())], ":2: duplicate instruction"),
        ([_task(0, instances=[{"input": "x", "output": " "}])], ":1: instances[0].output is empty"),
        ([_task(0, instruction="")], ":1: field 'instruction' is empty"),
        (
            [_task(0, is_classification=True, instances=[{"input": "a", "output": "a long free text answer here ok"}])],
            ":1: classification task whose output",
        ),
        (
            [_task(0, is_classification=True, instances=[{"input": str(i), "output": f"L{i}"} for i in range(11)])],
            ":1: classification task with 11 distinct outputs",
        ),
    ],
)
def test_check_reports_problems_with_file_and_line(tmp_path: Path, records: list[dict[str, Any]], problem: str) -> None:
    path = _write(tmp_path / "s.jsonl", records)
    report = check_seed_file(path)
    assert not report.ok
    rendered = [f.render(str(path)) for f in report.problems]
    assert any(r.startswith(str(path)) and problem in r for r in rendered), rendered


def test_alpaca_records_that_generate_accepts_are_valid_with_warnings(tmp_path: Path) -> None:
    alpaca = [
        {"instruction": "Give three tips for staying healthy in winter.", "input": "", "output": "Sleep, eat, walk."},
        {"instruction": "Translate the sentence into French.", "input": "Good morning.", "output": "Bonjour."},
        _task(2, name="", is_classification=None),
    ]
    path = _write(tmp_path / "alpaca.jsonl", alpaca)
    report = check_seed_file(path)
    assert report.ok, [f.render(str(path)) for f in report.problems]
    warnings = [f.render(str(path)) for f in report.warnings]
    assert any("3 records (lines 1, 2, 3) have no id or name; generate names them seed_task_<n>" in w for w in warnings)
    assert any("no is_classification; generate treats them as not classification" in w for w in warnings)


def test_check_goes_on_past_a_line_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(_task(0)) + "\n{oops\n" + json.dumps(_task(2)) + "\n" + '{"n": 1' + "0" * 5000 + "}\n")
    report = check_seed_file(path)
    rendered = [f.render(str(path)) for f in report.problems]
    assert rendered[0].startswith(f"{path}:2: not valid JSON")
    assert rendered[1] == f"{path}:4: not accepted: a number with more than 4300 digits"
    assert report.tasks == 2


def test_check_warns_on_filtered_and_near_duplicate_seeds(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "s.jsonl",
        [
            _task(0),
            _task(1, instruction="Describe option number 1 of the menu in great detail."),
            _task(2, instruction="Explain the picture on the wall of the cafe."),
        ],
    )
    report = check_seed_file(path)
    assert report.ok
    messages = [f.render(str(path)) for f in report.warnings]
    assert any(":2: near-duplicate" in m for m in messages), messages
    assert any(":3: the generation filters would reject this instruction (blocked_keyword)" in m for m in messages)


def test_cli_check_exit_codes_and_json(tmp_path: Path) -> None:
    runner = CliRunner()
    good = runner.invoke(app, ["seeds", "check", str(default_seeds_path())])
    assert good.exit_code == 0 and "valid" in good.output
    as_json = json.loads(runner.invoke(app, ["seeds", "check", str(default_seeds_path()), "--json"]).output)
    assert as_json["ok"] is True and as_json["tasks"] >= 175
    bad = _write(tmp_path / "bad.jsonl", [_task(0), _task(1, id="t0")])
    result = runner.invoke(app, ["seeds", "check", str(bad)])
    assert result.exit_code == 2 and f"{bad}:2: duplicate id" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = runner.invoke(app, ["seeds", "check", str(empty)])
    assert result.exit_code == 2 and "holds no tasks" in result.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(_task(0)) + "\n{oops\n")
    result = runner.invoke(app, ["seeds", "check", str(broken)])
    assert result.exit_code == 2 and f"{broken}:2: not valid JSON" in result.output
