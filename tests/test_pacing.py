"""The pacing controller: reading /metrics, and how each endpoint's limit moves on the server's signals."""

from __future__ import annotations

import pytest

from selfinstruct.engines.pacing import (
    EndpointLoad,
    Pacer,
    PacingSettings,
    ServerLoad,
    metrics_url,
    parse_metrics,
)

VLLM_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 200.0
vllm:num_requests_running{engine="1",model_name="m"} 56.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="1",model_name="m"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.81
vllm:num_preemptions_total{engine="0",model_name="m"} 2.0
vllm:num_preemptions_total{engine="1",model_name="m"} 1.0
vllm:generation_tokens_total{engine="0",model_name="m"} 123456.0
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="m"} 0.0
"""


# -- reading /metrics --------------------------------------------------------------------------------


def test_vllm_page_sums_engines_and_takes_the_fullest_cache() -> None:
    assert parse_metrics(VLLM_PAGE) == ServerLoad(running=256, waiting=7, kv_usage=0.81, preemptions=3.0)


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        # vLLM before V1: the cache gauge had another name
        ("vllm:num_requests_running 4\nvllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc 0.5\n",
         ServerLoad(4, 0, 0.5, None)),
        # SGLang
        ('sglang:num_running_reqs{tp_rank="0"} 12\nsglang:num_queue_reqs{tp_rank="0"} 5\nsglang:token_usage 0.3\n',
         ServerLoad(12, 5, 0.3, None)),
        # only one of the two counts
        ("vllm:num_requests_waiting 9\n", ServerLoad(0, 9, None, None)),
        # label values with spaces, braces and escaped quotes; a timestamp after the value
        ('vllm:num_requests_running{model_name="a } \\" b"} 7 1712000000000\nvllm:num_requests_waiting 1\n',
         ServerLoad(7, 1, None, None)),
        # garbage values and lines are skipped; NaN and infinities do not count
        ("vllm:num_requests_running NaN\nvllm:num_requests_running +Inf\nvllm:num_requests_running 2\n"
         "vllm:num_requests_waiting{broken 3\nvllm:num_requests_waiting abc\nvllm:num_requests_waiting 0\n",
         ServerLoad(2, 0, None, None)),
        # a cache usage outside 0..1 is clamped
        ("vllm:num_requests_running 1\nvllm:kv_cache_usage_perc 7\n", ServerLoad(1, 0, 1.0, None)),
    ],
)  # fmt: skip
def test_parse_metrics_variants(page: str, expected: ServerLoad) -> None:
    assert parse_metrics(page) == expected


@pytest.mark.parametrize(
    "page",
    ["", "<html><body>Not Found</body></html>", '{"detail":"Not Found"}', "# only comments\n", "process_cpu 3\n"],
)
def test_a_page_without_request_counts_is_no_metrics(page: str) -> None:
    assert parse_metrics(page) is None


@pytest.mark.parametrize(
    ("root", "url"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/metrics"),
        ("http://host:8000/v1/", "http://host:8000/metrics"),
        ("https://gw.example/llm/v1", "https://gw.example/llm/metrics"),
        ("http://host:8000/api", "http://host:8000/api/metrics"),
    ],
)
def test_metrics_url(root: str, url: str) -> None:
    assert metrics_url(root) == url


# -- the controller, with metrics ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pacer(**settings: float) -> Pacer:
    return Pacer(PacingSettings(**settings), clock=Clock())  # type: ignore[arg-type]


def test_starts_at_the_initial_limit_and_grows_by_half_while_binding_and_nothing_waits() -> None:
    p = pacer()
    assert p.limit == 64
    p.note_in_flight(64)
    decision = p.on_metrics(ServerLoad(running=64, waiting=0, kv_usage=0.2), in_flight=64)
    assert decision is not None and (decision.before, decision.after, decision.reason) == (64, 96, "start")
    assert p.signals == "metrics"


def test_does_not_grow_when_the_limit_is_not_what_holds_requests_back() -> None:
    p = pacer()
    assert p.on_metrics(ServerLoad(running=10, waiting=0), in_flight=10) is None
    assert p.limit == 64


@pytest.mark.parametrize(
    ("load", "grows"),
    [
        (ServerLoad(64, 0, 0.5), True),
        (ServerLoad(64, 0, None), True),  # a server that does not report its cache
        (ServerLoad(64, 0, 0.97), False),  # the cache is full: more would only wait or preempt
        (ServerLoad(64, 2, 0.5), False),  # something waits, within the headroom: hold
    ],
)
def test_growth_needs_an_empty_queue_and_room_in_the_cache(load: ServerLoad, grows: bool) -> None:
    p = pacer()
    p.on_metrics(load, in_flight=64)
    assert (p.limit > 64) is grows


def test_waiting_beyond_the_headroom_on_two_looks_shrinks_by_the_excess_and_ends_the_start() -> None:
    p = pacer(initial=300)
    # 256 run, 44 of ours wait; the headroom at 256 running is 13: 31 too many. One look could be a burst
    # of arrivals between two engine steps: it holds (no growth either).
    assert p.on_metrics(ServerLoad(running=256, waiting=44), in_flight=300) is None
    assert p.limit == 300 and p.starting
    decision = p.on_metrics(ServerLoad(running=256, waiting=44), in_flight=300)
    assert decision is not None and decision.reason == "waiting"
    assert p.limit == 300 - 31 - (300 - 300)  # no drain yet: the limit was what was in flight
    assert not p.starting
    # growth after the start is additive: the headroom, not a factor
    p.on_metrics(ServerLoad(running=256, waiting=0), in_flight=p.limit)
    assert p.limit == 269 + 13


def test_a_burst_seen_on_one_look_only_changes_nothing() -> None:
    p = pacer(initial=100)
    p.on_metrics(ServerLoad(running=60, waiting=70), in_flight=100)
    p.on_metrics(ServerLoad(running=100, waiting=0), in_flight=100)
    p.on_metrics(ServerLoad(running=60, waiting=70), in_flight=100)
    assert p.counts["waiting"] == 0 and p.limit == 150  # it grew on the look without a queue


def test_after_another_clients_queue_is_gone_the_limit_returns_half_the_way_per_look() -> None:
    p = pacer(initial=300)
    p.on_metrics(ServerLoad(running=256, waiting=13), in_flight=300)  # the engine runs 256: seen
    for _ in range(9):  # another client's 500 waiting: halved on every look from the second
        p.on_metrics(ServerLoad(running=256, waiting=500), in_flight=p.limit)
    assert p.limit < 10
    limits = []
    for _ in range(6):  # gone: nothing waits, the limit binds
        p.on_metrics(ServerLoad(running=p.limit, waiting=0), in_flight=p.limit)
        limits.append(p.limit)
    assert limits[0] > 100 and limits[2] > 220  # half the way back to 256 + 13 per look, not 4 at a time
    assert 0 < limits[-1] - limits[-2] <= 14  # past the engine's size: a short queue's worth (5%) per look


def test_a_shrink_is_at_most_by_half_even_when_another_client_floods_the_server() -> None:
    p = pacer(initial=200)
    p.on_metrics(ServerLoad(running=256, waiting=5000), in_flight=200)
    p.on_metrics(ServerLoad(running=256, waiting=5000), in_flight=200)
    assert p.limit == 100


def test_requests_draining_after_a_cut_are_not_counted_twice() -> None:
    p = pacer(initial=512)
    p.on_metrics(ServerLoad(running=256, waiting=256), in_flight=512)
    p.on_metrics(ServerLoad(running=256, waiting=256), in_flight=512)
    assert p.limit == 269  # 512 - (256 - 13)
    # A second later nothing has finished yet: the same queue is still there, because of our own 512 in
    # flight. Of the 256 waiting, 243 are ours above the new limit: 13 remain, within the headroom.
    assert p.on_metrics(ServerLoad(running=256, waiting=256), in_flight=512) is None
    assert p.limit == 269


def test_preemptions_climbing_shrink_by_a_quarter_but_not_while_a_cut_drains() -> None:
    p = pacer(initial=200)
    p.on_metrics(ServerLoad(running=200, waiting=0, kv_usage=0.99, preemptions=5.0), in_flight=200)
    assert p.limit == 200  # the first total is a baseline; the cache is full, so no growth
    decision = p.on_metrics(ServerLoad(200, 0, 0.99, preemptions=9.0), in_flight=200)
    assert decision is not None and decision.reason == "preemptions" and p.limit == 150
    p.on_metrics(ServerLoad(150, 0, 0.99, preemptions=12.0), in_flight=200)  # still 50 over the limit
    assert p.limit == 150
    assert p.counts == {"preemptions": 1}


def test_a_failed_look_at_a_server_with_metrics_changes_nothing() -> None:
    p = pacer()
    p.on_metrics(ServerLoad(10, 0), in_flight=10)
    assert p.on_metrics(None, in_flight=64) is None
    assert p.signals == "metrics" and p.limit == 64


def test_the_limit_stays_within_floor_and_ceiling() -> None:
    p = pacer(initial=4000)
    for _ in range(5):
        p.on_metrics(ServerLoad(p.limit, 0), in_flight=p.limit)
    assert p.limit == 4096
    for _ in range(40):
        p.on_metrics(ServerLoad(running=10, waiting=10_000), in_flight=0)
    assert p.limit == 1


def test_a_fixed_limit_never_moves_but_still_records_the_load() -> None:
    p = Pacer(fixed=32, clock=Clock())
    assert p.on_metrics(ServerLoad(32, 500), in_flight=32) is None
    assert p.on_interval(32) is None
    p.on_reply(0.0, 0, 429)
    assert p.limit == 32 and p.signals == "fixed"
    assert p.summary()["waiting"] == 500


# -- the controller, without metrics (replies only) ----------------------------------------------------


def test_without_metrics_429_or_503_halve_what_was_sent_once_per_look() -> None:
    p = pacer(initial=100)
    p.on_metrics(None, in_flight=100)  # no metrics: a look by the replies; binding, so it grows
    assert p.signals == "replies" and p.limit == 150
    for _ in range(30):
        p.on_reply(0.0, 0, 503)
    decision = p.on_metrics(None, in_flight=120)
    assert decision is not None and decision.reason == "overload" and p.limit == 60
    assert p.on_metrics(None, in_flight=10) is None  # the next look has no new overload and does not bind


def test_without_metrics_a_latency_jump_while_the_limit_held_halves_what_was_sent() -> None:
    p = pacer(initial=40, latency_min_replies=4)
    p.starting = False

    def look(seconds_per_token: float, in_flight: int) -> None:
        for _ in range(8):
            p.on_reply(seconds_per_token * 50, 50, 200)
        p.on_interval(in_flight)

    look(0.02, 40)  # the trend starts at 0.02 s per token; binding: grows by sqrt(40)
    assert p.limit == 46
    look(0.09, 46)  # slower right after a growth: the batch filling, not a queue; still binding, grows
    assert p.limit > 46 and p.counts["latency"] == 0
    look(0.03, 10)  # not binding: the limit holds
    held = p.limit
    look(0.03, 10)
    assert p.limit == held
    look(0.2, 30)  # more than twice the trend while the limit held: requests queue
    assert p.limit == 15 and p.counts["latency"] == 1


def test_without_metrics_the_blind_ceiling_applies() -> None:
    p = pacer(initial=250)
    p.on_metrics(None, in_flight=250)
    assert p.limit == 256


def test_too_few_replies_say_nothing_about_latency() -> None:
    p = pacer(initial=10)
    p.starting = False
    p.on_reply(1.0, 10, 200)
    p.on_interval(0)
    assert p._latency_trend is None


def test_tokens_per_second_over_the_last_ten_seconds() -> None:
    clock = Clock()
    p = Pacer(clock=clock)
    clock.now += 20
    p.on_reply(1.0, 500, 200)
    clock.now += 5
    p.on_reply(1.0, 500, 200)
    assert p.tokens_per_second() == pytest.approx(100.0)
    clock.now += 8  # the first reply is now 13 s old
    assert p.tokens_per_second() == pytest.approx(50.0)
    assert p.summary()["output_tokens"] == 1000


def test_endpoint_load_describes_without_the_path() -> None:
    load = EndpointLoad("http://10.0.0.5:8000/v1", "metrics", 270, 262, 256, 6, 0.5, 6912.4)
    assert load.describe() == "10.0.0.5:8000 run 256 wait 6 · in flight 262/270 · 6,912 tok/s"
    blind = EndpointLoad("https://api.example/v1", "replies", 64, 3, None, None, None, 0.0)
    assert blind.describe() == "api.example · in flight 3/64 · 0 tok/s"
