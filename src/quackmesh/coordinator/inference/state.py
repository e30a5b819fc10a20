"""Everything the inference gateway keeps in memory, owned by one ``Runtime``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from quackmesh.coordinator.inference.broker import Broker
from quackmesh.coordinator.inference.directory import Directory
from quackmesh.coordinator.inference.keys import KeyCache
from quackmesh.coordinator.inference.known import KnownAnswers
from quackmesh.coordinator.ratelimit import RateLimiter
from quackmesh.ledger import Ledger

__all__ = ["InferenceState"]

log = logging.getLogger("quackmesh.coordinator.inference")


@dataclass
class InferenceState:
    broker: Broker = field(default_factory=Broker)
    directory: Directory = field(default_factory=Directory)
    keys: KeyCache = field(default_factory=KeyCache)
    known: KnownAnswers = field(default_factory=KnownAnswers)  # honeypots' known answers
    limiter: RateLimiter = field(
        default_factory=lambda: RateLimiter(rate=200.0, burst=400, name="inference")
    )
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _refused: dict[str, float] = field(default_factory=dict)  # address -> monotonic time
    _refresher: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        # Match waiting nodes as the directory sees them now (rentals, stake, prices).
        self.broker.current = lambda node: self.directory.nodes.get(node.address)

    def start(self, ledger: Ledger, reads: sessionmaker[Session], *, every: float) -> None:
        """Re-read the directory every ``every`` seconds until :meth:`stop`, so what the
        broker matches on is never older than that, busy or idle."""

        async def refresh() -> None:
            while True:
                try:
                    await self.directory.fresh(ledger, reads, since=time.monotonic())
                except Exception:
                    log.exception("reading the serving nodes failed; retrying")
                await asyncio.sleep(every)

        self._refresher = asyncio.get_running_loop().create_task(refresh(), name="directory")

    async def stop(self, timeout: float) -> None:
        """Stop the refresher and the broker; wait for background work (settlements)."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await self.directory.idle(timeout)
        self.broker.close()
        await self.drain(timeout)

    def refused(self, address: str) -> None:
        """``address`` could not pay for a reservation just now."""
        if len(self._refused) > 100_000:
            self._refused.clear()
        self._refused[address] = time.monotonic()

    def refused_recently(self, address: str, *, within: float) -> bool:
        at = self._refused.get(address)
        if at is None:
            return False
        if time.monotonic() - at > within:
            del self._refused[address]
            return False
        return True

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background (settlement, checks); kept until it ends, and
        awaited at shutdown so no reservation is left half-settled."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "inference background task failed",
                exc_info=task.exception(),
                extra={"task": task.get_name()},
            )

    @property
    def background(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for background work, then cancel what is left."""
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
