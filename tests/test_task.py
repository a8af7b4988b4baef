"""Tests for selfinstruct.pool.task: the Task record, its file formats, and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from selfinstruct.errors import InputError
from selfinstruct.pool.task import (
    Instance,
    Task,
    atomic_writer,
    load_seed_tasks,
    load_tasks,
    read_records,
    task_from_record,
    write_json_atomic,
    write_jsonl_atomic,
)

SEED_RECORD: dict[str, Any] = {
    "id": "seed_task_0",
    "name": "packing_list",
    "instruction": "Suggest what to pack for a weekend hiking trip in autumn.",
    "instances": [{"input": "", "output": "Rain jacket, warm layers, boots, water, snacks and a map."}],
    "is_classification": False,
}

CLF_RECORD: dict[str, Any] = {
    "id": "seed_task_7",
    "name": "review_sentiment",
    "instruction": "Decide whether the product review is positive or negative.",
    "instances": [
        {"input": "Broke after two days.", "output": "Negative"},
        {"input": "Works exactly as advertised.", "output": "Positive"},
    ],
    "is_classification": True,
}


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_lines(path: Path, records: list[Any]) -> Path:
    return write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- task_from_record: seed schema ---------------------------------------------------------------------


def test_seed_record_open_ended() -> None:
    task = task_from_record(SEED_RECORD)
    assert task == Task(
        instruction="Suggest what to pack for a weekend hiking trip in autumn.",
        instances=[Instance("", "Rain jacket, warm layers, boots, water, snacks and a map.")],
        is_classification=False,
        id="seed_task_0",
        name="packing_list",
        meta={},
    )
    assert not task.is_machine


def test_seed_record_classification() -> None:
    task = task_from_record(CLF_RECORD)
    assert task.is_classification is True
    assert task.instances == [
        Instance("Broke after two days.", "Negative"),
        Instance("Works exactly as advertised.", "Positive"),
    ]


def test_seed_record_strips_instruction_but_not_instances() -> None:
    record = {"instruction": "  Name a colour.  \n", "instances": [{"input": " a ", "output": " b "}]}
    task = task_from_record(record)
    assert task.instruction == "Name a colour."
    assert task.instances == [Instance(" a ", " b ")]


def test_seed_record_instance_without_input_has_empty_input() -> None:
    task = task_from_record({"instruction": "Tell a joke.", "instances": [{"output": "Knock knock."}]})
    assert task.instances == [Instance("", "Knock knock.")]


def test_seed_record_with_empty_instance_list() -> None:
    task = task_from_record({"instruction": "Tell a joke.", "instances": []})
    assert task.instances == []


@pytest.mark.parametrize(
    ("extra", "expected_id", "expected_name", "expected_clf"),
    [
        ({}, "", "", None),
        ({"id": None, "name": None, "is_classification": None}, "", "", None),
        ({"id": 17, "name": "n"}, "17", "n", None),
        ({"is_classification": True}, "", "", True),
    ],
    ids=["absent", "null", "numeric-id", "clf-true"],
)
def test_optional_core_fields(
    extra: dict[str, Any], expected_id: str, expected_name: str, expected_clf: bool | None
) -> None:
    record = {"instruction": "Tell a joke.", "instances": [{"input": "", "output": "x"}], **extra}
    task = task_from_record(record)
    assert (task.id, task.name, task.is_classification) == (expected_id, expected_name, expected_clf)


# -- task_from_record: Alpaca --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected_input"),
    [
        ({"instruction": "Double the number.", "input": "21", "output": "42"}, "21"),
        ({"instruction": "Double the number.", "input": "", "output": "42"}, ""),
        ({"instruction": "Double the number.", "output": "42"}, ""),
        ({"instruction": "Double the number.", "input": None, "output": "42"}, ""),
    ],
    ids=["with-input", "empty-input", "missing-input", "null-input"],
)
def test_alpaca_record(record: dict[str, Any], expected_input: str) -> None:
    task = task_from_record(record)
    assert task.instruction == "Double the number."
    assert task.instances == [Instance(expected_input, "42")]
    assert task.is_classification is None
    assert (task.id, task.name, task.meta) == ("", "", {})


def test_alpaca_empty_output_is_allowed() -> None:
    assert task_from_record({"instruction": "Say nothing.", "output": ""}).instances == [Instance("", "")]


def test_alpaca_extra_fields_go_to_meta_but_not_input_output() -> None:
    record = {"instruction": "Add.", "input": "1 2", "output": "3", "source": "alpaca", "score": 0.5}
    assert task_from_record(record).meta == {"source": "alpaca", "score": 0.5}


# -- meta, to_record, to_alpaca ------------------------------------------------------------------------


def test_meta_keeps_extra_fields_in_order() -> None:
    record = {**SEED_RECORD, "source": "machine", "round": 3, "most_similar": {"a": 0.5}, "rouge": 0.31}
    task = task_from_record(record)
    assert task.meta == {"source": "machine", "round": 3, "most_similar": {"a": 0.5}, "rouge": 0.31}
    assert list(task.meta) == ["source", "round", "most_similar", "rouge"]
    assert task.is_machine


def test_to_record_round_trip_core_fields_first_then_meta() -> None:
    # Meta fields deliberately placed before and between the core fields in the input record.
    record = {
        "source": "machine",
        "id": "machine_task_4",
        "round": 2,
        "name": "",
        "instruction": "Rewrite the sentence in the passive voice.",
        "instances": [{"input": "The cat ate the fish.", "output": "The fish was eaten by the cat."}],
        "is_classification": False,
        "model": "base-lm",
    }
    out = task_from_record(record).to_record()
    assert list(out) == [
        "id", "name", "instruction", "instances", "is_classification", "source", "round", "model",
    ]  # fmt: skip
    assert out == record
    assert task_from_record(out) == task_from_record(record)
    assert json.loads(json.dumps(out)) == out


@pytest.mark.parametrize("record", [SEED_RECORD, CLF_RECORD], ids=["open", "clf"])
def test_seed_record_to_record_is_identity(record: dict[str, Any]) -> None:
    assert task_from_record(record).to_record() == record


def test_to_record_of_alpaca_task_has_seed_shape() -> None:
    task = task_from_record({"instruction": "Add.", "input": "1 2", "output": "3"})
    assert task.to_record() == {
        "id": "",
        "name": "",
        "instruction": "Add.",
        "instances": [{"input": "1 2", "output": "3"}],
        "is_classification": None,
    }


def test_to_alpaca_one_record_per_instance() -> None:
    assert task_from_record(CLF_RECORD).to_alpaca() == [
        {
            "instruction": "Decide whether the product review is positive or negative.",
            "input": "Broke after two days.",
            "output": "Negative",
        },
        {
            "instruction": "Decide whether the product review is positive or negative.",
            "input": "Works exactly as advertised.",
            "output": "Positive",
        },
    ]


def test_to_alpaca_round_trips_through_task_from_record() -> None:
    for alpaca in task_from_record(CLF_RECORD).to_alpaca():
        back = task_from_record(alpaca)
        assert back.to_alpaca() == [alpaca]


def test_to_alpaca_of_task_without_instances_is_empty() -> None:
    assert Task("Tell a joke.").to_alpaca() == []


# -- task_from_record: errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (["not", "an", "object"], "expected a JSON object, got list"),
        ("a string", "expected a JSON object, got str"),
        (None, "expected a JSON object, got NoneType"),
        ({"instances": []}, "missing field 'instruction'"),
        ({"instruction": "", "output": "x"}, "field 'instruction' is empty"),
        ({"instruction": " \n\t", "output": "x"}, "field 'instruction' is empty"),
        ({"instruction": 42, "output": "x"}, "field 'instruction' must be a string, got int"),
        ({"instruction": ["a"], "output": "x"}, "field 'instruction' must be a string, got list"),
        (
            {"instruction": "Do it.", "instances": {"input": "", "output": "x"}},
            "field 'instances' must be a list of {input, output} objects",
        ),
        (
            {"instruction": "Do it.", "instances": ["x"]},
            "instances[0] must be an object with 'input' and 'output'",
        ),
        (
            {"instruction": "Do it.", "instances": [{"input": "", "output": "a"}, {"input": "b"}]},
            "instances[1].output is missing or not a string",
        ),
        (
            {"instruction": "Do it.", "instances": [{"input": "", "output": None}]},
            "instances[0].output is missing or not a string",
        ),
        (
            {"instruction": "Do it.", "instances": [{"input": 3, "output": "a"}]},
            "instances[0].input must be a string",
        ),
        (
            {"instruction": "Do it.", "instances": [], "is_classification": "yes"},
            "field 'is_classification' must be true, false or absent",
        ),
        (
            {"instruction": "Do it.", "output": "x", "is_classification": 1},
            "field 'is_classification' must be true, false or absent",
        ),
        ({"instruction": "Do it.", "input": 5, "output": "x"}, "field 'input' must be a string"),
        ({"instruction": "Do it.", "output": 5}, "field 'output' must be a string, got int"),
        (
            {"instruction": "Do it.", "input": "x"},
            "record has neither 'instances' (seed schema) nor 'output' (Alpaca)",
        ),
    ],
    ids=[
        "list",
        "string",
        "null",
        "missing-instruction",
        "empty-instruction",
        "blank-instruction",
        "instruction-int",
        "instruction-list",
        "instances-not-list",
        "instance-not-object",
        "instance-missing-output",
        "instance-null-output",
        "instance-input-int",
        "is-classification-str",
        "is-classification-int",
        "alpaca-input-int",
        "alpaca-output-int",
        "neither",
    ],
)
def test_task_from_record_errors(record: Any, problem: str) -> None:
    with pytest.raises(InputError) as info:
        task_from_record(record, "data/tasks.jsonl", 12)
    err = info.value
    assert str(err) == f"data/tasks.jsonl:12: {problem}"
    assert (err.path, err.line, err.problem) == ("data/tasks.jsonl", 12, problem)
    assert err.exit_code == 2


def test_task_from_record_default_location() -> None:
    with pytest.raises(InputError, match=r"^<record>:0: missing field 'instruction'$"):
        task_from_record({})


# -- read_records --------------------------------------------------------------------------------------


def test_read_records_jsonl_skips_blank_lines_and_keeps_line_numbers(tmp_path: Path) -> None:
    path = write_text(tmp_path / "t.jsonl", '\n{"a": 1}\n\n   \n{"a": 2}\n\t\n[3]\n')
    assert list(read_records(path)) == [(2, {"a": 1}), (5, {"a": 2}), (7, [3])]


def test_read_records_accepts_crlf_and_missing_final_newline(tmp_path: Path) -> None:
    path = write_text(tmp_path / "t.jsonl", "")
    path.write_bytes(b'{"a": 1}\r\n\r\n{"a": 2}')
    assert list(read_records(path)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_read_records_only_newline_ends_a_line(tmp_path: Path) -> None:
    # JSON written with ensure_ascii=False holds U+2028 and U+0085 raw; they must not split a record.
    record = {"instruction": "Join.", "output": "a\u2028b\x85c\u2029d"}
    path = write_text(tmp_path / "t.jsonl", json.dumps(record, ensure_ascii=False) + "\n" + '{"b": 2}\n')
    assert list(read_records(path)) == [(1, record), (2, {"b": 2})]


def test_read_records_json_array_uses_index_as_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "t.json", '  \n[\n  {"a": 1},\n  {"a": 2},\n  "x"\n]\n')
    assert list(read_records(path)) == [(1, {"a": 1}), (2, {"a": 2}), (3, "x")]


def test_read_records_empty_json_array(tmp_path: Path) -> None:
    assert list(read_records(write_text(tmp_path / "t.json", "[]"))) == []


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_read_records_empty_file(tmp_path: Path, text: str) -> None:
    assert list(read_records(write_text(tmp_path / "t.jsonl", text))) == []


def test_read_records_malformed_jsonl_line_names_the_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "t.jsonl", '{"a": 1}\n\n{"a": 2,}\n{"a": 3}\n')
    records = read_records(path)
    assert next(records) == (1, {"a": 1})
    with pytest.raises(InputError) as info:
        next(records)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: not valid JSON: ")
    assert "(column 9)" in str(info.value)


def test_read_records_malformed_json_array_names_the_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "t.json", '[\n {"a": 1},\n {"a": 2\n]\n')
    with pytest.raises(InputError) as info:
        list(read_records(path))
    assert info.value.line == 4
    assert str(info.value).startswith(f"{path}:4: not valid JSON: ")


def test_read_records_pretty_printed_object_is_not_jsonl(tmp_path: Path) -> None:
    # Only a JSON array may span lines; a pretty-printed object fails on its first line.
    path = write_text(tmp_path / "t.json", '{\n  "instruction": "Add.",\n  "output": "3"\n}\n')
    with pytest.raises(InputError) as info:
        list(read_records(path))
    assert info.value.line == 1
    assert str(info.value).startswith(f"{path}:1: not valid JSON: ")


def test_read_records_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(InputError) as info:
        list(read_records(path))
    assert str(info.value) == f"{path}: file not found"
    assert info.value.line is None


def test_read_records_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"instruction": "Café"}\n'.encode("latin-1"))
    with pytest.raises(InputError) as info:
        list(read_records(path))
    assert str(info.value) == f"{path}: not UTF-8 text (invalid continuation byte at byte 20)"
    assert info.value.line is None


def test_read_records_directory_is_not_readable(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        list(read_records(tmp_path))
    assert str(info.value) == f"{tmp_path}: is a directory, not a file"


# -- load_tasks / load_seed_tasks ----------------------------------------------------------------------


def test_load_tasks_mixed_schemas(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [SEED_RECORD, {"instruction": "Add.", "input": "1 2", "output": "3"}])
    tasks = load_tasks(path)
    assert [t.instruction for t in tasks] == [SEED_RECORD["instruction"], "Add."]
    assert tasks[1].instances == [Instance("1 2", "3")]


def test_load_tasks_json_array(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.json", json.dumps([SEED_RECORD, CLF_RECORD], indent=2))
    assert [t.id for t in load_tasks(path)] == ["seed_task_0", "seed_task_7"]


@pytest.mark.parametrize(
    ("text", "what", "message"),
    [
        ("", "task file", "the task file holds no tasks"),
        ("\n \n", "task file", "the task file holds no tasks"),
        ("[]", "pool", "the pool holds no tasks"),
    ],
    ids=["empty", "blank", "empty-array"],
)
def test_load_tasks_empty_file(tmp_path: Path, text: str, what: str, message: str) -> None:
    path = write_text(tmp_path / "t.jsonl", text)
    with pytest.raises(InputError) as info:
        load_tasks(path, what=what)
    assert str(info.value) == f"{path}: {message}"


def test_load_tasks_bad_record_names_file_line_and_field(tmp_path: Path) -> None:
    path = write_text(tmp_path / "t.jsonl", json.dumps(SEED_RECORD) + "\n\n" + '{"instruction": 7, "output": ""}\n')
    with pytest.raises(InputError) as info:
        load_tasks(path)
    assert str(info.value) == f"{path}:3: field 'instruction' must be a string, got int"


def test_load_tasks_json_array_bad_element_names_index(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.json", json.dumps([SEED_RECORD, SEED_RECORD, 5]))
    with pytest.raises(InputError) as info:
        load_tasks(path)
    assert str(info.value) == f"{path}:3: expected a JSON object, got int"


def test_load_seed_tasks_assigns_ids_names_and_source(tmp_path: Path) -> None:
    records = [
        {"instruction": "Add the numbers.", "input": "1 2", "output": "3"},
        SEED_RECORD,
        {"instruction": "Name a prime.", "instances": [{"output": "7"}], "source": "custom"},
        {"instruction": "Tell a joke.", "id": "mine", "output": "..."},
    ]
    tasks = load_seed_tasks(write_lines(tmp_path / "seeds.jsonl", records))
    assert [(t.id, t.name) for t in tasks] == [
        ("seed_task_0", "seed_task_0"),
        ("seed_task_0", "packing_list"),
        ("seed_task_2", "seed_task_2"),
        ("mine", "seed_task_3"),
    ]
    assert [t.meta["source"] for t in tasks] == ["seed", "seed", "custom", "seed"]
    assert not any(t.is_machine for t in tasks)


def test_load_seed_tasks_empty_file(tmp_path: Path) -> None:
    path = write_text(tmp_path / "seeds.jsonl", "\n")
    with pytest.raises(InputError) as info:
        load_seed_tasks(path)
    assert str(info.value) == f"{path}: the seed file holds no tasks"


# -- atomic writes -------------------------------------------------------------------------------------


def test_write_jsonl_atomic_round_trip(tmp_path: Path) -> None:
    tasks = [task_from_record(SEED_RECORD), task_from_record({**CLF_RECORD, "source": "machine", "round": 1})]
    tasks[0].instances.append(Instance("", "Ünïcödé\u2028line"))
    path = tmp_path / "sub" / "dir" / "pool.jsonl"  # parents are created
    assert write_jsonl_atomic(path, (t.to_record() for t in tasks)) == 2
    assert "Ünïcödé" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    assert load_tasks(path) == tasks
    assert listing(path.parent) == ["pool.jsonl"]


def test_write_jsonl_atomic_replaces_existing_file(tmp_path: Path) -> None:
    path = write_text(tmp_path / "out.jsonl", "old\n")
    assert write_jsonl_atomic(path, []) == 0
    assert path.read_text(encoding="utf-8") == ""
    assert write_jsonl_atomic(path, [{"a": 1}, {"b": 2}]) == 2
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"b": 2}\n'


def test_write_json_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_json_atomic(path, [{"instruction": "é", "input": "", "output": "x"}])
    text = path.read_text(encoding="utf-8")
    assert text.endswith("]\n")
    assert "é" in text
    assert json.loads(text) == [{"instruction": "é", "input": "", "output": "x"}]
    assert [t.instruction for t in load_tasks(path)] == ["é"]


class Boom(Exception):
    pass


def _failing_records() -> Any:
    yield {"a": 1}
    yield {"a": 2}
    raise Boom("generator failed mid-write")


class Unserialisable:
    pass


@pytest.mark.parametrize(
    "write",
    [
        lambda p: write_jsonl_atomic(p, _failing_records()),
        lambda p: write_jsonl_atomic(p, [{"a": 1}, {"bad": Unserialisable()}]),
        lambda p: write_json_atomic(p, [{"a": 1}, {"bad": Unserialisable()}]),
    ],
    ids=["jsonl-generator-raises", "jsonl-unserialisable", "json-unserialisable"],
)
@pytest.mark.parametrize("existing", [True, False], ids=["target-exists", "no-target"])
def test_failed_write_leaves_target_and_no_temp_file(tmp_path: Path, write: Any, existing: bool) -> None:
    path = tmp_path / "out.jsonl"
    if existing:
        write_text(path, '{"old": true}\n')
    with pytest.raises((Boom, TypeError)):
        write(path)
    if existing:
        assert path.read_text(encoding="utf-8") == '{"old": true}\n'
        assert listing(tmp_path) == ["out.jsonl"]
    else:
        assert listing(tmp_path) == []


def test_atomic_writer_commits_on_success(tmp_path: Path) -> None:
    path = write_text(tmp_path / "f.txt", "old")
    with atomic_writer(path) as fh:
        fh.write("new ")
        fh.write("text")
        assert path.read_text(encoding="utf-8") == "old"  # not visible until the block ends
        assert len(listing(tmp_path)) == 2  # the temporary file lies beside the target
    assert path.read_text(encoding="utf-8") == "new text"
    assert listing(tmp_path) == ["f.txt"]


@pytest.mark.parametrize("exc_type", [Boom, KeyboardInterrupt], ids=["exception", "keyboard-interrupt"])
def test_atomic_writer_exception_mid_write(tmp_path: Path, exc_type: type[BaseException]) -> None:
    path = write_text(tmp_path / "f.txt", "old")
    with pytest.raises(exc_type), atomic_writer(path) as fh:
        fh.write("half")
        raise exc_type()
    assert path.read_text(encoding="utf-8") == "old"
    assert listing(tmp_path) == ["f.txt"]
