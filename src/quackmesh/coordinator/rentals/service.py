"""Rental rules. Each public function is one state change in the caller's transaction.

Money flow of a rental (all in micro-DUCK, see DESIGN.md "Money")::

    rent        wallet:<client>     -> escrow:rental:<id>   cost = ⌈hours × Σ price_per_hour⌉
    settle      escrow:rental:<id>  -> wallet:<provider>    earned − fee, per node, each period
                escrow:rental:<id>  -> treasury             fee = earned × fee_bps / 10⁴
    end/cancel  escrow:rental:<id>  -> wallet:<client>      whatever is left (refund)

Accrual. A rented node earns its ``price_per_hour`` for every second it is online. The
sweeper settles a rental every ``rental_settle_s`` (a minute by default), so a provider is
never owed more than one period's pay; a cancel and the end of the rental settle at once.
At each settlement a node's part of the window ``[settled_at, min(now, ends_at)]`` is
billed up to ``last_seen_at + offline_after_s``: a node that goes silent stops earning
when the coordinator declares it offline (detection lags its last heartbeat by
``offline_after_s``, so a vanished node is paid for at most that much silence). A node
seen draining takes no new work and earns nothing for that period. The granularity is one
settle period: the coordinator keeps a node's last heartbeat, not its outage history, so
a node that drops out and comes back between two settlements is billed for the period.

Each node's billable time is kept as a running total and the amount owed is
``⌊online_ms × price_per_hour / 3.6·10⁶⌋ − paid``: integer maths on the cumulative total,
so rounding never drifts however many periods a rental lasts, and the total never exceeds
the escrow (which is the same formula over the whole rental, rounded up). Times compare at
millisecond resolution, the resolution the money maths uses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Literal, cast

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Node, Rental, RentalNode
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.scheduler.views import active_rentals, effective_stakes, node_reputation
from quackmesh.core.errors import InvalidState, NodeNotFound, NotFound, ValidationFailed
from quackmesh.core.ids import new_id, normalize_address
from quackmesh.core.money import format_duck
from quackmesh.core.schemas import NodeStatus, RentalCreate, RentalNodePublic, RentalPublic
from quackmesh.ledger import rental_escrow_account

__all__ = [
    "RentalState",
    "cancel_rental",
    "create_rental",
    "earned",
    "get_owned_rental",
    "list_rentals",
    "quote_rental",
    "rental_cost",
    "rental_public",
    "rental_publics",
    "require_rental",
    "settle_rentals",
]

RentalState = Literal["active", "ended", "cancelled"]
ACTIVE: RentalState = "active"  # escrowed and running; its nodes take only its tasks
ENDED: RentalState = "ended"  # reached ends_at: settled in full, the rest refunded
CANCELLED: RentalState = "cancelled"  # stopped early by the client: settled to then, refunded

MS_PER_HOUR = 3_600_000
EPSILON_S = 0.001  # times compare at millisecond resolution, like the money maths


def rental_cost(prices: Iterable[int], hours: float) -> int:
    """``⌈hours × Σ prices⌉`` micro-DUCK, the rental's length taken to the millisecond."""
    duration_ms = round(hours * MS_PER_HOUR)
    return -(-duration_ms * sum(prices) // MS_PER_HOUR)


def earned(online_s: float, price_per_hour: int) -> int:
    """What ``online_s`` seconds at ``price_per_hour`` earn in total, rounded down."""
    return round(online_s * 1000) * price_per_hour // MS_PER_HOUR


def gpu_count(node: Node) -> int:
    gpus = node.hardware.get("gpus") if isinstance(node.hardware, dict) else None
    return len(gpus) if isinstance(gpus, list) else 0


# --- reads ------------------------------------------------------------------------------


def rental_publics(session: Session, rentals: Sequence[Rental]) -> list[RentalPublic]:
    """Public views of ``rentals`` with their nodes (one query for all of them)."""
    members: dict[str, list[RentalNode]] = defaultdict(list)
    if rentals:
        stmt = (
            select(RentalNode)
            .where(RentalNode.rental_id.in_([r.id for r in rentals]))
            .order_by(RentalNode.node)
        )
        for member in session.scalars(stmt):
            members[member.rental_id].append(member)
    return [
        RentalPublic(
            id=r.id,
            client=r.client,
            state=cast(RentalState, r.state),
            hours=r.hours,
            price_per_hour=r.price_per_hour,
            escrowed=r.escrowed,
            paid=r.paid,
            fee=r.fee,
            refunded=r.refunded,
            started_at=r.started_at,
            ends_at=r.ends_at,
            ended_at=r.ended_at,
            nodes=[
                RentalNodePublic(
                    node=m.node,
                    price_per_hour=m.price_per_hour,
                    online_s=round(m.online_s, 3),
                    paid=m.paid,
                )
                for m in members[r.id]
            ],
        )
        for r in rentals
    ]


def rental_public(session: Session, rental: Rental) -> RentalPublic:
    return rental_publics(session, [rental])[0]


def get_owned_rental(
    session: Session, rental_id: str, client: str, *, for_update: bool = False
) -> Rental:
    stmt = select(Rental).where(Rental.id == rental_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    rental = session.scalars(stmt).first()
    # Someone else's rental answers exactly like a missing one: ids are not an oracle.
    if rental is None or rental.client != client:
        raise NotFound(f"no rental {rental_id} of yours", rental_id=rental_id)
    return rental


def list_rentals(
    session: Session, *, client: str, state: RentalState | None = None, limit: int = 50
) -> list[Rental]:
    stmt = select(Rental).where(Rental.client == client)
    if state is not None:
        stmt = stmt.where(Rental.state == state)
    return list(session.scalars(stmt.order_by(Rental.started_at.desc()).limit(limit)))


def require_rental(session: Session, *, rental_id: str, owner: str, now: float) -> Rental:
    """The rental a job is submitted on: ``owner``'s, active and not past its end."""
    rental = get_owned_rental(session, rental_id, owner)
    if rental.state != ACTIVE or now >= rental.ends_at:
        state = rental.state if rental.state != ACTIVE else ENDED
        raise InvalidState(
            f"rental {rental_id} is {state}: jobs run only on an active rental",
            rental_id=rental_id,
            state=state,
        )
    return rental


# --- create -----------------------------------------------------------------------------


def _unrentable(
    node: Node, *, stake: int, min_stake: int, rented_by: str | None
) -> tuple[str, str] | None:
    """``(reason, message)`` when ``node`` cannot be rented now, else ``None``."""
    if node.status != NodeStatus.ONLINE.value:
        return node.status, f"is {node.status}: only online nodes can be rented"
    if node.price_per_hour <= 0:
        return "not_for_rent", "is not for rent (it sets no hourly price)"
    if stake < min_stake:
        return (
            "unstaked",
            f"has {format_duck(stake)} staked, less than the {format_duck(min_stake)} "
            "a rented node needs",
        )
    if rented_by is not None:
        return "rented", "is already rented by someone else"
    return None


def _named_nodes(rt: Runtime, session: Session, requested: Sequence[str]) -> list[Node]:
    addresses = [normalize_address(a) for a in requested]
    seen: set[str] = set()
    for address in addresses:
        if address in seen:
            raise ValidationFailed(f"node {address} is listed twice", field="nodes", node=address)
        seen.add(address)
    # Lock the rows (sorted, so two renters cannot deadlock) before checking that no other
    # rental holds them: a second renter of the same node waits, then sees this rental.
    stmt = select(Node).where(Node.address.in_(addresses)).order_by(Node.address)
    rows = {n.address: n for n in session.scalars(stmt.with_for_update())}
    for address in addresses:
        if address not in rows:
            raise NodeNotFound(f"node {address} is not registered", node=address)
    stakes = effective_stakes(rt.ledger, session, addresses)
    rented = active_rentals(session, addresses)
    for address in addresses:
        problem = _unrentable(
            rows[address],
            stake=stakes[address],
            min_stake=rt.settings.min_stake,
            rented_by=rented.get(address),
        )
        if problem is not None:
            reason, message = problem
            raise InvalidState(f"node {address} {message}", node=address, reason=reason)
    return [rows[a] for a in addresses]


def _gpu_nodes(rt: Runtime, session: Session, gpus: int) -> list[Node]:
    """The cheapest nodes per GPU (then the most reputable) until ``gpus`` GPUs are reached."""
    stmt = (
        select(Node)
        .where(Node.status == NodeStatus.ONLINE.value, Node.price_per_hour > 0)
        .order_by(Node.address)
        .with_for_update()
    )
    candidates = [n for n in session.scalars(stmt) if gpu_count(n) > 0]
    addresses = [n.address for n in candidates]
    stakes = effective_stakes(rt.ledger, session, addresses) if addresses else {}
    rented = active_rentals(session, addresses) if addresses else {}
    usable = [
        n
        for n in candidates
        if _unrentable(
            n,
            stake=stakes[n.address],
            min_stake=rt.settings.min_stake,
            rented_by=rented.get(n.address),
        )
        is None
    ]
    usable.sort(
        key=lambda n: (
            Fraction(n.price_per_hour, gpu_count(n)),
            -node_reputation(n).score,
            n.address,
        )
    )
    picked: list[Node] = []
    total = 0
    for node in usable:
        if total >= gpus:
            break
        picked.append(node)
        total += gpu_count(node)
    if total < gpus:
        available = sum(gpu_count(n) for n in usable)
        raise InvalidState(
            f"only {available} GPU(s) are available for rent right now; asked for {gpus}",
            available=available,
            requested=gpus,
        )
    return picked


def quote_rental(
    rt: Runtime, session: Session, *, body: RentalCreate
) -> tuple[list[Node], int, int]:
    """The nodes a rental would take, their price per hour and the total cost, with every
    check of :func:`create_rental` except the budget and the balance. Writes nothing."""
    if body.nodes and body.gpus is not None:
        raise ValidationFailed("name nodes or ask for a number of GPUs, not both", field="gpus")
    if not body.nodes and body.gpus is None:
        raise ValidationFailed("name the nodes to rent, or ask for a number of GPUs", field="nodes")
    gpus = body.gpus
    nodes = _named_nodes(rt, session, body.nodes) if gpus is None else _gpu_nodes(rt, session, gpus)
    per_hour = sum(n.price_per_hour for n in nodes)
    cost = rental_cost([n.price_per_hour for n in nodes], body.hours)
    if cost <= 0:
        raise ValidationFailed("the rental is too short to cost anything", field="hours")
    return nodes, per_hour, cost


def create_rental(
    rt: Runtime, session: Session, *, client: str, body: RentalCreate, now: float
) -> Rental:
    """Reserve the named nodes (or enough GPUs) and escrow the whole cost up front.

    Everything is checked before anything is written; the escrow comes last, so too little
    balance (402) rolls back the rental rows with it.
    """
    nodes, per_hour, cost = quote_rental(rt, session, body=body)
    if cost > body.budget:
        raise ValidationFailed(
            f"renting {len(nodes)} node(s) for {body.hours:g} h at {format_duck(per_hour)}/h "
            f"costs {format_duck(cost)}, more than the budget of {format_duck(body.budget)}",
            field="budget",
            cost=cost,
            budget=body.budget,
        )
    rental = Rental(
        id=new_id("rental"),
        client=client,
        state=ACTIVE,
        hours=body.hours,
        price_per_hour=per_hour,
        escrowed=cost,
        paid=0,
        fee=0,
        refunded=0,
        started_at=now,
        ends_at=now + round(body.hours * MS_PER_HOUR) / 1000,
        settled_at=now,
    )
    session.add(rental)
    session.flush()  # the rental row before its members (foreign key)
    for node in nodes:
        session.add(
            RentalNode(
                rental_id=rental.id,
                node=node.address,
                price_per_hour=node.price_per_hour,
                online_s=0.0,
                paid=0,
            )
        )
    rt.ledger.escrow(
        session,
        owner=client,
        account=rental_escrow_account(rental.id),
        amount=cost,
        ref=rental.id,
        memo="rental escrow",
    )
    emit(
        session,
        "rental.started",
        address=client,
        at=now,
        rental_id=rental.id,
        nodes=[n.address for n in nodes],
        hours=body.hours,
        price_per_hour=per_hour,
        escrowed=cost,
    )
    return rental


# --- settlement -------------------------------------------------------------------------


def _billable_s(node: Node | None, *, start: float, end: float, offline_after: float) -> float:
    """Seconds of ``[start, end]`` that ``node`` earns (see the module docstring)."""
    if node is None or node.status == NodeStatus.DRAINING.value:
        return 0.0
    return max(0.0, min(end, node.last_seen_at + offline_after) - start)


def _members(
    session: Session, rentals: Sequence[Rental]
) -> tuple[dict[str, list[RentalNode]], dict[str, Node]]:
    """Each rental's member rows, and the nodes they name, in two queries."""
    members: dict[str, list[RentalNode]] = defaultdict(list)
    stmt = (
        select(RentalNode)
        .where(RentalNode.rental_id.in_([r.id for r in rentals]))
        .order_by(RentalNode.node)
    )
    for member in session.scalars(stmt):
        members[member.rental_id].append(member)
    addresses = {m.node for ms in members.values() for m in ms}
    nodes = {n.address: n for n in session.scalars(select(Node).where(Node.address.in_(addresses)))}
    return members, nodes


def _accrue(
    rt: Runtime,
    session: Session,
    rental: Rental,
    members: Sequence[RentalNode],
    nodes: dict[str, Node],
    *,
    now: float,
) -> int:
    """Bill each node's online time since ``settled_at`` and pay what it is owed.

    Returns the number of settlements (ledger transactions) made.
    """
    start, end = rental.settled_at, min(now, rental.ends_at)
    if end <= start:
        return 0
    remaining = rental.escrowed - rental.paid
    settlements = 0
    for member in members:
        member.online_s += _billable_s(
            nodes.get(member.node), start=start, end=end, offline_after=rt.settings.offline_after_s
        )
        # A safety net: by construction the totals stay within the escrow (see above).
        owed = min(earned(member.online_s, member.price_per_hour) - member.paid, remaining)
        if owed <= 0:
            continue
        fee = owed * rt.settings.fee_bps // 10_000
        rt.ledger.settle(
            session,
            escrow=rental_escrow_account(rental.id),
            provider=member.node,
            amount=owed,
            fee=fee,
            ref=rental.id,
            memo="rental",
        )
        member.paid += owed
        rental.paid += owed
        rental.fee += fee
        remaining -= owed
        settlements += 1
        emit(
            session,
            "rental.settled",
            node=member.node,
            address=rental.client,
            at=now,
            rental_id=rental.id,
            amount=owed,
            fee=fee,
            online_s=round(member.online_s, 3),
        )
    rental.settled_at = end
    return settlements


def _close(rt: Runtime, session: Session, rental: Rental, *, state: RentalState, at: float) -> None:
    """Refund what is left in the escrow to the client and end the rental."""
    rental.refunded += rt.ledger.refund(
        session,
        escrow=rental_escrow_account(rental.id),
        owner=rental.client,
        ref=rental.id,
        memo="rental refund",
    )
    rental.state = state
    rental.ended_at = at
    from quackmesh.coordinator.jobs.service import end_rental_jobs

    end_rental_jobs(rt, session, rental_id=rental.id, now=at)
    emit(
        session,
        f"rental.{state}",
        address=rental.client,
        at=at,
        rental_id=rental.id,
        paid=rental.paid,
        fee=rental.fee,
        refunded=rental.refunded,
    )


def settle_rentals(rt: Runtime, session: Session, *, now: float) -> int:
    """Settle every active rental whose period is due; end those past ``ends_at``.

    Called by the sweeper on every pass; a rental is only touched once ``rental_settle_s``
    has passed since it was last settled, or when it has reached its end (then it is
    settled in full and the rest of the escrow refunded). Rows already locked (a cancel
    in progress, another replica's sweeper) are skipped until the next pass. Returns the
    number of settlements made.
    """
    due_at = now - rt.settings.rental_settle_s + EPSILON_S
    stmt = (
        select(Rental)
        .where(Rental.state == ACTIVE, or_(Rental.settled_at <= due_at, Rental.ends_at <= now))
        .order_by(Rental.id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    due = list(session.scalars(stmt))
    if not due:
        return 0
    members, nodes = _members(session, due)
    settlements = 0
    for rental in due:
        settlements += _accrue(rt, session, rental, members[rental.id], nodes, now=now)
        if now >= rental.ends_at:
            _close(rt, session, rental, state=ENDED, at=rental.ends_at)
    return settlements


def cancel_rental(rt: Runtime, session: Session, rental: Rental, *, now: float) -> None:
    """Stop an active rental now: settle the time used, refund the rest (lock it first)."""
    if rental.state != ACTIVE:
        raise InvalidState(
            f"rental {rental.id} is already {rental.state}", rental_id=rental.id, state=rental.state
        )
    members, nodes = _members(session, [rental])
    _accrue(rt, session, rental, members[rental.id], nodes, now=now)
    if now >= rental.ends_at:  # ran its course before the sweeper got to it
        _close(rt, session, rental, state=ENDED, at=rental.ends_at)
    else:
        _close(rt, session, rental, state=CANCELLED, at=now)
