"""Run configuration for ``selfinstruct generate``: defaults, a TOML file, and command-line overrides.

Precedence: command-line flags > ``--config FILE`` > the defaults below. Keys in the TOML file are the
long option names, with ``-`` or ``_`` (``num-instructions = 500`` or ``num_instructions = 500``), at the
top level or under a ``[generate]`` table. An unknown key is an error that names the file and suggests the
closest known key.

Two tables pass options through to the engine, merged key by key with the repeatable flags:

* ``[vllm]`` / ``--engine-arg KEY=VALUE``: keyword arguments of ``vllm.LLM`` (vLLM's engine arguments:
  ``enforce_eager``, ``max_num_seqs``, ``max_num_batched_tokens``, ``enable_prefix_caching``,
  ``quantization``, ``swap_space`` ...), checked against vLLM's own list when the engine starts;
* ``[request]`` / ``--request-field KEY=VALUE``: extra fields of every request body sent to an
  OpenAI-compatible server (``repetition_penalty``, ``min_p``, ``ignore_eos`` ...).

Sampling defaults per stage follow the Self-Instruct paper: instruction generation at temperature 0.7,
top_p 0.5, presence penalty 2, up to 1024 tokens; classification and instance generation greedy.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from selfinstruct.backends import BackendOptions, Sampling
from selfinstruct.errors import ConfigError
from selfinstruct.filters import DEFAULT_BLOCKED_KEYWORDS
from selfinstruct.paths import default_prompts_dir, default_seeds_path
from selfinstruct.prompts import CLASSIFICATION_STOP, INSTANCE_STOP, INSTRUCTION_STOP

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass
class GenerateConfig:
    """Every option of ``selfinstruct generate``. Field names are the option names with ``_``."""

    # model and backend
    model: str | None = None
    backend: str | None = None  # None: openai when base_url is set, else vllm
    base_url: str | None = None
    # inputs and outputs
    seeds: str = field(default_factory=lambda: str(default_seeds_path()))
    prompts: str = field(default_factory=lambda: str(default_prompts_dir()))
    out: str = "outputs/pool"
    # the loop
    num_instructions: int = 100
    batch_size: int = 16  # instruction-generation prompts per round
    seed: int | None = None  # None: a fresh random seed, recorded in the run ledger for replay
    num_seed_demos: int = 6
    num_machine_demos: int = 2
    classification_demos: int = 12
    instance_demos: int = 6
    # filters
    threshold: float = 0.7
    # Provenance: each accepted task records its most similar instructions with F above this floor. 0.0
    # makes max_similarity exact for every task; a higher floor makes queries on huge pools cheaper.
    similarity_floor: float = 0.0
    blocked_keywords: list[str] = field(default_factory=lambda: list(DEFAULT_BLOCKED_KEYWORDS))
    max_instances: int = 5
    # budgets
    max_rounds: int | None = None
    max_new: int | None = None
    time_limit: str | None = None  # "50m", "2h", "90s", "1h30m"
    saturation_window: int = 20
    saturation_min_rate: float = 0.01
    # sampling: instruction generation
    temperature: float = 0.7
    top_p: float = 0.5
    max_tokens: int = 1024
    presence_penalty: float = 2.0
    frequency_penalty: float = 0.0
    # sampling: instance generation (classification is always greedy, a few tokens)
    instance_temperature: float = 0.0
    instance_top_p: float = 1.0
    instance_max_tokens: int = 350
    # vllm backend
    tensor_parallel_size: int = 1
    # None: 0.9 of GPU memory on a GPU; on vLLM's CPU build (where it is the share of RAM) 0.3, or less
    # when less RAM is free.
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    dtype: str = "auto"
    engine_args: dict[str, Any] = field(default_factory=dict)  # [vllm] table / --engine-arg
    # openai backend: extra request-body fields ([request] table / --request-field)
    request_fields: dict[str, Any] = field(default_factory=dict)
    # openai backend
    request_batch_size: int = 16
    concurrency: int = 8
    timeout: float = 300.0
    max_retries: int = 6
    # pool behaviour
    keep_rejected: bool = True

    # -- construction ----------------------------------------------------------------------------------

    @classmethod
    def from_sources(cls, config_file: str | Path | None, overrides: dict[str, Any]) -> GenerateConfig:
        """Defaults, then the TOML file (if any), then ``overrides`` (None values are ignored).

        The pass-through tables (``engine_args``, ``request_fields``) merge key by key: a flag replaces one
        key of the file's table, not the whole table.
        """
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(read_toml(config_file))
        for key, value in overrides.items():
            if value is None:
                continue
            if key in PASS_THROUGH and isinstance(value, dict):
                values[key] = {**values.get(key, {}), **value}
            else:
                values[key] = value
        source = str(config_file) if config_file is not None else "options"
        config = cls(**{k: _check_type(k, v, source) for k, v in values.items()})
        config.validate()
        return config

    def validate(self) -> None:
        def need(condition: bool, message: str) -> None:
            if not condition:
                raise ConfigError(message)

        need(self.num_instructions >= 1, "--num-instructions must be at least 1")
        need(self.batch_size >= 1, "--batch-size must be at least 1")
        need(0.0 <= self.threshold <= 1.0, "--threshold must be between 0 and 1")
        need(0.0 <= self.similarity_floor <= self.threshold, "similarity-floor must be between 0 and --threshold")
        need(self.num_seed_demos + self.num_machine_demos >= 1, "at least one demonstration is needed")
        need(self.num_seed_demos >= 0 and self.num_machine_demos >= 0, "demonstration counts must be >= 0")
        need(self.max_instances >= 1, "--max-instances must be at least 1")
        need(self.max_tokens >= 1 and self.instance_max_tokens >= 1, "max tokens must be at least 1")
        need(self.max_rounds is None or self.max_rounds >= 1, "--max-rounds must be at least 1")
        need(self.max_new is None or self.max_new >= 1, "--max-new must be at least 1")
        need(self.saturation_window >= 1, "--saturation-window must be at least 1")
        need(self.request_batch_size >= 1 and self.concurrency >= 1, "request batch and concurrency >= 1")
        need(
            self.gpu_memory_utilization is None or 0.0 < self.gpu_memory_utilization <= 1.0,
            "--gpu-memory-utilization must be above 0 and at most 1",
        )
        if self.time_limit is not None:
            parse_duration(self.time_limit)

    # -- derived ---------------------------------------------------------------------------------------

    @property
    def time_limit_seconds(self) -> float | None:
        return None if self.time_limit is None else parse_duration(self.time_limit)

    def instruction_sampling(self) -> Sampling:
        return Sampling(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=INSTRUCTION_STOP,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )

    def classification_sampling(self) -> Sampling:
        return Sampling(max_tokens=3, temperature=0.0, stop=CLASSIFICATION_STOP)

    def instance_sampling(self) -> Sampling:
        return Sampling(
            max_tokens=self.instance_max_tokens,
            temperature=self.instance_temperature,
            top_p=self.instance_top_p,
            stop=INSTANCE_STOP,
        )

    def backend_options(self) -> BackendOptions:
        return BackendOptions(
            model=self.model,
            base_url=self.base_url,
            seed=self.seed or 0,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_len,
            dtype=self.dtype,
            engine_args=dict(self.engine_args),
            request_fields=dict(self.request_fields),
            request_batch_size=self.request_batch_size,
            concurrency=self.concurrency,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TYPE_NAMES = {
    "str": "a string",
    "str | None": "a string",
    "int": "an integer",
    "int | None": "an integer",
    "float": "a number",
    "bool": "true or false",
    "bool | None": "true or false",
    "list[str]": "a list of strings",
    "dict[str, Any]": "a table",
}

# Config fields that pass options through to the engine, and their TOML tables.
PASS_THROUGH = {"engine_args": "vllm", "request_fields": "request"}


def _check_type(name: str, value: Any, source: str) -> Any:
    """Check one value against its field's annotation; TOML can hold anything, the loop cannot."""
    annotation = str(GenerateConfig.__dataclass_fields__[name].type)
    base = annotation.removesuffix(" | None")
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "dict[str, Any]": isinstance(value, dict),
    }.get(base, True)
    if not ok:
        option = name.replace("_", "-")
        raise ConfigError(f"{source}: {option} must be {_TYPE_NAMES.get(annotation, annotation)}, got {value!r}")
    return float(value) if base == "float" else value


def field_names() -> list[str]:
    return [f.name for f in fields(GenerateConfig)]


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file into ``GenerateConfig`` keyword arguments, checking every key."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    if isinstance(data.get("generate"), dict):
        table = data.pop("generate")
        data.update(table)
    values: dict[str, Any] = {}
    for name, table_name in PASS_THROUGH.items():
        if table_name in data:
            table = data.pop(table_name)
            if not isinstance(table, dict):
                raise ConfigError(f"{p}: [{table_name}] must be a table of options, got {table!r}")
            values[name] = normalize_pass_through(name, table)
    known = set(field_names()) - set(PASS_THROUGH)
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0].replace('_', '-')!r}?)" if close else ""
            raise ConfigError(f"{p}: unknown key {key!r}{hint}")
        values[name] = value
    return values


def normalize_pass_through(name: str, table: dict[str, Any]) -> dict[str, Any]:
    """Engine arguments are Python keyword names: ``max-num-seqs`` becomes ``max_num_seqs``. Request fields
    go into a JSON body as written."""
    if name == "engine_args":
        return {key.replace("-", "_"): value for key, value in table.items()}
    return dict(table)


def parse_key_values(name: str, items: list[str] | None) -> dict[str, Any] | None:
    """``["max_num_seqs=64", "enforce_eager=true"]`` -> ``{"max_num_seqs": 64, "enforce_eager": True}``.

    A value is read as JSON when it parses (numbers, true/false/null, lists, objects, quoted strings) and
    kept as a plain string otherwise, so ``quantization=awq`` needs no quotes.

    >>> parse_key_values("engine_args", ["max-num-seqs=64", "quantization=awq", "stop=[\"x\"]"])
    {'max_num_seqs': 64, 'quantization': 'awq', 'stop': ['x']}
    """
    if not items:
        return None
    flag = "--engine-arg" if name == "engine_args" else "--request-field"
    table: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, for example {flag} max_num_seqs=128")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        table[key] = value
    return normalize_pass_through(name, table)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``"90"``, ``"90s"``, ``"50m"``, ``"2h"`` or ``"1h30m"``.

    >>> parse_duration("1h30m"), parse_duration("50m"), parse_duration("45")
    (5400.0, 3000.0, 45.0)
    """
    s = str(text).strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if m is None or m.end() == pos:
            raise ConfigError(f"cannot read the duration {text!r}: use forms like 90s, 50m, 2h or 1h30m")
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if not s or total <= 0:
        raise ConfigError(f"the duration {text!r} must be positive")
    return total
