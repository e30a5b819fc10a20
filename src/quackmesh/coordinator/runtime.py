"""The coordinator's runtime: everything one app instance owns, built by create_app."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from quackmesh.coordinator.nodes.liveness import Liveness
from quackmesh.coordinator.observability import Metrics
from quackmesh.coordinator.ratelimit import RateLimiter
from quackmesh.coordinator.settings import Settings
from quackmesh.coordinator.storage.service import LocalBlobStore
from quackmesh.core.signing import NonceCache
from quackmesh.ledger import SqlLedger

__all__ = ["Runtime", "WorkNotifier"]


class WorkNotifier:
    """Wakes long-polling lease requests when work appears (thread-safe ``notify``)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def notify(self) -> None:
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> None:
        """Wait until notified or ``timeout`` passes (bounded: callers re-check state)."""
        if self._event is None:
            await asyncio.sleep(timeout)
            return
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return
        # Hand the wake-up to every current waiter, then re-arm for the next notify.
        await asyncio.sleep(0)
        event.clear()


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    ledger: SqlLedger
    blobs: LocalBlobStore
    metrics: Metrics
    secret: bytes
    nonces: NonceCache
    liveness: Liveness
    submit_limiter: RateLimiter
    read_limiter: RateLimiter
    notifier: WorkNotifier = field(default_factory=WorkNotifier)
    started_at: float = field(default_factory=time.time)
    stop: threading.Event = field(default_factory=threading.Event)
