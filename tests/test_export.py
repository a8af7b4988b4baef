"""``selfinstruct export``: record formats, the user-turn rule, selection, containers, trainer configs, safety.

Parquet and ``datasets`` outputs need pyarrow and datasets (``pip install 'selfinstruct[export]'``); those
tests skip without them. TRL and chat templates are checked in ``test_export_trainers.py``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exportsets import (
    AXOLOTL_CHAT_TEMPLATE_KEYS,
    N_INSTANCES,
    POOL_TASKS,
    llamafactory_read,
    openai_problems,
    write_pool,
)
from seedsets import write_seeds
from typer.testing import CliRunner

from selfinstruct.cli import app
from selfinstruct.errors import ConfigError, InputError, OutputError
from selfinstruct.pool.inputs import fingerprint as file_fingerprint
from selfinstruct.pool.task import Instance, Task
from selfinstruct.views import export as export_module
from selfinstruct.views.export import (
    ExportOptions,
    UserTurn,
    container_for,
    export_pool,
)

CHAT_FORMATS = ("messages", "prompt-completion", "openai", "sharegpt", "alpaca")


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    return write_pool(tmp_path / "pool")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def run(pool: Path, out: Path, **options: Any) -> list[dict[str, Any]]:
    export_pool(pool, out, ExportOptions(**options))
    return read_jsonl(out)


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["export", *args], catch_exceptions=False)


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def user_and_answer(fmt: str, record: dict[str, Any]) -> tuple[str, str]:
    """The user turn and the answer of a one-turn record, whatever the format."""
    if fmt == "alpaca":
        return "\n".join(p for p in (record["instruction"], record["input"]) if p), record["output"]
    if fmt == "sharegpt":
        turns = [t for t in record["conversations"] if t["from"] != "system"]
        return turns[0]["value"], turns[1]["value"]
    if fmt == "prompt-completion":
        return record["prompt"][-1]["content"], record["completion"][0]["content"]
    return record["messages"][-2]["content"], record["messages"][-1]["content"]


# ---------------------------------------------------------------------------------------------- user turn


@pytest.mark.parametrize(
    ("turn", "instruction", "input", "expected"),
    [
        (UserTurn(), "Give a synonym.", "", "Give a synonym."),
        (UserTurn(), "Translate to French.", "Good morning", "Translate to French.\nGood morning"),
        (UserTurn(), "Fix it.", "line 1\nline 2", "Fix it.\nline 1\nline 2"),
        (UserTurn("{instruction}\n\nInput: {input}"), "Sort.", "3, 1, 2", "Sort.\n\nInput: 3, 1, 2"),
        (UserTurn("Q: {input}\n{instruction}"), "Answer.", "2+2?", "Q: 2+2?\nAnswer."),
        (UserTurn("{instruction} {json} {input}"), "Keep {braces}.", "x", "Keep {braces}. {json} x"),
        # an instruction that itself contains a placeholder is not filled in
        (UserTurn(), "Explain what {input} means in a template.", "here", "Explain what {input} means in a "
         "template.\nhere"),
        (UserTurn(template_no_input="Task: {instruction}"), "Smile.", "", "Task: Smile."),
    ],
)  # fmt: skip
def test_user_turn_rule(turn: UserTurn, instruction: str, input: str, expected: str) -> None:
    assert turn.render(instruction, input) == expected


@pytest.mark.parametrize(
    ("template", "no_input", "message"),
    [
        ("{instruction}", "{instruction}", "must contain {instruction} and {input}"),
        ("{input}", "{instruction}", "must contain {instruction} and {input}"),
        ("{instruction}\n{input}", "just text", "--template-no-input must contain {instruction}"),
        ("{instruction}\n{input}", "{instruction} {input}", "cannot contain {input}"),
    ],
)
def test_bad_templates(template: str, no_input: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        UserTurn(template, no_input)


def test_every_format_gives_the_same_user_turn(pool_dir: Path, tmp_path: Path) -> None:
    """One rule: every chat format, read as its consumer reads it, yields identical (user, answer) pairs."""
    pairs = {}
    for fmt in CHAT_FORMATS:
        records = run(pool_dir, tmp_path / f"{fmt}.jsonl", fmt=fmt)
        pairs[fmt] = [user_and_answer(fmt, r) for r in records]
    assert len(pairs["messages"]) == N_INSTANCES
    assert all(p == pairs["messages"] for p in pairs.values())
    assert pairs["messages"][1] == ("Label the mood of the sentence as Calm or Tense.\nWe waited.", "Calm")


@pytest.mark.parametrize("fmt", ["messages", "prompt-completion", "openai", "sharegpt", "alpaca"])
def test_a_template_applies_to_every_format(pool_dir: Path, tmp_path: Path, fmt: str) -> None:
    records = run(pool_dir, tmp_path / "t.jsonl", fmt=fmt, template="### Task\n{instruction}\n### Input\n{input}")
    user, answer = user_and_answer(fmt, records[1])
    assert user == "### Task\nLabel the mood of the sentence as Calm or Tense.\n### Input\nWe waited."
    assert answer == "Calm"
    if fmt == "alpaca":  # the rendered turn is the instruction, so no trainer's join can change it
        assert records[1]["input"] == ""


# ------------------------------------------------------------------------------------------------ formats


def test_messages_records(pool_dir: Path, tmp_path: Path) -> None:
    records = run(pool_dir, tmp_path / "m.jsonl")  # the default format
    assert records[0] == {
        "id": "machine_task_000000-0",
        "messages": [
            {"role": "user", "content": "Give two synonyms for 'quick'."},
            {"role": "assistant", "content": "fast, rapid"},
        ],
    }
    assert [r["id"] for r in records[1:3]] == ["machine_task_000001-0", "machine_task_000001-1"]


def test_prompt_completion_records(pool_dir: Path, tmp_path: Path) -> None:
    records = run(pool_dir, tmp_path / "pc.jsonl", fmt="prompt-completion", system="Be brief.")
    assert records[2] == {
        "id": "machine_task_000001-1",
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Label the mood of the sentence as Calm or Tense.\nThe door creaked open "
             "at midnight."},
        ],
        "completion": [{"role": "assistant", "content": "Tense"}],
    }  # fmt: skip


def test_sharegpt_records_use_from_value_and_unique_ids(pool_dir: Path, tmp_path: Path) -> None:
    records = run(pool_dir, tmp_path / "s.jsonl", fmt="sharegpt", system="You are helpful.")
    assert records[1] == {
        "id": "machine_task_000001-0",
        "conversations": [
            {"from": "system", "value": "You are helpful."},
            {"from": "human", "value": "Label the mood of the sentence as Calm or Tense.\nWe waited."},
            {"from": "gpt", "value": "Calm"},
        ],
    }
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == N_INSTANCES


def test_alpaca_records(pool_dir: Path, tmp_path: Path) -> None:
    records = run(pool_dir, tmp_path / "a.jsonl", fmt="alpaca")
    assert records[2] == {
        "instruction": "Label the mood of the sentence as Calm or Tense.",
        "input": "The door creaked open at midnight.",
        "output": "Tense",
    }
    with_system = run(pool_dir, tmp_path / "b.jsonl", fmt="alpaca", system="Be brief.")
    assert with_system[0]["system"] == "Be brief."


def test_seed_records_keep_tasks_and_provenance(pool_dir: Path, tmp_path: Path) -> None:
    records = run(pool_dir, tmp_path / "seed.jsonl", fmt="seed")
    assert len(records) == len(POOL_TASKS)
    assert records[1] == {**POOL_TASKS[1].to_record()}
    assert records[1]["round"] == 1 and len(records[1]["instances"]) == 2


def test_openai_records_pass_the_published_checks(pool_dir: Path, tmp_path: Path) -> None:
    for system in (None, "You are a careful assistant."):
        records = run(pool_dir, tmp_path / "o.jsonl", fmt="openai", system=system)
        assert len(records) == N_INSTANCES
        assert all(openai_problems(r) == [] for r in records), [openai_problems(r) for r in records]
        assert all(set(r) == {"messages"} for r in records)
    assert records[0]["messages"][0] == {"role": "system", "content": "You are a careful assistant."}
    # the checker does catch what the old exports got wrong
    assert "missing_messages_list" in openai_problems({"conversations": []})
    assert "unrecognized_role" in openai_problems({"messages": [{"role": "human", "content": "x"}]})


def test_openai_warns_below_ten_examples(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "small", POOL_TASKS[:2])
    result = export_pool(pool, tmp_path / "o.jsonl", ExportOptions(fmt="openai"))
    assert any("at least 10 training examples" in w for w in result.warnings)


def test_record_ids_stay_unique_when_seed_ids_collide(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool", POOL_TASKS[:1])
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        json.dumps({"id": "machine_task_000000", "name": "x", "instruction": "Say hi.",
                    "instances": [{"input": "", "output": "hi"}], "is_classification": False}) + "\n"
    )  # fmt: skip
    for per in ("instance", "task"):
        records = run(pool, tmp_path / "m.jsonl", seeds=seeds, per=per)
        ids = [r["id"] for r in records]
        assert len(ids) == 2 and len(set(ids)) == 2


# ------------------------------------------------------------------------------------- selection options


def test_seeds_are_left_out_by_default_and_put_first_when_asked(pool_dir: Path, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    assert len(run(pool_dir, tmp_path / "a.jsonl", fmt="seed")) == len(POOL_TASKS)
    records = run(pool_dir, tmp_path / "b.jsonl", fmt="seed", seeds=seeds)
    assert len(records) == 10 + len(POOL_TASKS)
    assert records[0]["id"] == "seed_task_0" and records[-1]["id"] == "machine_task_000005"


def test_include_seeds_finds_the_seed_file_the_pool_was_made_with(pool_dir: Path, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "my_seeds.jsonl")
    (pool_dir / "config.json").write_text(json.dumps({"seeds_hash": file_fingerprint(seeds)}))
    (pool_dir / "runs.jsonl").write_text(json.dumps({"config": {"seeds": str(seeds)}}) + "\n")
    records = run(pool_dir, tmp_path / "a.jsonl", fmt="seed", include_seeds=True)
    assert len(records) == 10 + len(POOL_TASKS)
    seeds.write_text(seeds.read_text() + "\n")  # the file changed since: its fingerprint no longer matches
    with pytest.raises(ConfigError, match="pass it with --seeds PATH"):
        export_pool(pool_dir, tmp_path / "b.jsonl", ExportOptions(include_seeds=True))


def test_duplicate_pairs_are_dropped_after_the_first(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool", POOL_TASKS[:2])
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        json.dumps({"id": "s0", "name": "s0", "instruction": "Label the mood of the sentence as Calm or Tense.",
                    "instances": [{"input": "We waited. ", "output": "Tense?"}], "is_classification": True})
        + "\n"
    )  # fmt: skip
    result = export_pool(pool, tmp_path / "a.jsonl", ExportOptions(fmt="alpaca", seeds=seeds))
    records = read_jsonl(tmp_path / "a.jsonl")
    assert result.duplicates_dropped == 1 and len(records) == 3
    assert records[0]["output"] == "Tense?"  # the seed comes first and wins
    kept = export_pool(pool, tmp_path / "b.jsonl", ExportOptions(fmt="alpaca", seeds=seeds, dedup=False))
    assert kept.duplicates_dropped == 0 and kept.total == 4


def test_one_record_per_task(pool_dir: Path, tmp_path: Path) -> None:
    records = run(pool_dir, tmp_path / "a.jsonl", per="task", seed=3)
    assert [r["id"] for r in records] == [t.id for t in POOL_TASKS]
    again = run(pool_dir, tmp_path / "b.jsonl", per="task", seed=3)
    assert again == records  # the instance is chosen with the seed
    outputs = {tuple(r["messages"][-1]["content"] for r in run(pool_dir, tmp_path / "c.jsonl", per="task", seed=s))
               for s in range(12)}  # fmt: skip
    assert len(outputs) > 1  # and not always the first instance


@pytest.mark.parametrize(("size", "n_validation"), [(0.5, 3), (0.2, 1), (0.01, 1), (2, 2), (5, 5)])
def test_validation_split_is_by_task_and_seeded(pool_dir: Path, tmp_path: Path, size: float, n_validation: int) -> None:
    out = tmp_path / "chat.jsonl"
    result = export_pool(pool_dir, out, ExportOptions(validation_size=size, seed=7))
    assert result.tasks == {"train": len(POOL_TASKS) - n_validation, "validation": n_validation}
    assert not out.exists()
    train, validation = read_jsonl(tmp_path / "chat.train.jsonl"), read_jsonl(tmp_path / "chat.validation.jsonl")
    assert len(train) + len(validation) == N_INSTANCES == result.total
    task_of = {r["id"].rsplit("-", 1)[0] for r in train}
    assert task_of.isdisjoint({r["id"].rsplit("-", 1)[0] for r in validation})
    export_pool(pool_dir, tmp_path / "again.jsonl", ExportOptions(validation_size=size, seed=7))
    assert read_jsonl(tmp_path / "again.validation.jsonl") == validation


@pytest.mark.parametrize("size", [6, 0.99, -0.1, 2.5, float("nan"), float("inf")])
def test_bad_validation_sizes(pool_dir: Path, tmp_path: Path, size: float) -> None:
    with pytest.raises(ConfigError, match="validation-size"):
        export_pool(pool_dir, tmp_path / "x.jsonl", ExportOptions(validation_size=size))
    assert names(tmp_path) == {"pool"}  # nothing was written


def test_shuffle_is_seeded(pool_dir: Path, tmp_path: Path) -> None:
    plain = run(pool_dir, tmp_path / "p.jsonl")
    first = run(pool_dir, tmp_path / "a.jsonl", shuffle=True, seed=1)
    assert run(pool_dir, tmp_path / "b.jsonl", shuffle=True, seed=1) == first
    assert sorted(first, key=lambda r: r["id"]) == sorted(plain, key=lambda r: r["id"])
    orders = {tuple(r["id"] for r in run(pool_dir, tmp_path / "c.jsonl", shuffle=True, seed=s)) for s in range(5)}
    assert len(orders) > 1


# --------------------------------------------------------------------------------------------- containers


@pytest.mark.parametrize(
    ("name", "flag", "expected"),
    [("a.jsonl", None, "jsonl"), ("a.JSONL", None, "jsonl"), ("a.ndjson", None, "jsonl"), ("a.json", None, "json"),
     ("a.parquet", None, "parquet"), ("dataset", None, "hf"), ("a.txt", "jsonl", "jsonl"), ("a.jsonl", "hf", "hf")],
)  # fmt: skip
def test_container_from_name_or_flag(tmp_path: Path, name: str, flag: str | None, expected: str) -> None:
    assert container_for(tmp_path / name, flag) == expected


def test_unknown_suffix_is_an_error(pool_dir: Path, tmp_path: Path) -> None:
    result = cli(str(pool_dir), "--out", str(tmp_path / "data.csv"))
    assert result.exit_code == 2 and "cannot tell the container from the name" in result.output
    assert not (tmp_path / "data.csv").exists()


def test_json_array(pool_dir: Path, tmp_path: Path) -> None:
    export_pool(pool_dir, tmp_path / "a.json", ExportOptions(fmt="alpaca"))
    records = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    assert len(records) == N_INSTANCES and records[0]["output"] == "fast, rapid"
    assert records[6]["input"] == "Le café est très chaud — attention ! ☕"


def test_container_flag_overrides_the_name(pool_dir: Path, tmp_path: Path) -> None:
    export_pool(pool_dir, tmp_path / "data.txt", ExportOptions(container="json"))
    assert len(json.loads((tmp_path / "data.txt").read_text())) == N_INSTANCES


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_get_ordinary_permissions(pool_dir: Path, tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        export_pool(pool_dir, tmp_path / "out" / "chat.jsonl")
    finally:
        os.umask(old)
    for name in ("chat.jsonl", "dataset_info.json", "chat.axolotl.yml"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o666 & ~mask, name


# ---------------------------------------------------------------------------------------- trainer configs


@pytest.mark.parametrize("fmt", ["messages", "openai", "sharegpt", "alpaca"])
def test_llamafactory_entry_reads_the_records(pool_dir: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "data" / "mypool.jsonl"
    records = run(pool_dir, out, fmt=fmt, system="Be brief.")
    info = json.loads((out.parent / "dataset_info.json").read_text())
    entry = info["mypool"]
    assert entry["file_name"] == "mypool.jsonl"
    assert (out.parent / entry["file_name"]).exists()  # relative to dataset_info.json, as LLaMA-Factory wants
    reference = run(pool_dir, tmp_path / "ref.jsonl", system="Be brief.", trainer_configs=False)
    for record, ref in zip(records, reference, strict=True):
        system, turns = llamafactory_read(record, entry)
        assert system == "Be brief." and turns == ref["messages"][1:]


def test_llamafactory_entries_for_a_split_and_merge_into_an_existing_file(pool_dir: Path, tmp_path: Path) -> None:
    info_path = tmp_path / "dataset_info.json"
    info_path.write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}))
    export_pool(pool_dir, tmp_path / "chat.jsonl", ExportOptions(validation_size=2))
    info = json.loads(info_path.read_text())
    assert set(info) == {"alpaca_en_demo", "chat", "chat_validation"}
    assert info["chat"]["file_name"] == "chat.train.jsonl"
    assert info["chat_validation"]["file_name"] == "chat.validation.jsonl"


def test_an_unreadable_dataset_info_stops_the_export_before_anything_is_written(pool_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text("{not json")
    result = cli(str(pool_dir), "--out", str(tmp_path / "chat.jsonl"))
    assert result.exit_code == 73 and "--no-trainer-configs" in result.output
    assert names(tmp_path) == {"dataset_info.json", "pool"}  # no data file, no temporary
    assert cli(str(pool_dir), "--out", str(tmp_path / "chat.jsonl"), "--no-trainer-configs").exit_code == 0


@pytest.mark.parametrize(
    ("fmt", "field", "role"), [("messages", "messages", "role"), ("sharegpt", "conversations", "from")]
)
def test_axolotl_block(pool_dir: Path, tmp_path: Path, fmt: str, field: str, role: str) -> None:
    yaml = pytest.importorskip("yaml", reason="pyyaml reads the Axolotl block: pip install pyyaml")
    export_pool(pool_dir, tmp_path / "chat.jsonl", ExportOptions(fmt=fmt, validation_size=1))
    config = yaml.safe_load((tmp_path / "chat.axolotl.yml").read_text())
    assert set(config) == {"datasets", "test_datasets"}
    (train,), (test,) = config["datasets"], config["test_datasets"]
    for entry, name in ((train, "chat.train.jsonl"), (test, "chat.validation.jsonl")):
        assert set(entry) <= AXOLOTL_CHAT_TEMPLATE_KEYS
        assert entry["type"] == "chat_template" and entry["ds_type"] == "json" and entry["split"] == "train"
        assert Path(entry["path"]) == (tmp_path / name).resolve()
        assert entry["field_messages"] == field and entry["message_property_mappings"]["role"] == role
        assert entry["roles_to_train"] == ["assistant"]
        record = read_jsonl(Path(entry["path"]))[0]
        roles = [m[role] for m in record[field]]
        assert set(roles) <= {
            r for names in (entry.get("roles") or {"x": ["user", "assistant"]}).values() for r in names
        }


def test_no_trainer_configs_for_formats_they_cannot_read(pool_dir: Path, tmp_path: Path) -> None:
    result = export_pool(pool_dir, tmp_path / "pc.jsonl", ExportOptions(fmt="prompt-completion"))
    assert result.trainer_configs == [] and names(tmp_path) == {"pc.jsonl", "pool"}
    assert result.warnings == [
        "no LLaMA-Factory or Axolotl config: they read messages, openai, sharegpt or alpaca exports; "
        "prompt-completion is for TRL"
    ]
    result = export_pool(pool_dir, tmp_path / "seed.jsonl", ExportOptions(fmt="seed"))
    assert result.trainer_configs == [] and result.warnings == []


# -------------------------------------------------------------------------------------- bad input, safety


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such pool directory"),
        (lambda p: p.write_text("{}\n"), "not a pool directory (it is a file)"),
        (lambda p: p.mkdir(), "holds no tasks.jsonl"),
        (lambda p: (p.mkdir(), (p / "tasks.jsonl").write_text("")), "nothing to export"),
    ],
)
def test_a_missing_or_empty_pool_is_an_error(tmp_path: Path, make: Any, message: str) -> None:
    pool = tmp_path / "pool"
    make(pool)
    result = cli(str(pool), "--out", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_a_corrupt_pool_line_is_a_pool_error(pool_dir: Path, tmp_path: Path) -> None:
    with (pool_dir / "tasks.jsonl").open("a") as fh:
        fh.write("not json\n" + json.dumps(POOL_TASKS[0].to_record() | {"id": "x", "instruction": "Other."}) + "\n")
    result = cli(str(pool_dir), "--out", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 4 and "tasks.jsonl:7" in result.output


def test_a_torn_last_line_is_skipped_with_a_warning(pool_dir: Path, tmp_path: Path) -> None:
    with (pool_dir / "tasks.jsonl").open("a") as fh:
        fh.write('{"id": "machine_task_000006", "instr')
    result = cli(str(pool_dir), "--out", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 0 and "incomplete last line" in result.output
    assert len(read_jsonl(tmp_path / "out.jsonl")) == N_INSTANCES


@pytest.mark.parametrize(
    "options",
    [
        {"fmt": "csv"},
        {"container": "xlsx"},
        {"per": "round"},
        {"fmt": "seed", "system": "x"},
        {"fmt": "seed", "template": "{instruction}: {input}"},
        {"system": "  "},
        {"push_to_hub": "no-owner"},
    ],
)
def test_bad_options(pool_dir: Path, tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        export_pool(pool_dir, tmp_path / "x.jsonl", ExportOptions(**options))
    assert names(tmp_path) == {"pool"}


def test_output_that_is_a_directory(pool_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "out.jsonl").mkdir()
    result = cli(str(pool_dir), "--out", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 73 and "is a directory" in result.output
    result = cli(str(pool_dir), "--out", str(tmp_path))
    assert result.exit_code == 73 and "not a Hugging Face datasets export" in result.output


def test_output_inside_the_pool_is_refused(pool_dir: Path) -> None:
    before = (pool_dir / "tasks.jsonl").read_bytes()
    for target in (pool_dir / "tasks.jsonl", pool_dir):
        result = cli(str(pool_dir), "--out", str(target), "--format", "seed")
        assert result.exit_code == 73 and "would overwrite the pool" in " ".join(result.output.split())
    assert (pool_dir / "tasks.jsonl").read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(pool_dir: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        result = cli(str(pool_dir), "--out", str(ro / "chat.jsonl"))
    finally:
        ro.chmod(0o755)
    assert result.exit_code == 73 and "Permission denied" in result.output and listing(ro) == []


def test_an_uncreatable_output_is_a_clear_error(pool_dir: Path) -> None:
    result = cli(str(pool_dir), "--out", "/proc/selfinstruct-test/chat.jsonl")
    assert result.exit_code == 73 and "/proc/selfinstruct-test" in result.output and "Traceback" not in result.output


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Writes of data files fail half-way with ENOSPC, as on a full disk."""
    real = export_module._write_jsonl

    def write_then_fail(path: Path, records: list[dict[str, Any]]) -> None:
        real(path, records[:1])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export_module, "_write_jsonl", write_then_fail)
    streamed = export_module._RecordWriter.write  # the streaming path (JSON Lines without --shuffle)

    def stream_then_fail(self: Any, record: dict[str, Any]) -> None:
        if self.count:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        streamed(self, record)

    monkeypatch.setattr(export_module._RecordWriter, "write", stream_then_fail)
    yield


def test_a_full_disk_leaves_nothing_half_written(pool_dir: Path, tmp_path: Path, full_disk: None) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "chat.jsonl").write_text("previous export\n")
    result = cli(str(pool_dir), "--out", str(out / "chat.jsonl"), "--validation-size", "2")
    assert result.exit_code == 73 and "No space left on device" in result.output
    assert listing(out) == ["chat.jsonl"] and (out / "chat.jsonl").read_text() == "previous export\n"


def test_a_missing_pyarrow_gives_an_install_hint(
    pool_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` raise ImportError
    result = cli(str(pool_dir), "--out", str(tmp_path / "a.parquet"))
    assert result.exit_code == 2 and "pip install 'selfinstruct[export]'" in result.output
    assert names(tmp_path) == {"pool"}


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_summary_and_help(pool_dir: Path, tmp_path: Path) -> None:
    result = cli(str(pool_dir), "--out", str(tmp_path / "chat.jsonl"), "--validation-size", "0.3", "--shuffle")
    assert result.exit_code == 0
    assert f"wrote {N_INSTANCES} messages records (train" in result.output
    assert "trainer config:" in result.output and "dataset_info.json" in result.output
    quiet = cli(str(pool_dir), "--out", str(tmp_path / "q.jsonl"), "-q")
    assert quiet.exit_code == 0 and quiet.output == ""
    help_text = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"}).output
    for word in ("prompt-completion", "--validation-size", "--template", "--push-to-hub", "--per"):
        assert word in help_text


# ------------------------------------------------------------------------- Parquet and datasets (optional)


@pytest.fixture
def datasets() -> Any:
    return pytest.importorskip("datasets", reason="pip install 'selfinstruct[export]'")


@pytest.mark.parametrize("fmt", ["messages", "prompt-completion", "openai", "alpaca", "sharegpt", "seed"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_every_format_loads_with_datasets(pool_dir: Path, tmp_path: Path, datasets: Any, fmt: str, suffix: str) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl")  # seeds lack the pool's provenance fields: columns must cope
    out = tmp_path / f"data{suffix}"
    result = export_pool(pool_dir, out, ExportOptions(fmt=fmt, seeds=seeds))
    reference = [json.loads(json.dumps(r)) for r in _as_jsonl(pool_dir, tmp_path, fmt, seeds)]
    loader = "parquet" if suffix == ".parquet" else "json"
    loaded = datasets.load_dataset(loader, data_files=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == result.total == len(reference)
    key_fields = {"seed": ["instruction", "instances"], "alpaca": ["instruction", "input", "output"],
                  "sharegpt": ["conversations"], "openai": ["messages"], "messages": ["messages"],
                  "prompt-completion": ["prompt", "completion"]}[fmt]  # fmt: skip
    for row, ref in zip(loaded, reference, strict=True):
        for name in key_fields:
            assert row[name] == ref[name]


def _as_jsonl(pool_dir: Path, tmp_path: Path, fmt: str, seeds: Path) -> list[dict[str, Any]]:
    return run(pool_dir, tmp_path / "reference" / "ref.jsonl", fmt=fmt, seeds=seeds, trainer_configs=False)


def test_datasets_directory_with_splits(pool_dir: Path, tmp_path: Path, datasets: Any) -> None:
    out = tmp_path / "chat_ds"
    result = export_pool(pool_dir, out, ExportOptions(validation_size=2, seed=1))
    loaded = datasets.load_from_disk(str(out))
    assert set(loaded) == {"train", "validation"}
    assert loaded["train"].num_rows == result.records["train"] and loaded["validation"].num_rows == result.records[
        "validation"]  # fmt: skip
    assert loaded["train"][0]["messages"][0]["role"] == "user"
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_current_umask()
    axolotl = (tmp_path / "chat_ds.axolotl.yml").read_text()
    assert axolotl.count(f"path: {json.dumps(str(out.resolve()))}") == 2 and "split: validation" in axolotl
    assert not (tmp_path / "dataset_info.json").exists()  # LLaMA-Factory cannot read a save_to_disk directory
    assert not list(tmp_path.glob(".chat_ds*"))
    # exporting again replaces the previous datasets directory
    export_pool(pool_dir, out, ExportOptions(fmt="alpaca"))
    assert set(datasets.load_from_disk(str(out))) == {"train"}
    assert not list(tmp_path.glob(".chat_ds*"))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_push_to_hub_uploads_the_same_dataset(
    pool_dir: Path, tmp_path: Path, datasets: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, str, bool]] = []

    def fake_push(self: Any, repo_id: str, private: bool = False, **kwargs: Any) -> None:
        calls.append((self, repo_id, private))

    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", fake_push)
    result = cli(str(pool_dir), "--out", str(tmp_path / "chat.jsonl"), "--push-to-hub", "me/pool", "--private",
                 "--validation-size", "1")  # fmt: skip
    assert result.exit_code == 0 and "pushed to https://huggingface.co/datasets/me/pool" in result.output
    ((dataset, repo, private),) = calls
    assert repo == "me/pool" and private and set(dataset) == {"train", "validation"}
    assert dataset["train"].num_rows + dataset["validation"].num_rows == N_INSTANCES

    def failing_push(self: Any, repo_id: str, **kwargs: Any) -> None:
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", failing_push)
    result = cli(str(pool_dir), "--out", str(tmp_path / "again.jsonl"), "--push-to-hub", "me/pool")
    assert result.exit_code == 3 and "hub unreachable" in result.output and "the export is written" in result.output
    assert (tmp_path / "again.jsonl").exists()


def test_seed_format_rows_of_mixed_shapes_fit_parquet(tmp_path: Path, datasets: Any) -> None:
    tasks = [Task("Say hi.", [Instance("", "hi")], False, "machine_task_000000", "a", {"source": "machine"}),
             Task("Say bye.", [Instance("", "bye")], None, "machine_task_000001", "b",
                  {"source": "machine", "most_similar": [{"instruction": "Say hi.", "score": 0.5}]})]  # fmt: skip
    pool = write_pool(tmp_path / "pool", tasks)
    export_pool(pool, tmp_path / "s.parquet", ExportOptions(fmt="seed"))
    rows = datasets.load_dataset("parquet", data_files=str(tmp_path / "s.parquet"), split="train",
                                 cache_dir=str(tmp_path / "cache"))  # fmt: skip
    assert rows[0]["most_similar"] is None and rows[1]["most_similar"][0]["score"] == 0.5


def test_cli_reads_backslash_n_in_templates_as_a_newline(pool_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    args = ["--template", r"{instruction}\n\nInput: {input}", "--system", r"Be brief.\tThanks.", "--out", str(out)]
    assert cli(str(pool_dir), *args).exit_code == 0
    record = read_jsonl(out)[1]
    assert record["messages"][0]["content"] == "Be brief.\tThanks."
    assert record["messages"][1]["content"] == "Label the mood of the sentence as Calm or Tense.\n\nInput: We waited."
    assert cli(str(pool_dir), "--template", r"{instruction} \\n {input}", "--out", str(out)).exit_code == 0
    assert read_jsonl(out)[1]["messages"][0]["content"].endswith(r"Tense. \n We waited.")


# -- judge scores ----------------------------------------------------------------------------------------


def _judge(pool: Path, scores: dict[str, float | None], *, embedded: dict[str, float] | None = None) -> None:
    """Scores for tasks of the POOL_TASKS pool: ``embedded`` in the task records (as generate writes them),
    ``scores`` in judgements.jsonl (as `selfinstruct judge` writes them)."""
    from selfinstruct.pool.directory import Pool
    from selfinstruct.protocol.judge import Judgement, with_judgement

    tasks = [
        with_judgement(t, Judgement(embedded[t.id], "gen", "m", "r", "t")) if embedded and t.id in embedded else t
        for t in POOL_TASKS
    ]
    write_pool(pool, tasks)
    by_id = {t.id: t for t in POOL_TASKS}
    lines = [{"id": i, "instruction": by_id[i].instruction, **Judgement(s, "side", "m", "r", "t").to_dict()}
             for i, s in scores.items()]  # fmt: skip
    p = Pool(pool)
    with p.lock():
        p.append_judgements(lines)


def test_min_score_keeps_tasks_scored_at_least_the_bar(tmp_path: Path) -> None:
    ids = [t.id for t in POOL_TASKS]
    _judge(tmp_path / "pool", {ids[0]: 5, ids[1]: 3, ids[2]: 4.5, ids[3]: None}, embedded={ids[4]: 4, ids[1]: 5})
    result = export_pool(tmp_path / "pool", tmp_path / "out.jsonl", ExportOptions(fmt="seed", min_score=4))
    kept = read_jsonl(tmp_path / "out.jsonl")
    # ids[1]: the sidecar's 3 overrides the record's 5; ids[3]: unreadable reply; ids[5]: never judged.
    assert [r["id"] for r in kept] == [ids[0], ids[2], ids[4]]
    assert [r["judge"]["score"] for r in kept] == [5, 4.5, 4]
    assert (result.below_min_score, result.unscored) == (1, 2)


def test_judgements_are_merged_without_a_bar(tmp_path: Path) -> None:
    ids = [t.id for t in POOL_TASKS]
    _judge(tmp_path / "pool", {ids[0]: 2})
    export_pool(tmp_path / "pool", tmp_path / "out.jsonl", ExportOptions(fmt="seed"))
    kept = read_jsonl(tmp_path / "out.jsonl")
    assert len(kept) == len(POOL_TASKS) and kept[0]["judge"]["score"] == 2 and "judge" not in kept[1]


def test_min_score_never_drops_seeds(tmp_path: Path) -> None:
    _judge(tmp_path / "pool", {})
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    result = export_pool(
        tmp_path / "pool", tmp_path / "out.jsonl", ExportOptions(fmt="alpaca", min_score=1, seeds=seeds)
    )
    assert result.unscored == len(POOL_TASKS) and result.total > 0


def test_min_score_with_nothing_left_says_why(tmp_path: Path) -> None:
    _judge(tmp_path / "pool", {POOL_TASKS[0].id: 1})
    with pytest.raises(InputError, match=r"no task has a judge score of at least 4 \(1 scored below it, 5 without"):
        export_pool(tmp_path / "pool", tmp_path / "out.jsonl", ExportOptions(min_score=4))
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("bar", [0.5, 6, float("nan"), float("inf")])
def test_min_score_off_the_scale_is_refused(pool_dir: Path, tmp_path: Path, bar: float) -> None:
    with pytest.raises(ConfigError, match="--min-score must be on the judge's scale, 1 to 5"):
        export_pool(pool_dir, tmp_path / "out.jsonl", ExportOptions(min_score=bar))


def test_min_score_on_the_command_line(tmp_path: Path) -> None:
    _judge(tmp_path / "pool", {POOL_TASKS[0].id: 5, POOL_TASKS[1].id: 2})
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "pool"), "--out", str(out), "--min-score", "4"])
    assert result.exit_code == 0, result.output
    assert "left out 1 tasks scored below 4 and 4 without a score" in result.output
    assert len(read_jsonl(out)) == 1


def test_export_refuses_to_overwrite_judgements(pool_dir: Path) -> None:
    with pytest.raises(OutputError, match="would overwrite the pool"):
        export_pool(pool_dir, pool_dir / "judgements.jsonl")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--format", "seed"],
        ["--format", "alpaca", "--system", "Be brief."],
        ["--format", "sharegpt", "--per", "task", "--seed", "3"],
        ["--format", "prompt-completion", "--validation-size", "2", "--seed", "7"],
        ["--format", "openai", "--validation-size", "0.4", "--per", "task"],
        ["--include-seeds", "--keep-duplicates"],
        ["--template", "{instruction}\\n\\nInput: {input}"],
    ],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_the_streamed_export_writes_what_the_loaded_one_writes(
    pool_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], suffix: str
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    extra = [*args, "--seeds", str(seeds)] if "--include-seeds" in args else args
    outputs = {}
    for stream in (True, False):
        monkeypatch.setattr(export_module, "STREAM", stream)
        out = tmp_path / f"{stream}" / f"data{suffix}"
        result = cli(str(pool_dir), "--out", str(out), *extra)
        assert result.exit_code == 0, result.output
        outputs[stream] = {p.name: p.read_bytes() for p in sorted(out.parent.iterdir()) if "axolotl" not in p.name}
    assert outputs[True] == outputs[False]


def _rows(out: Path, container: str) -> dict[str, list[dict[str, Any]]]:
    if container == "parquet":
        import pyarrow.parquet as pq

        tables = {p.name: pq.read_table(p) for p in sorted(out.parent.glob("*.parquet"))}
        return {name: [str(t.schema), *t.to_pylist()] for name, t in tables.items()}  # types too
    if container == "hf":
        import datasets

        loaded = datasets.load_from_disk(str(out))
        return {split: [str(loaded[split].features), *loaded[split].to_list()] for split in loaded}
    return {p.name: [p.read_bytes()] for p in sorted(out.parent.iterdir()) if "axolotl" not in p.name}  # type: ignore[list-item]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--shuffle"],
        ["--format", "alpaca", "--system", "Be brief.", "--shuffle", "--seed", "5"],
        ["--format", "sharegpt", "--per", "task", "--seed", "3"],
        ["--format", "prompt-completion", "--validation-size", "2", "--seed", "7", "--shuffle"],
        ["--format", "openai", "--validation-size", "0.4", "--per", "task"],
        ["--format", "seed"],
        ["--format", "seed", "--shuffle", "--validation-size", "2", "--seed", "4"],
    ],
)
@pytest.mark.parametrize(("suffix", "container"), [(".parquet", "parquet"), ("", "hf"), (".jsonl", "jsonl")])
def test_streamed_parquet_datasets_and_shuffle_match_the_loaded_export(
    pool_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], suffix: str, container: str
) -> None:
    if container != "jsonl":
        pytest.importorskip("datasets")
    monkeypatch.setattr(export_module, "BATCH_RECORDS", 2)  # several row groups and record batches
    rows = {}
    for stream in (True, False):
        monkeypatch.setattr(export_module, "STREAM", stream)
        out = tmp_path / f"{stream}" / f"data{suffix}"
        result = cli(str(pool_dir), "--out", str(out), *args)
        assert result.exit_code == 0, result.output
        rows[stream] = _rows(out, container)
    assert rows[True] == rows[False] and rows[True]
    if "--shuffle" in args and container == "jsonl":
        plain = tmp_path / "plain" / "data.jsonl"
        assert cli(str(pool_dir), "--out", str(plain), *[a for a in args if a != "--shuffle"]).exit_code == 0
        assert _rows(plain, "jsonl") != rows[True]  # shuffled indeed
    assert not list(Path(tempfile.gettempdir()).glob("selfinstruct-export-*"))  # the spools and Arrow files went


VARYING_TASKS = [  # provenance that differs from task to task: a column, a struct's fields, a type met late
    Task("Name a colour.", [Instance("", "Red")], False, "machine_task_000000", "a", {"source": "machine"}),
    Task("Name a fruit.", [Instance("", "Pear")], None, "machine_task_000001", "b",
         {"source": "machine", "round": 1, "most_similar": {"Name a colour.": 0.4}, "note": None}),
    Task("Name a tree.", [Instance("", "Oak")], True, "machine_task_000002", "c",
         {"source": "machine", "round": 2, "most_similar": {"Name a fruit.": 0.5, "Name a colour.": 0.4},
          "avg_similarity": 1, "note": "checked"}),
    Task("Name a river.", [Instance("", "Nile")], False, "machine_task_000003", "d",
         {"source": "machine", "round": 2, "avg_similarity": 0.25}),
]  # fmt: skip


@pytest.mark.parametrize(("suffix", "container"), [(".parquet", "parquet"), ("", "hf")])
@pytest.mark.parametrize("shuffle", [[], ["--shuffle", "--seed", "2"]])
def test_a_streamed_seed_export_finds_the_columns_of_every_task_before_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, container: str, shuffle: list[str]
) -> None:
    pytest.importorskip("datasets")
    pool = write_pool(tmp_path / "pool", VARYING_TASKS)
    monkeypatch.setattr(export_module, "BATCH_RECORDS", 1)  # every batch has a schema of its own
    rows = {}
    for stream in (True, False):
        monkeypatch.setattr(export_module, "STREAM", stream)
        if stream:  # never the whole pool in memory
            monkeypatch.setattr(export_module, "_load_pool", lambda *a: pytest.fail("loaded the pool whole"))
        out = tmp_path / f"{stream}" / f"data{suffix}"
        result = cli(str(pool), "--out", str(out), "--format", "seed", *shuffle)
        assert result.exit_code == 0, result.output
        rows[stream] = _rows(out, container)
        monkeypatch.undo()
        monkeypatch.setattr(export_module, "BATCH_RECORDS", 1)
    assert rows[True] == rows[False]
    (table,) = rows[True].values()
    schema = {  # the struct has both tasks' fields, the null column a string, the integer a float
        "parquet": ["most_similar: struct<Name a colour.: double, Name a fruit.: double>", "note: string",
                    "avg_similarity: double"],
        "hf": ["'most_similar': {'Name a colour.': Value('float64'), 'Name a fruit.': Value('float64')}",
               "'note': Value('string')", "'avg_similarity': Value('float64')"],
    }[container]  # fmt: skip
    assert all(column in table[0] for column in schema), table[0]
    assert len(table) == 1 + len(VARYING_TASKS)


def test_a_streamed_seed_export_refuses_a_field_whose_type_changes(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    tasks = [*VARYING_TASKS, Task("Name a sea.", [Instance("", "Red")], False, "machine_task_000004", "e",
                                  {"source": "machine", "round": "three"})]  # fmt: skip
    pool = write_pool(tmp_path / "pool", tasks)
    out = tmp_path / "out" / "data.parquet"
    result = cli(str(pool), "--out", str(out), "--format", "seed")
    assert result.exit_code == 2, result.output
    assert "do not fit a columnar table" in result.output and "export it as .jsonl" in result.output
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_streamed_parquet_refuses_a_batch_whose_columns_differ(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    sink = export_module._ColumnSink(tmp_path / "x.parquet", "messages", "parquet")
    with pytest.raises(ConfigError, match="do not fit a columnar table"):
        for record in [{"a": "1"}] * export_module.BATCH_RECORDS + [{"b": "2"}]:
            sink.write(record)
        sink.close()


@pytest.mark.parametrize(
    ("system", "strategy"), [(False, "type: alpaca"), (True, "type: alpaca_w_system.load_instruct")]
)
def test_the_axolotl_block_of_an_alpaca_export_reads_its_system_field(
    tmp_path: Path, system: bool, strategy: str
) -> None:
    paths = {"train": tmp_path / "d.train.jsonl", "validation": tmp_path / "d.validation.jsonl"}
    block = export_module.axolotl_datasets("alpaca", "jsonl", paths, system=system)
    assert block is not None and block.count(f"    {strategy}\n") == 2  # datasets and test_datasets
