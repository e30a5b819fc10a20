"""Who serves what: an in-memory snapshot of the online nodes that advertise models.

The gateway's hot path reads no table: it reads this snapshot, which is re-read from the
database in the background once it is older than ``inference_directory_s``
(stale-while-revalidate). A miss — a model nobody serves, a node not in the snapshot —
waits for a read that started after the request arrived, so a node that registered a
moment ago is found. Eligibility is the scheduler's (see ``scheduler/rules.py``): Online,
and an effective stake of at least ``min_stake``; a node in an active rental serves only
its renter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from quackmesh.coordinator.db.models import Node, Rental, RentalNode
from quackmesh.coordinator.scheduler.views import effective_stakes, node_reputation
from quackmesh.core.schemas import NodeStatus, ServedModel
from quackmesh.ledger import Ledger

__all__ = ["Directory", "ServingNode", "load_serving_nodes"]


@dataclass(frozen=True)
class ServingNode:
    address: str
    stake: int  # effective: staked minus unbonding
    reputation: float  # the 0..1 score shown in the marketplace
    registered_at: float
    rental_client: str | None  # the renter, while an active rental holds the node
    models: Mapping[str, ServedModel] = field(default_factory=dict)

    def eligible(self, *, min_stake: int, payer: str | None) -> bool:
        """May serve ``payer``'s requests (``None``: nobody's rental)?"""
        if self.stake < min_stake:
            return False
        return self.rental_client is None or self.rental_client == payer


def _rental_clients(session: Session, addresses: list[str]) -> dict[str, str]:
    stmt = (
        select(RentalNode.node, Rental.client)
        .join(Rental, Rental.id == RentalNode.rental_id)
        .where(RentalNode.node.in_(addresses), Rental.state == "active")
    )
    return {node: client for node, client in session.execute(stmt)}


def load_serving_nodes(ledger: Ledger, session: Session) -> dict[str, ServingNode]:
    """Online nodes that advertise at least one model (a few queries in all)."""
    rows = [
        n
        for n in session.scalars(select(Node).where(Node.status == NodeStatus.ONLINE.value))
        if n.models
    ]
    if not rows:
        return {}
    addresses = [n.address for n in rows]
    stakes = effective_stakes(ledger, session, addresses)
    rentals = _rental_clients(session, addresses)
    out = {}
    for n in rows:
        models = {}
        for raw in n.models:
            model = ServedModel.model_validate(raw)
            models[model.name] = model
        out[n.address] = ServingNode(
            address=n.address,
            stake=stakes.get(n.address, 0),
            reputation=node_reputation(n).score,
            registered_at=n.registered_at,
            rental_client=rentals.get(n.address),
            models=models,
        )
    return out


class Directory:
    """The snapshot and its refresh (one read in flight at a time, on the event loop)."""

    def __init__(self) -> None:
        self.nodes: dict[str, ServingNode] = {}
        self.started: float = float("-inf")  # monotonic start of the read behind ``nodes``
        self._inflight: asyncio.Task[None] | None = None
        self._inflight_started = float("-inf")

    def _start(self, ledger: Ledger, reads: sessionmaker[Session]) -> asyncio.Task[None]:
        started = time.monotonic()

        def read() -> dict[str, ServingNode]:
            with reads() as session:
                return load_serving_nodes(ledger, session)

        async def run() -> None:
            nodes = await run_in_threadpool(read)
            if started >= self.started:
                self.nodes, self.started = nodes, started

        task = asyncio.get_running_loop().create_task(run())
        self._inflight, self._inflight_started = task, started
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # a failed read is retried by the next call; never unobserved

    async def idle(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for a read in flight: its thread holds a database
        connection, which must be back in the pool before the engine is disposed."""
        task = self._inflight
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)

    async def current(
        self, ledger: Ledger, reads: sessionmaker[Session], *, max_age: float
    ) -> dict[str, ServingNode]:
        """The snapshot now; older than ``max_age`` starts a re-read without waiting for it
        (the very first call waits)."""
        if self.started == float("-inf"):
            return await self.fresh(ledger, reads, since=time.monotonic())
        stale = time.monotonic() - self.started > max_age
        if stale and (self._inflight is None or self._inflight.done()):
            self._start(ledger, reads)
        return self.nodes

    async def fresh(
        self, ledger: Ledger, reads: sessionmaker[Session], *, since: float
    ) -> dict[str, ServingNode]:
        """A snapshot from a read that started at or after ``since`` (monotonic)."""
        while self.started < since:
            task = self._inflight
            if task is not None and not task.done() and self._inflight_started < since:
                with contextlib.suppress(Exception):
                    await asyncio.shield(task)  # an older read lands first, then ours
                continue
            if task is None or task.done():
                task = self._start(ledger, reads)
            await asyncio.shield(task)  # raises if the read failed
        return self.nodes
