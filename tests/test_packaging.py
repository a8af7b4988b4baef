"""The wheel: every subpackage of ``selfinstruct`` is listed in pyproject.toml, so that an ordinary (not
editable) install holds the whole program. Subpackages were added by a refactor and a wheel without them
failed at the first command that imports one (``selfinstruct status``: No module named 'selfinstruct.views').

And the start-up ``.pth`` that tools/build_hooks.py adds to every install: what it holds back, for which
processes, and that a held Ctrl-C ends the command quietly."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_in_the_wheel() -> None:
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "selfinstruct").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found, "no package found"
    assert found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"


# --- The start-up .pth (tools/build_hooks.py): SIGINT held back while Python starts `selfinstruct` ---------------


def _build_hooks() -> Any:
    pytest.importorskip("setuptools")
    spec = importlib.util.spec_from_file_location("selfinstruct_build_hooks", ROOT / "tools" / "build_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pth_lines() -> list[str]:
    """The lines site executes: those starting with ``import`` (the others are comments)."""
    lines = [line for line in _build_hooks().PTH_TEXT.splitlines() if line.startswith(("import ", "import\t"))]
    assert lines
    return lines


def _build(hook: str, source: Path, out: Path) -> Path:
    """Run one PEP 517 hook of the build backend in its own process, as pip does; the file it built."""
    build = f"import sys\nfrom setuptools import build_meta\nprint('built:', build_meta.{hook}(sys.argv[1]))\n"
    done = subprocess.run([sys.executable, "-c", build, str(out)], cwd=source, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    built = next(line for line in done.stdout.splitlines()[::-1] if line.startswith("built: "))
    return out / built.split()[1]


@pytest.mark.slow
def test_every_build_carries_the_startup_pth(tmp_path: Path) -> None:
    """A wheel, an editable wheel (the README installs one) and a wheel built from the sdist (what `python -m
    build` does) all put the file at the wheel's root, which installers place in site-packages, and list it
    in RECORD, so that `pip uninstall` removes it."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__}: the build needs 77 or later (the dev extra installs it)")
    hooks = _build_hooks()
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, source / name)
    for name in ("selfinstruct", "seeds", "prompts"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (source / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "build_hooks.py", source / "tools" / "build_hooks.py")
    out = tmp_path / "dist"
    wheels = [_build("build_wheel", source, out), _build("build_editable", source, out)]
    with tarfile.open(_build("build_sdist", source, out)) as sdist:
        sdist.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (from_sdist,) = (tmp_path / "unpacked").iterdir()
    wheels.append(_build("build_wheel", from_sdist, tmp_path / "from-sdist"))
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            assert zf.read(hooks.PTH_NAME).decode() == hooks.PTH_TEXT, wheel.name
            record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
            assert any(row.split(",")[0] == hooks.PTH_NAME for row in zf.read(record).decode().splitlines())
    # Sorted before every other .pth of an environment: setuptools' editable finder, distutils-precedence,
    # virtualenv's _virtualenv.pth.
    assert sorted([hooks.PTH_NAME, "__editable__.selfinstruct-0.1.0.pth", "distutils-precedence.pth",
                   "_virtualenv.pth", "a.pth"])[0] == hooks.PTH_NAME  # fmt: skip


_PROBE = """\
import json, signal, sys
sys.argv, sys.orig_argv = json.loads(sys.argv[1])
if sys.argv[-1:] == ["parent-blocked"]:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
for _ in range(2):  # site may read one directory twice (a venv's lib64 links to lib)
    for line in json.loads(sys.stdin.read() if _ == 0 else lines):
        exec(line)
    lines = json.dumps([])
print(json.dumps([sys.__dict__.get("_selfinstruct_sigint_held"),
                  signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])]))
"""


@pytest.mark.parametrize(
    ("argv", "orig_argv", "held", "blocked"),
    [
        (["/venv/bin/selfinstruct", "status", "p"], ["/venv/bin/python", "/venv/bin/selfinstruct"], True, True),
        (["selfinstruct"], ["python", "selfinstruct"], True, True),
        (["-m"], ["python", "-m", "selfinstruct", "status"], True, True),
        # A parent that blocked SIGINT itself: the package must not let it through later.
        (["/venv/bin/selfinstruct", "parent-blocked"], ["python", "/venv/bin/selfinstruct"], False, True),
        # Every other program of the environment is left alone.
        (["/home/u/selfinstruct.py"], ["python", "/home/u/selfinstruct.py"], None, False),
        (["/venv/bin/selfinstruct-helper"], ["python", "/venv/bin/selfinstruct-helper"], None, False),
        (["/venv/bin/pytest"], ["python", "/venv/bin/pytest"], None, False),
        (["-c"], ["python", "-c", "import selfinstruct"], None, False),
        (["-m"], ["python", "-m", "selfinstruct.cli"], None, False),
        (["-m"], ["python", "-m", "pip", "install", "selfinstruct"], None, False),
        (["-c", "--multiprocessing-fork"], ["python", "-c", "from multiprocessing.spawn import spawn_main"], None,
         False),
        ([], [], None, False),
    ],
)
def test_the_startup_pth_holds_sigint_in_the_command_process_only(
    argv: list[str], orig_argv: list[str], held: bool | None, blocked: bool
) -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([argv, orig_argv])],
                          input=json.dumps(_pth_lines()), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [held, blocked]


_STARTING = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal (a shell's background job ignores it)
{pth}
os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C while site is still reading .pth files
import site
site.main()
import re  # the first line of the launcher pip writes
from selfinstruct.__main__ import main
sys.argv[1:] = ["status", sys.argv[1]]
main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("with_pth", [True, False])
def test_a_ctrl_c_while_python_starts_the_command_ends_it_quietly(tmp_path: Path, with_pth: bool) -> None:
    """Python started without site (``-S``), as the command: the .pth's lines, then SIGINT, then what
    follows it in a real start-up (site's other .pth files, the launcher's import). With the .pth the
    signal waits, selfinstruct/__init__.py lets it through to its handler, and the command stops with 130
    and one line; without it, Python's traceback (the window this file closes)."""
    script = tmp_path / "bin" / "selfinstruct"
    script.parent.mkdir()
    script.write_text(_STARTING.format(pth="\n".join(_pth_lines()) if with_pth else ""))
    done = subprocess.run([sys.executable, "-S", str(script), str(tmp_path / "no-pool")], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    if with_pth:
        assert (done.returncode, done.stderr) == (130, "selfinstruct: stopped while starting; nothing was written\n")
    else:
        assert done.returncode == -signal.SIGINT and "KeyboardInterrupt" in done.stderr, done.stderr
