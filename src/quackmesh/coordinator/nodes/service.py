"""Node rules: register, heartbeat bookkeeping, flush, offline detection."""

from __future__ import annotations

import logging
import time

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Node, Task
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.nodes.liveness import Beat, Liveness
from quackmesh.coordinator.verify.reputation import Reputation
from quackmesh.core.errors import DevModeOnly, NodeNotFound, ValidationFailed
from quackmesh.core.schemas import NodePublic, NodeRegister, NodeStatus, TaskState

__all__ = [
    "flush_beats",
    "get_node",
    "mark_silent_offline",
    "node_public",
    "register_node",
    "sample_uptime",
]

log = logging.getLogger("quackmesh.coordinator.nodes")


def node_public(node: Node, *, stake: int = 0, rental_id: str | None = None) -> NodePublic:
    """The public view of a node; ``stake`` and ``rental_id`` come from the matching views."""
    rep = Reputation(node.rep_validity, node.rep_timeliness, node.rep_uptime)
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
            "region": node.region,
            "price_per_hour": node.price_per_hour,
            "verifier": node.verifier,
            "stake": stake,
            "rental_id": rental_id,
            "datasets": node.datasets or [],
            "models": node.models or [],
            "reputation": {
                "score": rep.score,
                "validity": round(node.rep_validity, 6),
                "timeliness": round(node.rep_timeliness, 6),
                "uptime": round(node.rep_uptime, 6),
                "results_valid": node.results_valid,
                "results_invalid": node.results_invalid,
            },
        }
    )


def register_node(
    session: Session,
    *,
    address: str,
    body: NodeRegister,
    known_kinds: list[str],
    dev_mode: bool = False,
) -> Node:
    if body.behaviour != "honest" and not dev_mode:
        raise DevModeOnly(
            f"behaviour {body.behaviour!r} is for test networks only (development mode)",
            field="behaviour",
        )
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
        "region": body.region,
        "price_per_hour": body.price_per_hour,
        "behaviour": body.behaviour,
        "datasets": [d.model_dump(mode="json") for d in body.datasets],
        "models": [m.model_dump(mode="json") for m in body.models],
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
    session: Session, liveness: Liveness, beats: dict[str, Beat], *, lease_s: float, now: float
) -> None:
    """Write the latest beat per node, extend the leases it holds, queue cancellations.

    Lock order matches ``report`` (job, task, then node): task rows first, taken with SKIP
    LOCKED (a task being reported right now needs no extension), node rows last, sorted.
    A few statements per flush, however many nodes beat.
    """
    if not beats:
        return
    running = {task_id: address for address, beat in beats.items() for task_id in beat.running}
    if running:
        rows = session.execute(
            select(Task.id, Task.node, Task.state).where(Task.id.in_(running))
        ).all()
        held = {
            task_id
            for task_id, node, state in rows
            if state == TaskState.LEASED.value and node == running[task_id]
        }
        lockable = select(Task.id).where(Task.id.in_(held)).with_for_update(skip_locked=True)
        to_extend = list(session.scalars(lockable)) if held else []
        if to_extend:
            session.execute(
                update(Task)
                .where(Task.id.in_(to_extend), Task.state == TaskState.LEASED.value)
                .values(lease_expires_at=now + lease_s)
                .execution_options(synchronize_session=False)
            )
        for address, beat in beats.items():
            liveness.put_cancel(address, [t for t in beat.running if t not in held])
    known = dict(
        session.execute(select(Node.address, Node.status).where(Node.address.in_(beats))).all()
    )
    changes = []
    for address in sorted(known):
        beat = beats[address]
        status = NodeStatus.DRAINING if beat.draining else NodeStatus.ONLINE
        if known[address] != status.value:
            emit(session, f"node.{status.value}", node=address, at=beat.at)
        changes.append({"address": address, "status": status.value, "last_seen_at": beat.at})
        liveness.set_status(address, status)
    if changes:
        session.execute(update(Node), changes)


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


def sample_uptime(session: Session, *, alpha: float) -> None:
    """One uptime sample for every node: 1 if Online now, else 0 (the reputation EWMA)."""
    online = case((Node.status == NodeStatus.ONLINE.value, 1.0), else_=0.0)
    session.execute(
        update(Node).values(rep_uptime=(1.0 - alpha) * Node.rep_uptime + alpha * online)
    )
