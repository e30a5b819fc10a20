"""Disputes: a client re-opens a finished job for extra replicas on high-reputation nodes.

Within ``dispute_window_s`` of completion the owner may dispute a succeeded job. The
client escrows the dispute fee plus ``(dispute_replicas + 2) × max_price × units`` (into the
job's escrow account, which the job had closed). The replicas run on nodes that never
touched the job and whose reputation is at least ``dispute_min_reputation``; they must
agree among themselves (all ``dispute_replicas`` of them; disagreement adds replicas up
to two more, then the dispute is *inconclusive* and everything unspent is refunded).

* **upheld** — the replicas agree with the accepted result: they are paid, the dispute
  fee goes to the provider(s) of the result, the rest is refunded to the client.
* **overturned** — they agree on something else: they are paid, their result becomes the
  job's result, each provider of the rejected result is slashed (``slash_bps``) and the
  client gets back what it paid for that result: the provider's share out of the
  provider's stake, the protocol fee out of the treasury (each as far as it holds).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.accounts.staking import slash
from quackmesh.coordinator.db.models import Dispute, Job, Node, Task
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.scheduler.rules import MAX_PRIORITY
from quackmesh.coordinator.verify.policy import Vote, decide
from quackmesh.core.errors import InvalidState
from quackmesh.core.ids import new_id
from quackmesh.core.schemas import DisputePublic, JobState, TaskState
from quackmesh.ledger import TREASURY, job_escrow_account, stake_account, wallet_account
from quackmesh.workloads import get_workload

__all__ = ["dispute_public", "open_dispute", "reconsider_dispute"]

EXTRA = 2  # replicas beyond dispute_replicas when the re-runs disagree among themselves


def dispute_public(row: Dispute) -> DisputePublic:
    return DisputePublic.model_validate(
        {
            "id": row.id,
            "job_id": row.job_id,
            "client": row.client,
            "state": row.state,
            "fee": row.fee,
            "escrowed": row.escrowed,
            "reason": row.reason,
            "outcome": row.outcome,
            "opened_at": row.opened_at,
            "resolved_at": row.resolved_at,
        }
    )


def open_dispute(rt: Runtime, session: Session, *, job: Job, reason: str, now: float) -> Dispute:
    from quackmesh.coordinator.verify.service import add_tasks

    if job.kind == "fl.train":
        raise InvalidState(
            "a federated training job cannot be disputed: no node holds the whole result "
            "(each round's updates were judged by the strategy and the holdout metrics)",
            job_id=job.id,
        )
    if job.state != JobState.SUCCEEDED.value or job.completed_at is None:
        raise InvalidState(
            f"only a succeeded job can be disputed; job {job.id} is {job.state}",
            job_id=job.id,
            state=job.state,
        )
    if now > job.completed_at + rt.settings.dispute_window_s:
        raise InvalidState(
            f"the dispute window of {rt.settings.dispute_window_s:.0f} s has closed",
            job_id=job.id,
        )
    running = session.scalar(
        select(Task.id).where(
            Task.job_id == job.id,
            Task.state.in_([TaskState.QUEUED.value, TaskState.LEASED.value]),
        )
    )
    if running is not None:  # a late replica's pay is still held in the job's escrow
        raise InvalidState(
            f"job {job.id} still has a replica running; dispute it once it has reported",
            job_id=job.id,
        )
    open_one = session.scalar(
        select(Dispute.id).where(Dispute.job_id == job.id, Dispute.state == "open")
    )
    if open_one is not None:
        raise InvalidState(f"job {job.id} already has an open dispute", dispute_id=open_one)
    n = rt.settings.dispute_replicas
    escrowed = rt.settings.dispute_fee + (n + EXTRA) * job.max_price * job.units
    row = Dispute(
        id=new_id("dsp"),
        job_id=job.id,
        client=job.owner,
        state="open",
        fee=rt.settings.dispute_fee,
        escrowed=escrowed,
        reason=reason,
        outcome={},
        opened_at=now,
    )
    session.add(row)
    add_tasks(
        session,
        job,
        n=n,
        role="dispute",
        now=now,
        priority=MAX_PRIORITY,
        min_reputation=rt.settings.dispute_min_reputation,
        dispute_id=row.id,
    )
    if escrowed > 0:  # last: a short wallet rolls the whole dispute back (402)
        rt.ledger.escrow(
            session,
            owner=job.owner,
            account=job_escrow_account(job.id),
            amount=escrowed,
            ref=row.id,
            memo="dispute",
        )
    emit(session, "dispute.opened", job_id=job.id, address=job.owner, at=now, dispute_id=row.id)
    return row


def reconsider_dispute(rt: Runtime, session: Session, *, job: Job, now: float) -> None:
    """Decide the job's open dispute from its re-runs so far (after a result or failure)."""
    from quackmesh.coordinator.verify.service import (
        add_tasks,
        cancel_outstanding,
        load_output,
        payout,
        task_price,
    )

    row = session.scalars(
        select(Dispute).where(Dispute.job_id == job.id, Dispute.state == "open").with_for_update()
    ).first()
    if row is None:
        return
    reruns = list(
        session.scalars(
            select(Task).where(Task.dispute_id == row.id).order_by(Task.queued_at, Task.id)
        )
    )
    done = [t for t in reruns if t.state == TaskState.SUCCEEDED.value]
    outstanding = [t for t in reruns if t.state in (TaskState.QUEUED.value, TaskState.LEASED.value)]
    workload = get_workload(job.kind)
    n = rt.settings.dispute_replicas
    decision = decide(
        [Vote(t.id, t.node or "", load_output(rt, t.output_sha256)) for t in done],
        quorum=n,
        max_replicas=n + EXTRA,
        issued=len(reruns),
        outstanding=len(outstanding),
        agree=workload.agree,
    )
    if decision.action == "wait":
        return
    if decision.action == "more":
        add_tasks(
            session,
            job,
            n=decision.more,
            role="dispute",
            now=now,
            priority=MAX_PRIORITY,
            min_reputation=rt.settings.dispute_min_reputation,
            dispute_id=row.id,
        )
        return
    cancel_outstanding(session, job, now=now)
    by_id = {t.id: t for t in reruns}
    winners = [by_id[v.task_id] for v in decision.winners] if decision.action == "accept" else []
    paid_reruns = winners or done  # inconclusive: every re-run that did the work is paid
    payouts = [payout(rt, t, job) for t in paid_reruns]
    originals = [
        t
        for t in session.scalars(
            select(Task).where(Task.job_id == job.id, Task.dispute_id.is_(None))
        )
        if t.state == TaskState.SUCCEEDED.value and t.verdict in ("valid", "unchecked")
    ]
    if decision.action == "accept":
        upheld = workload.agree(
            load_output(rt, winners[0].output_sha256), load_output(rt, job.result_sha256)
        )
        state = "upheld" if upheld else "overturned"
    else:
        state = "inconclusive"
    if state == "upheld" and row.fee > 0 and originals:
        share, rest = divmod(row.fee, len(originals))
        for i, t in enumerate(originals):
            payouts.append((t.node or "", share + (rest if i == 0 else 0), 0))
    refund, tx = rt.ledger.settle_many(
        session,
        escrow=job_escrow_account(job.id),
        payouts=[p for p in payouts if p[1] > 0],
        owner=job.owner,
        ref=row.id,
        memo=f"dispute {state}",
    )
    for t in paid_reruns:
        t.paid = task_price(t, job)
        t.payment_state = "paid"
        t.payment_tx = tx.tx_id if tx is not None else None
        t.verdict = "valid" if t in winners else "unverified"
    outcome: dict[str, object] = {"refunded": refund, "reason": decision.reason}
    if state == "overturned":
        outcome.update(
            _overturn(rt, session, job=job, originals=originals, winners=winners, now=now)
        )
    row.state = state
    row.outcome = outcome
    row.resolved_at = now
    emit(
        session,
        f"dispute.{state}",
        job_id=job.id,
        address=job.owner,
        at=now,
        dispute_id=row.id,
    )


def _overturn(
    rt: Runtime,
    session: Session,
    *,
    job: Job,
    originals: list[Task],
    winners: list[Task],
    now: float,
) -> dict[str, object]:
    """Slash the providers of the rejected result and give the client its money back."""
    from quackmesh.coordinator.verify.service import record_verdict

    returned = 0
    slashed = []
    fee_bps = rt.settings.fee_bps
    for t in originals:
        node = session.get(Node, t.node) if t.node else None
        if node is None:
            continue
        t.verdict = "invalid"
        record_verdict(rt, session, node=node, kind=job.kind, valid=False, now=now)
        fee = t.paid * fee_bps // 10_000
        back = min(t.paid - fee, rt.ledger.balance(session, stake_account(node.address)))
        if back > 0:
            rt.ledger.transfer(
                session,
                src=stake_account(node.address),
                dst=wallet_account(job.owner),
                amount=back,
                kind="clawback",
                memo="dispute overturned: provider's share returned",
                ref=job.id,
            )
        fee_back = min(fee, rt.ledger.balance(session, TREASURY))
        if fee_back > 0:
            rt.ledger.transfer(
                session,
                src=TREASURY,
                dst=wallet_account(job.owner),
                amount=fee_back,
                kind="clawback",
                memo="dispute overturned: protocol fee returned",
                ref=job.id,
            )
        returned += back + fee_back
        row = slash(
            rt,
            session,
            node=node.address,
            reason="dispute",
            evidence={
                "job_id": job.id,
                "rejected_sha256": t.output_sha256,
                "accepted": [{"node": w.node, "output_sha256": w.output_sha256} for w in winners],
            },
            now=now,
            job_id=job.id,
            task_id=t.id,
        )
        session.flush()
        t.payment_state = "slashed"
        t.payment_tx = row.tx_id
        slashed.append(node.address)
    job.result_sha256 = winners[0].output_sha256
    job.refunded += returned
    job.updated_at = now
    return {"returned_to_client": returned, "slashed": slashed}
