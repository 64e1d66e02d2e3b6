"""Request and token budgets per minute, as token buckets refilled continuously.

Each request waits its turn in one queue (FIFO), so the server sees an even rate rather than
bursts. The budgets follow the server's `x-ratelimit-limit-*` headers when those say less than
the configured values, and a 429 pauses every sender, not only the request that got it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

BURST_S = 0.25  # a full bucket holds a quarter second of budget: smooth, yet absorbs jitter
DEFAULT_PAUSE_S = 1.0  # pause after a 429 that names no wait
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


class TokenBucket:
    """A budget of `per_minute` units, refilled continuously, holding at most BURST_S of it.

    A request larger than the whole bucket may take it when full and leave it in debt, so a
    large request is delayed, never refused.
    """

    def __init__(self, per_minute: float, now: float) -> None:
        self.per_minute = float(per_minute)
        self.level = self.capacity
        self.stamp = now

    @property
    def rate(self) -> float:
        """Units per second."""
        return self.per_minute / 60.0

    @property
    def capacity(self) -> float:
        return max(self.rate * BURST_S, 1.0)

    def refill(self, now: float) -> None:
        if now > self.stamp:  # a paused bucket's stamp lies in the future
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` (capped at the capacity) is available; 0 when it is."""
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)


class RateBudget:
    """Requests-per-minute and tokens-per-minute budgets shared by all senders of a run."""

    def __init__(self, rpm: float, tpm: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        now = clock()
        self.requests = TokenBucket(rpm, now)
        self.tokens = TokenBucket(tpm, now)
        self.paused_until = now
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
        self.requests.refill(now)
        self.tokens.refill(now)
        pause = max(0.0, self.paused_until - now)
        return max(pause, self.requests.wait_for(1), self.tokens.wait_for(tokens))

    def take(self, tokens: int) -> None:
        """Charge one request costing `tokens` to both budgets."""
        self.requests.level -= 1
        self.tokens.level -= tokens

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of `tokens` fits both budgets, then charge it."""
        async with self._turn:  # one waiter at a time: FIFO and evenly spaced
            while (wait := self.delay(tokens)) > 0:
                await asyncio.sleep(wait)
            self.take(tokens)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Lower the budgets to the server's `x-ratelimit-limit-*` values when they are less."""
        for bucket, name in ((self.requests, "requests"), (self.tokens, "tokens")):
            limit = _number(headers.get(f"x-ratelimit-limit-{name}"))
            if limit and limit < bucket.per_minute:
                bucket.per_minute = limit
                bucket.level = min(bucket.level, bucket.capacity)

    def pause(self, seconds: float) -> None:
        """After a 429: every sender waits `seconds`, and the buckets restart empty."""
        now = self.clock()
        self.paused_until = max(self.paused_until, now + seconds)
        for bucket in (self.requests, self.tokens):
            bucket.refill(now)
            bucket.level = min(bucket.level, 0.0)
            bucket.stamp = max(bucket.stamp, self.paused_until)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait a 429 or 503 asks for, in seconds: `retry-after-ms`, `retry-after` (seconds or
    an HTTP date), else the longest `x-ratelimit-reset-*`; None when none is given."""
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
    resets = [
        parse_duration(headers[h])
        for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if h in headers
    ]
    resets = [r for r in resets if r is not None]
    return max(resets) if resets else None


def parse_duration(text: str) -> float | None:
    """Seconds in an OpenAI reset duration such as `20ms`, `1.5s`, `6m0s`, `1h2m3s`."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return _number(text)
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
