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
import math
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from selfinstruct.engines import BackendOptions, Sampling, normalize_base_url, strip_userinfo
from selfinstruct.errors import ConfigError, InputError
from selfinstruct.gates.filters import DEFAULT_BLOCKED_KEYWORDS
from selfinstruct.paths import default_prompts_dir, default_seeds_path
from selfinstruct.pool.inputs import SMALL_LIMIT_BYTES, read_bounded
from selfinstruct.pool.jsontext import JSONProblem
from selfinstruct.pool.jsontext import loads as json_loads
from selfinstruct.protocol.alpaca import completion_stop
from selfinstruct.protocol.judge import SCALE as JUDGE_SCALE
from selfinstruct.protocol.judge import judge_sampling
from selfinstruct.protocol.prompts import CLASSIFICATION_STOP, INSTANCE_STOP, INSTRUCTION_STOP

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
    base_url: str | list[str] | None = None  # one URL or several (one server per GPU or node)
    # inputs and outputs
    seeds: str = field(default_factory=lambda: str(default_seeds_path()))
    prompts: str = field(default_factory=lambda: str(default_prompts_dir()))
    out: str = "outputs/pool"
    # the loop
    num_instructions: int = 100
    batch_size: int = 16  # instruction-generation requests per round (the reporting and --max-rounds unit)
    # None: follow the engine (what is in flight follows the stream's capacity; the lag is derived from the
    # engine's settings and the budget, see selfinstruct.loop.bootstrap). N: at most N unresolved instruction
    # requests, and request k shows the pool as of k - N.
    window: int | None = None
    workers: int | None = None  # processes for the novelty check; None: every core this process may use
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
    concurrency: int | None = None  # requests in flight per endpoint, fixed; None: each follows its server
    server_priority: bool = False  # send each request's priority (for vllm serve --scheduling-policy priority)
    timeout: float = 300.0
    max_retries: int = 6
    # pool behaviour
    keep_rejected: bool = True
    # the method and the model's API
    method: str = "self-instruct"  # or "alpaca": one request of complete tasks
    api: str = "auto"  # "completions" (base model), "chat" (instruct model), "auto": chat where the server says so
    # With --api chat, how instructions are asked for: "prefill" (the demonstrations open the assistant's reply,
    # which the model continues), "ask" (in the user's message), "auto": prefill where the backend can continue
    # a reply (vLLM in-process or vllm serve). A run records the form it used.
    chat_form: str = "auto"
    alpaca_count: int = 20  # new tasks asked for per Alpaca request
    alpaca_demos: int = 3  # complete seed tasks shown per Alpaca request
    alpaca_temperature: float = 1.0
    alpaca_top_p: float = 1.0
    alpaca_max_tokens: int = 3072
    # the judge
    judge_model: str | None = None  # "same": the generating model on the same engine
    judge_base_url: str | None = None  # None: the generator's server (or engine)
    judge_api: str | None = None  # None: the generator's API when sharing its engine, else auto
    min_score: float | None = None  # reject tasks the judge scores below this (reason low_score)
    judge_max_tokens: int = 128
    # The options a flag or the config file set (from_sources fills it in): a platform may choose other
    # defaults for the rest (a smaller target on vLLM's CPU build). None (built in code): every value is
    # meant as given. Not an option itself, never stored.
    explicit: frozenset[str] | None = field(default=None, repr=False, compare=False)

    # -- construction ----------------------------------------------------------------------------------

    @classmethod
    def from_sources(cls, config_file: str | Path | None, overrides: dict[str, Any]) -> GenerateConfig:
        """Defaults, then the TOML file (if any), then ``overrides`` (None values are ignored).

        Every value is checked here, wherever it came from; a message names the flag when the value came
        from the command line, and the file and key when it came from the TOML file. The pass-through
        tables (``engine_args``, ``request_fields``) merge key by key: a flag replaces one key of the file's
        table, not the whole table.
        """
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        if config_file is not None:
            from_file, keys = _read_toml_with_keys(config_file)
            values.update(from_file)
            origins.update({name: f"{config_file}: {key}" for name, key in keys.items()})
        for name, value in overrides.items():
            if value is None:
                continue
            if name in PASS_THROUGH and isinstance(value, dict):
                values[name] = {**values.get(name, {}), **value}
            else:
                values[name] = value
            origins[name] = option_label(name)
        config = cls(**{k: _check_type(k, v, origins[k]) for k, v in values.items()}, explicit=frozenset(values))
        config.validate(origins)
        return config

    def validate(self, origins: dict[str, str] | None = None) -> None:
        """Check every option's range and the few that depend on each other; raise :class:`ConfigError`.

        ``origins`` maps a field to where its value came from (``--top-p``, ``run.toml: top-p``), for the
        message; a field missing there is named as its flag.
        """
        origins = origins or {}

        def where(name: str) -> str:
            return origins.get(name) or option_label(name)

        for name, rule in RANGES.items():
            value = getattr(self, name)
            if value is not None:
                rule.check(where(name), value)
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ConfigError(f"{where(name)} must be one of {', '.join(allowed)}, got {value!r}")
        if self.model is not None and not self.model.strip():
            raise ConfigError(f"{where('model')} must not be empty")
        for name in ("out", "seeds", "prompts"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{where(name)} must not be empty")
        if self.similarity_floor > self.threshold:
            raise ConfigError(
                f"{where('similarity_floor')} ({self.similarity_floor}) must not exceed {where('threshold')} "
                f"({self.threshold})"
            )
        if self.num_seed_demos + self.num_machine_demos < 1:
            raise ConfigError(
                f"{where('num_seed_demos')} plus {where('num_machine_demos')} must be at least 1: a prompt needs "
                "a demonstration"
            )
        if isinstance(self.base_url, list) and not self.base_url:
            raise ConfigError(f"{where('base_url')} must name at least one URL")
        if len(self.base_urls) > MAX_BASE_URLS:
            raise ConfigError(f"{where('base_url')} names {len(self.base_urls)} servers; at most {MAX_BASE_URLS}")
        seen: set[str] = set()
        for url in self.base_urls:
            root = strip_userinfo(normalize_base_url(url, where("base_url")))
            if root in seen:
                raise ConfigError(f"{where('base_url')} names {root} twice")
            seen.add(root)
        if self.min_score is not None and self.judge_model is None:
            raise ConfigError(f"{where('min_score')} needs a judge: give {where('judge_model')} too")
        if self.judge_base_url is not None and self.judge_model is None:
            raise ConfigError(f"{where('judge_base_url')} needs {where('judge_model')} (the model it serves)")
        if self.judge_model is not None and not self.judge_model.strip():
            raise ConfigError(f"{where('judge_model')} must not be empty")
        if self.judge_base_url is not None:
            normalize_base_url(self.judge_base_url, where("judge_base_url"))
        if self.time_limit is not None:
            try:
                parse_duration(self.time_limit)
            except ConfigError as exc:
                raise ConfigError(f"{where('time_limit')}: {exc}") from None

    def to_public_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without secrets: each base URL loses any ``user:password@`` part.

        This is what ``config.json`` and ``runs.jsonl`` store; the API key never reaches this object.
        """
        data = self.to_dict()
        if self.judge_base_url is not None:
            data["judge_base_url"] = strip_userinfo(self.judge_base_url)
        if isinstance(self.base_url, str):
            data["base_url"] = strip_userinfo(self.base_url)
        elif self.base_url is not None:
            data["base_url"] = [strip_userinfo(url) for url in self.base_url]
        return data

    # -- derived ---------------------------------------------------------------------------------------

    @property
    def time_limit_seconds(self) -> float | None:
        return None if self.time_limit is None else parse_duration(self.time_limit)

    def instruction_sampling(self, *, chat: bool = False) -> Sampling:
        """A chat model ends its own turn, so its only stop is the number after the last item it was asked for
        (the prompt numbers new items on from the examples): it cuts a list that runs on past its end, never a
        preamble. A base model stops where the paper's prompt does."""
        if self.method == "alpaca":
            return Sampling(
                max_tokens=self.alpaca_max_tokens,
                temperature=self.alpaca_temperature,
                top_p=self.alpaca_top_p,
                stop=completion_stop(self.alpaca_demos, self.alpaca_count),
            )
        from selfinstruct.protocol.chatprompts import DEFAULT_CHAT_LIST_SIZE

        after = self.num_seed_demos + self.num_machine_demos + DEFAULT_CHAT_LIST_SIZE + 1
        return Sampling(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=(f"\n{after}.",) if chat else INSTRUCTION_STOP,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )

    def classification_sampling(self, *, chat: bool = False) -> Sampling:
        # A chat model may wrap its answer ("**Yes**", "Answer: No"): room for a few more tokens, no stop.
        if chat:
            return Sampling(max_tokens=8, temperature=0.0)
        return Sampling(max_tokens=3, temperature=0.0, stop=CLASSIFICATION_STOP)

    def instance_sampling(self, *, chat: bool = False) -> Sampling:
        return Sampling(
            max_tokens=self.instance_max_tokens,
            temperature=self.instance_temperature,
            top_p=self.instance_top_p,
            stop=INSTANCE_STOP,
        )

    def judge_sampling(self, *, chat: bool = False) -> Sampling:
        return judge_sampling(chat=chat, max_tokens=self.judge_max_tokens)

    @property
    def judging(self) -> bool:
        return self.judge_model is not None

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
            concurrency=self.concurrency,
            server_priority=self.server_priority,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    @property
    def base_urls(self) -> list[str]:
        """``base_url`` as a list (empty when unset)."""
        if self.base_url is None:
            return []
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)

    def to_dict(self) -> dict[str, Any]:
        """Every field as given, credentials included: store :meth:`to_public_dict` instead."""
        data = asdict(self)
        del data["explicit"]
        return data


# Options that only a --config file can set (they have no flag): a message names them as a config key.
FILE_ONLY_OPTIONS = frozenset(
    {
        "num_seed_demos",
        "num_machine_demos",
        "classification_demos",
        "instance_demos",
        "similarity_floor",
        "blocked_keywords",
        "max_instances",
        "frequency_penalty",
        "instance_top_p",
        "alpaca_demos",
        "alpaca_temperature",
        "alpaca_top_p",
        "alpaca_max_tokens",
        "judge_api",
        "judge_max_tokens",
    }
)


def option_label(name: str) -> str:
    """How a message names an option whose origin is unknown: ``--top-p``, or ``config key 'instance-demos'``."""
    if name in _FLAG_NAMES:
        return _FLAG_NAMES[name]
    dashed = name.replace("_", "-")
    return f"config key {dashed!r}" if name in FILE_ONLY_OPTIONS else f"--{dashed}"


_FLAG_NAMES = {"engine_args": "--engine-arg", "request_fields": "--request-field"}


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric option: ``low <= value <= high`` (either end may be open or absent).

    Floats must also be finite: ``nan`` compares false with everything and ``inf`` never ends a wait.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    reason: str = ""

    def check(self, where: str, value: float) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and value > self.high
        if too_low or too_high:
            raise ConfigError(f"{where} must be {self.describe()}, got {value!r}{self.reason}")

    def describe(self) -> str:
        low = None if self.low is None else _number(self.low)
        high = None if self.high is None else _number(self.high)
        if low is not None and high is not None:
            if self.low_open:
                return f"greater than {low} and at most {high}"
            return f"between {low} and {high}"
        if low is not None:
            return f"{'greater than' if self.low_open else 'at least'} {low}"
        return f"at most {high}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# The range of every numeric option, checked whether it came from a flag or the TOML file. Upper bounds
# keep a typo from allocating without end (a batch of 10^8 prompts) while staying far above real use.
RANGES: dict[str, Range] = {
    "num_instructions": Range(1, 1_000_000_000),
    "batch_size": Range(1, 10_000, reason=" (instruction requests per round)"),
    "window": Range(1, 65_536, reason=" (unresolved instruction requests)"),
    "workers": Range(1, 4096, reason=" (processes for the novelty check)"),
    "seed": Range(0, 2**63 - 1),
    "num_seed_demos": Range(0, 64),
    "num_machine_demos": Range(0, 64),
    "classification_demos": Range(2, 64, reason=" (half Yes and half No examples)"),
    "instance_demos": Range(1, 64),
    "threshold": Range(0.0, 1.0),
    "similarity_floor": Range(0.0, 1.0),
    "max_instances": Range(1, 100),
    "max_rounds": Range(1),
    "max_new": Range(1),
    "saturation_window": Range(1, 1_000_000),
    "saturation_min_rate": Range(0.0, 1.0),
    "temperature": Range(0.0, 100.0),
    "top_p": Range(0.0, 1.0, low_open=True),
    "max_tokens": Range(1, 1_000_000),
    "presence_penalty": Range(-2.0, 2.0),
    "frequency_penalty": Range(-2.0, 2.0),
    "instance_temperature": Range(0.0, 100.0),
    "instance_top_p": Range(0.0, 1.0, low_open=True),
    "instance_max_tokens": Range(1, 1_000_000),
    "tensor_parallel_size": Range(1, 1024),
    "gpu_memory_utilization": Range(0.0, 1.0, low_open=True, reason=" (a share of the GPU's memory)"),
    "max_model_len": Range(1, 100_000_000),
    "concurrency": Range(1, 65_536, reason=" (requests in flight per server)"),
    "timeout": Range(0.0, 86_400.0, low_open=True, reason=" (seconds)"),
    "max_retries": Range(0, 100),
    "alpaca_count": Range(1, 200, reason=" (tasks asked for per Alpaca request)"),
    "alpaca_demos": Range(1, 64),
    "alpaca_temperature": Range(0.0, 100.0),
    "alpaca_top_p": Range(0.0, 1.0, low_open=True),
    "alpaca_max_tokens": Range(1, 1_000_000),
    "min_score": Range(float(JUDGE_SCALE[0]), float(JUDGE_SCALE[1]), reason=" (the judge's scale)"),
    "judge_max_tokens": Range(1, 1_000_000),
}

# vLLM's --dtype values.
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# Servers one run may spread its requests over (--base-url given several times).
MAX_BASE_URLS = 1024

METHODS = ("self-instruct", "alpaca")
APIS = ("auto", "chat", "completions")
CHAT_FORMS = ("auto", "prefill", "ask")
CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": DTYPES,
    "backend": ("auto", "vllm", "openai"),
    "method": METHODS,
    "api": APIS,
    "judge_api": APIS,
    "chat_form": CHAT_FORMS,
}


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
    "str | list[str] | None": "a string or a list of strings",
}

# Config fields that pass options through to the engine, and their TOML tables.
PASS_THROUGH = {"engine_args": "vllm", "request_fields": "request"}


def _check_type(name: str, value: Any, source: str) -> Any:
    """Check one value against its field's annotation; TOML can hold anything, the loop cannot.

    ``source`` names where the value came from (``--batch-size`` or ``run.toml: batch-size``).
    """
    annotation = str(GenerateConfig.__dataclass_fields__[name].type)
    base = annotation.removesuffix(" | None")
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "dict[str, Any]": isinstance(value, dict),
        "str | list[str]": isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(v, str) for v in value)),
    }.get(base, True)
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ConfigError(f"{source} must be {_TYPE_NAMES.get(annotation, annotation)}, got {shown}")
    if base == "float":
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{source} must be a finite number, got an integer too large for one") from None
    return value


def field_names() -> list[str]:
    return [f.name for f in fields(GenerateConfig) if f.name != "explicit"]


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file into ``GenerateConfig`` keyword arguments, checking every key."""
    return _read_toml_with_keys(path)[0]


def _read_toml_with_keys(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The values of a config file, and for each field the key as the file spells it (for messages)."""
    p = Path(path)
    try:
        raw = read_bounded(p, limit=SMALL_LIMIT_BYTES, what="a config file")
    except InputError as exc:
        problem = {
            "file not found": "config file not found",
            "is a directory, not a file": "is a directory; --config names a TOML file",
        }.get(exc.problem, exc.problem)
        if problem.startswith("cannot read: "):
            problem = "cannot read the config file: " + problem.removeprefix("cannot read: ")
        raise ConfigError(f"{p}: {problem}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start}); is it a TOML file?") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{p}: not accepted: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with thousands of digits
        raise ConfigError(f"{p}: not accepted: {exc}") from None
    prefix = ""
    if isinstance(data.get("generate"), dict):
        table = data.pop("generate")
        data.update(table)
        prefix = "[generate] "
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for name, table_name in PASS_THROUGH.items():
        if table_name in data:
            table = data.pop(table_name)
            if not isinstance(table, dict):
                raise ConfigError(f"{p}: [{table_name}] must be a table of options, got {table!r}")
            values[name] = normalize_pass_through(name, table)
            keys[name] = f"[{table_name}]"
    known = set(field_names()) - set(PASS_THROUGH)
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0].replace('_', '-')!r}?)" if close else ""
            raise ConfigError(f"{p}: unknown key {key!r}{hint}")
        values[name] = value
        keys[name] = f"{prefix}{key}"
    return values, keys


#: Request-body fields the loop sets itself, with the option that sets each (None: no option, the loop's
#: own). A ``--request-field`` for one of them would make the pool record one thing while the server was
#: asked another (``model=other`` mixes models past the identity check; ``n`` or ``echo`` change what a
#: reply holds; ``seed`` breaks replay), so they are refused.
LOOP_REQUEST_FIELDS: dict[str, str | None] = {
    "model": "--model",
    "prompt": None,
    "messages": None,
    "max_tokens": "--max-tokens / --instance-max-tokens",
    "max_completion_tokens": "--max-tokens / --instance-max-tokens",
    "stop": None,
    "seed": "--seed",
    "n": None,
    "best_of": None,
    "stream": None,
    "echo": None,
    "suffix": None,
    "temperature": "--temperature / --instance-temperature",
    "top_p": "--top-p",
    "top_k": None,
    "presence_penalty": "--presence-penalty",
    "frequency_penalty": None,
}


def normalize_pass_through(name: str, table: dict[str, Any]) -> dict[str, Any]:
    """Engine arguments are Python keyword names: ``max-num-seqs`` becomes ``max_num_seqs``. Request fields
    go into a JSON body as written; one that the loop sets itself (:data:`LOOP_REQUEST_FIELDS`) is refused."""
    if name == "engine_args":
        return {key.replace("-", "_"): value for key, value in table.items()}
    for key in table:
        if key in LOOP_REQUEST_FIELDS:
            option = LOOP_REQUEST_FIELDS[key]
            how = f"set it with {option}" if option else "the loop sets it for each request"
            raise ConfigError(
                f"request field {key!r} cannot be set with --request-field or [request]: {how} (a pool records "
                "what its requests were, and this field would make that record untrue)"
            )
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
            value: Any = json_loads(raw)  # with limits: a flag is untrusted text too
        except JSONProblem:
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
    if not math.isfinite(total):
        raise ConfigError(f"the duration {text!r} is too long")
    return total
