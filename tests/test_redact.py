"""selfinstruct.redact: registered secrets, and their base64 form, are replaced in text and values."""

from __future__ import annotations

import base64

import pytest

from selfinstruct import redact


@pytest.fixture(autouse=True)
def fresh() -> None:
    redact.forget()


def test_registered_secrets_and_their_base64_are_replaced() -> None:
    redact.register("sk-0123456789")
    encoded = base64.b64encode(b"sk-0123456789").decode()
    assert redact.redact(f"key sk-0123456789 or {encoded}.") == "key <redacted> or <redacted>."


@pytest.mark.parametrize("value", [None, "", "abc"])
def test_short_or_empty_values_are_not_registered(value: str | None) -> None:
    redact.register(value)
    assert redact.known() == ()


def test_values_are_redacted_deeply_and_untouched_without_secrets() -> None:
    record = {"a": ["x sk-0123456789 y", {"b": "sk-0123456789"}], "n": 1}
    assert redact.redact_value(record) is record  # nothing registered: the same object
    redact.register("sk-0123456789")
    assert redact.redact_value(record) == {"a": ["x <redacted> y", {"b": "<redacted>"}], "n": 1}


def test_the_longest_secret_goes_first() -> None:
    redact.register("user:password1", "password1")
    assert redact.redact("user:password1") == "<redacted>"


def test_environment_keys_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFINSTRUCT_API_KEY", "  sk-from-env-1  ")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    redact.register_environment()
    assert "sk-from-env-1" in redact.known()
