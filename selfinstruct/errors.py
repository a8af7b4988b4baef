"""Exceptions whose messages are written for the person at the terminal.

The library raises these; the CLI prints ``str(exc)`` and exits with ``exc.exit_code``. Nothing here prints.
"""

from __future__ import annotations


class SelfInstructError(Exception):
    """Base class: a problem the user can act on. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InputError(SelfInstructError):
    """A file the user gave us is malformed: the message names the file, the line and the field."""

    exit_code = 2

    def __init__(self, path: object, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class ConfigError(SelfInstructError):
    """An option or configuration value is wrong or two of them contradict each other."""

    exit_code = 2


class BackendError(SelfInstructError):
    """The language-model backend failed: server unreachable after retries, bad reply, missing package."""

    exit_code = 3


class PoolError(SelfInstructError):
    """The pool directory cannot be used as asked (corrupt line, mixed configuration, failed write)."""

    exit_code = 4


class PoolLockedError(PoolError):
    """Another process holds the pool's lock. Exit code 75 is EX_TEMPFAIL: cron may simply try again later."""

    exit_code = 75


class OutputError(SelfInstructError):
    """An output file cannot be written (a directory, read-only, full disk, or it names an input).

    Exit code 73 is EX_CANTCREAT. Nothing is replaced: outputs are renamed into place only when whole.
    """

    exit_code = 73
