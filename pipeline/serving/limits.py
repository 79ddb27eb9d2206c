"""A per-token rate limit (token bucket) for the prediction API."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

__all__ = ["RateLimiter"]


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """`per_minute` requests per key, with bursts up to `burst` (default: the per-minute figure)."""

    per_minute: float
    burst: float | None = None
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """Take `cost` from `key`'s bucket: 0.0 when allowed, else the seconds to wait before retrying."""
        capacity = self.burst if self.burst is not None else self.per_minute
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(capacity, now))
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return 0.0
            return (cost - bucket.tokens) / rate if rate > 0 else math.inf
