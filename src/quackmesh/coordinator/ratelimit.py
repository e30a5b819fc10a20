"""Per-address token buckets; an empty bucket is a 429 with ``Retry-After``."""

from __future__ import annotations

import math
import threading
import time

from quackmesh.core.errors import RateLimited

__all__ = ["RateLimiter"]


class RateLimiter:
    """``rate`` tokens per second refill a bucket of ``burst``; one request takes one."""

    def __init__(self, *, rate: float, burst: int, name: str) -> None:
        self.rate = rate
        self.burst = burst
        self.name = name
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def hit(self, key: str, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), t))
            tokens = min(float(self.burst), tokens + (t - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, t)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise RateLimited(
                    f"too many {self.name} requests from {key}; retry in {wait}s",
                    retry_after=max(1, wait),
                    limit=f"{self.rate}/s burst {self.burst}",
                )
            self._buckets[key] = (tokens - 1.0, t)
            if len(self._buckets) > 100_000:  # forget idle keys; a full bucket is the default
                full = [k for k, (tok, _) in self._buckets.items() if tok >= self.burst - 1]
                for k in full[:50_000]:
                    del self._buckets[k]
