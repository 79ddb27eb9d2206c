"""Client-side rate limits for one model endpoint: adaptive concurrency plus rpm/tpm token buckets.

Concurrency follows AIMD: a 429 halves the allowed calls in flight (at most once per second, so a burst of
429s from one overload counts once), and every `limit` successes raise it by one, up to the configured
maximum. The buckets refill continuously; a call takes one request and its estimated tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pipeline.config import Limits


class TokenBucket:
    """`per_minute` units per minute, refilled continuously; capacity one minute's worth."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self.level = float(per_minute)
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now

    async def take(self, amount: float) -> None:
        """Wait until `amount` units are available, then take them (amount is capped at capacity)."""
        amount = min(amount, self.capacity)
        while True:
            self._refill()
            if self.level >= amount:
                self.level -= amount
                return
            await asyncio.sleep((amount - self.level) / self.rate_per_s)


class AdaptiveLimiter:
    """Concurrency cap that backs off on 429s, plus optional rpm/tpm buckets. One per endpoint per loop.

    Waiting calls queue FIFO and each freed slot is handed to exactly one of them: waking every waiter on
    every release (a Condition's notify_all) costs O(waiters) per call, which with thousands of queued
    calls took more event-loop time than the HTTP calls themselves.
    """

    def __init__(self, limits: Limits) -> None:
        self.max_limit = limits.max_concurrent
        self.limit = limits.max_concurrent
        self.in_flight = 0
        self._successes = 0
        self._last_decrease = 0.0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._rpm = TokenBucket(limits.rpm) if limits.rpm else None
        self._tpm = TokenBucket(limits.tpm) if limits.tpm else None

    @asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[None]:
        """Hold one concurrency slot (and rpm/tpm capacity) for the duration of an attempt."""
        await self._acquire()
        try:
            if self._rpm is not None:
                await self._rpm.take(1)
            if self._tpm is not None:
                await self._tpm.take(tokens)
            yield
        finally:
            self.in_flight -= 1
            self._hand_over()

    async def _acquire(self) -> None:
        if not self._waiters and self.in_flight < self.limit:
            self.in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _hand_over counts us into in_flight before it wakes us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Granted a slot, then cancelled before using it: pass the slot on, or it leaks.
                self.in_flight -= 1
                self._hand_over()
            elif waiter in self._waiters:  # _hand_over may already have dropped it as done
                self._waiters.remove(waiter)
            raise

    def _hand_over(self) -> None:
        # Single-threaded (one event loop): no lock needed between the check and the grant.
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def on_rate_limited(self) -> None:
        """Multiplicative decrease after a 429."""
        now = time.monotonic()
        if now - self._last_decrease >= 1.0:
            self.limit = max(1, self.limit // 2)
            self._last_decrease = now
            self._successes = 0

    async def on_success(self) -> None:
        """Additive increase: +1 after `limit` successes in a row."""
        if self.limit >= self.max_limit:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit = min(self.max_limit, self.limit + 1)
            self._hand_over()
