"""The run ledger of a pool directory: ``runs.jsonl``, one line per finished run, oldest first.

Scope: recording a finished run's record (one whole line, fsynced, cleaned of escape sequences and control
characters because ``status`` shows it, known secrets redacted) and reading the records back for ``status``,
``report`` and the next run's checks, skipping unreadable lines with a warning. What a record holds is the
caller's (:mod:`selfinstruct.loop.runner`); how the line gets into the file is :mod:`selfinstruct.pool.journal`'s.
Locking is :class:`~selfinstruct.pool.directory.Pool`'s: it checks its lock before :meth:`Ledger.append`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from selfinstruct.errors import PoolError
from selfinstruct.pool.journal import AppendFailed, append_block, jsonl_block, read_jsonl_tolerant, reason


class Ledger:
    """``runs.jsonl`` at ``path``; ``warn`` receives the note about skipped unreadable lines."""

    def __init__(self, path: Path, warn: Callable[[str], None]) -> None:
        self.path = path
        self._warn = warn

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one finished run's record (one line, fsync); a torn last line left by a killed writer is
        ended first, so it stays one unreadable line that :meth:`read` skips."""
        line = jsonl_block([record], clean=True)
        try:
            append_block(self.path, line, sync=True, on_torn_tail="terminate")
        except AppendFailed as exc:
            raise PoolError(f"could not record the run in {self.path}: {reason(exc.error)}") from None

    def read(self) -> list[dict[str, Any]]:
        """Every run record, oldest first. Unreadable lines and values that are not objects are skipped."""
        return [r for r in read_jsonl_tolerant(self.path, self._warn) if isinstance(r, dict)]
