"""Tests for selfinstruct.config: defaults, the TOML file, overrides, validation, durations and sampling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from selfinstruct.config import PASS_THROUGH, GenerateConfig, field_names, parse_duration, parse_key_values, read_toml
from selfinstruct.engines import BackendOptions, Sampling
from selfinstruct.errors import ConfigError
from selfinstruct.gates.filters import DEFAULT_BLOCKED_KEYWORDS
from selfinstruct.paths import default_prompts_dir, default_seeds_path
from selfinstruct.protocol.prompts import CLASSIFICATION_STOP, INSTANCE_STOP, INSTRUCTION_STOP


def toml_file(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults ------------------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = GenerateConfig()
    assert (cfg.model, cfg.backend, cfg.base_url, cfg.seed) == (None, None, None, None)
    assert cfg.seeds == str(default_seeds_path())
    assert cfg.prompts == str(default_prompts_dir())
    assert cfg.out == "outputs/pool"
    assert (cfg.num_instructions, cfg.batch_size) == (100, 16)
    assert (cfg.num_seed_demos, cfg.num_machine_demos) == (6, 2)  # the paper's 6 human + 2 machine
    assert (cfg.classification_demos, cfg.instance_demos) == (12, 6)
    assert cfg.threshold == 0.7
    assert cfg.blocked_keywords == list(DEFAULT_BLOCKED_KEYWORDS)
    assert cfg.max_instances == 5
    assert (cfg.max_rounds, cfg.max_new, cfg.time_limit, cfg.time_limit_seconds) == (None, None, None, None)
    assert (cfg.saturation_window, cfg.saturation_min_rate) == (20, 0.01)
    assert (cfg.temperature, cfg.top_p, cfg.max_tokens) == (0.7, 0.5, 1024)
    assert (cfg.presence_penalty, cfg.frequency_penalty) == (2.0, 0.0)
    assert (cfg.instance_temperature, cfg.instance_top_p, cfg.instance_max_tokens) == (0.0, 1.0, 350)
    assert (cfg.tensor_parallel_size, cfg.gpu_memory_utilization, cfg.max_model_len, cfg.dtype) == (
        1, None, None, "auto",
    )  # fmt: skip
    assert (cfg.concurrency, cfg.server_priority, cfg.timeout, cfg.max_retries) == (None, False, 300.0, 6)
    assert cfg.window is None  # None: follows the engine
    assert cfg.keep_rejected is True
    cfg.validate()


def test_default_blocked_keywords_are_a_fresh_list() -> None:
    a, b = GenerateConfig(), GenerateConfig()
    a.blocked_keywords.append("table")
    assert b.blocked_keywords == list(DEFAULT_BLOCKED_KEYWORDS)


def test_from_sources_without_file_or_overrides_is_the_defaults() -> None:
    assert GenerateConfig.from_sources(None, {}) == GenerateConfig()


def test_to_dict_lists_every_field() -> None:
    d = GenerateConfig().to_dict()
    assert list(d) == field_names()
    assert d["blocked_keywords"] == list(DEFAULT_BLOCKED_KEYWORDS)


# -- the TOML file -------------------------------------------------------------------------------------

TOML_CASES = {
    "top-level-dashed": 'model = "m"\nnum-instructions = 500\nblocked-keywords = ["table"]\ntime-limit = "2h"\n',
    "top-level-underscored": 'model = "m"\nnum_instructions = 500\nblocked_keywords = ["table"]\ntime_limit = "2h"\n',
    "generate-table": '[generate]\nmodel = "m"\nnum-instructions = 500\nblocked_keywords = ["table"]\n'
    'time-limit = "2h"\n',
    "mixed": 'model = "m"\ntime_limit = "2h"\n\n[generate]\nnum-instructions = 500\nblocked-keywords = ["table"]\n',
}  # fmt: skip


@pytest.mark.parametrize("text", TOML_CASES.values(), ids=TOML_CASES.keys())
def test_toml_file(tmp_path: Path, text: str) -> None:
    path = toml_file(tmp_path, text)
    assert read_toml(path) == {
        "model": "m",
        "num_instructions": 500,
        "blocked_keywords": ["table"],
        "time_limit": "2h",
    }
    cfg = GenerateConfig.from_sources(path, {})
    assert (cfg.model, cfg.num_instructions, cfg.blocked_keywords) == ("m", 500, ["table"])
    assert cfg.time_limit_seconds == 7200.0
    assert cfg.batch_size == 16  # untouched keys keep their defaults


def test_generate_table_wins_over_top_level(tmp_path: Path) -> None:
    path = toml_file(tmp_path, "batch-size = 4\n\n[generate]\nbatch_size = 8\n")
    assert GenerateConfig.from_sources(path, {}).batch_size == 8


def test_every_field_is_accepted_dashed(tmp_path: Path) -> None:
    cfg = GenerateConfig()
    lines = []
    for name, value in cfg.to_dict().items():
        if value is None or name in PASS_THROUGH:
            continue  # TOML has no null; the pass-through dicts are tables, tested on their own
        literal = repr(value).replace("'", '"') if not isinstance(value, bool) else str(value).lower()
        lines.append(f"{name.replace('_', '-')} = {literal}")
    path = toml_file(tmp_path, "\n".join(lines) + "\n")
    assert GenerateConfig.from_sources(path, {}) == cfg


def test_empty_toml_file_is_the_defaults(tmp_path: Path) -> None:
    path = toml_file(tmp_path, "# nothing set\n")
    assert read_toml(path) == {}
    assert GenerateConfig.from_sources(path, {}) == GenerateConfig()


@pytest.mark.parametrize(
    ("overrides", "expected_batch", "expected_model"),
    [
        ({"batch_size": 32}, 32, "from-file"),
        ({"batch_size": 32, "model": "from-cli"}, 32, "from-cli"),
        ({"batch_size": None, "model": None}, 4, "from-file"),
        ({}, 4, "from-file"),
    ],
    ids=["override-one", "override-two", "none-ignored", "no-overrides"],
)
def test_overrides_win_over_file(
    tmp_path: Path, overrides: dict[str, Any], expected_batch: int, expected_model: str
) -> None:
    path = toml_file(tmp_path, 'model = "from-file"\nbatch-size = 4\n')
    cfg = GenerateConfig.from_sources(path, overrides)
    assert (cfg.batch_size, cfg.model) == (expected_batch, expected_model)


def test_none_overrides_do_not_reset_defaults() -> None:
    cfg = GenerateConfig.from_sources(None, {"num_instructions": None, "threshold": None, "seed": None})
    assert (cfg.num_instructions, cfg.threshold, cfg.seed) == (100, 0.7, None)


def test_falsy_overrides_are_kept() -> None:
    cfg = GenerateConfig.from_sources(None, {"keep_rejected": False, "seed": 0, "threshold": 0.0})
    assert (cfg.keep_rejected, cfg.seed, cfg.threshold) == (False, 0, 0.0)


def test_overrides_are_validated(tmp_path: Path) -> None:
    path = toml_file(tmp_path, "batch-size = 4\n")
    # The flag wins over the file, and the message names the flag the user typed.
    with pytest.raises(ConfigError, match=r"^--batch-size must be between 1 and 10000, got 0 "):
        GenerateConfig.from_sources(path, {"batch_size": 0})


def test_file_values_are_validated(tmp_path: Path) -> None:
    path = toml_file(tmp_path, "[generate]\nthreshold = 1.5\n")
    # A value from the file names the file and the key as written there, not a flag nobody typed.
    with pytest.raises(ConfigError) as info:
        GenerateConfig.from_sources(path, {})
    assert str(info.value) == f"{path}: [generate] threshold must be between 0 and 1, got 1.5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("num-instruction = 5\n", "unknown key 'num-instruction' (did you mean 'num-instructions'?)"),
        ("[generate]\ntemprature = 0.5\n", "unknown key 'temprature' (did you mean 'temperature'?)"),
        ("batch_sise = 2\n", "unknown key 'batch_sise' (did you mean 'batch-size'?)"),
        ("zzzzzz = 1\n", "unknown key 'zzzzzz'"),
        ("[other]\nmodel = 'm'\n", "unknown key 'other'"),
    ],
    ids=["dashed-typo", "in-generate-table", "underscored-typo", "no-suggestion", "other-table"],
)
def test_unknown_key(tmp_path: Path, text: str, message: str) -> None:
    path = toml_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        GenerateConfig.from_sources(path, {})
    assert str(info.value) == f"{path}: {message}"


def test_invalid_toml(tmp_path: Path) -> None:
    path = toml_file(tmp_path, "model = \n")
    with pytest.raises(ConfigError) as info:
        read_toml(path)
    assert str(info.value).startswith(f"{path}: not valid TOML: ")
    assert "line 1" in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        GenerateConfig.from_sources(path, {"model": "m"})
    assert str(info.value) == f"{path}: config file not found"
    assert info.value.exit_code == 2


# -- validate ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_instructions": 0}, "--num-instructions must be between 1 and 1000000000, got 0"),
        ({"batch_size": 0}, "--batch-size must be between 1 and 10000, got 0 (instruction requests per round)"),
        ({"threshold": -0.01}, "--threshold must be between 0 and 1, got -0.01"),
        ({"threshold": 1.01}, "--threshold must be between 0 and 1, got 1.01"),
        (
            {"num_seed_demos": 0, "num_machine_demos": 0},
            "config key 'num-seed-demos' plus config key 'num-machine-demos' must be at least 1: a prompt needs "
            "a demonstration",
        ),
        (
            {"num_seed_demos": -1, "num_machine_demos": 3},
            "config key 'num-seed-demos' must be between 0 and 64, got -1",
        ),
        (
            {"num_seed_demos": 3, "num_machine_demos": -1},
            "config key 'num-machine-demos' must be between 0 and 64, got -1",
        ),
        ({"max_instances": 0}, "config key 'max-instances' must be between 1 and 100, got 0"),
        ({"max_tokens": 0}, "--max-tokens must be between 1 and 1000000, got 0"),
        ({"instance_max_tokens": 0}, "--instance-max-tokens must be between 1 and 1000000, got 0"),
        ({"max_rounds": 0}, "--max-rounds must be at least 1, got 0"),
        ({"max_new": 0}, "--max-new must be at least 1, got 0"),
        ({"saturation_window": 0}, "--saturation-window must be between 1 and 1000000, got 0"),
        (
            {"concurrency": 0},
            "--concurrency must be between 1 and 65536, got 0 (requests in flight per server)",
        ),
        (
            {"concurrency": 10**6},
            "--concurrency must be between 1 and 65536, got 1000000 (requests in flight per server)",
        ),
        ({"window": 0}, "--window must be between 1 and 65536, got 0 (unresolved instruction requests)"),
        (
            {"window": 10**9},
            "--window must be between 1 and 65536, got 1000000000 (unresolved instruction requests)",
        ),
        ({"base_url": []}, "--base-url must name at least one URL"),
        ({"base_url": ["http://a/v1", "http://a/v1/"]}, "--base-url names http://a/v1 twice"),
        ({"base_url": ["http://u:s3cret@a/v1", "http://a/v1"]}, "--base-url names http://a/v1 twice"),
        (
            {"base_url": ["http://a/v1", "ftp://b"]},
            "--base-url must start with http:// or https:// (for example http://127.0.0.1:8000/v1), not ftp://",
        ),
        (
            {"base_url": "localhost:8000"},
            "--base-url 'localhost:8000' needs a scheme: for example http://127.0.0.1:8000/v1",
        ),
        ({"base_url": ["http://a/v1"] * 2000}, "--base-url names 2000 servers; at most 1024"),
        ({"temperature": -1.0}, "--temperature must be between 0 and 100, got -1.0"),
        ({"top_p": 7.0}, "--top-p must be greater than 0 and at most 1, got 7.0"),
        ({"top_p": 0.0}, "--top-p must be greater than 0 and at most 1, got 0.0"),
        ({"dtype": "int3"}, "--dtype must be one of auto, half, float16, bfloat16, float, float32, got 'int3'"),
        ({"chat_form": "continue"}, "--chat-form must be one of auto, prefill, ask, got 'continue'"),
        (
            {"gpu_memory_utilization": 7.0},
            "--gpu-memory-utilization must be greater than 0 and at most 1, got 7.0 (a share of the GPU's memory)",
        ),
        (
            {"batch_size": 100_000_000},
            "--batch-size must be between 1 and 10000, got 100000000 (instruction requests per round)",
        ),
        ({"timeout": float("nan")}, "--timeout must be a finite number, got nan"),
        ({"timeout": float("inf")}, "--timeout must be a finite number, got inf"),
        ({"timeout": 0.0}, "--timeout must be greater than 0 and at most 86400, got 0.0 (seconds)"),
        (
            {"classification_demos": -3},
            "config key 'classification-demos' must be between 2 and 64, got -3 (half Yes and half No examples)",
        ),
        ({"presence_penalty": 3.0}, "--presence-penalty must be between -2 and 2, got 3.0"),
        ({"max_retries": -1}, "--max-retries must be between 0 and 100, got -1"),
        ({"seed": -5}, "--seed must be between 0 and 9223372036854775807, got -5"),
        ({"similarity_floor": 0.8}, "config key 'similarity-floor' (0.8) must not exceed --threshold (0.7)"),
        ({"model": "  "}, "--model must not be empty"),
        (
            {"time_limit": "soon"},
            "--time-limit: cannot read the duration 'soon': use forms like 90s, 50m, 2h or 1h30m",
        ),
        ({"time_limit": "0m"}, "--time-limit: the duration '0m' must be positive"),
    ],
    ids=lambda v: "-".join(f"{k}={v[k]}" for k in v) if isinstance(v, dict) else None,
)
def test_validate_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        GenerateConfig(**changes).validate()
    assert str(info.value) == message
    with pytest.raises(ConfigError):
        GenerateConfig.from_sources(None, changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"num_seed_demos": 0, "num_machine_demos": 1},
        {"num_seed_demos": 1, "num_machine_demos": 0},
        {"num_instructions": 1, "batch_size": 1, "max_instances": 1},
        {"max_rounds": 1, "max_new": 1, "saturation_window": 1},
        {"time_limit": "1h30m"},
    ],
)
def test_validate_accepts_boundaries(changes: dict[str, Any]) -> None:
    GenerateConfig(**changes).validate()


# -- parse_duration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("50m", 3000.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        (" 2 h ", 7200.0),
        ("2H", 7200.0),
        ("1.5h", 5400.0),
        ("0.5", 0.5),
        ("1m30", 90.0),
        ("1d2h3m4s", 86400.0 + 7200.0 + 180.0 + 4.0),
        ("0h1m", 60.0),
        (45, 45.0),
    ],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the duration '' must be positive"),
        ("   ", "the duration '   ' must be positive"),
        ("0", "the duration '0' must be positive"),
        ("0s", "the duration '0s' must be positive"),
        ("0h0m", "the duration '0h0m' must be positive"),
        ("abc", "cannot read the duration 'abc': use forms like 90s, 50m, 2h or 1h30m"),
        ("h", "cannot read the duration 'h': use forms like 90s, 50m, 2h or 1h30m"),
        ("5x", "cannot read the duration '5x': use forms like 90s, 50m, 2h or 1h30m"),
        ("-5m", "cannot read the duration '-5m': use forms like 90s, 50m, 2h or 1h30m"),
        ("90ss", "cannot read the duration '90ss': use forms like 90s, 50m, 2h or 1h30m"),
        ("1.5.5", "cannot read the duration '1.5.5': use forms like 90s, 50m, 2h or 1h30m"),
        ("1e3", "cannot read the duration '1e3': use forms like 90s, 50m, 2h or 1h30m"),
        ("2 hours", "cannot read the duration '2 hours': use forms like 90s, 50m, 2h or 1h30m"),
    ],
)
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text)
    assert str(info.value) == message


def test_time_limit_seconds() -> None:
    assert GenerateConfig(time_limit="50m").time_limit_seconds == 3000.0


# -- sampling and backend options ----------------------------------------------------------------------


def test_instruction_sampling_paper_defaults() -> None:
    s = GenerateConfig().instruction_sampling()
    assert s == Sampling(
        max_tokens=1024,
        temperature=0.7,
        top_p=0.5,
        stop=INSTRUCTION_STOP,
        presence_penalty=2.0,
        frequency_penalty=0.0,
    )
    assert "\n\n" in s.stop
    assert s.top_k is None


def test_instruction_sampling_follows_config() -> None:
    cfg = GenerateConfig(temperature=1.0, top_p=0.9, max_tokens=64, presence_penalty=0.0, frequency_penalty=0.5)
    s = cfg.instruction_sampling()
    assert (s.temperature, s.top_p, s.max_tokens, s.presence_penalty, s.frequency_penalty) == (
        1.0, 0.9, 64, 0.0, 0.5,
    )  # fmt: skip


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.3])
def test_classification_sampling_is_greedy(temperature: float) -> None:
    cfg = GenerateConfig(temperature=temperature, instance_temperature=temperature)
    assert cfg.classification_sampling() == Sampling(max_tokens=3, temperature=0.0, stop=CLASSIFICATION_STOP)


def test_instance_sampling() -> None:
    assert GenerateConfig().instance_sampling() == Sampling(
        max_tokens=350, temperature=0.0, top_p=1.0, stop=INSTANCE_STOP
    )
    s = GenerateConfig(instance_temperature=0.3, instance_top_p=0.8, instance_max_tokens=99).instance_sampling()
    assert (s.temperature, s.top_p, s.max_tokens, s.stop) == (0.3, 0.8, 99, INSTANCE_STOP)
    assert (s.presence_penalty, s.frequency_penalty) == (0.0, 0.0)


def test_backend_options() -> None:
    cfg = GenerateConfig(model="m", base_url="http://localhost:8000/v1", seed=None, concurrency=3)
    opts = cfg.backend_options()
    assert opts == BackendOptions(model="m", base_url="http://localhost:8000/v1", seed=0, concurrency=3)
    assert GenerateConfig(seed=1234).backend_options().seed == 1234


def test_pacing_options_from_a_file(tmp_path: Path) -> None:
    path = toml_file(tmp_path, "server-priority = true\n")
    opts = GenerateConfig.from_sources(path, {}).backend_options()
    assert (opts.server_priority, opts.concurrency) == (True, None)  # None: each server's limit follows it
    assert GenerateConfig.from_sources(path, {"server_priority": False, "concurrency": 8}).backend_options() == (
        BackendOptions(server_priority=False, concurrency=8)
    )


@pytest.mark.parametrize(
    ("base_url", "stored"),
    [
        ("http://me:secret@host:8000/v1", "http://host:8000/v1"),
        (["http://a:1/v1", "http://u:p@b:2/v1"], ["http://a:1/v1", "http://b:2/v1"]),
        (None, None),
    ],
)
def test_stored_configuration_never_holds_url_credentials(base_url: Any, stored: Any) -> None:
    cfg = GenerateConfig(base_url=base_url)
    assert cfg.to_public_dict()["base_url"] == stored
    assert "secret" not in json.dumps(cfg.to_public_dict())
    assert cfg.backend_options().base_url == base_url  # the backend itself still gets them


def test_several_base_urls_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('base-url = ["http://a:8000/v1", "http://b:8000/v1"]\n')
    assert GenerateConfig.from_sources(path, {}).base_urls == ["http://a:8000/v1", "http://b:8000/v1"]
    path.write_text("base-url = []\n")
    with pytest.raises(ConfigError, match=r"run.toml: base-url must name at least one URL"):
        GenerateConfig.from_sources(path, {})
    path.write_text("base-url = [3]\n")
    with pytest.raises(ConfigError, match=r"run.toml: base-url must be a string or a list of strings, got \[3\]"):
        GenerateConfig.from_sources(path, {})
    path.write_text('base-url = ["http://a:8000/v1", "gopher://b"]\n')
    with pytest.raises(ConfigError, match=r"run.toml: base-url must start with http:// or https://"):
        GenerateConfig.from_sources(path, {})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('threshold = "0.7"', "threshold must be a number, got '0.7'"),
        ('blocked-keywords = "image"', "blocked-keywords must be a list of strings, got 'image'"),
        ("num-instructions = true", "num-instructions must be an integer, got True"),
        ("keep-rejected = 1", "keep-rejected must be true or false, got 1"),
        ('server-priority = "yes"', "server-priority must be true or false, got 'yes'"),
        ("concurrency = 0", "concurrency must be between 1 and 65536, got 0 (requests in flight per server)"),
        ("model = 3", "model must be a string, got 3"),
    ],
)
def test_toml_values_of_the_wrong_type_name_the_file_and_option(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        GenerateConfig.from_sources(path, {})
    assert str(info.value) == f"{path}: {message}"


def test_toml_integer_where_a_float_is_expected_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("threshold = 1\n")
    assert GenerateConfig.from_sources(path, {}).threshold == 1.0


# -- pass-through engine arguments and request fields ------------------------------------------------------


def test_vllm_and_request_tables(tmp_path: Path) -> None:
    path = toml_file(
        tmp_path,
        'model = "m"\n[vllm]\nenforce-eager = true\nmax_num_seqs = 64\n[request]\nrepetition_penalty = 1.1\n',
    )
    cfg = GenerateConfig.from_sources(path, {})
    assert cfg.engine_args == {"enforce_eager": True, "max_num_seqs": 64}
    assert cfg.request_fields == {"repetition_penalty": 1.1}
    options = cfg.backend_options()
    assert options.engine_args == {"enforce_eager": True, "max_num_seqs": 64}
    assert options.request_fields == {"repetition_penalty": 1.1}


def test_flags_merge_into_the_tables_key_by_key(tmp_path: Path) -> None:
    path = toml_file(tmp_path, "[vllm]\nenforce_eager = true\nmax_num_seqs = 64\n")
    flags = parse_key_values("engine_args", ["max-num-seqs=256", "quantization=awq"])
    cfg = GenerateConfig.from_sources(path, {"engine_args": flags})
    assert cfg.engine_args == {"enforce_eager": True, "max_num_seqs": 256, "quantization": "awq"}


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["a=1"], {"a": 1}),
        (["a=true", "b=null", "c=0.5"], {"a": True, "b": None, "c": 0.5}),
        (["a=awq"], {"a": "awq"}),
        (['a="1"'], {"a": "1"}),
        (["a=[1, 2]", 'b={"x": 1}'], {"a": [1, 2], "b": {"x": 1}}),
        (["a=x=y"], {"a": "x=y"}),
        (["a="], {"a": ""}),
        (["a=1", "a=2"], {"a": 2}),
    ],
)
def test_parse_key_values(items: list[str], expected: dict[str, Any]) -> None:
    assert parse_key_values("request_fields", items) == expected


def test_parse_key_values_none_when_unset() -> None:
    assert parse_key_values("engine_args", None) is None
    assert parse_key_values("engine_args", []) is None


@pytest.mark.parametrize("item", ["novalue", "=1", " =1"])
def test_parse_key_values_needs_key_and_equals(item: str) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_key_values("engine_args", [item])


def test_a_pass_through_table_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[vllm\] must be a table"):
        read_toml(toml_file(tmp_path, 'vllm = "fast"\n'))


@pytest.mark.parametrize("value", [0.0, 1.5, -0.1])
def test_gpu_memory_utilization_range(value: float) -> None:
    with pytest.raises(ConfigError, match="gpu-memory-utilization"):
        GenerateConfig.from_sources(None, {"gpu_memory_utilization": value})
