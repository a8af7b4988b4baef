"""``selfinstruct export``: pool records into formats fine-tuning tools load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from seedsets import write_seeds

from selfinstruct.errors import ConfigError
from selfinstruct.export import export_pool
from selfinstruct.pool import Pool
from selfinstruct.task import Instance, Task


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    pool = Pool(tmp_path / "pool")
    tasks = [
        Task("Give two synonyms for 'quick'.", [Instance("", "fast, rapid")], False, "machine_task_000000", "a",
             {"source": "machine"}),
        Task("Label the mood of the sentence as Calm or Tense.", [Instance("We waited.", "Calm"),
             Instance("The door creaked open at midnight.", "Tense")], True, "machine_task_000001", "b",
             {"source": "machine"}),
    ]  # fmt: skip
    with pool.lock():
        pool.append(tasks)
    return pool.directory


def test_alpaca_json_has_one_record_per_instance(pool_dir: Path, tmp_path: Path) -> None:
    n = export_pool(pool_dir, tmp_path / "a.json")
    records = json.loads((tmp_path / "a.json").read_text())
    assert n == 3 and records[0] == {
        "instruction": "Give two synonyms for 'quick'.",
        "input": "",
        "output": "fast, rapid",
    }
    assert records[2]["input"] == "The door creaked open at midnight." and records[2]["output"] == "Tense"


def test_sharegpt_puts_input_after_instruction(pool_dir: Path, tmp_path: Path) -> None:
    export_pool(pool_dir, tmp_path / "s.jsonl", fmt="sharegpt")
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert records[0]["conversations"][0] == {"from": "human", "value": "Give two synonyms for 'quick'."}
    assert records[1]["conversations"] == [
        {"from": "human", "value": "Label the mood of the sentence as Calm or Tense.\n\nWe waited."},
        {"from": "gpt", "value": "Calm"},
    ]


def test_seed_format_with_seeds_first(pool_dir: Path, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    n = export_pool(pool_dir, tmp_path / "all.jsonl", fmt="seed", include_seeds=seeds)
    records = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert n == 12 and records[0]["id"] == "seed_task_0" and records[-1]["id"] == "machine_task_000001"


def test_unknown_format(pool_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown export format 'csv'"):
        export_pool(pool_dir, tmp_path / "x.json", fmt="csv")
