"""Node rules: register, heartbeat bookkeeping, flush, offline detection."""

from __future__ import annotations

import logging
import time

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Node, Task
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.nodes.liveness import Beat, Liveness
from quackmesh.core.errors import NodeNotFound, ValidationFailed
from quackmesh.core.schemas import NodePublic, NodeRegister, NodeStatus, TaskState

__all__ = ["flush_beats", "get_node", "mark_silent_offline", "node_public", "register_node"]

log = logging.getLogger("quackmesh.coordinator.nodes")


def node_public(node: Node) -> NodePublic:
    return NodePublic.model_validate(
        {
            "address": node.address,
            "name": node.name,
            "status": node.status,
            "hardware": node.hardware,
            "price_per_unit": node.price_per_unit,
            "slots": node.slots,
            "workloads": node.workloads,
            "registered_at": node.registered_at,
            "last_seen_at": node.last_seen_at,
            "tasks_completed": node.tasks_completed,
            "tasks_failed": node.tasks_failed,
        }
    )


def register_node(
    session: Session, *, address: str, body: NodeRegister, known_kinds: list[str]
) -> Node:
    unknown = sorted(set(body.workloads) - set(known_kinds))
    if unknown:
        raise ValidationFailed(
            f"workloads not known to this coordinator: {', '.join(unknown)}",
            field="workloads",
            known=known_kinds,
        )
    now = time.time()
    node = session.get(Node, address)
    fields = {
        "name": body.name,
        "hardware": body.hardware.model_dump(),
        "price_per_unit": body.price_per_unit,
        "slots": body.slots,
        "workloads": sorted(set(body.workloads)),
        "version": body.version,
        "status": NodeStatus.ONLINE.value,
        "last_seen_at": now,
    }
    if node is None:
        node = Node(address=address, registered_at=now, tasks_completed=0, tasks_failed=0, **fields)
        session.add(node)
        emit(session, "node.registered", node=address, name=body.name)
    else:
        was = node.status
        for key, value in fields.items():
            setattr(node, key, value)
        if was != NodeStatus.ONLINE:
            emit(session, "node.online", node=address)
    return node


def get_node(session: Session, address: str) -> Node:
    node = session.get(Node, address)
    if node is None:
        raise NodeNotFound(f"node {address} is not registered; register first", address=address)
    return node


def flush_beats(
    session: Session, liveness: Liveness, beats: dict[str, Beat], lease_s: float
) -> None:
    """Write the latest beat per node, extend the leases it holds, queue cancellations."""
    if not beats:
        return
    nodes = {n.address: n for n in session.scalars(select(Node).where(Node.address.in_(beats)))}
    for address, beat in beats.items():
        node = nodes.get(address)
        if node is None:
            continue
        new_status = NodeStatus.DRAINING if beat.draining else NodeStatus.ONLINE
        if node.status != new_status:
            emit(session, f"node.{new_status.value}", node=address, at=beat.at)
        node.status = new_status.value
        node.last_seen_at = max(node.last_seen_at, beat.at)
        liveness.set_status(address, new_status)
        if beat.running:
            held = set(
                session.scalars(
                    select(Task.id).where(
                        Task.id.in_(beat.running),
                        Task.node == address,
                        Task.state == TaskState.LEASED.value,
                    )
                )
            )
            if held:
                session.execute(
                    update(Task)
                    .where(Task.id.in_(held), Task.state == TaskState.LEASED.value)
                    .values(lease_expires_at=beat.at + lease_s)
                )
            liveness.put_cancel(address, [t for t in beat.running if t not in held])


def mark_silent_offline(
    session: Session, liveness: Liveness, *, now: float, offline_after: float
) -> list[str]:
    """Nodes silent for longer than ``offline_after`` go Offline; returns their addresses."""
    silent = list(
        session.scalars(
            select(Node).where(
                Node.status != NodeStatus.OFFLINE.value, Node.last_seen_at < now - offline_after
            )
        )
    )
    for node in silent:
        node.status = NodeStatus.OFFLINE.value
        liveness.set_status(node.address, NodeStatus.OFFLINE)
        emit(session, "node.offline", node=node.address, silent_s=round(now - node.last_seen_at, 1))
        log.info("node offline", extra={"node": node.address})
    return [n.address for n in silent]
