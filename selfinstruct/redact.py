"""Known secrets kept out of everything the process shows or writes.

Scope: a process-wide set of strings that must never leave the process except where they are needed (the
``Authorization`` header, HTTP Basic auth). The OpenAI-compatible backend registers the API key and the
credentials of a URL as it starts (with their base64 form, which is how Basic auth echoes them); every
writer of a file (the pool's appends, export) and every error message passes its text through
:func:`redact`. A server that echoes the key into a judge's reply therefore stores ``<redacted>``.

It does not guess: only values registered here are replaced (a string that merely looks like a key is data).
Values shorter than :data:`MIN_SECRET_CHARS` are not registered: replacing ``"ab"`` everywhere would damage
data and hide nothing.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

REDACTED = "<redacted>"
MIN_SECRET_CHARS = 4

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register(*values: str | None) -> None:
    """Add secrets (and, for each, its base64 form) to the set that :func:`redact` replaces."""
    global _secrets
    forms = set(_secrets)
    for value in values:
        if not value or len(value) < MIN_SECRET_CHARS:
            continue
        forms.add(value)
        forms.add(base64.b64encode(value.encode()).decode())
    with _lock:
        _secrets = tuple(sorted(forms, key=len, reverse=True))


#: Environment variables whose values are secrets wherever they appear (the API keys the backends send).
SECRET_ENV = ("SELFINSTRUCT_API_KEY", "OPENAI_API_KEY", "HF_TOKEN")


def register_environment() -> None:
    """Register the values of :data:`SECRET_ENV` that are set (the CLI does this as it starts)."""
    import os

    register(*(os.environ.get(name, "").strip() or None for name in SECRET_ENV))


def known() -> tuple[str, ...]:
    """The registered secrets, longest first."""
    return _secrets


def forget() -> None:
    """Drop every registered secret (tests, a library caller done with a backend)."""
    global _secrets
    with _lock:
        _secrets = ()


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``<redacted>``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_value(value: Any) -> Any:
    """A JSON-like value with :func:`redact` applied to every string in it (the same object when none holds a
    secret, so the common case costs one scan)."""
    if not _secrets:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


__all__ = [
    "MIN_SECRET_CHARS",
    "REDACTED",
    "SECRET_ENV",
    "forget",
    "known",
    "redact",
    "redact_value",
    "register",
    "register_environment",
]
