"""The rate budget: continuous token buckets, header-driven limits, a global pause on 429."""

from __future__ import annotations

import asyncio

import pytest

from instructgen.client.limiter import BURST_S, RateBudget, parse_duration, retry_after_s


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reset_durations_in_openai_notation_are_seconds():
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1.5s") == pytest.approx(1.5)
    assert parse_duration("6m0s") == pytest.approx(360)
    assert parse_duration("1h2m3s") == pytest.approx(3723)
    assert parse_duration("0.25") == pytest.approx(0.25)
    assert parse_duration("soon") is None


def test_retry_after_prefers_milliseconds_then_seconds_then_reset_headers():
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "1"}) == pytest.approx(0.25)
    assert retry_after_s({"retry-after": "2"}) == pytest.approx(2)
    resets = {"x-ratelimit-reset-requests": "120ms", "x-ratelimit-reset-tokens": "1s"}
    assert retry_after_s(resets) == pytest.approx(1.0)
    assert retry_after_s({}) is None


def test_a_full_bucket_lets_a_quarter_second_of_requests_through_then_paces_evenly():
    clock = FakeClock()
    budget = RateBudget(rpm=6000, tpm=10**9, clock=clock)  # 100 requests per second
    burst = int(100 * BURST_S)
    for _ in range(burst):
        assert budget.delay(1) == 0
        budget.take(1)
    assert budget.delay(1) == pytest.approx(0.01)
    clock.now += 0.01
    assert budget.delay(1) == pytest.approx(0.0)


def test_token_budget_delays_a_request_by_its_token_cost():
    clock = FakeClock()
    budget = RateBudget(rpm=10**6, tpm=60_000, clock=clock)  # 1,000 tokens per second
    budget.take(250)  # empties the quarter-second bucket
    assert budget.delay(100) == pytest.approx(0.1)


def test_a_request_larger_than_the_bucket_waits_for_a_full_bucket_then_goes():
    clock = FakeClock()
    budget = RateBudget(rpm=10**6, tpm=60_000, clock=clock)
    assert budget.delay(5_000) == 0  # delayed, never refused
    budget.take(5_000)
    assert budget.delay(1) == pytest.approx(4.751)


def test_server_limit_headers_lower_the_budget_but_never_raise_it():
    budget = RateBudget(rpm=5000, tpm=450_000)
    budget.observe({"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "900000"})
    assert budget.rpm == 500
    assert budget.tpm == 450_000


def test_a_429_pauses_every_sender_and_restarts_from_an_empty_bucket():
    clock = FakeClock()
    budget = RateBudget(rpm=6000, tpm=10**9, clock=clock)
    budget.pause(2.0)
    assert budget.delay(1) == pytest.approx(2.0)
    clock.now += 2.0
    assert budget.delay(1) == pytest.approx(0.01)  # no burst right after the pause


def test_acquire_spaces_requests_at_the_configured_rate():
    async def send(n: int) -> float:
        budget = RateBudget(rpm=1200, tpm=10**9)  # 20 per second, burst of 5
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(budget.acquire(1) for _ in range(n)))
        return loop.time() - start

    elapsed = asyncio.run(send(25))
    assert elapsed == pytest.approx((25 - 5) / 20, abs=0.15)
