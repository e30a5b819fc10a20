"""Staking rules: stake, unstake with an unbonding period, release, slash.

Money flow (micro-DUCK)::

    stake     wallet:<addr> -> stake:<addr>
    unstake   nothing moves: an unbonding row marks the amount; it stays in stake:<addr>
              (still slashable) until release_at
    release   stake:<addr>  -> wallet:<addr>   the unbonding amount, or what a slash left
    slash     stake:<addr>  -> treasury        slash_bps of the stake (evidence recorded)

A node's *effective* stake (staked − unbonding) must reach ``min_stake`` for paid work
and raises its match score; a client's effective stake sets its queue priority.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Slash, Unbonding
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.scheduler.rules import client_priority
from quackmesh.coordinator.scheduler.views import effective_stakes, unbonding_totals
from quackmesh.core.errors import InsufficientBalance
from quackmesh.core.ids import new_id
from quackmesh.core.schemas import SlashPublic, StakePublic, UnbondingPublic
from quackmesh.ledger import TREASURY, stake_account, wallet_account

__all__ = [
    "add_stake",
    "release_matured",
    "request_unstake",
    "slash",
    "slash_public",
    "stake_public",
]


def add_stake(rt: Runtime, session: Session, *, address: str, amount: int) -> str:
    """Move ``amount`` from the wallet into stake; returns the ledger transaction id."""
    tx = rt.ledger.transfer(
        session,
        src=wallet_account(address),
        dst=stake_account(address),
        amount=amount,
        kind="stake",
        memo="stake",
        ref=address,
    )
    emit(session, "stake.added", address=address, node=address, amount=amount)
    return tx.tx_id


def request_unstake(
    rt: Runtime, session: Session, *, address: str, amount: int, now: float
) -> Unbonding:
    """Start unbonding ``amount``; released after ``unbonding_s`` (slashable until then)."""
    effective = effective_stakes(rt.ledger, session, [address])[address]
    if amount > effective:
        raise InsufficientBalance(
            f"effective stake is {effective}, cannot unstake {amount}",
            account=stake_account(address),
            available=effective,
            required=amount,
        )
    row = Unbonding(
        id=new_id("unb"),
        address=address,
        amount=amount,
        requested_at=now,
        release_at=now + rt.settings.unbonding_s,
        state="unbonding",
        released=0,
    )
    session.add(row)
    emit(
        session,
        "stake.unbonding",
        address=address,
        node=address,
        amount=amount,
        release_at=row.release_at,
    )
    if rt.settings.unbonding_s <= 0:
        session.flush()
        release_matured(rt, session, now=now, address=address)
    return row


def release_matured(
    rt: Runtime, session: Session, *, now: float, address: str | None = None
) -> int:
    """Pay out unbondings whose period is over; returns how many were released."""
    stmt = select(Unbonding).where(Unbonding.state == "unbonding", Unbonding.release_at <= now)
    if address is not None:
        stmt = stmt.where(Unbonding.address == address)
    rows = list(session.scalars(stmt.order_by(Unbonding.release_at).with_for_update()))
    for row in rows:
        staked = rt.ledger.balance(session, stake_account(row.address))
        amount = min(row.amount, staked)  # a slash during unbonding takes its share first
        if amount > 0:
            tx = rt.ledger.transfer(
                session,
                src=stake_account(row.address),
                dst=wallet_account(row.address),
                amount=amount,
                kind="unstake",
                memo=f"unbonding {row.id} released",
                ref=row.address,
            )
            row.tx_id = tx.tx_id
        row.state = "released"
        row.released = amount
        emit(session, "stake.released", address=row.address, node=row.address, amount=amount)
    return len(rows)


def slash(
    rt: Runtime,
    session: Session,
    *,
    node: str,
    reason: str,
    evidence: dict[str, Any],
    now: float,
    job_id: str | None = None,
    task_id: str | None = None,
) -> Slash:
    """Take ``slash_bps`` of the node's stake into the treasury and record why."""
    staked = rt.ledger.balance(session, stake_account(node))
    amount = staked * rt.settings.slash_bps // 10_000
    tx_id = None
    if amount > 0:
        tx = rt.ledger.transfer(
            session,
            src=stake_account(node),
            dst=TREASURY,
            amount=amount,
            kind="slash",
            memo=f"slash: {reason}",
            ref=job_id or node,
        )
        tx_id = tx.tx_id
    row = Slash(
        id=new_id("slash"),
        node=node,
        job_id=job_id,
        task_id=task_id,
        amount=amount,
        reason=reason,
        evidence=evidence,
        tx_id=tx_id,
        at=now,
    )
    session.add(row)
    session.info.setdefault("slashes", []).append(reason)  # counted after the commit
    emit(
        session,
        "node.slashed",
        node=node,
        job_id=job_id,
        at=now,
        amount=amount,
        reason=reason,
        slash_id=row.id,
    )
    return row


def slash_public(row: Slash) -> SlashPublic:
    return SlashPublic(
        id=row.id,
        node=row.node,
        job_id=row.job_id,
        task_id=row.task_id,
        amount=row.amount,
        reason=row.reason,
        evidence=row.evidence,
        tx_id=row.tx_id,
        at=row.at,
    )


def stake_public(rt: Runtime, session: Session, address: str) -> StakePublic:
    staked = rt.ledger.balance(session, stake_account(address))
    unbonding = unbonding_totals(session, [address]).get(address, 0)
    effective = max(0, staked - unbonding)
    rows = session.scalars(
        select(Unbonding)
        .where(Unbonding.address == address)
        .order_by(Unbonding.requested_at.desc())
        .limit(50)
    )
    return StakePublic(
        address=address,
        staked=staked,
        unbonding=unbonding,
        effective=effective,
        min_stake=rt.settings.min_stake,
        eligible=effective >= rt.settings.min_stake,
        priority=client_priority(effective, rt.settings.priority_stake_step),
        unbondings=[
            UnbondingPublic(
                id=r.id,
                amount=r.amount,
                requested_at=r.requested_at,
                release_at=r.release_at,
                state="released" if r.state == "released" else "unbonding",
                released=r.released,
            )
            for r in rows
        ],
    )
