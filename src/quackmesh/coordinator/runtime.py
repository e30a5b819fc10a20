"""The coordinator's runtime: everything one app instance owns, built by create_app."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from quackmesh.coordinator.chain.link import ChainLink
from quackmesh.coordinator.events.hub import EventHub
from quackmesh.coordinator.inference.state import InferenceState
from quackmesh.coordinator.nodes.liveness import Liveness
from quackmesh.coordinator.observability import Metrics
from quackmesh.coordinator.ratelimit import RateLimiter
from quackmesh.coordinator.settings import Settings
from quackmesh.coordinator.storage.service import LocalBlobStore
from quackmesh.core.signing import NonceCache
from quackmesh.ledger import SqlLedger

__all__ = ["Runtime", "ValidationCache", "WorkNotifier"]


class WorkNotifier:
    """Wakes long-polling lease requests when work appears (``notify`` is thread-safe).

    Each waiter parks on its own future; ``notify(n)`` wakes the ``n`` oldest, so one new
    task wakes one poller instead of a thundering herd that would all race to claim it.
    Waits are bounded by the caller, so a wake-up that is lost (or goes to a node that
    cannot take the task) costs at most one poll interval.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, n: int = 1) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake(n)
        else:
            loop.call_soon_threadsafe(self._wake, n)

    def notify_all(self) -> None:
        self.notify(1 << 30)

    def _wake(self, n: int) -> None:
        while n > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1

    async def wait(self, timeout: float) -> None:
        """Wait until notified or ``timeout`` passes."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)


class ValidationCache:
    """Remembers the compute units of (kind, input blobs, params) that passed validation.

    Blobs are content-addressed and never change, so a spec that fit its data once always
    will: resubmitting the same data skips re-parsing it. Failures are never cached.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: OrderedDict[str, int] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: str) -> int | None:
        with self._lock:
            units = self._entries.get(key)
            if units is not None:
                self._entries.move_to_end(key)
            return units

    def put(self, key: str, units: int) -> None:
        with self._lock:
            self._entries[key] = units
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]  # read-write: one transaction per state change
    reads: sessionmaker[Session]  # read-only endpoints (never take SQLite's write lock)
    ledger: SqlLedger
    blobs: LocalBlobStore
    metrics: Metrics
    secret: bytes
    nonces: NonceCache
    liveness: Liveness
    submit_limiter: RateLimiter
    read_limiter: RateLimiter
    hub: EventHub
    chain: ChainLink | None = None  # on-chain settlement (issue 7); None with chain = off
    notifier: WorkNotifier = field(default_factory=WorkNotifier)
    validated: ValidationCache = field(default_factory=ValidationCache)
    started_at: float = field(default_factory=time.time)
    stop: threading.Event = field(default_factory=threading.Event)
    # Spot checks and honeypots must be unpredictable to nodes; tests may seed a Random.
    rng: random.Random = field(default_factory=random.SystemRandom)
    last_uptime_sample: float = field(default_factory=time.time)
    inference: InferenceState = field(default_factory=InferenceState)  # the gateway (issue 6)
