"""VLLMBackend against a stand-in ``vllm`` module (and, where a GPU and vLLM exist, a tiny real model).

The stand-in has both of vLLM's ways in: ``LLM.generate`` for a batch, and the engine's incremental API
(``LLM.enqueue``, ``llm_engine.step()``, ``llm_engine.abort_request``) that the stream drives. Its engine
runs a few sequences at a time and finishes them in a shuffled order, as continuous batching does.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from selfinstruct.engines import Backend, BackendOptions, Completion, Request, Sampling, localmodels, open_stream
from selfinstruct.engines import vllm as vllm_backend
from selfinstruct.engines.vllm import VLLMBackend, VLLMStream, cpu_memory_utilization, engine_kwargs
from selfinstruct.errors import BackendError, ConfigError


@dataclass
class FakeCompletionOutput:
    text: str
    finish_reason: str | None
    token_ids: list[int]


@dataclass
class FakeRequestOutput:
    prompt: str
    prompt_token_ids: list[int] | None
    outputs: list[FakeCompletionOutput]
    request_id: str = ""
    finished: bool = True


@dataclass
class Recorder:
    llm_kwargs: list[dict[str, Any]] = field(default_factory=list)
    params: list[dict[str, Any]] = field(default_factory=list)
    generate_calls: list[tuple[list[str], list[Any], dict[str, Any]]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)  # prompts, in the order they entered the engine
    aborted: list[str] = field(default_factory=list)
    steps: int = 0
    max_running: int = 0
    threads: set[str] = field(default_factory=set)


class FakeTokenizer:
    """A chat template like Gemma's (the BOS is part of the template); token ids are character codes.
    ``template=None`` is a base model's tokenizer without one; ``system_ok=False`` refuses a system role."""

    def __init__(self, template: str | None = "gemma-like", system_ok: bool = True) -> None:
        self.chat_template = template
        self.system_ok = system_ok

    def apply_chat_template(
        self,
        conversation: list[dict[str, str]],
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
    ) -> Any:
        if not self.system_ok and any(m["role"] == "system" for m in conversation):
            raise ValueError("System role not supported")
        text = "<bos>" + "".join(f"<start_of_turn>{m['role']}\n{m['content']}<end_of_turn>\n" for m in conversation)
        if continue_final_message:  # the last message left open, as transformers does
            text = text[: text.rindex("<end_of_turn>")]
        text += "<start_of_turn>model\n" if add_generation_prompt else ""
        return [ord(c) for c in text] if tokenize else text


def decode(prompt: Any) -> str:
    """The text of an engine prompt: itself, or the characters of its token ids."""
    return "".join(map(chr, prompt["prompt_token_ids"])) if isinstance(prompt, dict) else prompt


def complete(prompt: Any, kwargs: dict[str, Any]) -> FakeRequestOutput:
    prompt = decode(prompt)
    words = f"seed {kwargs.get('seed')} says {prompt}".split()[: kwargs["max_tokens"]]
    finish = "length" if len(words) == kwargs["max_tokens"] else "stop"
    return FakeRequestOutput(
        prompt,
        list(range(len(prompt.split()))),
        [FakeCompletionOutput(" ".join(words), finish, list(range(len(words))))],
    )


class FakeEngine:
    """vLLM's LLMEngine, incrementally: requests run ``max_num_seqs`` at a time; each ``step`` finishes a
    random share of the running ones (a sequence needs 1 to 4 steps), in a shuffled order."""

    def __init__(self, recorder: Recorder, max_num_seqs: int, seed: int = 0) -> None:
        self.recorder = recorder
        self.vllm_config = types.SimpleNamespace(scheduler_config=types.SimpleNamespace(max_num_seqs=max_num_seqs))
        self.max_num_seqs = max_num_seqs
        self.runnable = max_num_seqs  # what the KV cache lets run at once (a test may lower it)
        self.final_only = False  # return finished outputs only (vLLM's FINAL_ONLY output kind)
        self.max_inside = 0  # the most requests the engine held (running and waiting) at once
        self.waiting: list[tuple[str, str, dict[str, Any], int]] = []
        self.running: list[tuple[str, str, dict[str, Any], int]] = []
        self.rng = random.Random(seed)
        self.fail_on_step: Exception | None = None

    def add_request(self, request_id: str, prompt: str, params: Any) -> str:
        self.recorder.threads.add(threading.current_thread().name)
        self.recorder.added.append(prompt)
        self.waiting.append((request_id, prompt, params.kwargs, self.rng.randint(1, 4)))
        return request_id

    def abort_request(self, request_ids: list[str], internal: bool = False) -> None:
        drop = set(request_ids)
        self.recorder.aborted += [r for r in request_ids]
        self.waiting = [w for w in self.waiting if w[0] not in drop]
        self.running = [r for r in self.running if r[0] not in drop]

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self) -> list[FakeRequestOutput]:
        self.recorder.threads.add(threading.current_thread().name)
        if self.fail_on_step is not None:
            raise self.fail_on_step
        self.recorder.steps += 1
        self.max_inside = max(self.max_inside, len(self.waiting) + len(self.running))
        while self.waiting and len(self.running) < self.runnable:
            self.running.append(self.waiting.pop(0))
        self.recorder.max_running = max(self.recorder.max_running, len(self.running))
        time.sleep(0.001)
        left, done = [], []
        for rid, prompt, kwargs, steps in self.running:
            (done if steps <= 1 else left).append((rid, prompt, kwargs, steps - 1))
        self.running = left
        self.rng.shuffle(done)
        outputs = []
        for rid, prompt, kwargs, _ in done:
            out = complete(prompt, kwargs)
            out.request_id = rid
            outputs.append(out)
        # as vLLM's default output kind does: a partial output for every sequence that got a token and
        # did not finish (the stream counts them, and must not take them for completions)
        if not self.final_only:
            outputs += [FakeRequestOutput(p, None, [], request_id=rid, finished=False) for rid, p, _, _ in left]
        return outputs


def make_fake_vllm(
    recorder: Recorder,
    fail_load: Exception | None = None,
    max_num_seqs: int = 4,
    enqueue: bool = True,
    tokenizer: FakeTokenizer | None = None,
) -> types.ModuleType:
    """A module shaped like vllm: ``LLM(**kwargs).generate(prompts, params, use_tqdm=...)``, and the
    incremental API (``LLM.enqueue`` unless ``enqueue`` is False, ``LLM.llm_engine``)."""

    class SamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs
            recorder.params.append(kwargs)

    class LLM:
        def __init__(self, **kwargs: Any) -> None:
            recorder.llm_kwargs.append(kwargs)
            if fail_load is not None:
                raise fail_load
            self.llm_engine = FakeEngine(recorder, max_num_seqs)
            self.counter = itertools.count()

        def get_tokenizer(self) -> FakeTokenizer:
            return tokenizer or FakeTokenizer()

        def generate(self, prompts: list[str], params: list[SamplingParams], **kwargs: Any) -> list[FakeRequestOutput]:
            recorder.generate_calls.append((prompts, params, kwargs))
            return [complete(prompt, p.kwargs) for prompt, p in zip(prompts, params, strict=True)]

    def llm_enqueue(self: Any, prompts: list[str], params: list[Any], use_tqdm: bool = True) -> list[str]:
        # As vLLM 0.32 does: it returns the *internal* ids (suffixed), while outputs carry the external ones.
        assert use_tqdm is False
        return [
            self.llm_engine.add_request(str(next(self.counter)), p, q) + "-internal"
            for p, q in zip(prompts, params, strict=True)
        ]

    if enqueue:
        LLM.enqueue = llm_enqueue  # type: ignore[attr-defined]

    module = types.ModuleType("vllm")
    module.LLM = LLM  # type: ignore[attr-defined]
    module.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    return module


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec))
    return rec


def test_llm_is_built_with_the_options(recorder: Recorder) -> None:
    options = BackendOptions(
        model="org/tiny", seed=3, tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=4096
    )
    backend = VLLMBackend.from_options(options)
    assert isinstance(backend, Backend)
    assert backend.model == "org/tiny"
    assert recorder.llm_kwargs == [
        {
            "model": "org/tiny",
            "seed": 3,
            "tensor_parallel_size": 2,
            "gpu_memory_utilization": 0.5,
            "dtype": "auto",
            "max_model_len": 4096,
        }
    ]


def test_unset_max_model_len_is_left_to_vllm(recorder: Recorder) -> None:
    VLLMBackend("org/tiny", engine_args={"enforce_eager": True})
    (kwargs,) = recorder.llm_kwargs
    assert "max_model_len" not in kwargs
    assert kwargs["enforce_eager"] is True


def test_one_generate_call_with_one_params_per_prompt(recorder: Recorder) -> None:
    backend = VLLMBackend("org/tiny")
    sampling = Sampling(max_tokens=64, temperature=0.7, top_p=0.9, stop=("\n\n",), presence_penalty=0.5)
    out = backend.generate(["a b", "c", "d e f"], sampling, seeds=[10, 11, 12])

    assert len(recorder.generate_calls) == 1
    prompts, params, kwargs = recorder.generate_calls[0]
    assert prompts == ["a b", "c", "d e f"]
    assert len(params) == 3
    assert kwargs == {"use_tqdm": False}
    assert recorder.params == [
        {
            "n": 1,
            "temperature": 0.7,
            "top_p": 0.9,
            "max_tokens": 64,
            "stop": ["\n\n"],
            "presence_penalty": 0.5,
            "frequency_penalty": 0.0,
            "seed": seed,
        }
        for seed in (10, 11, 12)
    ]
    assert out == [
        Completion("seed 10 says a b", "stop", prompt_tokens=2, completion_tokens=5),
        Completion("seed 11 says c", "stop", prompt_tokens=1, completion_tokens=4),
        Completion("seed 12 says d e f", "stop", prompt_tokens=3, completion_tokens=6),
    ]


def test_without_seeds_and_with_top_k(recorder: Recorder) -> None:
    backend = VLLMBackend("org/tiny")
    out = backend.generate(["x"], Sampling(max_tokens=2, top_k=40))
    (params,) = recorder.params
    assert "seed" not in params
    assert params["top_k"] == 40
    assert params["max_tokens"] == 2
    assert params["stop"] == []
    assert out[0].finish_reason == "length"


def test_unset_top_k_is_omitted(recorder: Recorder) -> None:
    VLLMBackend("org/tiny").generate(["x"], Sampling(max_tokens=5))
    assert "top_k" not in recorder.params[0]


def test_each_generate_is_one_call(recorder: Recorder) -> None:
    backend = VLLMBackend("org/tiny")
    backend.generate(["a", "b"], Sampling(max_tokens=5))
    backend.generate(["c"], Sampling(max_tokens=5))
    assert [call[0] for call in recorder.generate_calls] == [["a", "b"], ["c"]]


def test_empty_batch_does_not_call_vllm(recorder: Recorder) -> None:
    assert VLLMBackend("org/tiny").generate([], Sampling(max_tokens=5)) == []
    assert recorder.generate_calls == []


def test_seeds_must_match_prompts(recorder: Recorder) -> None:
    with pytest.raises(ValueError, match="1 seeds for 2 prompts"):
        VLLMBackend("org/tiny").generate(["a", "b"], Sampling(max_tokens=5), seeds=[1])


def test_missing_token_ids_count_zero(recorder: Recorder) -> None:
    class NoIds:
        def generate(self, prompts: list[str], params: list[Any], **kwargs: Any) -> list[FakeRequestOutput]:
            return [FakeRequestOutput(p, None, [FakeCompletionOutput("t", None, [])]) for p in prompts]

    out = VLLMBackend("org/tiny", llm=NoIds()).generate(["a"], Sampling(max_tokens=5))
    assert out == [Completion("t", None, 0, 0)]
    assert recorder.llm_kwargs == []  # an engine given is not rebuilt


def test_output_count_mismatch_is_a_backend_error(recorder: Recorder) -> None:
    class Short:
        def generate(self, prompts: list[str], params: list[Any], **kwargs: Any) -> list[Any]:
            return []

    with pytest.raises(BackendError, match="0 outputs for 1 prompts"):
        VLLMBackend("org/tiny", llm=Short()).generate(["a"], Sampling(max_tokens=5))


def test_model_is_required_by_the_constructor(recorder: Recorder) -> None:
    with pytest.raises(ConfigError, match="--model is required with the vllm backend"):
        VLLMBackend(None)


def test_no_model_means_the_default_packaged_model(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without its packages the default model is refused with the install command, before any engine."""
    monkeypatch.setattr(localmodels, "missing_dependencies", lambda model: ["gguf", model.module])
    monkeypatch.setenv(localmodels.CACHE_ENV, "/nonexistent/selfinstruct-cache")
    with pytest.raises(BackendError) as info:
        VLLMBackend.from_options(BackendOptions())
    assert "cannot convert gemma-3-270m" in str(info.value) and "pip install 'selfinstruct[cpu]'" in str(info.value)
    assert recorder.llm_kwargs == []


def test_packaged_model_loads_from_the_cache_under_its_name(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A packaged model's name is converted once into the cache; vLLM loads the folder, the pool records
    the name; the second construction reuses the entry."""
    from test_localmodels import FakeConverter, fake_model

    converter = FakeConverter()
    model = fake_model(converter)
    monkeypatch.setitem(localmodels.REGISTRY, model.name, model)
    monkeypatch.setattr(localmodels, "DEFAULT_MODEL", model.name)
    monkeypatch.setenv(localmodels.CACHE_ENV, str(tmp_path))
    events: list[tuple[str, Any]] = []
    backend = VLLMBackend.from_options(BackendOptions(on_event=lambda k, p: events.append((k, p))))
    assert backend.model == model.name and backend.path == str(tmp_path / "models" / model.name)
    assert recorder.llm_kwargs[0]["model"] == backend.path and backend.prepare_seconds > 0
    kinds = [k for k, _ in events]
    assert kinds[0] == "model_start" and "model_done" in kinds and kinds[-1] == "notice"
    again = VLLMBackend.from_options(BackendOptions(model=model.name))
    assert converter.calls == 1 and again.path == backend.path


def test_missing_vllm_says_how_to_install_or_use_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(BackendError) as info:
        VLLMBackend("org/tiny")
    assert "pip install torch==2.13.0 && pip install 'selfinstruct[cpu]'" in str(info.value)
    assert "pip install 'selfinstruct[gpu]'" in str(info.value)
    assert "--base-url" in str(info.value)


def test_model_load_failure_is_a_backend_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_vllm(Recorder(), fail_load=RuntimeError("CUDA out of memory"))
    monkeypatch.setitem(sys.modules, "vllm", fake)
    with pytest.raises(BackendError, match=r"could not load model 'org/tiny'.*CUDA out of memory"):
        VLLMBackend("org/tiny")


@pytest.mark.gpu
def test_tiny_real_model_generates() -> None:
    """Runs only with a CUDA GPU and vLLM; the model is $SELFINSTRUCT_TEST_MODEL (a small one by default)."""
    model = os.environ.get("SELFINSTRUCT_TEST_MODEL", "facebook/opt-125m")
    backend = VLLMBackend(model, gpu_memory_utilization=0.3, max_model_len=512, seed=0)
    sampling = Sampling(max_tokens=8, temperature=0.8)
    first = backend.generate(["The capital of France is", "1. Write a poem"], sampling, seeds=[1, 2])
    again = backend.generate(["The capital of France is", "1. Write a poem"], sampling, seeds=[1, 2])
    assert [c.text for c in first] == [c.text for c in again]
    assert all(c.finish_reason in ("stop", "length") for c in first)
    assert all(c.prompt_tokens > 0 and 0 < c.completion_tokens <= 8 for c in first)


# -- engine options and platform defaults ----------------------------------------------------------------


def kwargs_for(**changes: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "seed": 0, "tensor_parallel_size": 1, "gpu_memory_utilization": None, "max_model_len": None,
        "dtype": "auto", "engine_args": {}, "on_cpu": False,
    }  # fmt: skip
    options.update(changes)
    return engine_kwargs("org/tiny", **options)


def test_gpu_defaults_are_vllms() -> None:
    kw = kwargs_for()
    assert kw == {"model": "org/tiny", "seed": 0, "tensor_parallel_size": 1, "dtype": "auto",
                  "gpu_memory_utilization": 0.9}  # fmt: skip


def test_cpu_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_backend, "_meminfo", lambda: (24 << 30, 20 << 30))
    monkeypatch.setattr(vllm_backend, "_cpu_has_bf16", lambda: False)
    kw = kwargs_for(on_cpu=True)
    assert kw["gpu_memory_utilization"] == 0.3
    assert kw["dtype"] == "float32"
    assert kw["max_num_batched_tokens"] == 16384
    assert kw["enforce_eager"] is True  # no CUDA graphs to capture; the engine starts in seconds
    assert kwargs_for(on_cpu=True, engine_args={"enforce_eager": False})["enforce_eager"] is False


@pytest.mark.parametrize(("cores", "seqs"), [(1, 16), (2, 16), (3, 24), (16, 128), (32, 256), (96, 256), (None, 16)])
def test_cpu_engine_steps_eight_sequences_per_core(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, seqs: int
) -> None:
    monkeypatch.setattr(vllm_backend, "_cpu_cores", lambda: cores)
    assert kwargs_for(on_cpu=True)["max_num_seqs"] == seqs
    assert kwargs_for(on_cpu=True, engine_args={"max_num_seqs": 64})["max_num_seqs"] == 64  # the user's wins
    assert "max_num_seqs" not in kwargs_for(on_cpu=False)  # on a GPU, vLLM's own


def test_cpu_defaults_respect_the_users_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_backend, "_cpu_has_bf16", lambda: False)
    kw = kwargs_for(
        on_cpu=True, gpu_memory_utilization=0.2, dtype="bfloat16", max_model_len=32768,
        engine_args={"max_num_batched_tokens": 4096},
    )  # fmt: skip
    assert (kw["gpu_memory_utilization"], kw["dtype"], kw["max_num_batched_tokens"]) == (0.2, "bfloat16", 4096)
    assert kwargs_for(on_cpu=True, max_model_len=32768)["max_num_batched_tokens"] == 32768


def test_cpu_with_bf16_keeps_auto_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_backend, "_cpu_has_bf16", lambda: True)
    assert kwargs_for(on_cpu=True)["dtype"] == "auto"


@pytest.mark.parametrize(
    ("total", "available", "expected"),
    [(24 << 30, 20 << 30, 0.3), (24 << 30, 6 << 30, 0.12), (24 << 30, 0, 0.01), (0, 0, 0.3)],
)
def test_cpu_memory_utilization(total: int, available: int, expected: float) -> None:
    assert cpu_memory_utilization(total, available) == expected


def test_engine_args_pass_through() -> None:
    kw = kwargs_for(engine_args={"enforce_eager": True, "max_num_seqs": 64}, known={"enforce_eager", "max_num_seqs"})
    assert kw["enforce_eager"] is True and kw["max_num_seqs"] == 64


@pytest.mark.parametrize(
    ("engine_args", "message"),
    [
        ({"dtype": "float16"}, "use --dtype instead"),
        ({"tensor_parallel_size": 2}, "use --tensor-parallel-size instead"),
        ({"max_num_seq": 2}, "did you mean 'max_num_seqs'"),
        ({"warp_speed": 9}, "vLLM has no engine argument 'warp_speed'"),
    ],
)
def test_bad_engine_args(engine_args: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        kwargs_for(engine_args=engine_args, known={"max_num_seqs", "enforce_eager"})


def test_engine_args_reach_the_engine(recorder: Recorder) -> None:
    options = BackendOptions(model="org/tiny", engine_args={"enable_prefix_caching": True})
    backend = VLLMBackend.from_options(options)
    assert recorder.llm_kwargs[0]["enable_prefix_caching"] is True
    assert backend.engine_kwargs == recorder.llm_kwargs[0]


# -- the stream: the engine's incremental API ----------------------------------------------------------


def drain(stream: Any, n: int, timeout: float = 10.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += stream.poll(0.1)
    return got


@pytest.mark.parametrize("enqueue", [True, False])
def test_stream_feeds_the_engine_and_returns_completions_as_they_finish(
    monkeypatch: pytest.MonkeyPatch, enqueue: bool
) -> None:
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec, max_num_seqs=4, enqueue=enqueue))
    backend = VLLMBackend("org/tiny")
    stream = open_stream(backend)
    assert isinstance(stream, VLLMStream)
    sampling = Sampling(max_tokens=8)
    for i in range(30):
        stream.submit(Request(i, f"prompt {i}", sampling, seed=100 + i))
    got = drain(stream, 30)
    stream.close()
    assert sorted(f.key for f in got) == list(range(30))
    assert [f.key for f in got] != list(range(30))  # finished out of order
    for f in got:
        assert f.completion == Completion(f"seed {100 + f.key} says prompt {f.key}", "stop", 2, 5)
    assert rec.threads == {"selfinstruct-vllm"}  # one thread owns the engine
    assert rec.max_running == 4 and rec.generate_calls == []
    # the engine held at most max_num_seqs plus a quarter (at least 8 more) at once
    assert stream.capacity() == stream.max_capacity() == 4 + 8


def feed(stream: Any, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        stream.submit(Request(i, f"prompt {i}", Sampling(max_tokens=8), seed=i))


def wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.002)
    return bool(condition())


@pytest.mark.parametrize(("max_num_seqs", "limit"), [(1, 9), (4, 12), (64, 80), (256, 320)])
def test_stream_capacity_is_max_num_seqs_and_a_quarter(
    monkeypatch: pytest.MonkeyPatch, max_num_seqs: int, limit: int
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(Recorder(), max_num_seqs=max_num_seqs))
    backend = VLLMBackend("org/tiny")
    stream = backend.stream()
    assert stream.capacity() == stream.max_capacity() == limit
    feed(stream, 3 * limit)
    assert len(drain(stream, 3 * limit)) == 3 * limit
    stream.close()
    assert backend.llm.llm_engine.max_inside <= limit  # admitted up to the capacity, the rest held back
    assert stream.capacity() == limit  # every slot ran while some waited: nothing to shrink


def test_stream_capacity_follows_what_the_engine_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A KV cache that holds only 5 of 32 sequences: requests wait inside the engine while slots stay empty,
    so capacity shrinks to what it runs plus the queue; once it runs everything again, capacity grows back."""
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec, max_num_seqs=32))
    backend = VLLMBackend("org/tiny")
    engine = backend.llm.llm_engine
    engine.runnable = 5
    stream = backend.stream()
    feed(stream, 200)
    assert wait_for(lambda: stream.capacity() == 5 + 8)
    assert stream.max_capacity() == 32 + 8  # the settings did not change
    got = drain(stream, 200)
    assert len(got) == 200
    engine.runnable = 32  # memory freed: nothing waits once it runs every sequence it is given
    feed(stream, 200, start=200)
    assert wait_for(lambda: stream.capacity() == 32 + 8)
    assert len(drain(stream, 200)) == 200
    stream.close()


def test_stream_capacity_stays_put_without_running_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that returns finished outputs only says nothing about what runs: capacity keeps its setting."""
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(Recorder(), max_num_seqs=16))
    backend = VLLMBackend("org/tiny")
    engine = backend.llm.llm_engine
    engine.final_only, engine.runnable = True, 2
    stream = backend.stream()
    feed(stream, 60)
    assert len(drain(stream, 60)) == 60
    stream.close()
    assert stream.capacity() == 16 + 8


def test_stream_fails_instead_of_hanging_when_the_engine_lost_its_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec, max_num_seqs=2))
    backend = VLLMBackend("org/tiny")
    engine = backend.llm.llm_engine
    engine.add_request = lambda request_id, prompt, params: request_id  # accepted, then forgotten
    stream = open_stream(backend)
    stream.submit(Request(0, "prompt", Sampling(max_tokens=8), seed=1))
    with pytest.raises(BackendError, match="holds none of the 1 requests"):
        drain(stream, 1, timeout=5)
    stream.close()


def test_stream_sends_the_lowest_priority_first(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec, max_num_seqs=1))
    backend = VLLMBackend("org/tiny")
    stream = backend.stream()
    stream._limit = 1
    stream._observe = lambda inside, outputs: None  # type: ignore[method-assign]  # keep the limit at 1
    with stream._lock:  # queue everything before the engine thread may take any
        for i in range(5):
            stream._keys.add(i)
            stream._waiting.append((2, i, Request(i, f"new {i}", Sampling(max_tokens=4), priority=2), 0.0))
        stream._keys.add(9)
        stream._waiting.append((0, 9, Request(9, "follow-up", Sampling(max_tokens=4), priority=0), 0.0))
        stream._waiting.sort()
        stream._lock.notify()
    drain(stream, 6)
    stream.close()
    assert rec.added[0] == "follow-up"
    assert rec.added[1:] == [f"new {i}" for i in range(5)]


def test_stream_cancel_and_close_abort_in_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec, max_num_seqs=2))
    backend = VLLMBackend("org/tiny")
    stream = backend.stream()
    with pytest.raises(BackendError, match="already open"):
        backend.stream()
    with pytest.raises(BackendError, match="close the stream first"):
        backend.generate(["x"], Sampling(max_tokens=3))
    for i in range(40):
        stream.submit(Request(i, f"p {i}", Sampling(max_tokens=50)))
    stream.cancel(range(20, 40))
    got = drain(stream, 20)
    assert sorted(f.key for f in got) == list(range(20))
    for i in range(40, 50):
        stream.submit(Request(i, f"q {i}", Sampling(max_tokens=50)))
    stream.close()
    assert stream.in_flight == 0
    assert not rec.added or all(p.startswith(("p", "q")) for p in rec.added)
    assert not stream._thread.is_alive()
    backend.generate(["x"], Sampling(max_tokens=3))  # the engine is free again


def test_engine_failure_surfaces_from_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec))
    backend = VLLMBackend("org/tiny")
    backend.llm.llm_engine.fail_on_step = RuntimeError("CPU Generator does not use offset")
    stream = backend.stream()
    stream.submit(Request(0, "x", Sampling(max_tokens=3)))
    with pytest.raises(BackendError, match="engine failed: RuntimeError: CPU Generator does not use offset"):
        drain(stream, 1)
    stream.close()


def test_oversized_output_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec))

    class Huge:
        def generate(self, prompts: list[str], params: list[Any], **kwargs: Any) -> list[FakeRequestOutput]:
            return [FakeRequestOutput(p, [1], [FakeCompletionOutput("y" * 100_000, "stop", [1])]) for p in prompts]

    (out,) = VLLMBackend("org/tiny", llm=Huge()).generate(["a"], Sampling(max_tokens=5))
    assert out.cut and out.finish_reason == "length" and len(out.text) < 2000


# -- chat ------------------------------------------------------------------------------------------------

GEMMA_CHAT = "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"


def test_generate_renders_a_chat_with_the_template_as_token_ids(recorder: Recorder) -> None:
    from selfinstruct.engines.chat import user_chat

    backend = VLLMBackend("org/tiny-it")
    out = backend.generate([user_chat("Hi there"), "plain"], Sampling(max_tokens=50), seeds=[1, 2])
    prompts, _, _ = recorder.generate_calls[0]
    assert prompts[0] == {"prompt_token_ids": [ord(c) for c in GEMMA_CHAT]}  # the template's BOS, once
    assert prompts[1] == "plain"
    assert out[0].text == "seed 1 says " + " ".join(GEMMA_CHAT.split())


def test_stream_renders_chats_too(recorder: Recorder) -> None:
    from selfinstruct.engines.chat import user_chat

    backend = VLLMBackend("org/tiny-it")
    stream = backend.stream()
    stream.submit(Request(0, user_chat("Hi there"), Sampling(max_tokens=50), seed=3))
    (done,) = drain(stream, 1)
    stream.close()
    assert decode(recorder.added[0]) == GEMMA_CHAT
    assert done.completion.text.startswith("seed 3 says <bos><start_of_turn>user")


def test_a_prefilled_reply_is_continued_not_answered(recorder: Recorder) -> None:
    from selfinstruct.engines.chat import ChatMessage

    backend = VLLMBackend("org/tiny-it")
    assert backend.can_continue_reply()
    prefilled = (ChatMessage("user", "List four."), ChatMessage("assistant", "1. One\n2. Two\n3."))
    backend.generate([prefilled], Sampling(max_tokens=50), seeds=[1])
    assert decode(recorder.generate_calls[0][0][0]) == (
        "<bos><start_of_turn>user\nList four.<end_of_turn>\n<start_of_turn>assistant\n1. One\n2. Two\n3."
    )


def test_a_template_refusing_the_system_role_gets_it_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    from selfinstruct.engines.chat import user_chat

    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec, tokenizer=FakeTokenizer(system_ok=False)))
    VLLMBackend("org/gemma-2").generate([user_chat("Hi", system="Be brief.")], Sampling(max_tokens=50))
    assert decode(rec.generate_calls[0][0][0]) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


def test_a_base_model_without_a_chat_template_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from selfinstruct.engines.chat import user_chat

    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec, tokenizer=FakeTokenizer(template=None)))
    backend = VLLMBackend("org/base")
    with pytest.raises(ConfigError, match="has no chat template, so it is not a chat model"):
        backend.check_chat()
    with pytest.raises(ConfigError, match="--api completions"):
        backend.generate([user_chat("Hi")], Sampling(max_tokens=5))
    assert backend.generate(["text is fine"], Sampling(max_tokens=5))[0].text
    assert backend.detect_api()[0] == "completions"


def test_in_process_generate_with_a_chat_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The whole loop in-process with --api chat: every request is a chat rendered by the template, and
    every candidate is accounted for in the ledger."""
    import json

    from selfinstruct.config import GenerateConfig
    from selfinstruct.loop.runner import run_generate

    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec))
    config = GenerateConfig(model="org/tiny-it", api="chat", out=str(tmp_path / "pool"), max_rounds=1, batch_size=2,
                            seed=1)  # fmt: skip
    outcome = run_generate(config)
    assert outcome.exit_reason == "max_rounds"
    assert rec.added and all(
        isinstance(p, dict) and decode(p).startswith("<bos><start_of_turn>user") for p in rec.added
    )
    (run,) = [json.loads(line) for line in (tmp_path / "pool" / "runs.jsonl").read_text().splitlines()]
    assert run["api"] == "chat" and run["method"] == "self-instruct"
    assert run["stages"]["instructions"]["finished"] == 2
    # In-process vLLM continues a prefilled reply: the instruction requests open it with the demonstrations.
    assert run["config"]["chat_form"] == "prefill"
    listed = [decode(p) for p in rec.added if "<start_of_turn>assistant\n1. " in decode(p)]
    assert len(listed) == 2 and all(text.endswith("\n9.") for text in listed)


@pytest.mark.parametrize("form", ["ask", "prefill"])
def test_a_chat_form_given_is_used_and_recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, form: str) -> None:
    import json

    from selfinstruct.config import GenerateConfig
    from selfinstruct.loop.runner import run_generate

    rec = Recorder()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(rec))
    config = GenerateConfig(model="org/tiny-it", api="chat", chat_form=form, out=str(tmp_path / "pool"),
                            max_rounds=1, batch_size=2, seed=1)  # fmt: skip
    run_generate(config)
    (run,) = [json.loads(line) for line in (tmp_path / "pool" / "runs.jsonl").read_text().splitlines()]
    assert run["config"]["chat_form"] == form
    prefilled = [p for p in rec.added if "<start_of_turn>assistant\n" in decode(p)]
    assert len(prefilled) == (2 if form == "prefill" else 0)


@pytest.mark.parametrize("runnable", [2, 5])
def test_the_loop_through_the_stream_replays_whatever_the_engine_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, runnable: int
) -> None:
    """The whole loop in-process, the window following the engine: an engine that runs every sequence it
    may, and one whose KV cache runs only a few (so the stream's capacity shrinks and grows), finishing in
    different random orders, build the same pool."""
    from pathlib import Path

    from paperlm import PaperLM
    from seedsets import write_seeds

    from selfinstruct.config import GenerateConfig
    from selfinstruct.loop.bootstrap import Bootstrap
    from selfinstruct.pool.task import load_seed_tasks
    from selfinstruct.protocol.prompts import PromptTemplates

    lm = PaperLM()

    def paper_complete(prompt: Any, kwargs: dict[str, Any]) -> FakeRequestOutput:
        text, finish = lm(decode(prompt), {"seed": kwargs.get("seed")})
        tokens = [0] * len(text.split())
        return FakeRequestOutput(decode(prompt), [0, 1, 2], [FakeCompletionOutput(text, finish, tokens)])

    monkeypatch.setitem(globals(), "complete", paper_complete)
    seeds = load_seed_tasks(write_seeds(tmp_path / "seeds.jsonl"))
    prompts = PromptTemplates.load(Path(__file__).resolve().parents[1] / "prompts")
    pools, limits = [], []
    observe = VLLMStream._observe
    for engine_seed, kv in ((1, 8), (2, runnable)):
        monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(Recorder(), max_num_seqs=8))
        backend = VLLMBackend("org/tiny")
        engine = backend.llm.llm_engine
        engine.rng, engine.runnable = random.Random(engine_seed), kv
        seen: list[int] = []

        def watch(self: VLLMStream, inside: int, outputs: Any, seen: list[int] = seen) -> None:
            observe(self, inside, outputs)
            seen.append(self.capacity())

        monkeypatch.setattr(VLLMStream, "_observe", watch)
        config = GenerateConfig(num_instructions=40, batch_size=3)  # no --window: it follows the engine
        loop = Bootstrap(config, backend, seeds, [], prompts, rng=random.Random(5), run_id="r")
        list(loop.run())
        assert loop.stop_reason == "target_reached" and len(loop.machine) == 40
        assert loop.lag == 15  # 3/4 of the 20 requests 40 tasks need; 2 x (8 + 8) would be 32
        pools.append([{k: v for k, v in t.to_record().items() if k != "created_at"} for t in loop.machine])
        limits.append(seen)
    assert pools[0] == pools[1]
    assert set(limits[0]) == {16}  # every slot could run: capacity stayed at max_num_seqs + 8
    assert min(limits[1]) == runnable + 8  # the engine ran fewer while requests waited: capacity followed


def test_broken_torch_extras_are_hidden_and_good_ones_kept(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyPI's CUDA torchvision beside torch's CPU wheel fails on import; hidden, transformers sees it absent."""
    import importlib.util

    broken = tmp_path / "torchvision"
    broken.mkdir()
    (broken / "__init__.py").write_text("from torchvision import ops\n")
    (broken / "ops.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    good = tmp_path / "torchaudio"
    good.mkdir()
    (good / "__init__.py").write_text("VERSION = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in vllm_backend.TORCH_EXTRAS:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(vllm_backend, "HIDDEN_EXTRAS", [])
    monkeypatch.delenv(vllm_backend.HIDDEN_ENV, raising=False)
    try:
        assert vllm_backend.hide_broken_torch_extras() == ["torchvision"]
        assert os.environ[vllm_backend.HIDDEN_ENV] == "torchvision"  # for the engine's spawned process
        assert sys.modules["torchvision"] is None and "torchvision.ops" not in sys.modules
        assert importlib.util.find_spec("torchvision") is None  # what transformers asks
        with pytest.raises(ImportError):
            __import__("torchvision")
        assert sys.modules["torchaudio"].VERSION == 1
        assert vllm_backend.hide_broken_torch_extras() == []  # once is enough
    finally:
        for name in vllm_backend.TORCH_EXTRAS:
            sys.modules.pop(name, None)


def test_a_spawned_process_hides_what_the_parent_hid() -> None:
    """vLLM's CPU engine runs in a spawned process that imports this package first: the hiding carries over."""
    import subprocess

    code = "import sys, selfinstruct; print(sys.modules.get('torchvision', 'absent'), 'os' in sys.modules)"
    env = {**os.environ, vllm_backend.HIDDEN_ENV: "torchvision,not_a_torch_extra"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["None", "True"], done.stderr
    env.pop(vllm_backend.HIDDEN_ENV)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split()[0] == "absent"


def test_close_shuts_the_engine_down_once(recorder: Recorder) -> None:
    backend = VLLMBackend("org/tiny")
    backend.close()  # a stand-in engine without engine_core: nothing to do
    calls: list[str] = []
    backend.llm.llm_engine.engine_core = types.SimpleNamespace(shutdown=lambda: calls.append("down"))
    stream = backend.stream()
    backend.close()
    assert calls == ["down"] and stream.closed
