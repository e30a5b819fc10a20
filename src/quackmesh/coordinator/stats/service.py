"""Counts and sums behind the dashboard's overview, wallet history and node earnings.

Health, in order: ``down`` when no provider node is online; ``degraded`` when more than a
quarter of the tasks that finished in the last hour failed, or a job has waited in the
queue for over five minutes; ``healthy`` otherwise.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Job, Node, Task
from quackmesh.coordinator.events.service import head_id
from quackmesh.core.schemas import JobState, NodeStatus
from quackmesh.ledger import Ledger, LedgerEntry, LedgerTransaction, stake_account, wallet_account

__all__ = ["earnings", "network_stats", "wallet_history"]

DAY = 86_400.0
HOUR = 3_600.0
FAILED_SHARE_DEGRADED = 0.25
QUEUE_WAIT_DEGRADED_S = 300.0
PAYOUT_KINDS = ("settle",)  # task payments, FL rewards and rental payouts


def _health(session: Session, *, online: int, now: float) -> dict[str, str]:
    if online == 0:
        return {"status": "down", "detail": "no provider node is online"}
    finished = dict(
        session.execute(
            select(Task.state, func.count())
            .where(Task.finished_at >= now - HOUR, Task.state.in_(["succeeded", "failed"]))
            .group_by(Task.state)
        ).all()
    )
    done = sum(finished.values())
    failed = finished.get("failed", 0)
    if done and failed / done > FAILED_SHARE_DEGRADED:
        return {"status": "degraded", "detail": f"{failed} of {done} tasks failed in the last hour"}
    oldest = session.scalar(
        select(func.min(Job.created_at)).where(Job.state == JobState.QUEUED.value)
    )
    if oldest is not None and now - oldest > QUEUE_WAIT_DEGRADED_S:
        waited = int((now - oldest) // 60)
        return {"status": "degraded", "detail": f"a job has waited {waited} min for a node"}
    return {"status": "healthy", "detail": f"{online} node(s) online, work flowing"}


def _paid_since(session: Session, since: float) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0))
        .join(LedgerTransaction, LedgerTransaction.seq == LedgerEntry.seq)
        .where(
            LedgerTransaction.kind.in_(PAYOUT_KINDS),
            LedgerTransaction.created_at >= since,
            LedgerEntry.account.startswith("wallet:"),
            LedgerEntry.amount > 0,
        )
    )
    return int(total or 0)


def network_stats(session: Session, *, dev_mode: bool, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    nodes = session.execute(select(Node.status, Node.hardware, Node.slots)).all()
    online = [n for n in nodes if n.status == NodeStatus.ONLINE.value]
    jobs = dict(
        session.execute(
            select(Job.state, func.count())
            .where(Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
            .group_by(Job.state)
        ).all()
    )
    recent = dict(
        session.execute(
            select(Job.state, func.count()).where(Job.completed_at >= now - DAY).group_by(Job.state)
        ).all()
    )
    return {
        "nodes_online": len(online),
        "nodes_total": len(nodes),
        "gpus_online": sum(len(n.hardware.get("gpus", [])) for n in online),
        "slots_online": sum(n.slots for n in online),
        "jobs_running": jobs.get(JobState.RUNNING.value, 0),
        "jobs_queued": jobs.get(JobState.QUEUED.value, 0),
        "jobs_succeeded_24h": recent.get(JobState.SUCCEEDED.value, 0),
        "jobs_failed_24h": recent.get(JobState.FAILED.value, 0),
        "paid_24h": _paid_since(session, now - DAY),
        "health": _health(session, online=len(online), now=now),
        "head_event": head_id(session),
        "dev_mode": dev_mode,
        "server_time": now,
    }


def wallet_history(
    session: Session, ledger: Ledger, *, address: str, limit: int, before_seq: int | None
) -> dict[str, Any]:
    rows = ledger.history(
        session,
        accounts=[wallet_account(address), stake_account(address)],
        limit=limit,
        before_seq=before_seq,
    )
    return {
        "address": address,
        "entries": [
            {
                "seq": r.seq,
                "at": r.at,
                "kind": r.kind,
                "memo": r.memo,
                "ref": r.ref,
                "account": r.account,
                "amount": r.amount,
            }
            for r in rows
        ],
    }


def earnings(
    session: Session, ledger: Ledger, *, address: str, now: float | None = None
) -> dict[str, Any]:
    """What ``address`` (a node) has been paid: in total, in 24 h, and per hour of the day."""
    now = time.time() if now is None else now
    account = wallet_account(address)
    total, payments = session.execute(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0), func.count())
        .select_from(LedgerEntry)
        .join(LedgerTransaction, LedgerTransaction.seq == LedgerEntry.seq)
        .where(
            LedgerTransaction.kind.in_(PAYOUT_KINDS),
            LedgerEntry.account == account,
            LedgerEntry.amount > 0,
        )
    ).one()
    start = (now - DAY) // HOUR * HOUR
    hours = {start + i * HOUR: 0 for i in range(25)}
    recent = ledger.history(
        session, accounts=[account], limit=10_000, kinds=list(PAYOUT_KINDS), since=start
    )
    for r in recent:
        if r.amount > 0:
            hour = r.at // HOUR * HOUR
            hours[hour] = hours.get(hour, 0) + r.amount
    return {
        "address": address,
        "total": int(total or 0),
        "last_24h": sum(r.amount for r in recent if r.amount > 0 and r.at >= now - DAY),
        "payments": int(payments or 0),
        "by_hour": [{"hour": h, "amount": a} for h, a in sorted(hours.items())],
    }
