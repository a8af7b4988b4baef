"""The one place where untrusted JSON text becomes Python values, with limits.

Scope: decoding one JSON document (a JSONL line, a JSON file, a lock file's holder note) that came from a
file we did not write or cannot trust (seed files, candidate files, a pool's own files after a foreign
writer or a disk error). It does not know what a record means; :mod:`selfinstruct.pool.task` does.

``json.loads`` alone lets through values that crash code far away from the file that held them:

* a number with more than 4300 digits raises a bare ``ValueError`` (Python's integer-string limit);
* nesting a few thousand levels deep raises ``RecursionError``, here or later when the value is written;
* ``"\\ud800"`` decodes to a lone surrogate, a ``str`` that cannot be encoded as UTF-8, so the first write
  of it fails with ``UnicodeEncodeError``;
* ``NaN`` and ``Infinity`` are not JSON, and other tools reading our output would reject them.

:func:`loads` turns each of these into :class:`JSONProblem`, whose message says what is wrong and, for a
bad string, in which field (``instances[0].output``); the caller adds file and line. Example::

    >>> loads('{"a": [1, "\\\\ud800"]}')
    Traceback (most recent call last):
    JSONProblem: field 'a[1]' holds a lone surrogate (\\ud800), which is not valid Unicode text
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

# Deeper than any record we read or write (a task is 3 levels deep) and far below Python's recursion limit.
MAX_DEPTH = 64

# A lone surrogate can only come from a \\uD800-\\uDFFF escape: raw UTF-8 cannot encode one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JSONProblem(ValueError):
    """Text that is not one acceptable JSON value. ``str(exc)`` is the reason, without file or line;
    ``line`` is the line of a syntax error within the text, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def _reject_constant(name: str) -> Any:
    raise JSONProblem(f"{name} is not a JSON number")


def decode_utf8(data: bytes) -> str:
    """``data`` as text, or :class:`JSONProblem` naming the offending byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONProblem(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def loads(text: str | bytes) -> Any:
    """Parse one JSON value from untrusted text; raise :class:`JSONProblem` with a reason on any problem."""
    if isinstance(text, (bytes, bytearray)):
        text = decode_utf8(bytes(text))
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except JSONProblem:
        raise
    except json.JSONDecodeError as exc:
        raise JSONProblem(f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except RecursionError:
        raise JSONProblem(f"not accepted: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # the integer-string conversion limit; the message says "Exceeds the limit"
        limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
        detail = f"a number with more than {limit} digits" if "digits" in str(exc) else str(exc)
        raise JSONProblem(f"not accepted: {detail}") from None
    # Cheap guards first: only text that could hold the problem is walked.
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(value)
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(value, "")
    return value


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise JSONProblem(f"not accepted: nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _check_strings(value: Any, where: str) -> None:
    """Raise for the first string (value or key) that is not encodable as UTF-8, naming its field."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            _check_text(item, at)
        elif isinstance(item, dict):
            for key, sub in item.items():
                _check_text(key, f"{at}.{key!s}" if at else "a key")
                stack.append((sub, f"{at}.{key}" if at else str(key)))
        elif isinstance(item, list):
            stack.extend((sub, f"{at}[{i}]") for i, sub in enumerate(item))


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = f"\\u{ord(text[exc.start]):04x}"
        place = f"field {where!r}" if where else "the value"
        raise JSONProblem(f"{place} holds a lone surrogate ({code}), which is not valid Unicode text") from None


__all__ = ["MAX_DEPTH", "JSONProblem", "decode_utf8", "loads"]
