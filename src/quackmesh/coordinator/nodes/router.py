"""Node endpoints: register, heartbeat (write-behind), read."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Node
from quackmesh.coordinator.deps import RuntimeDep, Signer
from quackmesh.coordinator.nodes.liveness import Beat
from quackmesh.coordinator.nodes.service import get_node, node_public, register_node
from quackmesh.coordinator.scheduler.views import node_views
from quackmesh.core.schemas import (
    HeartbeatCreate,
    HeartbeatPublic,
    NodePublic,
    NodeRegister,
    NodeStatus,
)
from quackmesh.workloads import list_kinds
from quackmesh.workloads.registry import PROTOCOL_KINDS

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


@router.post("/register", response_model=NodePublic)
def register(body: NodeRegister, signer: Signer, rt: RuntimeDep) -> NodePublic:
    """Register (or re-register) the signing address as a provider node."""
    with rt.sessions.begin() as session:
        node = register_node(
            session,
            address=signer,
            body=body,
            known_kinds=[*list_kinds(), *PROTOCOL_KINDS],
            dev_mode=rt.settings.dev_mode,
        )
        session.flush()
        public = _public(rt, session, [node])[0]
    rt.liveness.set_status(signer, NodeStatus.ONLINE)
    return public


def _load_status(rt: RuntimeDep, address: str) -> None:
    with rt.reads() as session:
        node = get_node(session, address)
        rt.liveness.set_status(address, NodeStatus(node.status))


@router.post("/heartbeat", response_model=HeartbeatPublic)
async def heartbeat(body: HeartbeatCreate, signer: Signer, rt: RuntimeDep) -> HeartbeatPublic:
    """Record liveness in memory; the sweeper flushes it to the database in batches."""
    if not rt.liveness.known(signer):
        await run_in_threadpool(_load_status, rt, signer)  # 404 if never registered
    now = time.time()
    status, cancel = rt.liveness.beat(
        signer, Beat(at=now, running=tuple(body.running), draining=body.draining)
    )
    rt.metrics.heartbeats.inc()
    return HeartbeatPublic(server_time=now, status=status, cancel=cancel)


@router.get("", response_model=list[NodePublic])
def list_nodes(
    rt: RuntimeDep, status: NodeStatus | None = None, limit: int = 500
) -> list[NodePublic]:
    """Public list of nodes (the marketplace view grows from this)."""
    with rt.reads() as session:
        stmt = select(Node).order_by(Node.registered_at).limit(max(1, min(limit, 5000)))
        if status is not None:
            stmt = stmt.where(Node.status == status.value)
        return _public(rt, session, list(session.scalars(stmt)))


@router.get("/{address}", response_model=NodePublic)
def read_node(address: str, rt: RuntimeDep) -> NodePublic:
    with rt.reads() as session:
        return _public(rt, session, [get_node(session, address)])[0]


def _public(rt: RuntimeDep, session: Session, nodes: list[Node]) -> list[NodePublic]:
    views = node_views(rt.ledger, session, nodes)
    return [
        node_public(n, stake=views[n.address].stake, rental_id=views[n.address].rental_id)
        for n in nodes
    ]
