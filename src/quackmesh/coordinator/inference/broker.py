"""The inference broker: hands requests to serving nodes that long-poll for them.

In memory, on the coordinator's event loop (one process; nothing here is thread-safe or
shared between replicas). Two sides meet here:

* a serving node's ``POST /v1/inference/lease`` parks a :class:`Waiter` (one per
  long-poll; a node with several slots polls several times);
* a gateway request becomes a :class:`Pending`. :meth:`Broker.submit` hands it at once to
  the best idle waiter that may take it — cheapest price first, then the lowest observed
  time to first chunk (an EWMA per node and model), then the best reputation — by
  resolving that waiter's future, so the node's long-poll answers in the same loop
  iteration. With no idle node the request queues per model; the next node that polls
  for the model takes the oldest request it may serve.

A handed-out request is an :class:`Attempt`: a work id, a one-time token (the capability
for the answer stream) and a queue the stream endpoint feeds with the node's chunks.
Whoever runs the request (``dispatch.py``) reads that queue with its own timeouts and
closes the attempt when done; a stream that arrives for a closed attempt is refused, which
tells the node to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from quackmesh.coordinator.inference.directory import ServingNode
from quackmesh.core.ids import new_id
from quackmesh.core.inference_schemas import InferenceChunk, InferenceWork

__all__ = [
    "Attempt",
    "Broker",
    "Op",
    "Pending",
    "StreamEnd",
    "Waiter",
    "fits",
    "price_for",
    "rank_key",
]

Op = Literal["embed", "chat", "complete"]
RECENTLY_CLOSED = 10_000  # closed work ids remembered, so a late stream gets a clear 409


@dataclass(frozen=True)
class StreamEnd:
    """The answer stream ended without a ``done`` or ``error`` line (``reason`` says how)."""

    reason: str


Item = InferenceChunk | StreamEnd


@dataclass(eq=False)
class Attempt:
    """One request handed to one node."""

    work: InferenceWork
    node: ServingNode
    price: int  # what the node charges for it (see price_for), as it was when it polled
    handed_at: float  # perf_counter
    chunks: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    streaming: bool = False  # a stream connection is attached (only one may be)
    closed: bool = False  # the runner is done with it: further lines are refused


@dataclass(eq=False)
class Pending:
    """A request waiting for a node; ``future`` resolves to the attempt that took it."""

    model: str
    op: Op
    input: dict[str, Any]
    stream: bool
    deadline_s: float
    payer: str | None  # whose rental may serve it (None: only nodes outside rentals)
    price_cap: int | None  # nodes asking more are not used (None: any price)
    excluded: frozenset[str]
    min_stake: int = 0  # a node needs this effective stake to take it
    only: str | None = None  # only this node may take it (a honeypot for that node)
    future: asyncio.Future[Attempt] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    queued_at: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Waiter:
    """A node's long-poll; ``future`` resolves to the attempt handed to it."""

    node: ServingNode
    models: frozenset[str]
    future: asyncio.Future[Attempt | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def price_for(node: ServingNode, model: str) -> int:
    """What ``node`` charges for ``model``: 0 inside a rental (its renter pays by the hour,
    as for tasks), else its advertised price."""
    return 0 if node.rental_client is not None else node.models[model].price


def fits(node: ServingNode, pending: Pending) -> bool:
    """Whether ``node`` may take ``pending`` (serves it, not excluded, stake, rental, price)."""
    if pending.model not in node.models or node.address in pending.excluded:
        return False
    if pending.only is not None and node.address != pending.only:
        return False
    if not node.eligible(min_stake=pending.min_stake, payer=pending.payer):
        return False
    return pending.price_cap is None or price_for(node, pending.model) <= pending.price_cap


def rank_key(node: ServingNode, model: str, latency_ms: float | None) -> tuple[Any, ...]:
    """Routing order: price, then observed time to first chunk (unknown counts as 0, so a
    new node gets tried), then reputation (higher first), then the address (stable)."""
    return (price_for(node, model), latency_ms or 0.0, -node.reputation, node.address)


class Broker:
    """``current`` maps a waiting node to what the directory knows of it now (``None``: it
    may not serve at the moment), so a rental, a slash or a price change made while the
    node long-polls applies to the next match, not to its next poll."""

    def __init__(self, current: Callable[[ServingNode], ServingNode | None] | None = None) -> None:
        self.current: Callable[[ServingNode], ServingNode | None] = current or (lambda n: n)
        self._waiters: list[Waiter] = []  # idle long-polls, oldest first
        self._queues: dict[str, deque[Pending]] = {}
        self._attempts: dict[str, Attempt] = {}
        self._closed_ids: OrderedDict[str, None] = OrderedDict()
        self._latency: dict[tuple[str, str], float] = {}
        self.closed = False

    # --- observations ----------------------------------------------------------------

    def latency(self, node: str, model: str) -> float | None:
        return self._latency.get((node, model))

    def observe(self, node: str, model: str, ms: float, *, alpha: float) -> None:
        """One time-to-first-chunk sample (failures count as the timeout they hit)."""
        old = self._latency.get((node, model))
        self._latency[(node, model)] = ms if old is None else (1 - alpha) * old + alpha * ms

    def idle(self, model: str | None = None) -> int:
        """Idle long-polls (for ``model``, or any)."""
        return sum(
            1 for w in self._waiters if not w.future.done() and (model is None or model in w.models)
        )

    def queued(self, model: str) -> int:
        return sum(1 for p in self._queues.get(model, ()) if not p.future.done())

    # --- the request side --------------------------------------------------------------

    def _hand(self, pending: Pending, node: ServingNode) -> Attempt:
        work = InferenceWork(
            id=new_id("work"),
            token=secrets.token_urlsafe(24),
            model=pending.model,
            op=pending.op,
            input=pending.input,
            stream=pending.stream,
            deadline_s=pending.deadline_s,
        )
        attempt = Attempt(
            work=work,
            node=node,
            price=price_for(node, pending.model),
            handed_at=time.perf_counter(),
        )
        self._attempts[work.id] = attempt
        return attempt

    def submit(self, pending: Pending) -> Attempt | None:
        """Hand ``pending`` to the best idle node now, or queue it (then ``None``)."""
        if self.closed:
            return None
        best: Waiter | None = None
        best_node: ServingNode | None = None
        best_key: tuple[Any, ...] = ()
        for waiter in self._waiters:
            if waiter.future.done() or pending.model not in waiter.models:
                continue
            node = self.current(waiter.node)
            if node is None or not fits(node, pending):
                continue
            key = rank_key(node, pending.model, self.latency(node.address, pending.model))
            if best is None or key < best_key:
                best, best_node, best_key = waiter, node, key
        if best is None or best_node is None:
            self._queues.setdefault(pending.model, deque()).append(pending)
            return None
        self._waiters.remove(best)
        attempt = self._hand(pending, best_node)
        best.future.set_result(attempt)
        return attempt

    async def wait(self, pending: Pending, timeout: float) -> Attempt | None:
        """The attempt that took a queued ``pending``, or ``None`` after ``timeout``."""
        if pending.future.done():
            return None if pending.future.cancelled() else pending.future.result()
        await asyncio.wait({pending.future}, timeout=timeout)
        if pending.future.done() and not pending.future.cancelled():
            return pending.future.result()
        pending.future.cancel()
        queue = self._queues.get(pending.model)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(pending)
            if not queue:
                del self._queues[pending.model]
        return None

    # --- the node side -----------------------------------------------------------------

    def _take_queued(self, node: ServingNode, models: Iterable[str]) -> Attempt | None:
        current = self.current(node)
        if current is None:
            return None
        node = current
        chosen: Pending | None = None
        for model in models:
            queue = self._queues.get(model)
            if not queue:
                continue
            while queue and queue[0].future.done():
                queue.popleft()  # given up on
            for pending in queue:
                if pending.future.done() or not fits(node, pending):
                    continue
                if chosen is None or pending.queued_at < chosen.queued_at:
                    chosen = pending
                break  # the oldest this node may take in this model's queue
        if chosen is None:
            return None
        self._queues[chosen.model].remove(chosen)
        attempt = self._hand(chosen, node)
        chosen.future.set_result(attempt)
        return attempt

    async def lease(
        self,
        node: ServingNode,
        models: Iterable[str],
        *,
        wait_s: float,
        gone: asyncio.Future[Any] | None = None,
    ) -> Attempt | None:
        """Work for ``node`` on ``models``: queued work now, else whatever is handed to it
        within ``wait_s``; ``None`` when nothing came, or ``gone`` (the poller's
        disconnect) completed first."""
        served = [m for m in dict.fromkeys(models) if m in node.models]
        if self.closed or not served:
            return None
        attempt = self._take_queued(node, served)
        if attempt is not None or wait_s <= 0:
            return attempt
        waiter = Waiter(node=node, models=frozenset(served))
        self._waiters.append(waiter)
        try:
            watched: set[asyncio.Future[Any]] = {waiter.future}
            if gone is not None:
                watched.add(gone)
            await asyncio.wait(watched, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # No await from here on: a request cannot be handed to this waiter meanwhile.
            if not waiter.future.done():
                waiter.future.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        if waiter.future.cancelled():
            return None
        return waiter.future.result()

    def evict(self, address: str) -> None:
        """Drop a node's idle long-polls (it was slashed below the stake, or went away)."""
        for waiter in [w for w in self._waiters if w.node.address == address]:
            self._waiters.remove(waiter)
            if not waiter.future.done():
                waiter.future.set_result(None)

    # --- attempts ----------------------------------------------------------------------

    def attempt(self, work_id: str) -> Attempt | None:
        return self._attempts.get(work_id)

    def was_closed(self, work_id: str) -> bool:
        return work_id in self._closed_ids

    def close_attempt(self, attempt: Attempt) -> None:
        attempt.closed = True
        if self._attempts.pop(attempt.work.id, None) is not None:
            self._closed_ids[attempt.work.id] = None
            while len(self._closed_ids) > RECENTLY_CLOSED:
                self._closed_ids.popitem(last=False)

    def close(self) -> None:
        """Shutting down: every long-poll answers ``null``, every queued request gives up."""
        self.closed = True
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_result(None)
        self._waiters.clear()
        for queue in self._queues.values():
            for pending in queue:
                pending.future.cancel()
        self._queues.clear()
        for attempt in list(self._attempts.values()):
            attempt.chunks.put_nowait(StreamEnd("the coordinator is shutting down"))
