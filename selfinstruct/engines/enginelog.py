"""Keep an in-process engine's own output off the terminal: into a log file, summarised in one line.

vLLM logs to stdout and stderr from this process and from the engine processes it starts (which inherit
the file descriptors), and Python libraries print warnings the same way: a few hundred lines at start-up
that bury the run's own lines and break into a live progress bar. :func:`redirected` points file
descriptors 1 and 2 at a log file for the duration of a block and hands back streams on the original
terminal, where the caller keeps writing; :func:`summarize` reads the log's warnings back as one line.

Used by the command line only (the library never prints). Not handled: output written straight to
``/dev/tty`` (nothing here does that).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LOG_NAME = "engine.log"

# "WARNING 12-04 22:10:01 [config.py:123] text", "(EngineCore pid=9) WARNING ...", "file.py:12: UserWarning: text"
_WARNING = re.compile(r"\bWARNING\b[^\]]*\]\s*(?P<vllm>.*)|\b(?P<kind>[A-Z]\w*Warning): (?P<py>.*)")
_ERROR = re.compile(r"\b(ERROR|CRITICAL)\b")
_DIGITS = re.compile(r"\d+(\.\d+)?")
# The last line of a Python traceback: "RuntimeError: operator torchvision::nms does not exist"
_EXCEPTION = re.compile(r"^(?:\(\w+ pid=\d+\)\s*)?(?:[\w.]+\.)?\w*(?:Error|Exception|Exit)\b: .+")


@dataclass(frozen=True)
class Terminal:
    """Streams on the terminal as it was before :func:`redirected` (for the caller's own output)."""

    stdout: IO[str]
    stderr: IO[str]


@contextlib.contextmanager
def redirected(log_path: Path) -> Iterator[Terminal]:
    """Send file descriptors 1 and 2 (and so ``sys.stdout``/``sys.stderr`` and child processes) to
    ``log_path`` (appended) inside the block; yield streams that still reach the original terminal.
    Everything is restored on the way out, an exception's traceback included."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = Terminal(
        stdout=os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace"),
        stderr=os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace"),
    )
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield terminal
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, original in saved.items():
            os.dup2(original, fd)
            os.close(original)
        os.close(log_fd)
        for stream in (terminal.stdout, terminal.stderr):
            with contextlib.suppress(Exception):
                stream.close()


@dataclass(frozen=True)
class LogSummary:
    lines: int
    warnings: int
    errors: int
    top: str | None  # the most frequent warning, numbers folded
    top_count: int
    last_exception: str | None = None  # the last traceback's last line, when the log holds one

    def describe(self, path: Path) -> str:
        """``engine: 152 warnings (146× "..."), 0 errors, in outputs/pool/engine.log``."""
        parts = [f"{self.warnings} warning{'s' if self.warnings != 1 else ''}"]
        if self.top is not None and self.top_count > 1:
            parts[0] += f" ({self.top_count}× {self.top!r})"
        elif self.top is not None:
            parts[0] += f" ({self.top!r})"
        if self.errors:
            parts.append(f"{self.errors} error line{'s' if self.errors != 1 else ''}")
        text = f"engine log: {self.lines} lines, {', '.join(parts)}, in {path}"
        if self.last_exception:
            text += f"; its last exception: {self.last_exception[:300]}"
        return text


def summarize(path: Path, offset: int = 0, limit: int = 16 << 20) -> LogSummary:
    """Count the lines, warnings and errors written to ``path`` after byte ``offset`` (at most ``limit``
    bytes are read); the most frequent warning is shown with its numbers folded to ``N``.

    >>> import tempfile, pathlib; p = pathlib.Path(tempfile.mkdtemp()) / "e.log"
    >>> _ = p.write_text("INFO x\\nWARNING 12-04 22:10:01 [a.py:1] cast to float32 in 3 ms\\n"
    ...                  "WARNING 12-04 22:10:02 [a.py:1] cast to float32 in 7 ms\\n")
    >>> s = summarize(p); (s.lines, s.warnings, s.top, s.top_count)
    (3, 2, 'cast to float32 in N ms', 2)
    """
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(limit)
    except OSError:
        return LogSummary(0, 0, 0, None, 0)
    text = data.decode("utf-8", errors="replace")
    counts: Counter[str] = Counter()
    lines = warnings = errors = 0
    last_exception = None
    for line in text.splitlines():
        if not line.strip():
            continue
        lines += 1
        if _EXCEPTION.match(line) and "Warning" not in line.split(":", 1)[0]:
            last_exception = line.strip()
        match = _WARNING.search(line)
        if match:
            warnings += 1
            message = match.group("vllm") if match.group("vllm") is not None else match.group("py")
            counts[_DIGITS.sub("N", message.strip())[:120]] += 1
        elif _ERROR.search(line):
            errors += 1
    top, top_count = counts.most_common(1)[0] if counts else (None, 0)
    return LogSummary(lines, warnings, errors, top, top_count, last_exception)


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


__all__ = ["LOG_NAME", "LogSummary", "Terminal", "redirected", "size", "summarize"]
