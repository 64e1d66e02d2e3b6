"""The rate budget: paced per second, header-driven limits, stray and budget-spent 429s."""

from __future__ import annotations

import asyncio
import bisect

import pytest

from instructgen.client.limiter import (
    BURST_S,
    PACE,
    RECOVERY_PER_S,
    SLOWDOWN,
    RateBudget,
    budget_spent,
    retry_after_s,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_prefers_milliseconds_then_seconds():
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "1"}) == pytest.approx(0.25)
    assert retry_after_s({"retry-after": "2"}) == pytest.approx(2)
    resets = {"x-ratelimit-reset-requests": "60s", "x-ratelimit-reset-tokens": "1s"}
    assert retry_after_s(resets) is None  # when a budget is full again, not a wait
    assert retry_after_s({}) is None


def send_for(budget: RateBudget, clock: FakeClock, seconds: float) -> list[float]:
    """Send as fast as `budget` allows for `seconds` of fake time; the send times."""
    sent, end = [], clock.now + seconds
    while clock.now < end:
        wait = budget.delay(1)
        if wait > 1e-9:
            clock.now += wait
        else:
            budget.take(1)
            sent.append(clock.now)
    return sent


def busiest_second(sent: list[float]) -> int:
    return max(bisect.bisect_left(sent, t + 1.0) - i for i, t in enumerate(sent))


def test_requests_go_out_evenly_at_pace_from_the_start():
    clock = FakeClock()
    budget = RateBudget(rpm=6000, tpm=10**9, clock=clock)  # 100 requests per second
    sent = send_for(budget, clock, 10.0)
    assert len(sent) == pytest.approx(10 * 100 * PACE, abs=2)
    assert min(b - a for a, b in zip(sent, sent[1:], strict=False)) == pytest.approx(
        1 / (100 * PACE)
    )


def test_no_one_second_window_however_aligned_gets_more_than_pace_of_its_share():
    clock = FakeClock()
    budget = RateBudget(rpm=6000, tpm=10**9, clock=clock)
    sent = send_for(budget, clock, 5.0)
    assert busiest_second(sent) <= round(100 * PACE)


def test_a_sender_woken_late_catches_up_within_the_seconds_share():
    clock = FakeClock()
    budget = RateBudget(rpm=6000, tpm=10**9, clock=clock)
    sent = send_for(budget, clock, 0.8)
    clock.now += 0.2  # the event loop was busy
    woken = clock.now
    sent += send_for(budget, clock, 2.0)
    assert sum(1 for t in sent if t == woken) >= min(0.2, BURST_S) * 100 * PACE - 1  # at once
    assert busiest_second(sent) <= round(100 * PACE)


def test_token_budget_delays_a_request_by_its_token_cost():
    clock = FakeClock()
    budget = RateBudget(rpm=10**6, tpm=60_000, clock=clock)  # 1,000 tokens per second
    assert budget.delay(10) == pytest.approx(10 / (1000 * PACE))  # the buckets start empty
    clock.now += 10.0
    budget.take(budget.delay(0) or budget.tokens.capacity)  # empties the full bucket
    assert budget.delay(10) == pytest.approx(10 / (1000 * PACE))


def test_a_request_larger_than_the_bucket_waits_for_a_full_bucket_then_goes():
    clock = FakeClock()
    budget = RateBudget(rpm=10**6, tpm=60_000, clock=clock)
    clock.now += 10.0
    assert budget.delay(5_000) == 0  # delayed, never refused
    budget.take(5_000)
    debt = 5_000 - budget.tokens.capacity
    assert budget.delay(1) == pytest.approx((debt + 1) / (1000 * PACE))


def test_server_limit_headers_lower_the_budget_but_never_raise_it():
    budget = RateBudget(rpm=5000, tpm=450_000)
    budget.observe({"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "900000"})
    assert budget.rpm == 500
    assert budget.tpm == 450_000


def test_a_429_whose_headers_show_budget_left_is_stray_and_pauses_no_one():
    clock = FakeClock()
    budget = RateBudget(rpm=6000, tpm=10**9, clock=clock)
    left = {"x-ratelimit-remaining-requests": "57", "x-ratelimit-remaining-tokens": "90000"}
    assert not budget.refused(left, tokens=500, wait=2.0)
    assert budget.delay(1) == pytest.approx(1 / (100 * PACE))  # the empty bucket, no pause
    assert budget.requests.rate == pytest.approx(100 * PACE)


@pytest.mark.parametrize(
    "headers",
    [{"x-ratelimit-remaining-requests": "0"}, {"x-ratelimit-remaining-tokens": "300"}],
)
def test_a_429_whose_headers_show_the_budget_spent_pauses_every_sender(headers):
    clock = FakeClock()
    budget = RateBudget(rpm=6000, tpm=10**9, clock=clock)
    assert budget.refused(headers, tokens=500, wait=2.0)
    assert budget.delay(1) == pytest.approx(2.0)
    clock.now += 2.0
    assert budget.delay(1) == 0  # the budget refilled meanwhile, as the server's did


def test_a_volley_of_429s_slows_the_pace_down_once_and_the_pace_climbs_back():
    clock = FakeClock()
    budget = RateBudget(rpm=6000, tpm=10**9, clock=clock)
    for _ in range(10):
        budget.refused({"x-ratelimit-remaining-requests": "0"}, tokens=1, wait=0.1)
    assert budget.requests.rate == pytest.approx(100 * PACE * SLOWDOWN)
    clock.now += 5.0
    budget.delay(1)
    assert budget.requests.rate == pytest.approx(100 * PACE * (SLOWDOWN + 5 * RECOVERY_PER_S))
    clock.now += 60.0
    budget.delay(1)
    assert budget.requests.rate == pytest.approx(100 * PACE)


def test_many_429s_among_recent_answers_mean_a_spent_budget_whatever_the_headers_say():
    budget = RateBudget(rpm=6000, tpm=10**9, clock=FakeClock())
    for _ in range(90):
        budget.observe({})
    strays = [budget.refused({}, tokens=1, wait=1.0) for _ in range(5)]
    assert strays == [False, False, False, False, True]


def test_budget_spent_reads_the_remaining_headers():
    assert budget_spent({"x-ratelimit-remaining-requests": "0"}, tokens=10)
    assert budget_spent({"x-ratelimit-remaining-tokens": "9"}, tokens=10)
    assert not budget_spent({"x-ratelimit-remaining-requests": "3"}, tokens=10)
    assert not budget_spent({}, tokens=10)


def test_acquire_spaces_requests_at_the_configured_rate():
    async def send(n: int) -> float:
        budget = RateBudget(rpm=1200, tpm=10**9)  # 20 per second
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(budget.acquire(1) for _ in range(n)))
        return loop.time() - start

    elapsed = asyncio.run(send(25))
    assert elapsed == pytest.approx(25 / (20 * PACE), abs=0.15)
