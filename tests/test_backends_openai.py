"""OpenAIBackend against loopback servers (tests/fakelm.py): requests in flight, order, streaming, many
endpoints, retries and their events, timeouts, oversized replies, errors, secrets."""

from __future__ import annotations

import base64
import json
import socket
import time
import traceback
from typing import Any

import aiohttp
import pytest
from batchlm import BatchLM
from fakelm import FakeLM

from selfinstruct.engines import (
    Backend,
    BackendOptions,
    Completion,
    Request,
    RetryEvent,
    Sampling,
    max_completion_chars,
    open_stream,
)
from selfinstruct.engines.openai import OpenAIBackend, OpenAIStream, normalize_base_url
from selfinstruct.engines.pacing import PacingSettings
from selfinstruct.errors import BackendError, ConfigError

FAST = {"retry_wait_initial": 0.01, "retry_wait_max": 0.05}
SAMPLING = Sampling(max_tokens=50)
SECRET = "sk-test-0123456789-very-secret"


def backend(lm: FakeLM, **kwargs: Any) -> OpenAIBackend:
    return OpenAIBackend(lm.base_url, **{"model": "fake-model", **FAST, **kwargs})


def dead_url() -> str:
    """The URL of a port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def prompts(n: int) -> list[str]:
    return [f"prompt number {i}" for i in range(n)]


# -- batching and order ----------------------------------------------------------------------------


def test_is_a_backend(fake_lm: FakeLM) -> None:
    with backend(fake_lm) as b:
        assert isinstance(b, Backend)


def test_one_request_per_prompt_in_prompt_order(fake_lm: FakeLM) -> None:
    with backend(fake_lm) as b:
        out = b.generate(prompts(10), SAMPLING)
    assert [c.text for c in out] == [f"echo: {p}" for p in prompts(10)]
    assert sorted(r["prompt"] for r in fake_lm.requests) == sorted(prompts(10))


def test_empty_batch_sends_nothing(fake_lm: FakeLM) -> None:
    with backend(fake_lm) as b:
        assert b.generate([], SAMPLING) == []
    assert fake_lm.requests == []


def test_replies_finishing_out_of_order_come_back_in_prompt_order() -> None:
    with FakeLM(jitter=(0.0, 0.25), jitter_seed=3) as lm, backend(lm) as b:  # wide: a loaded CPU spaces sends
        out = b.generate(prompts(20), SAMPLING)
    assert [c.text for c in out] == [f"echo: {p}" for p in prompts(20)]
    assert lm.answered != prompts(20)  # the server really did answer out of order


def test_concurrency_bounds_requests_in_flight() -> None:
    with FakeLM(delay=0.15) as lm, backend(lm, concurrency=3) as b:
        started = time.monotonic()
        out = b.generate(prompts(9), SAMPLING)
        elapsed = time.monotonic() - started
    assert [c.text for c in out] == [f"echo: {p}" for p in prompts(9)]
    assert 2 <= lm.max_in_flight <= 3
    assert elapsed < 9 * 0.15  # not one after the other


def test_default_limit_starts_at_64_per_server_and_follows_it() -> None:
    with FakeLM(delay=0.3) as lm, OpenAIBackend(lm.base_url, "fake-model") as b:
        assert b.concurrency is None  # adaptive (selfinstruct.engines.pacing)
        assert b.capacity() == 64
        b.generate(prompts(60), SAMPLING)
    assert lm.max_in_flight >= 40  # all of them at once, give or take the server's accept loop


# -- the stream -------------------------------------------------------------------------------------


def test_stream_returns_completions_as_they_finish() -> None:
    with FakeLM(jitter=(0.0, 0.08), jitter_seed=1) as lm, backend(lm) as b:
        stream = open_stream(b)
        assert isinstance(stream, OpenAIStream)
        for i, p in enumerate(prompts(12)):
            stream.submit(Request(i, p, SAMPLING, seed=i))
        assert stream.in_flight == 12
        order: list[int] = []
        while len(order) < 12:
            for done in stream.poll(1.0):
                assert done.completion.text == f"echo: prompt number {done.key}"
                assert done.seconds >= 0
                order.append(done.key)
        stream.close()
    assert sorted(order) == list(range(12)) and order != list(range(12))
    assert stream.in_flight == 0


def test_stream_cancel_drops_requests_in_flight() -> None:
    with FakeLM(delay=0.5) as lm, backend(lm) as b:
        stream = b.stream()
        for i in range(4):
            stream.submit(Request(i, f"p{i}", SAMPLING))
        stream.cancel([1, 2, 99])
        got: list[int] = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            got += [d.key for d in stream.poll(0.2)]
        stream.close()
    assert sorted(got) == [0, 3]


def test_waiting_requests_go_out_lowest_priority_first() -> None:
    with FakeLM(delay=0.1) as lm, backend(lm, concurrency=1) as b:
        stream = b.stream()
        stream.submit(Request(0, "first", SAMPLING, priority=2))
        time.sleep(0.05)  # "first" holds the only slot
        for i in range(1, 4):
            stream.submit(Request(i, f"new {i}", SAMPLING, priority=2))
        stream.submit(Request(9, "urgent", SAMPLING, priority=0))
        got: list[int] = []
        while len(got) < 5:
            got += [d.key for d in stream.poll(1.0)]
        stream.close()
    assert lm.answered == ["first", "urgent", "new 1", "new 2", "new 3"]


# -- request fields ----------------------------------------------------------------------------------


def test_request_body_carries_sampling_fields(fake_lm: FakeLM) -> None:
    sampling = Sampling(
        max_tokens=77,
        temperature=0.7,
        top_p=0.5,
        stop=("\n\n", "16."),
        presence_penalty=1.5,
        frequency_penalty=0.25,
        top_k=40,
    )
    with backend(fake_lm, extra={"repetition_penalty": 1.1}) as b:
        b.generate(["a"], sampling, seeds=[1234])
    (body,) = fake_lm.requests
    assert body == {
        "model": "fake-model",
        "prompt": "a",
        "max_tokens": 77,
        "temperature": 0.7,
        "top_p": 0.5,
        "stop": ["\n\n", "16."],
        "presence_penalty": 1.5,
        "frequency_penalty": 0.25,
        "n": 1,
        "top_k": 40,
        "seed": 1234,
        "repetition_penalty": 1.1,
    }


def test_empty_stop_and_unset_top_k_are_omitted(fake_lm: FakeLM) -> None:
    with backend(fake_lm) as b:
        b.generate(["a"], Sampling(max_tokens=5))
    (body,) = fake_lm.requests
    assert "stop" not in body
    assert "top_k" not in body


@pytest.mark.parametrize("count", [1, 4, 9])
def test_at_most_four_stop_strings_go_to_a_server_the_first_ones(fake_lm: FakeLM, count: int) -> None:
    """The OpenAI protocol's limit, which vLLM's server enforces with HTTP 400: the loop's own stops come
    first and are kept; a prefilled reply's demonstrations after them are cut to fit."""
    stops = tuple(f"stop {i}" for i in range(count))
    with backend(fake_lm) as b:
        b.generate(["a"], Sampling(max_tokens=5, stop=stops))
    (body,) = fake_lm.requests
    assert body["stop"] == list(stops[:4])


def test_each_request_carries_the_seed_of_its_prompt(fake_lm: FakeLM) -> None:
    with backend(fake_lm) as b:
        b.generate(prompts(4), SAMPLING, seeds=[100, 101, 102, 103])
    seeds = {r["prompt"]: r["seed"] for r in fake_lm.requests}
    assert seeds == {f"prompt number {i}": 100 + i for i in range(4)}


def test_derived_seeds_replay_across_runs_and_differ_between_calls(fake_lm: FakeLM) -> None:
    def run() -> list[int]:
        fake_lm.requests.clear()
        with backend(fake_lm, seed=7, concurrency=1) as b:
            b.generate(prompts(4), SAMPLING)
            b.generate(prompts(4), SAMPLING)
        return [r["seed"] for r in fake_lm.requests]

    first = run()
    assert first == run()
    assert len(set(first)) == 8


def test_seeds_must_match_prompts(fake_lm: FakeLM) -> None:
    with backend(fake_lm) as b, pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        b.generate(prompts(3), SAMPLING, seeds=[1, 2])


# -- completions ------------------------------------------------------------------------------------


def test_usage_is_counted_per_completion(fake_lm: FakeLM) -> None:
    with backend(fake_lm) as b:
        out = b.generate(["one two", "three", "four five six"], SAMPLING)
    # echo adds one word ("echo:") to each prompt
    assert [(c.prompt_tokens, c.completion_tokens) for c in out] == [(2, 3), (1, 2), (3, 4)]


def test_missing_usage_counts_zero() -> None:
    with FakeLM(include_usage=False) as lm, backend(lm) as b:
        out = b.generate(["a b"], SAMPLING)
    assert out == [Completion("echo: a b", "stop", 0, 0)]


def test_finish_reason_is_passed_through() -> None:
    with FakeLM(respond=lambda p, body: ("w " * 10, "stop")) as lm, backend(lm) as b:
        out = b.generate(["x"], Sampling(max_tokens=3))
    assert out[0].finish_reason == "length"
    assert out[0].text == "w w w"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"choices": []}', "without a list of choices"),
        ('{"choices": [{"index": 0, "text": "a"}, {"index": 1, "text": "b"}]}', "2 choices for one prompt"),
        ('{"choices": [{"index": 0, "text": 5}]}', "malformed choice"),
        ('{"choices": ["a"]}', "malformed choice"),
        ('{"result": "hello"}', "without a list of choices"),
    ],
)
def test_malformed_replies_fail_without_retry(fake_lm: FakeLM, body: str, expected: str) -> None:
    fake_lm.fail_next(200, body=body)
    with backend(fake_lm) as b, pytest.raises(BackendError, match=expected):
        b.generate(["p"], SAMPLING)
    assert len(fake_lm.log) == 1


@pytest.mark.parametrize("body", ["<html>gateway</html>", "", '{"choices": [', "\x1b]0;pwned\x07 [/] not json"])
def test_a_reply_that_is_not_json_is_retried_then_counted_as_empty(fake_lm: FakeLM, body: str) -> None:
    events: list[tuple[str, Any]] = []
    fake_lm.fail_next(200, times=3, body=body)
    with backend(fake_lm, max_retries=2, on_event=lambda k, p: events.append((k, p))) as b:
        (out,) = b.generate(["p"], SAMPLING)
    assert len(fake_lm.log) == 3  # three unreadable attempts, then counted: the run goes on
    assert out.text == "" and not out.cut and b.unreadable == 1
    warnings = [p for k, p in events if k == "warning"]
    assert len(warnings) == 1 and "counted as an empty completion" in warnings[0]
    assert "\x1b" not in warnings[0] and "\x07" not in warnings[0]
    assert sum(k == "retry" for k, _ in events) == 2


def test_a_reply_that_becomes_json_on_retry_is_used(fake_lm: FakeLM) -> None:
    fake_lm.fail_next(200, body="garbage")
    with backend(fake_lm, max_retries=1) as b:
        (out,) = b.generate(["p"], SAMPLING)
    assert out.text and b.unreadable == 0 and len(fake_lm.log) == 2


def test_a_reply_longer_than_max_tokens_allows_is_cut_and_marked() -> None:
    with FakeLM(respond=lambda p, body: ("word " * 20_000, "stop"), apply_limits=False) as lm, backend(lm) as b:
        (out,) = b.generate(["x"], Sampling(max_tokens=100))
    assert len(out.text) == max_completion_chars(100) and out.cut and out.finish_reason == "length"


def test_a_huge_reply_is_not_read_and_contributes_nothing() -> None:
    huge = "x" * 20_000_000
    with FakeLM(respond=lambda p, body: (huge, "stop"), apply_limits=False) as lm, backend(lm) as b:
        (out,) = b.generate(["x"], Sampling(max_tokens=100))
    assert out == Completion("", "length", cut=True)


# -- model detection --------------------------------------------------------------------------------


def test_single_served_model_is_detected(fake_lm: FakeLM) -> None:
    with OpenAIBackend(fake_lm.base_url) as b:
        assert b.model == "fake-model"
        b.generate(["x"], SAMPLING)
    assert fake_lm.requests[0]["model"] == "fake-model"


def test_several_models_need_an_explicit_choice() -> None:
    with FakeLM(models=["llama-3-8b", "qwen2-7b"]) as lm, pytest.raises(ConfigError) as info:
        OpenAIBackend(lm.base_url)
    message = str(info.value)
    assert "llama-3-8b" in message and "qwen2-7b" in message and "--model" in message


def test_no_models_listed_needs_an_explicit_choice() -> None:
    with FakeLM(models=[]) as lm, pytest.raises(ConfigError, match="lists no models; pass --model"):
        OpenAIBackend(lm.base_url)


def test_model_detection_retries_transient_failures(fake_lm: FakeLM) -> None:
    fake_lm.fail_next(503)
    with OpenAIBackend(fake_lm.base_url, **FAST) as b:
        assert b.model == "fake-model"


def test_unknown_model_is_a_clear_error(fake_lm: FakeLM) -> None:
    with backend(fake_lm, model="nope") as b, pytest.raises(BackendError) as info:
        b.generate(["x"], SAMPLING)
    assert "HTTP 404" in str(info.value)
    assert "The model `nope` does not exist" in str(info.value)
    assert "--model" in str(info.value)


# -- retries ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(fake_lm: FakeLM, status: int) -> None:
    fake_lm.fail_next(status, times=2)
    with backend(fake_lm) as b:
        out = b.generate(["x"], SAMPLING)
    assert out[0].text == "echo: x"
    assert [o for _, _, o in fake_lm.log] == [status, status, 200]


def test_retry_after_is_honoured(fake_lm: FakeLM) -> None:
    fake_lm.fail_next(429, retry_after="0.3")
    with backend(fake_lm) as b:
        started = time.monotonic()
        b.generate(["x"], SAMPLING)
        assert time.monotonic() - started >= 0.3


def test_retry_after_is_capped(fake_lm: FakeLM) -> None:
    fake_lm.fail_next(429, retry_after="3600")
    with backend(fake_lm, retry_after_max=0.05) as b:
        started = time.monotonic()
        b.generate(["x"], SAMPLING)
        assert time.monotonic() - started < 2


def test_dropped_connections_are_retried(fake_lm: FakeLM) -> None:
    fake_lm.drop_next(2)
    with backend(fake_lm) as b:
        assert b.generate(["x"], SAMPLING)[0].text == "echo: x"
    assert [o for _, _, o in fake_lm.log] == ["dropped", "dropped", 200]


def test_giving_up_says_what_happened(fake_lm: FakeLM) -> None:
    fake_lm.fail_next(503, times=10, body='{"message": "the engine is overloaded"}')
    with backend(fake_lm, max_retries=2) as b, pytest.raises(BackendError) as info:
        b.generate(["x"], SAMPLING)
    message = str(info.value)
    assert f"{fake_lm.base_url}/completions" in message
    assert "after 3 attempts" in message
    assert "HTTP 503: the engine is overloaded" in message
    assert "vllm serve" in message and "--base-url" in message
    assert len(fake_lm.log) == 3


def test_each_retry_is_reported_with_reason_attempt_and_wait(fake_lm: FakeLM) -> None:
    fake_lm.fail_next(503, times=2, body='{"message": "busy"}')
    events: list[tuple[str, Any]] = []
    with backend(fake_lm, on_event=lambda kind, payload: events.append((kind, payload))) as b:
        assert b.generate(["x"], SAMPLING)[0].text == "echo: x"
        assert b.retries == 2
    retries = [p for k, p in events if k == "retry"]
    assert [(r.attempt, r.attempts) for r in retries] == [(1, 7), (2, 7)]
    assert all(isinstance(r, RetryEvent) and r.reason == "HTTP 503: busy" and r.wait > 0 for r in retries)
    assert retries[0].endpoint == fake_lm.base_url
    assert "retry 1/6" in retries[0].describe() and "HTTP 503: busy" in retries[0].describe()


def test_one_failed_request_fails_the_batch_and_stops_the_others(fake_lm: FakeLM) -> None:
    fake_lm.fail_next(503, times=1000)
    b = backend(fake_lm, concurrency=4, max_retries=3)
    with b, pytest.raises(BackendError, match="after 4 attempts"):
        b.generate(prompts(40), SAMPLING)
    assert len(fake_lm.log) < 40 * 4  # queued requests were cancelled, not all retried


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(fake_lm: FakeLM, status: int) -> None:
    fake_lm.fail_next(status, body='{"object": "error", "message": "unknown field: top_k"}')
    with backend(fake_lm) as b, pytest.raises(BackendError) as info:
        b.generate(["x"], SAMPLING)
    assert f"HTTP {status}: unknown field: top_k" in str(info.value)
    assert len(fake_lm.log) == 1


def test_long_server_messages_are_truncated(fake_lm: FakeLM) -> None:
    fake_lm.fail_next(400, body="x" * 5000)
    with backend(fake_lm) as b, pytest.raises(BackendError) as info:
        b.generate(["x"], SAMPLING)
    assert 450 < len(str(info.value)) < 700


def test_dead_server_reports_the_connection_failure() -> None:
    url = dead_url()
    with OpenAIBackend(url, "m", max_retries=1, **FAST) as b, pytest.raises(BackendError) as info:
        b.generate(["x"], SAMPLING)
    message = str(info.value)
    assert "connection" in message.lower()
    assert url in message and "after 2 attempts" in message and "--base-url" in message


def test_dead_server_fails_model_detection_with_a_backend_error() -> None:
    with pytest.raises(BackendError, match="connection"):
        OpenAIBackend(dead_url(), max_retries=0, **FAST)


def test_slow_server_times_out() -> None:
    with (
        FakeLM(delay=1.0) as lm,
        backend(lm, timeout=0.1, max_retries=1) as b,
        pytest.raises(BackendError, match=r"no complete reply within 0.1s"),
    ):
        b.generate(["x"], SAMPLING)


def test_a_server_that_drips_its_reply_still_times_out() -> None:
    # One byte every 20 ms never trips a read timeout; the timeout bounds the whole request.
    with FakeLM(drip=0.02) as lm, backend(lm, timeout=0.5, max_retries=0) as b:
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"no complete reply within 0.5s"):
            b.generate(["x"], SAMPLING)
        assert time.monotonic() - started < 3


# -- many endpoints ---------------------------------------------------------------------------------


def test_requests_spread_over_endpoints_by_outstanding_work() -> None:
    with FakeLM(delay=0.05) as a, FakeLM(delay=0.05) as c:
        with OpenAIBackend([a.base_url, c.base_url], "fake-model", **FAST) as b:
            out = b.generate(prompts(40), SAMPLING)
            stats = b.endpoint_stats()
        assert [o.text for o in out] == [f"echo: {p}" for p in prompts(40)]
        assert len(a.requests) + len(c.requests) == 40
        assert min(len(a.requests), len(c.requests)) >= 10
        assert stats[a.base_url]["requests"] == len(a.requests)


def test_a_dead_endpoint_is_retried_elsewhere_and_reported() -> None:
    dead = dead_url()
    events: list[tuple[str, Any]] = []
    with FakeLM() as lm:
        b = OpenAIBackend([dead, lm.base_url], "fake-model", on_event=lambda k, p: events.append((k, p)), **FAST)
        with b:
            out = b.generate(prompts(20), SAMPLING)
    assert [o.text for o in out] == [f"echo: {p}" for p in prompts(20)]
    assert len(lm.requests) == 20
    down = [p for k, p in events if k == "endpoint_down"]
    assert len(down) == 1 and dead in down[0]
    retries = [p for k, p in events if k == "retry"]
    assert retries and all(r.endpoint == dead and r.elsewhere and r.wait == 0 for r in retries)


def test_the_same_endpoint_twice_is_a_config_error(fake_lm: FakeLM) -> None:
    with pytest.raises(ConfigError, match="given twice"):
        OpenAIBackend([fake_lm.base_url, fake_lm.base_url + "/"], "m")


# -- API key --------------------------------------------------------------------------------------


def test_api_key_is_sent_as_bearer_and_kept_out_of_repr() -> None:
    with FakeLM(required_api_key=SECRET) as lm, backend(lm, api_key=SECRET) as b:
        assert b.generate(["x"], SAMPLING)[0].text == "echo: x"
        assert lm.headers[-1]["Authorization"] == f"Bearer {SECRET}"
        assert SECRET not in repr(b) and SECRET not in str(b)
        assert "api_key=set" in repr(b)


def test_wrong_api_key_error_never_shows_the_key() -> None:
    with (
        FakeLM(required_api_key="the-right-one") as lm,
        backend(lm, api_key=SECRET) as b,
        pytest.raises(BackendError) as info,
    ):
        b.generate(["x"], SAMPLING)
    assert "HTTP 401" in str(info.value) and "API key" in str(info.value)
    rendered = "".join(traceback.format_exception(info.value))
    assert SECRET not in rendered


def test_a_server_echoing_the_key_is_redacted(fake_lm: FakeLM) -> None:
    fake_lm.fail_next(400, body=f"bad header: Bearer {SECRET}")
    with backend(fake_lm, api_key=SECRET) as b, pytest.raises(BackendError) as info:
        b.generate(["x"], SAMPLING)
    assert SECRET not in str(info.value) and "<redacted>" in str(info.value)


def test_transport_errors_never_show_the_key() -> None:
    b = OpenAIBackend(dead_url(), "m", api_key=SECRET, max_retries=0, **FAST)
    with b, pytest.raises(BackendError) as info:
        b.generate(["x"], SAMPLING)
    rendered = "".join(traceback.format_exception(info.value))
    assert isinstance(info.value.__cause__, (aiohttp.ClientError, OSError))
    assert SECRET not in rendered


def test_credentials_in_the_url_stay_out_of_messages() -> None:
    url = dead_url().replace("http://", "http://user:hunter2@")
    with OpenAIBackend(url, "m", max_retries=0, **FAST) as b, pytest.raises(BackendError) as info:
        b.generate(["x"], SAMPLING)
    rendered = "".join(traceback.format_exception(info.value))
    assert "hunter2" not in rendered and "hunter2" not in repr(b)
    assert "hunter2" not in "".join(b.base_urls)


def test_credentials_in_the_url_go_as_basic_auth_and_an_echo_is_redacted(fake_lm: FakeLM) -> None:
    url = fake_lm.base_url.replace("http://", "http://user:hunter2@")
    token = base64.b64encode(b"user:hunter2").decode()
    events: list[tuple[str, Any]] = []
    with OpenAIBackend(url, "fake-model", on_event=lambda k, p: events.append((k, p)), **FAST) as b:
        b.generate(["x"], SAMPLING)
        assert fake_lm.headers[-1]["Authorization"] == f"Basic {token}"
        fake_lm.fail_next(503, body=f"bad auth: Basic {token} (user:hunter2)")
        b.generate(["y"], SAMPLING)
        fake_lm.fail_next(400, body=f"bad auth: Basic {token} (user:hunter2)")
        with pytest.raises(BackendError) as info:
            b.generate(["z"], SAMPLING)
    shown = str(info.value) + "".join(p.describe() for k, p in events if k == "retry")
    assert "<redacted>" in shown and token not in shown and "hunter2" not in shown


def test_from_options_reads_the_key_from_the_environment(fake_lm: FakeLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "second-choice")
    monkeypatch.setenv("SELFINSTRUCT_API_KEY", SECRET)
    options = BackendOptions(base_url=fake_lm.base_url, concurrency=3, seed=5)
    with OpenAIBackend.from_options(options) as b:
        assert (b.model, b.concurrency, b.seed) == ("fake-model", 3, 5)
        b.generate(["x"], SAMPLING)
    assert fake_lm.headers[-1]["Authorization"] == f"Bearer {SECRET}"


def test_without_a_key_no_authorization_header(fake_lm: FakeLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("SELFINSTRUCT_API_KEY", raising=False)
    with OpenAIBackend.from_options(BackendOptions(base_url=fake_lm.base_url)) as b:
        b.generate(["x"], SAMPLING)
    assert "Authorization" not in fake_lm.headers[-1]


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://host:8000/v1", "http://host:8000/v1"),
        ("http://host:8000/v1/", "http://host:8000/v1"),
        ("http://host:8000", "http://host:8000/v1"),
        ("http://host:8000/", "http://host:8000/v1"),
        ("  HTTPS://host/api/v1  ", "https://host/api/v1"),
        ("http://127.0.0.1:11434/v1", "http://127.0.0.1:11434/v1"),
    ],
)
def test_base_url_normalisation(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("host:8000/v1", "needs a scheme"),
        ("ftp://host/v1", "http:// or https://"),
        ("http:///v1", "no host"),
        ("http://host:8000/v1?x=1", "query"),
        ("http://host:8000/v1/completions", "not the /completions endpoint"),
        ("http://user:pw@host:99999/v1", "not a valid URL"),
    ],
)
def test_bad_base_urls_are_config_errors(given: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        normalize_base_url(given)


@pytest.mark.parametrize(
    "kwargs",
    [{"concurrency": 0}, {"timeout": 0}, {"timeout": float("nan")}, {"timeout": float("inf")}, {"max_retries": -1}],
)
def test_bad_numbers_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        OpenAIBackend("http://127.0.0.1:1/v1", "m", **kwargs)


def test_close_releases_the_clients_and_the_thread(fake_lm: FakeLM) -> None:
    b = backend(fake_lm)
    b.close()
    assert all(s.closed for e in b._endpoints for s in (e.session, e.metrics))
    assert not b._thread.is_alive()
    b.close()  # twice is fine


# -- chat ------------------------------------------------------------------------------------------


def test_chat_prompts_go_to_the_chat_endpoint_as_messages(fake_lm: FakeLM) -> None:
    from selfinstruct.engines.chat import user_chat

    with backend(fake_lm) as b:
        out = b.generate(
            [user_chat("Hi there", system="Be brief."), "plain text"], Sampling(max_tokens=50, stop=("!",))
        )
    assert out[0].text == "echo: Be brief.\n\nHi there" and out[0].finish_reason == "stop"
    assert out[1].text == "echo: plain text"
    (chat,) = fake_lm.chat_requests
    assert chat["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert "prompt" not in chat and chat["stop"] == ["!"] and chat["max_tokens"] == 50
    assert [r["prompt"] for r in fake_lm.requests] == ["plain text"]


def test_a_prefilled_reply_is_sent_to_be_continued(fake_lm: FakeLM) -> None:
    from selfinstruct.engines.chat import ChatMessage, user_chat

    prefilled = (ChatMessage("user", "List four."), ChatMessage("assistant", "1. One\n2. Two\n3."))
    with backend(fake_lm) as b:
        b.generate([prefilled, user_chat("Hi")], SAMPLING)
    continued, answered = sorted(fake_lm.chat_requests, key=lambda body: len(body["messages"]), reverse=True)
    assert continued["messages"][-1] == {"role": "assistant", "content": "1. One\n2. Two\n3."}
    assert continued["continue_final_message"] is True and continued["add_generation_prompt"] is False
    assert "continue_final_message" not in answered and "add_generation_prompt" not in answered


@pytest.mark.parametrize(
    ("owner", "models", "expected"),
    [("vllm", ["fake-model"], True), ("openai", ["fake-model"], False), ("fakelm", ["a", "b"], False)],
)
def test_can_continue_reply_only_on_a_vllm_server(owner: str, models: list[str], expected: bool) -> None:
    with FakeLM(owned_by=owner, models=models) as lm, backend(lm, model=models[0]) as b:
        assert b.can_continue_reply() is expected
        assert b.can_continue_reply() is expected  # asked once
        assert [entry[:2] for entry in lm.log].count(("GET", "/v1/models")) == 1


def test_can_continue_reply_is_no_when_the_server_cannot_say() -> None:
    with FakeLM(owned_by="vllm") as lm, backend(lm, max_retries=5) as b:
        lm.fail_next(500)
        assert b.can_continue_reply() is False
        assert b.retries == 0


def test_chat_reply_with_null_content_is_an_empty_completion() -> None:
    from selfinstruct.engines.chat import user_chat

    with FakeLM(respond=lambda prompt, body: (None, "stop")) as lm, backend(lm) as b:  # type: ignore[arg-type,return-value]
        (out,) = b.generate([user_chat("Hi")], SAMPLING)
    assert out.text == "" and out.finish_reason == "stop"


@pytest.mark.parametrize(
    "reply",
    [
        '{"choices": [{"index": 0, "text": "completion-shaped"}]}',
        '{"choices": [{"index": 0, "message": "not an object"}]}',
        '{"choices": [{"index": 0, "message": {"role": "assistant", "content": 7}}]}',
    ],
)
def test_malformed_chat_choice_is_a_backend_error(reply: str) -> None:
    from fakelm import Fault

    from selfinstruct.engines.chat import user_chat

    def respond(prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        raise Fault(200, reply)

    with FakeLM(respond=respond) as lm, backend(lm, max_retries=0) as b, pytest.raises(BackendError, match="malformed"):
        b.generate([user_chat("Hi")], SAMPLING)


@pytest.mark.parametrize(
    ("apis", "expected"),
    [(("completions", "chat"), "completions"), (("chat",), "chat"), (("completions",), "completions")],
)
def test_detect_api(apis: tuple[str, ...], expected: str) -> None:
    with FakeLM(apis=apis) as lm, backend(lm) as b:
        api, why = b.detect_api()
    assert api == expected
    assert ("refused" in why) is (expected == "chat")


def test_detect_api_does_not_retry_and_a_broken_server_means_completions() -> None:
    with FakeLM() as lm, backend(lm, max_retries=5) as b:
        lm.fail_next(500)
        api, why = b.detect_api()
        assert api == "completions" and "failed" in why
        assert b.retries == 0


def test_detect_api_reads_a_chat_model_message_on_a_400() -> None:
    from fakelm import Fault

    def respond(prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        raise Fault(
            400, '{"error": {"message": "This model does not support the Completions API; use chat completions"}}'
        )

    with FakeLM(respond=respond) as lm, backend(lm) as b:
        assert b.detect_api()[0] == "chat"


# -- hostile replies: compressed bombs, a wrong endpoint among several ---------------------------------------


class RawServer:
    """A loopback HTTP server that answers every request with fixed status, headers and raw body bytes."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        import http.server
        import threading

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path.endswith("/metrics"):  # the pacer's looks at the server's load
                    outer.metrics_requests += 1
                else:
                    outer.requests += 1
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.requests = 0
        self.metrics_requests = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_compressed_reply_is_bounded_while_it_is_inflated(coding: str) -> None:
    import gzip
    import tracemalloc
    import zlib

    inner = b'{"choices": [{"index": 0, "text": "' + b"a" * 60_000_000 + b'", "finish_reason": "stop"}]}'
    body = gzip.compress(inner, 9) if coding == "gzip" else zlib.compress(inner, 9)
    assert len(body) < 200_000  # ~60 MB inflated from a body of this size
    with RawServer(200, body, {"Content-Type": "application/json", "Content-Encoding": coding}) as server:
        tracemalloc.start()
        try:
            with OpenAIBackend(server.base_url, "m", **FAST) as b:
                (out,) = b.generate(["x"], Sampling(max_tokens=100))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert out == Completion("", "length", cut=True)
    assert peak < 20_000_000, peak  # the reply limit for 100 tokens is ~1.1 MB; never the 60 MB


def test_a_small_compressed_reply_is_read() -> None:
    import gzip

    inner = b'{"choices": [{"index": 0, "text": "hello", "finish_reason": "stop"}]}'
    with (
        RawServer(200, gzip.compress(inner), {"Content-Encoding": "gzip"}) as server,
        OpenAIBackend(server.base_url, "m", **FAST) as b,
    ):
        assert b.generate(["x"], SAMPLING) == [Completion("hello", "stop")]


def test_an_encoding_we_did_not_ask_for_is_a_retried_failure() -> None:
    server = RawServer(200, b"\x00\x01garbage", {"Content-Encoding": "br"})
    with server, OpenAIBackend(server.base_url, "m", max_retries=1, **FAST) as b, pytest.raises(BackendError) as info:
        b.generate(["x"], SAMPLING)
    assert "Content-Encoding: br" in str(info.value) and server.requests == 2


def test_one_endpoint_answering_404_among_several_is_dropped_and_the_others_go_on(fake_lm: FakeLM) -> None:
    events: list[tuple[str, Any]] = []
    with RawServer(404, b'{"error": {"message": "no such route \\u001b[2J [/]"}}', {}) as wrong:
        urls = [wrong.base_url, fake_lm.base_url]
        with OpenAIBackend(urls, "fake-model", max_retries=0, on_event=lambda k, p: events.append((k, p)), **FAST) as b:
            out = b.generate([f"p{i}" for i in range(12)], SAMPLING)
        assert wrong.requests >= 1
    assert all(o.text for o in out) and len(fake_lm.log) == 12
    down = [p for k, p in events if k == "endpoint_down"]
    assert len(down) == 1 and "HTTP 404" in down[0] and f"dropped {wrong.base_url}" in down[0]
    assert "\x1b" not in down[0]


def test_a_404_from_the_only_endpoint_is_still_an_error() -> None:
    with RawServer(404, b'{"error": {"message": "not found"}}', {}) as wrong:
        with OpenAIBackend([wrong.base_url], "m", max_retries=3, **FAST) as b, pytest.raises(BackendError, match="404"):
            b.generate(["x"], SAMPLING)
        assert wrong.requests == 1


def test_a_model_id_with_escape_sequences_is_refused() -> None:
    listing = json.dumps({"data": [{"id": "evil\x1b]0;pwned\x07"}]}).encode()
    server = RawServer(200, listing, {"Content-Type": "application/json"})
    with server, pytest.raises(ConfigError, match="control characters or escape sequences") as info:
        OpenAIBackend(server.base_url, None, **FAST)
    assert "\x1b" not in str(info.value) and "\x07" not in str(info.value)


# -- pacing: each endpoint's limit follows its server ------------------------------------------------------

PACE = PacingSettings(interval=0.05, initial=4)


def fixed_tokens(n: int) -> Any:
    return lambda prompt, body: (f"echo: {prompt}", n)


def drain(stream: OpenAIStream, n: int, seconds: float = 30.0, during: Any = None) -> int:
    """Poll until ``n`` completions arrived (bounded in time); ``during(got)`` runs after each poll."""
    got = 0
    deadline = time.monotonic() + seconds
    while got < n and time.monotonic() < deadline:
        got += len(stream.poll(0.05))
        if during is not None:
            during(got)
    return got


@pytest.mark.slow
def test_limit_grows_while_the_server_has_room_and_shrinks_when_its_metrics_show_waiting() -> None:
    with (
        BatchLM(fixed_tokens(5), max_num_seqs=16, step_base=0.01, step_per_seq=0.0) as lm,
        OpenAIBackend(lm.base_url, "stand-in", pacing=PACE, **FAST) as b,
    ):
        stream = b.stream()
        for k in range(400):
            stream.submit(Request(k, f"p{k}", SAMPLING, k))
        pacer = b._endpoints[0].pacer
        seen: dict[str, int] = {}

        def other_client(got: int) -> None:
            # Once the limit has found the engine, another client's queue appears, then goes away.
            if "grown" not in seen and pacer.limit >= 16 and pacer.counts["waiting"] == 0:
                seen["grown"] = pacer.limit
                lm.phantom_waiting = 200
            elif "grown" in seen and "shrunk" not in seen and pacer.counts["waiting"]:
                seen["shrunk"] = pacer.limit
                lm.phantom_waiting = 0

        assert drain(stream, 400, during=other_client) == 400
        stats = b.endpoint_stats()[b.base_url]
    assert seen["shrunk"] <= seen["grown"] // 2  # one look halves it at most, and it did
    assert pacer.counts["start"] >= 2 and pacer.counts["waiting"] >= 1
    assert lm.max_queued <= 400  # the client never sent everything at once
    assert stats["signals"] == "metrics" and stats["mean_running"] > 0 and stats["peak_waiting"] >= 200
    assert stats["limit_changes"]["waiting"] >= 1 and lm.metrics_reads >= 3


@pytest.mark.slow
def test_the_servers_queue_stays_short_without_another_client() -> None:
    with (
        BatchLM(fixed_tokens(10), max_num_seqs=16, step_base=0.005, step_per_seq=0.0) as lm,
        OpenAIBackend(lm.base_url, "stand-in", pacing=PACE, **FAST) as b,
    ):
        stream = b.stream()
        for k in range(600):
            stream.submit(Request(k, f"p{k}", SAMPLING, k))
        assert drain(stream, 600) == 600
        limit = b._endpoints[0].pacer.limit
    # The engine runs 16: the limit settles near that plus a short queue, nowhere near the 600 submitted.
    assert 16 <= limit <= 16 * 2
    assert lm.max_queued < 100


def test_without_metrics_503_replies_shrink_the_limit_and_every_request_still_completes() -> None:
    with BatchLM(fixed_tokens(3), max_num_seqs=4, step_base=0.005, metrics=False, max_waiting=4) as lm:
        settings = PacingSettings(interval=0.05, initial=32)
        with OpenAIBackend(lm.base_url, "stand-in", pacing=settings, max_retries=60, **FAST) as b:
            out = b.generate(prompts(120), SAMPLING)
            pacer = b._endpoints[0].pacer
            loads = b.endpoint_loads()
    assert [c.text for c in out] == [f"echo: {p}" for p in prompts(120)]
    assert lm.refused[503] > 0 and pacer.counts["overload"] >= 1
    assert pacer.signals == "replies" and pacer.limit < 32
    assert loads[0].running is None and loads[0].signals == "replies"


def test_fakelm_has_no_metrics_so_pacing_goes_by_replies(fake_lm: FakeLM) -> None:
    with backend(fake_lm, pacing=PACE) as b:
        b.generate(prompts(5), SAMPLING)
        deadline = time.monotonic() + 5
        while b._endpoints[0].pacer.has_metrics is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert b._endpoints[0].pacer.signals == "replies"
    assert fake_lm.metrics_reads >= 1
    assert all(path != "/metrics" for _, path, _ in fake_lm.log)


def test_capacity_sums_the_limits_of_live_endpoints() -> None:
    with (
        BatchLM() as one,
        BatchLM() as two,
        OpenAIBackend([one.base_url, two.base_url], "stand-in") as b,
    ):
        stream = b.stream()
        assert stream.capacity() == 128 and stream.max_capacity() == 2 * 4096
        b._endpoints[1].cooldown_until = time.monotonic() + 60  # failing: not counted
        assert stream.capacity() == 64
        b._endpoints[0].cooldown_until = time.monotonic() + 60  # all failing: all counted
        assert stream.capacity() == 128
        with OpenAIBackend([one.base_url, two.base_url], "stand-in", concurrency=5) as b:
            assert (b.capacity(), b.max_capacity()) == (10, 10)


def test_server_priority_sends_each_requests_priority_and_a_priority_server_runs_low_numbers_first() -> None:
    with (
        BatchLM(fixed_tokens(4), max_num_seqs=1, step_base=0.01, priority_scheduling=True) as lm,
        OpenAIBackend(lm.base_url, "stand-in", server_priority=True, concurrency=40, **FAST) as b,
    ):
        stream = b.stream()
        for k in range(20):
            stream.submit(Request(k, f"p{k}", SAMPLING, k, priority=2 if k < 15 else 0))
        assert drain(stream, 20) == 20
    # One sequence at a time: whatever was there first runs first, then the five priority-0 requests jump the
    # fifteen priority-2 ones that were queued before them.
    first_zero = lm.priorities.index(0)
    assert first_zero <= 2 and lm.priorities[first_zero : first_zero + 5] == [0] * 5


def test_without_server_priority_no_priority_is_sent() -> None:
    with BatchLM(fixed_tokens(1)) as lm, OpenAIBackend(lm.base_url, "stand-in", **FAST) as b:
        stream = b.stream()
        stream.submit(Request(0, "p", SAMPLING, 0, priority=2))
        assert drain(stream, 1) == 1
    assert lm.refused == {} and lm.priorities == [0]


def test_server_priority_against_a_server_without_priority_scheduling_says_how_to_fix_it() -> None:
    with (
        BatchLM(fixed_tokens(1)) as lm,
        OpenAIBackend(lm.base_url, "stand-in", server_priority=True, **FAST) as b,
        pytest.raises(BackendError, match=r"scheduling-policy priority.*--server-priority"),
    ):
        stream = b.stream()
        stream.submit(Request(0, "p", SAMPLING, 0, priority=2))
        drain(stream, 1)


# -- proxies: read from the environment once per endpoint -------------------------------------------------


@pytest.mark.parametrize(
    ("env", "url", "want"),
    [
        ({}, "http://gpu:8000/v1", (None, None)),
        ({"HTTP_PROXY": "http://proxy:3128"}, "http://gpu:8000/v1", ("http://proxy:3128", None)),
        ({"http_proxy": "proxy:3128"}, "http://gpu:8000/v1", ("http://proxy:3128", None)),
        ({"HTTP_PROXY": "http://proxy:3128"}, "https://api.example/v1", (None, None)),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://api.example/v1", ("http://proxy:3128", None)),
        ({"ALL_PROXY": "http://proxy:3128"}, "https://api.example/v1", ("http://proxy:3128", None)),
        ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "gpu,other"}, "http://gpu:8000/v1", (None, None)),
        ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "other"}, "http://gpu:8000/v1", ("http://proxy:3128", None)),
        (
            {"HTTP_PROXY": "http://me:s%40cret@proxy:3128"},
            "http://gpu:8000/v1",
            ("http://proxy:3128", {"Proxy-Authorization": "Basic bWU6c0BjcmV0"}),
        ),
    ],
)
def test_the_proxy_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, want: tuple[Any, Any]
) -> None:
    from selfinstruct.engines.openai import _proxy_for

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _proxy_for(url) == want


def test_no_proxy_means_the_server_is_asked_directly(fake_lm: FakeLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with backend(fake_lm) as b:
        assert len(b.generate(["x"], SAMPLING)) == 1
