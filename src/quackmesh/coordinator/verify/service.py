"""Verification service: applies the pure policies of :mod:`.policy` to reported results.

Called in the report's transaction. For each job it gathers the replicas' results, asks
:func:`~quackmesh.coordinator.verify.policy.decide` what to do, and then, in the same
transaction, pays the winners out of the job's escrow (one ledger transaction that also
refunds the rest), slashes the losers with the evidence, updates reputation and adaptive
trust, or queues more replicas. Money flow per job with replicas::

    submit    wallet:<owner>  -> escrow:job:<id>   max_price × units × max_replicas
    accept    escrow:job:<id> -> wallet:<winner>   price × units − fee, for each winner
              escrow:job:<id> -> treasury          the fees
              escrow:job:<id> -> wallet:<owner>    the rest
    lost vote stake:<loser>   -> treasury          slash_bps of its stake; the loser is unpaid
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.accounts.staking import slash
from quackmesh.coordinator.db.models import Job, Node, NodeTrust, Task
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.verify.policy import Policy, Vote, check_probability, decide
from quackmesh.coordinator.verify.reputation import ewma, timeliness_sample
from quackmesh.core.schemas import JobState, TaskState
from quackmesh.ledger import job_escrow_account
from quackmesh.workloads import get_workload

__all__ = [
    "REPLICA_ROLES",
    "accept",
    "add_tasks",
    "cancel_outstanding",
    "close_late",
    "exclude_siblings",
    "judge_late",
    "load_output",
    "on_success",
    "payout",
    "reconsider",
    "record_timeliness",
    "record_verdict",
    "replicas_of",
    "task_price",
    "touched_nodes",
]

log = logging.getLogger("quackmesh.coordinator.verify")

REPLICA_ROLES = ("primary", "replica", "check", "reference")  # votes on the job's result
OPEN = (TaskState.QUEUED.value, TaskState.LEASED.value)


def load_output(rt: Runtime, sha256: str | None) -> Any:
    """A stored result (JSON written by the report path, already checked)."""
    if sha256 is None:
        return None
    return json.loads(rt.blobs.path_for(sha256).read_bytes())


def task_price(task: Task, job: Job) -> int:
    """What a task's node earns for it: its asking price × the job's units (0 on a rental)."""
    return (task.price_per_unit or 0) * job.units


def payout(rt: Runtime, task: Task, job: Job) -> tuple[str, int, int]:
    """``(provider, amount, fee)`` for :meth:`Ledger.settle_many`."""
    amount = task_price(task, job)
    return task.node or "", amount, amount * rt.settings.fee_bps // 10_000


def replicas_of(session: Session, job: Job, roles: Sequence[str] = REPLICA_ROLES) -> list[Task]:
    stmt = select(Task).where(Task.job_id == job.id, Task.role.in_(roles))
    return list(session.scalars(stmt.order_by(Task.queued_at, Task.id)))


def touched_nodes(session: Session, job: Job) -> set[str]:
    """Every node that ran, holds or failed any task of the job (replicas go elsewhere)."""
    nodes: set[str] = set()
    for task in session.scalars(select(Task).where(Task.job_id == job.id)):
        if task.node:
            nodes.add(task.node)
        nodes.update(task.excluded_nodes)
    return nodes


def add_tasks(
    session: Session,
    job: Job,
    *,
    n: int,
    role: str,
    now: float,
    max_price: int | None = None,
    priority: int | None = None,
    min_reputation: float = 0.0,
    dispute_id: str | None = None,
    rental_id: str | None = None,
    pinned_node: str | None = None,
) -> list[Task]:
    """Queue ``n`` more tasks for the job on nodes that have not touched it yet."""
    excluded = sorted(touched_nodes(session, job))
    from quackmesh.coordinator.jobs.service import new_task

    tasks = [
        new_task(
            job,
            role=role,
            now=now,
            excluded=excluded,
            max_price=max_price,
            priority=priority,
            min_reputation=min_reputation,
            dispute_id=dispute_id,
            rental_id=rental_id,
            pinned_node=pinned_node,
        )
        for _ in range(n)
    ]
    session.add_all(tasks)
    session.info["tasks_queued"] = session.info.get("tasks_queued", 0) + n  # wake pollers
    for task in tasks:
        emit(session, "task.queued", job_id=job.id, at=now, task_id=task.id, role=role)
    return tasks


def exclude_siblings(session: Session, task: Task, node: str) -> None:
    """After ``node`` claims ``task``, keep it off the job's other open tasks."""
    for other in session.scalars(
        select(Task).where(Task.job_id == task.job_id, Task.state == TaskState.QUEUED.value)
    ):
        if other.id != task.id and node not in other.excluded_nodes:
            other.excluded_nodes = [*other.excluded_nodes, node]


def record_timeliness(rt: Runtime, node: Node, sample: float) -> None:
    node.rep_timeliness = ewma(node.rep_timeliness, sample, rt.settings.reputation_alpha)


def record_verdict(
    rt: Runtime, session: Session, *, node: Node, kind: str, valid: bool, now: float
) -> None:
    """Reputation validity and the adaptive trust run of (node, workload)."""
    alpha = rt.settings.reputation_alpha
    node.rep_validity = ewma(node.rep_validity, 1.0 if valid else 0.0, alpha)
    trust = session.get(NodeTrust, (node.address, kind))
    if trust is None:
        trust = NodeTrust(
            node=node.address, kind=kind, consecutive_valid=0, valid=0, invalid=0, updated_at=now
        )
        session.add(trust)
    if valid:
        node.results_valid += 1
        trust.valid += 1
        trust.consecutive_valid += 1
    else:
        node.results_invalid += 1
        trust.invalid += 1
        trust.consecutive_valid = 0  # any failed check resets trust
    trust.updated_at = now


def _trust_run(session: Session, node: str, kind: str) -> int:
    trust = session.get(NodeTrust, (node, kind))
    return 0 if trust is None else trust.consecutive_valid


def on_success(
    rt: Runtime,
    session: Session,
    *,
    task: Task,
    job: Job,
    node: Node,
    output_sha256: str,
    now: float,
) -> int:
    """A replica reported a (stored, checked) result. Returns what this task was paid now."""
    task.state = TaskState.SUCCEEDED.value
    task.output_sha256 = output_sha256
    task.finished_at = now
    task.lease_id = None
    node.tasks_completed += 1
    emit(session, "task.succeeded", job_id=job.id, node=node.address, task_id=task.id, at=now)
    if task.role == "fl":  # a federated round's task: the round's state machine decides
        from quackmesh.coordinator.fl.rounds import on_task_success

        return on_task_success(rt, session, task=task, job=job, node=node, now=now)
    if task.leased_at is not None:
        record_timeliness(rt, node, timeliness_sample(now - task.leased_at, job.timeout_s))
    if job.honeypot:
        from quackmesh.coordinator.verify.honeypots import judge

        return judge(rt, session, task=task, job=job, node=node, now=now)
    if task.role == "dispute":
        from quackmesh.coordinator.verify.disputes import reconsider_dispute

        reconsider_dispute(rt, session, job=job, now=now)
        return task.paid
    if job.state != JobState.RUNNING.value:  # decided already: a late replica
        return judge_late(rt, session, task=task, job=job, node=node, now=now)
    policy = Policy(job.policy)
    if policy in (Policy.NONE, Policy.HONEYPOT):
        accept(rt, session, job=job, winners=[task], losers=[], checked=False, now=now)
        if policy is Policy.HONEYPOT:
            from quackmesh.coordinator.verify.honeypots import maybe_inject

            maybe_inject(rt, session, node=node, now=now)
        return task.paid
    if policy is Policy.ADAPTIVE and len(replicas_of(session, job)) == 1:
        p = check_probability(
            _trust_run(session, node.address, job.kind),
            trust_after=rt.settings.adaptive_trust,
            min_check=rt.settings.adaptive_min_check,
        )
        if rt.rng.random() >= p:
            accept(rt, session, job=job, winners=[task], losers=[], checked=False, now=now)
            return task.paid
        add_tasks(session, job, n=1, role="check", now=now, rental_id=job.rental_id)
        emit(session, "job.checking", job_id=job.id, address=job.owner, at=now, p_check=p)
        return 0
    reconsider(rt, session, job=job, now=now)
    return task.paid


def reconsider(rt: Runtime, session: Session, *, job: Job, now: float) -> None:
    """Decide a multi-replica job from its results so far (after a result or a failure)."""
    if job.state != JobState.RUNNING.value:
        return
    replicas = replicas_of(session, job)
    done = [t for t in replicas if t.state == TaskState.SUCCEEDED.value]
    outstanding = [t for t in replicas if t.state in OPEN]
    workload = get_workload(job.kind)
    votes = [
        Vote(t.id, t.node or "", load_output(rt, t.output_sha256), authority=t.role == "reference")
        for t in done
    ]
    policy = Policy(job.policy)
    decision = decide(
        votes,
        quorum=job.quorum,
        max_replicas=job.max_replicas,
        issued=len(replicas),
        outstanding=len(outstanding),
        agree=workload.agree,
    )
    by_id = {t.id: t for t in replicas}
    if decision.action == "accept":
        winners = [by_id[v.task_id] for v in decision.winners]
        losers = [by_id[v.task_id] for v in decision.losers]
        accept(rt, session, job=job, winners=winners, losers=losers, checked=True, now=now)
    elif decision.action == "more":
        role = {Policy.REFERENCE: "reference", Policy.ADAPTIVE: "check"}.get(policy, "replica")
        add_tasks(session, job, n=decision.more, role=role, now=now, rental_id=job.rental_id)
        emit(
            session,
            "job.replicating",
            job_id=job.id,
            address=job.owner,
            at=now,
            more=decision.more,
            reason=decision.reason,
        )
    elif decision.action == "fail":
        from quackmesh.coordinator.jobs.service import fail_job

        for t in done:
            t.verdict = "unverified"
            t.payment_state = "unpaid"
        cancel_outstanding(session, job, now=now)
        fail_job(rt, session, job, error=f"verification failed: {decision.reason}", now=now)


def cancel_outstanding(
    session: Session, job: Job, *, now: float, states: Sequence[str] = OPEN
) -> None:
    """Replicas nobody needs any more: cancelled (a running one is told by heartbeat)."""
    stmt = select(Task).where(Task.job_id == job.id, Task.state.in_(states))
    for t in session.scalars(stmt):
        t.state = TaskState.CANCELLED.value
        t.lease_id = None
        t.finished_at = now
        t.payment_state = "rental" if t.rental_id else "refunded"


def _evidence(job: Job, winners: Sequence[Task], loser: Task) -> dict[str, Any]:
    return {
        "policy": job.policy,
        "kind": job.kind,
        "job_id": job.id,
        "accepted": [
            {"task_id": w.id, "node": w.node, "output_sha256": w.output_sha256} for w in winners
        ],
        "rejected": {"task_id": loser.id, "node": loser.node, "output_sha256": loser.output_sha256},
    }


def accept(
    rt: Runtime,
    session: Session,
    *,
    job: Job,
    winners: Sequence[Task],
    losers: Sequence[Task],
    checked: bool,
    now: float,
) -> None:
    """Accept the winners' result: pay them (one transaction), slash the losers, close."""
    payouts = [payout(rt, w, job) for w in winners if w.rental_id is None]
    # Replicas still running are judged when they report (BOINC validates late results
    # too), so a cheater cannot hide by being slow: their pay stays in escrow until then.
    running = [
        t
        for t in (replicas_of(session, job) if job.max_replicas > 1 else ())
        if t.state == TaskState.LEASED.value and t not in winners and t.rental_id is None
    ]
    keep = sum(task_price(t, job) for t in running)
    refund, tx = rt.ledger.settle_many(
        session,
        escrow=job_escrow_account(job.id),
        payouts=payouts,
        owner=job.owner,
        ref=job.id,
        keep=keep,
    )
    nodes = {
        n.address: n
        for n in session.scalars(
            select(Node).where(Node.address.in_([t.node for t in (*winners, *losers) if t.node]))
        )
    }
    for w in winners:
        w.verdict = "valid" if checked else "unchecked"
        if w.rental_id is None:
            _, w.paid, fee = payout(rt, w, job)
            w.payment_state = "paid"
            w.payment_tx = tx.tx_id if tx is not None else None
            emit(
                session,
                "payment.settled",
                job_id=job.id,
                node=w.node,
                address=job.owner,
                at=now,
                task_id=w.id,
                amount=w.paid,
                fee=fee,
            )
        if checked and w.node in nodes:
            record_verdict(rt, session, node=nodes[w.node], kind=job.kind, valid=True, now=now)
    for loser in losers:
        loser.verdict = "invalid"
        loser.payment_state = "slashed"
        if loser.node in nodes:
            record_verdict(rt, session, node=nodes[loser.node], kind=job.kind, valid=False, now=now)
            row = slash(
                rt,
                session,
                node=loser.node or "",
                reason="lost_vote",
                evidence=_evidence(job, winners, loser),
                now=now,
                job_id=job.id,
                task_id=loser.id,
            )
            session.flush()
            loser.payment_tx = row.tx_id
    cancel_outstanding(session, job, now=now, states=(TaskState.QUEUED.value,))
    paid = sum(amount for _, amount, _ in payouts)
    fees = sum(fee for _, _, fee in payouts)
    job.state = JobState.SUCCEEDED.value
    job.result_sha256 = winners[0].output_sha256
    job.paid += paid
    job.fee += fees
    job.refunded += refund
    job.updated_at = now
    job.completed_at = now
    emit(
        session,
        "job.succeeded",
        job_id=job.id,
        address=job.owner,
        at=now,
        paid=job.paid,
        refunded=job.refunded,
        verified=checked,
        rejected=len(losers),
    )
    # Known answers need strong agreement: two colluding (lazy) nodes can agree on a wrong
    # value, and a poisoned honeypot would slash the honest nodes that later get it.
    strong = len(winners) >= 3 or any(w.role == "reference" for w in winners)
    if checked and strong and job.rental_id is None:
        from quackmesh.coordinator.verify.honeypots import remember

        remember(session, job=job, output_sha256=winners[0].output_sha256 or "", now=now)


def judge_late(
    rt: Runtime, session: Session, *, task: Task, job: Job, node: Node, now: float
) -> int:
    """A replica that reports after its job was decided is compared with the accepted
    result: agreeing, it is paid from the pay kept for it; disagreeing, it is slashed."""
    if job.state != JobState.SUCCEEDED.value or task.role not in REPLICA_ROLES:
        task.verdict = "unchecked"
        task.payment_state = "unpaid"
        close_late(rt, session, job=job)
        return 0
    agree = get_workload(job.kind).agree(
        load_output(rt, job.result_sha256), load_output(rt, task.output_sha256)
    )
    record_verdict(rt, session, node=node, kind=job.kind, valid=agree, now=now)
    if agree:
        task.verdict = "valid"
        if task.rental_id is None:
            _, amount, fee = payout(rt, task, job)
            _, tx = rt.ledger.settle_many(
                session,
                escrow=job_escrow_account(job.id),
                payouts=[(node.address, amount, fee)],
                owner=None,
                ref=job.id,
            )
            task.paid = amount
            task.payment_state = "paid"
            task.payment_tx = tx.tx_id if tx is not None else None
            job.paid += amount
            job.fee += fee
        valid = [t for t in replicas_of(session, job) if t.verdict == "valid"]
        if len(valid) == 3 and job.rental_id is None:  # now three nodes agree: a known answer
            from quackmesh.coordinator.verify.honeypots import remember

            remember(session, job=job, output_sha256=job.result_sha256 or "", now=now)
    else:
        winners = [t for t in replicas_of(session, job) if t.verdict == "valid" and t.id != task.id]
        task.verdict = "invalid"
        task.payment_state = "slashed"
        row = slash(
            rt,
            session,
            node=node.address,
            reason="lost_vote",
            evidence=_evidence(job, winners, task),
            now=now,
            job_id=job.id,
            task_id=task.id,
        )
        session.flush()
        task.payment_tx = row.tx_id
    close_late(rt, session, job=job)
    return task.paid


def close_late(rt: Runtime, session: Session, *, job: Job) -> None:
    """Once no late replica is running, refund what was kept for them."""
    running = session.scalar(
        select(Task.id).where(
            Task.job_id == job.id,
            Task.role.in_(REPLICA_ROLES),
            Task.state.in_(OPEN),
        )
    )
    if running is None and job.rental_id is None:
        from quackmesh.coordinator.jobs.service import refund_job

        refund_job(rt, session, job)
