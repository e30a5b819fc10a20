"""Read models for matching: a node's effective stake, rental, load and reputation.

Built in bulk (a few queries for any number of nodes) and shared by the scheduler, the
marketplace and ``job explain``, so they all see a node the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Job, Node, Rental, RentalNode, Task, Unbonding
from quackmesh.coordinator.scheduler.rules import NodeView, TaskView
from quackmesh.coordinator.verify.reputation import Reputation
from quackmesh.core.schemas import TaskState
from quackmesh.ledger import Ledger, stake_account
from quackmesh.workloads.registry import required_model

__all__ = [
    "active_rentals",
    "busy_counts",
    "effective_stakes",
    "node_reputation",
    "node_view",
    "node_views",
    "task_view",
    "unbonding_totals",
]


def node_reputation(node: Node) -> Reputation:
    return Reputation(node.rep_validity, node.rep_timeliness, node.rep_uptime)


def unbonding_totals(session: Session, addresses: Iterable[str]) -> dict[str, int]:
    stmt = (
        select(Unbonding.address, func.sum(Unbonding.amount))
        .where(Unbonding.address.in_(list(addresses)), Unbonding.state == "unbonding")
        .group_by(Unbonding.address)
    )
    return {address: int(total or 0) for address, total in session.execute(stmt)}


def effective_stakes(ledger: Ledger, session: Session, addresses: Iterable[str]) -> dict[str, int]:
    """Staked minus unbonding, per address (0 for an address that never staked)."""
    wanted = list(addresses)
    if len(wanted) == 1:
        staked = {wanted[0]: ledger.balance(session, stake_account(wanted[0]))}
    else:
        all_stakes = ledger.balances(session, prefix="stake:")
        staked = {a: all_stakes.get(stake_account(a), 0) for a in wanted}
    unbonding = unbonding_totals(session, wanted)
    return {a: max(0, staked[a] - unbonding.get(a, 0)) for a in wanted}


def active_rentals(session: Session, addresses: Iterable[str]) -> dict[str, str]:
    """node address -> id of the active rental holding it."""
    stmt = (
        select(RentalNode.node, RentalNode.rental_id)
        .join(Rental, Rental.id == RentalNode.rental_id)
        .where(RentalNode.node.in_(list(addresses)), Rental.state == "active")
    )
    return {node: rental for node, rental in session.execute(stmt)}


def busy_counts(session: Session, addresses: Iterable[str]) -> dict[str, int]:
    stmt = (
        select(Task.node, func.count())
        .where(Task.node.in_(list(addresses)), Task.state == TaskState.LEASED.value)
        .group_by(Task.node)
    )
    return {node: int(n) for node, n in session.execute(stmt) if node is not None}


def node_view(node: Node, *, stake: int, busy: int, rental_id: str | None) -> NodeView:
    return NodeView(
        address=node.address,
        status=node.status,
        workloads=frozenset(node.workloads),
        price_per_unit=node.price_per_unit,
        slots=node.slots,
        busy=busy,
        stake=stake,
        reputation=node_reputation(node).score,
        verifier=node.verifier,
        rental_id=rental_id,
        models=frozenset(str(m.get("name")) for m in node.models or []),
    )


def node_views(ledger: Ledger, session: Session, nodes: list[Node]) -> dict[str, NodeView]:
    addresses = [n.address for n in nodes]
    if not addresses:
        return {}
    stakes = effective_stakes(ledger, session, addresses)
    busy = busy_counts(session, addresses)
    rentals = active_rentals(session, addresses)
    return {
        n.address: node_view(
            n,
            stake=stakes[n.address],
            busy=busy.get(n.address, 0),
            rental_id=rentals.get(n.address),
        )
        for n in nodes
    }


def task_view(task: Task, job: Job) -> TaskView:
    return TaskView(
        job_id=job.id,
        kind=task.kind,
        max_price=task.max_price,
        excluded_nodes=frozenset(task.excluded_nodes),
        queued_at=task.queued_at,
        pinned_node=task.pinned_node,
        verifier_only=task.verifier_only,
        min_reputation=task.min_reputation,
        rental_id=task.rental_id,
        model=required_model(task.kind, job.params if task.params is None else task.params),
    )
