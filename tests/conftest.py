"""Shared fixtures: the loopback language-model server, and skipping ``gpu`` tests where they cannot run."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
from fakelm import FakeLM


def _gpu_unavailable_reason() -> str | None:
    """Why ``gpu`` tests cannot run here, or None when they can (CUDA GPU plus vLLM)."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return  # do not pay for importing torch
    reason = _gpu_unavailable_reason()
    if reason is not None:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=f"gpu test: {reason}"))


@pytest.fixture
def fake_lm() -> Iterator[FakeLM]:
    """A started :class:`fakelm.FakeLM` with the default echo reply and one model, ``fake-model``."""
    with FakeLM() as lm:
        yield lm


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """A backend registers its API key and URL credentials process-wide (selfinstruct.redact), as a real
    process should; one test's "secret" must not be redacted from the next test's files."""
    yield
    from selfinstruct import redact

    redact.forget()
