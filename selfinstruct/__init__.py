"""selfinstruct: bootstrap an instruction-tuning dataset from seed tasks with a base LM (Self-Instruct).

The public API is re-exported here; the command line (``selfinstruct ...``) is a thin shell over it.
Heavy optional dependencies (vLLM) are imported only by the backend that needs them.
"""

# No `from __future__ import annotations` here: that statement imports the __future__ module, a file lookup
# in which a Ctrl-C still gave Python's traceback. Annotations below are valid at run time (or quoted).

# First of all, in the command line's own process only: note SIGINT, SIGTERM and SIGHUP instead of letting
# Python raise KeyboardInterrupt (a traceback) in the middle of an import. The entry point
# (selfinstruct.__main__) ends the process quietly, exit 130, if one came. ``_signal`` is the C module
# under ``signal``: importing it costs nothing (``signal`` would import enum first). The command line's
# process is the one the interpreter started as the ``selfinstruct`` script or as ``python -m
# selfinstruct``, read from ``sys.orig_argv`` (the real command line: a process that multiprocessing
# spawned, such as vLLM's engine, inherits the parent's ``sys.argv`` but not this); a program that merely
# imports the package keeps its own handlers.
import _signal
import os as _os
import sys as _sys

_EARLY_SIGNALS: list[int] = []


def _note_early_signal(signum: int, frame: object) -> None:
    _EARLY_SIGNALS.append(signum)


def _started_as_command() -> bool:
    args = list(getattr(_sys, "orig_argv", []))[1:]
    while args:
        arg = args.pop(0)
        if arg == "-m":
            return bool(args) and args[0].split(".")[0] == "selfinstruct"
        if arg in ("-c", "-"):
            return False
        if arg in ("-X", "-W", "--check-hash-based-pycs"):
            args[:1] = []
        elif not arg.startswith("-"):
            return _os.path.basename(arg).startswith("selfinstruct")
    return False


if _started_as_command():
    try:
        for _sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
            _signal.signal(_sig, _note_early_signal)
    except ValueError:  # not the main thread: nothing to do
        pass

# Before this package's first line, while Python itself starts, the installed 00-selfinstruct-startup.pth
# (see tools/build_hooks.py) has blocked SIGINT in the command line's process and said so on ``sys``: let a
# pending one through now, to the handler above (it is delivered as the mask changes).
if _sys.__dict__.pop("_selfinstruct_sigint_held", False):
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {_signal.SIGINT})

__version__ = "0.1.0"

from importlib import import_module  # noqa: E402

# Not `from typing import TYPE_CHECKING`: importing typing costs milliseconds in which a Ctrl-C would still
# give Python's traceback (the entry point's handlers come after this package). Type checkers read this name.
TYPE_CHECKING = False

# vLLM's CPU build starts its engine in a spawned process, which imports this package again (through the
# ``selfinstruct`` script or ``python -m selfinstruct``): modules the parent hid there as not loadable
# (see selfinstruct.engines.vllm.hide_broken_torch_extras) are hidden in the child too, before vLLM loads.
for _name in _os.environ.get("SELFINSTRUCT_HIDDEN_MODULES", "").split(","):
    if _name in ("torchvision", "torchaudio", "torchcodec"):
        _sys.modules.setdefault(_name, None)  # type: ignore[arg-type]

# Imported on first use (PEP 562): ``python -m selfinstruct`` imports this package before its entry point
# installs the signal handlers, so the package itself must cost next to nothing to import.
_HOME = {
    "Backend": "engines",
    "BackendOptions": "engines",
    "Completion": "engines",
    "Sampling": "engines",
    "make_backend": "engines",
    "BackendError": "errors",
    "ConfigError": "errors",
    "InputError": "errors",
    "OutputError": "errors",
    "PoolError": "errors",
    "PoolLockedError": "errors",
    "SelfInstructError": "errors",
    "InstructionHeuristics": "gates.filters",
    "clean_instances": "gates.filters",
    "Instance": "pool.task",
    "Task": "pool.task",
    "load_seed_tasks": "pool.task",
    "load_tasks": "pool.task",
    "read_records": "pool.task",
}

if TYPE_CHECKING:
    from typing import Any

    from selfinstruct.engines import Backend, BackendOptions, Completion, Sampling, make_backend
    from selfinstruct.errors import (
        BackendError,
        ConfigError,
        InputError,
        OutputError,
        PoolError,
        PoolLockedError,
        SelfInstructError,
    )
    from selfinstruct.gates.filters import InstructionHeuristics, clean_instances
    from selfinstruct.pool.task import Instance, Task, load_seed_tasks, load_tasks, read_records


def __getattr__(name: str) -> "Any":
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'selfinstruct' has no attribute {name!r}")
    value = getattr(import_module(f"selfinstruct.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])


__all__ = [
    "Backend",
    "BackendError",
    "BackendOptions",
    "Completion",
    "ConfigError",
    "InputError",
    "Instance",
    "InstructionHeuristics",
    "OutputError",
    "PoolError",
    "PoolLockedError",
    "Sampling",
    "SelfInstructError",
    "Task",
    "__version__",
    "clean_instances",
    "load_seed_tasks",
    "load_tasks",
    "make_backend",
    "read_records",
]
