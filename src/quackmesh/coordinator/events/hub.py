"""Fan new events out to WebSocket subscribers, in id order, without gaps or duplicates.

One poller per coordinator process reads the rows after the last id it handed out: at
once when this process commits an event (a SQLAlchemy ``after_commit`` hook kicks it),
and every ``events_poll_s`` otherwise, which also picks up what other replicas sharing
the database wrote. Ids are handed out strictly in order. On PostgreSQL a sequence value
can commit after a larger one (or never, on rollback), so a missing id holds the stream
back for up to ``events_gap_grace_s`` before it is given up as rolled back.

Each batch is serialised once per distinct (viewer, filter) group, not once per
subscriber, and put on every subscriber's bounded queue. A subscriber that cannot keep
up is disconnected (close code 1013) instead of slowing the others; it resumes from its
last id like any reconnect.

Handing over from backlog to live: a subscriber registers first and notes the hub's
frontier ``H``; it then reads its backlog (``after < id <= H``) from the database while
live batches (all ``> H``) queue up behind it. Nothing is sent twice and nothing falls
between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from quackmesh.coordinator.db.models import Event
from quackmesh.coordinator.events.service import (
    EMITTED,
    EventFilter,
    event_dict,
    head_id,
    public_view,
)

__all__ = ["EventHub", "Subscriber", "frame"]

log = logging.getLogger("quackmesh.events")

BATCH = 500
QUEUE_FRAMES = 2_000


def frame(events: list[dict[str, Any]]) -> str:
    return json.dumps({"events": events}, separators=(",", ":"))


@dataclass(eq=False)
class Subscriber:
    viewer: str | None
    flt: EventFilter
    queue: asyncio.Queue[str | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_FRAMES)
    )
    overflowed: bool = False
    group: tuple[Any, ...] = ()  # (viewer, filter): subscribers that see the same frames

    def __post_init__(self) -> None:
        self.group = (self.viewer, self.flt.key())


class EventHub:
    def __init__(
        self,
        reads: sessionmaker[Session],
        *,
        poll_s: float,
        gap_grace_s: float,
        idle_poll_s: float = 1.0,
    ) -> None:
        self._reads = reads
        self._poll_s = poll_s
        self._idle_poll_s = max(idle_poll_s, poll_s)
        self._grace = gap_grace_s
        self._subs: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.frontier = 0  # every id <= frontier has been handed out (or given up)
        self._gap_since: float | None = None
        self.delivered = 0  # events handed to the fan-out (for /metrics and tests)
        self._stopping = False

    # --- lifecycle ------------------------------------------------------------------
    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Kick the poller whenever a write session that emitted events commits."""

        def after_commit(session: Session) -> None:
            if session.info.pop(EMITTED, False):
                self.kick()

        def after_rollback(session: Session) -> None:
            session.info.pop(EMITTED, None)

        sa_event.listen(sessions, "after_commit", after_commit)
        sa_event.listen(sessions, "after_soft_rollback", lambda s, _t: after_rollback(s))

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        self._stopping = False
        self.frontier = await asyncio.to_thread(self._head)
        self._task = asyncio.create_task(self._run(self._kick), name="event-hub")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop polling. A database read in flight runs in a thread that cannot be
        cancelled, so it is waited for (bounded): its connection must go back to the pool
        before the engine is disposed, or it would be left open for the collector."""
        self._stopping = True
        if self._kick is not None:
            self._kick.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        for sub in list(self._subs):
            self.close(sub)

    def kick(self) -> None:
        """Thread-safe: look for new events now."""
        loop, kick = self._loop, self._kick
        if loop is None or kick is None or loop.is_closed():
            return
        if _running_loop() is loop:
            kick.set()
        else:
            with contextlib.suppress(RuntimeError):  # loop closing during shutdown
                loop.call_soon_threadsafe(kick.set)

    # --- subscribers ----------------------------------------------------------------
    def subscribe(self, viewer: str | None, flt: EventFilter) -> tuple[Subscriber, int]:
        """Register; returns the subscriber and the frontier its backlog must reach."""
        sub = Subscriber(viewer=viewer, flt=flt)
        self._subs.add(sub)
        if self._kick is not None:
            self._kick.set()  # wake the poller out of its idle interval
        return sub, self.frontier

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def backlog(self, *, viewer: str | None, flt: EventFilter, after: int, upto: int) -> list[str]:
        """Frames for ``after < id <= upto`` (blocking: call in a thread)."""
        frames: list[str] = []
        cursor = after
        while cursor < upto:
            with self._reads() as session:
                stmt = flt.where(select(Event).where(Event.id > cursor, Event.id <= upto))
                rows = list(session.scalars(stmt.order_by(Event.id).limit(BATCH)))
            if not rows:
                break
            frames.append(frame([public_view(event_dict(e), viewer) for e in rows]))
            cursor = rows[-1].id
        return frames

    # --- the poller -----------------------------------------------------------------
    def _head(self) -> int:
        with self._reads() as session:
            return head_id(session)

    def _fetch(self, after: int) -> list[dict[str, Any]]:
        # Plain columns, not ORM objects: this runs up to 20 times a second.
        columns = (Event.id, Event.type, Event.at, Event.job_id, Event.node, Event.address)
        stmt = select(*columns, Event.data).where(Event.id > after).order_by(Event.id)
        with self._reads() as session:
            return [event_dict(r) for r in session.execute(stmt.limit(BATCH))]

    async def _run(self, kick: asyncio.Event) -> None:
        while not self._stopping:
            interval = self._poll_s if self._subs else self._idle_poll_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), interval)
            kick.clear()
            if self._stopping:
                return
            try:
                more = True
                while more:
                    rows = await asyncio.to_thread(self._fetch, self.frontier)
                    ready = self._in_order(rows, now=time.monotonic())
                    if ready:
                        self._fan_out(ready)
                    more = len(rows) == BATCH and bool(ready)
            except Exception:  # a database hiccup must not kill the stream
                log.exception("event fan-out failed; retrying")
                await asyncio.sleep(self._idle_poll_s)

    def _in_order(self, rows: list[dict[str, Any]], *, now: float) -> list[dict[str, Any]]:
        """The prefix of ``rows`` that continues the frontier without a hole."""
        ready: list[dict[str, Any]] = []
        for row in rows:
            if row["id"] != self.frontier + 1:
                if self._gap_since is None:
                    self._gap_since = now
                if now - self._gap_since < self._grace:
                    self._kick_later()
                    break
                log.warning("event ids %d..%d never committed", self.frontier + 1, row["id"] - 1)
            self._gap_since = None
            self.frontier = row["id"]
            ready.append(row)
        return ready

    def _kick_later(self) -> None:
        if self._loop is not None and self._kick is not None:
            self._loop.call_later(self._poll_s, self._kick.set)

    def _fan_out(self, rows: list[dict[str, Any]]) -> None:
        self.delivered += len(rows)
        frames: dict[tuple[Any, ...], str | None] = {}
        for sub in list(self._subs):
            key = sub.group
            if key not in frames:
                visible = [public_view(r, sub.viewer) for r in rows if sub.flt.matches(r)]
                frames[key] = frame(visible) if visible else None
            text = frames[key]
            if text is None:
                continue
            try:
                sub.queue.put_nowait(text)
            except asyncio.QueueFull:
                sub.overflowed = True
                self.close(sub)

    def close(self, sub: Subscriber) -> None:
        """Unsubscribe and wake the subscriber's sender with the end marker."""
        self._subs.discard(sub)
        # Make room for the end marker so the subscriber's sender wakes up and closes.
        while True:
            try:
                sub.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    sub.queue.get_nowait()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
