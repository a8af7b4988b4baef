"""selfinstruct: bootstrap an instruction-tuning dataset from seed tasks with a base LM (Self-Instruct).

The public API is re-exported here; the command line (``selfinstruct ...``) is a thin shell over it.
Heavy optional dependencies (vLLM) are imported only by the backend that needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from selfinstruct.backends import Backend, BackendOptions, Completion, Sampling, make_backend
from selfinstruct.errors import (
    BackendError,
    ConfigError,
    InputError,
    OutputError,
    PoolError,
    PoolLockedError,
    SelfInstructError,
)
from selfinstruct.filters import InstructionHeuristics, clean_instances
from selfinstruct.task import Instance, Task, load_seed_tasks, load_tasks, read_records

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
