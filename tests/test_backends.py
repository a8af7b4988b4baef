"""Choosing and building a backend: resolve_backend_name and make_backend."""

from __future__ import annotations

import sys

import pytest
from fakelm import FakeLM

from selfinstruct.engines import BackendOptions, Sampling, make_backend, resolve_backend_name
from selfinstruct.engines.openai import OpenAIBackend
from selfinstruct.errors import BackendError, ConfigError

URL = "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(
    ("name", "base_url", "expected"),
    [
        (None, None, "vllm"),
        ("auto", None, "vllm"),
        (None, URL, "openai"),
        ("auto", URL, "openai"),
        ("vllm", None, "vllm"),
        ("openai", URL, "openai"),
    ],
)
def test_resolve_backend_name(name: str | None, base_url: str | None, expected: str) -> None:
    assert resolve_backend_name(name, base_url) == expected


@pytest.mark.parametrize(
    ("name", "base_url", "problem"),
    [
        ("tgi", None, "unknown backend 'tgi'"),
        ("vllm", URL, "--base-url is for the openai backend"),
        ("openai", None, "needs --base-url"),
        ("openai", "", "needs --base-url"),
    ],
)
def test_resolve_backend_name_rejects(name: str, base_url: str | None, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        resolve_backend_name(name, base_url)


@pytest.mark.parametrize("name", [None, "auto", "openai"])
def test_make_backend_builds_the_openai_backend(fake_lm: FakeLM, name: str | None) -> None:
    backend = make_backend(name, BackendOptions(base_url=fake_lm.base_url, concurrency=2))
    assert isinstance(backend, OpenAIBackend)
    with backend:
        assert backend.model == "fake-model"
        assert backend.generate(["a"], Sampling(max_tokens=5))[0].text == "echo: a"


@pytest.mark.parametrize("name", [None, "vllm"])
def test_make_backend_vllm_without_vllm_installed(monkeypatch: pytest.MonkeyPatch, name: str | None) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(BackendError, match=r"pip install 'selfinstruct\[cpu\]'.*pip install 'selfinstruct\[gpu\]'"):
        make_backend(name, BackendOptions(model="org/tiny"))


def test_make_backend_vllm_without_a_model_wants_the_default_and_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model: the default packaged one, which needs vLLM first (the install command, nothing converted)."""
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(BackendError, match=r"vLLM is not installed.*selfinstruct\[cpu\]"):
        make_backend("vllm", BackendOptions())


def test_make_backend_reports_bad_urls() -> None:
    with pytest.raises(ConfigError, match="http:// or https://"):
        make_backend(None, BackendOptions(base_url="ftp://host/v1", model="m"))
