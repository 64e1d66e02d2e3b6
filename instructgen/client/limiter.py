"""Request and token budgets per minute, paced as providers count them: per second.

A provider that states 6,000 requests per minute may count them as 100 in each second (OpenAI
documents such quantization), so the client never spends a minute's budget in a burst. Each
budget is a token bucket refilled continuously at PACE of its rate, starting empty: the server
sees an even rate. The bucket holds BURST_S of budget, so that a sender woken late (a busy
event loop) catches up, but never more than PACE of a second's budget goes out within any one
second: no one-second window, however aligned, receives more than its share. Every request
waits its turn in one queue (FIFO).

The budgets follow the server's `x-ratelimit-limit-*` headers when those say less than the
configured values. A 429 is told apart by its headers: one that shows budget left (a stray one)
is retried alone; one that shows the budget spent (by us or another process) pauses every
sender for its Retry-After. When 429s are many among the recent answers, whatever the headers
say, the pace drops too, and then climbs back slowly.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

PACE = 0.98  # send at 98% of a budget: no one-second window sees more than its share, jitter too
BURST_S = 0.25  # a full bucket holds a quarter second of budget, to catch up after a late wake-up
WINDOW_S = 1.0  # ... within a second's share in any window of this length
DEFAULT_PAUSE_S = 1.0  # pause after a 429 that shows the budget spent but names no wait
SLOWDOWN = 0.8  # many 429s lower the pace by 20% (at most once a second) ...
RECOVERY_PER_S = 0.02  # ... which climbs back by 2% of the budget per second
MIN_PACE_FACTOR = 0.1
CROWDED_429_SHARE = 0.05  # 5 of the last 100 answers were 429s: the budget is spent, whatever
RECENT_ANSWERS = 100  # the headers say (a provider may report a minute's remaining budget)


class TokenBucket:
    """A budget of `per_minute` units, refilled continuously at `scale` of its rate from empty,
    holding at most BURST_S of it, and spending at most a second's rate within WINDOW_S.

    A request larger than the whole bucket (or window) may take it when full (or empty) and
    leave it in debt, so a large request is delayed, never refused.
    """

    def __init__(self, per_minute: float, now: float) -> None:
        self.per_minute = float(per_minute)
        self.scale = PACE
        self.level = 0.0
        self.stamp = now
        self.spent: deque[tuple[float, float]] = deque()  # (time, amount) within WINDOW_S
        self.spent_sum = 0.0
        self.now = now

    @property
    def rate(self) -> float:
        """Units per second actually sent."""
        return self.per_minute / 60.0 * self.scale

    @property
    def capacity(self) -> float:
        return max(self.rate * BURST_S, 1.0)

    def refill(self, now: float) -> None:
        if now > self.stamp:  # a paused bucket's stamp lies in the future
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now
        while self.spent and self.spent[0][0] <= now - WINDOW_S:
            self.spent_sum -= self.spent.popleft()[1]
        self.now = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` (capped at the capacity) is available and fits the window's
        share; 0 when it is."""
        wait = max(0.0, (min(amount, self.capacity) - self.level) / self.rate)
        share = max(self.rate * WINDOW_S, 1.0)
        excess = self.spent_sum + min(amount, share) - share
        for stamp, spent in self.spent:
            if excess <= 1e-9:
                break
            excess -= spent
            wait = max(wait, stamp + WINDOW_S - self.now)
        return wait

    def take(self, amount: float) -> None:
        """Charge `amount`, after `refill`."""
        self.level -= amount
        self.spent.append((self.now, amount))
        self.spent_sum += amount


class RateBudget:
    """Requests-per-minute and tokens-per-minute budgets shared by all senders of a run."""

    def __init__(self, rpm: float, tpm: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        now = clock()
        self.requests = TokenBucket(rpm, now)
        self.tokens = TokenBucket(tpm, now)
        self.paused_until = now
        self.factor = 1.0  # share of PACE sent at: lowered when 429s are many, then recovering
        self.factor_stamp = now
        self.last_slowdown = now - 1.0
        self.recent: deque[bool] = deque(maxlen=RECENT_ANSWERS)  # True: a rate-limit 429
        self.closed = False
        self._turn = asyncio.Lock()

    @property
    def rpm(self) -> float:
        return self.requests.per_minute

    @property
    def tpm(self) -> float:
        return self.tokens.per_minute

    def delay(self, tokens: int) -> float:
        """Seconds until one request costing `tokens` may be sent; 0 when it may now."""
        now = self.clock()
        self._recover(now)
        self.requests.refill(now)
        self.tokens.refill(now)
        pause = max(0.0, self.paused_until - now)
        return max(pause, self.requests.wait_for(1), self.tokens.wait_for(tokens))

    def take(self, tokens: int) -> None:
        """Charge one request costing `tokens` to both budgets."""
        self.requests.take(1)
        self.tokens.take(tokens)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of `tokens` fits both budgets, then charge it; once the
        budget is closed, return at once."""
        async with self._turn:  # one waiter at a time: FIFO and evenly spaced
            while not self.closed and (wait := self.delay(tokens)) > 0:
                await asyncio.sleep(min(wait, 0.5))  # wake twice a second to see a close
            self.take(tokens)

    def close(self) -> None:
        """No more sending: every waiter returns at once (the run is stopping)."""
        self.closed = True

    def observe(self, headers: Mapping[str, str]) -> None:
        """After an answer that is not a 429: lower the budgets to the server's
        `x-ratelimit-limit-*` values when they are less."""
        self.recent.append(False)
        self._follow_limits(headers)

    def refused(self, headers: Mapping[str, str], tokens: int, wait: float) -> bool:
        """After a rate-limit 429 of a request costing `tokens`: True when it shows the budget
        spent, or 429s are many, and then every sender pauses `wait` seconds (and when many,
        the pace drops); False when it is a stray one, to be retried alone."""
        self.recent.append(True)
        self._follow_limits(headers)
        crowded = sum(self.recent) >= CROWDED_429_SHARE * RECENT_ANSWERS
        if not (crowded or budget_spent(headers, tokens)):
            return False
        now = self.clock()
        self.paused_until = max(self.paused_until, now + wait)
        if crowded and now - self.last_slowdown >= 1.0:  # one slowdown for a volley of 429s
            self.last_slowdown = now
            self._set_factor(max(MIN_PACE_FACTOR, self.factor * SLOWDOWN), now)
        return True

    def _follow_limits(self, headers: Mapping[str, str]) -> None:
        for bucket, name in ((self.requests, "requests"), (self.tokens, "tokens")):
            limit = _number(headers.get(f"x-ratelimit-limit-{name}"))
            if limit and limit < bucket.per_minute:
                bucket.per_minute = limit
                bucket.level = min(bucket.level, bucket.capacity)

    def _recover(self, now: float) -> None:
        if self.factor < 1.0:
            self._set_factor(
                min(1.0, self.factor + RECOVERY_PER_S * (now - self.factor_stamp)), now
            )
        self.factor_stamp = now

    def _set_factor(self, factor: float, now: float) -> None:
        self.factor, self.factor_stamp = factor, now
        for bucket in (self.requests, self.tokens):
            bucket.scale = PACE * factor


def budget_spent(headers: Mapping[str, str], tokens: int) -> bool:
    """Whether a 429's `x-ratelimit-remaining-*` headers show no room for a request of
    `tokens`; False when they show room, or are absent."""
    requests = _number(headers.get("x-ratelimit-remaining-requests"))
    left = _number(headers.get("x-ratelimit-remaining-tokens"))
    return (requests is not None and requests < 1) or (left is not None and left < tokens)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait a 429 or 503 asks for, in seconds: `retry-after-ms`, else `retry-after`
    (seconds or an HTTP date); None when none is given. `x-ratelimit-reset-*` are not waits:
    they tell when a budget is full again (a minute, for a per-minute one)."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000
    value = headers.get("retry-after")
    if value:
        seconds = _number(value)
        if seconds is not None:
            return seconds
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    return None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
