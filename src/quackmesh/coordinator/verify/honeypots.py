"""Honeypots: known-answer tasks mixed into the queue, indistinguishable to nodes.

The pool is filled from results that at least three nodes agreed on (a late replica that
agrees counts, so a default redundant job of three fills it), or that a reference
verifier confirmed (two colluding nodes can agree on a wrong value): the same kind, parameters and inputs, with the
agreed output as the known answer. When a node finishes a ``honeypot``-policy job, with
probability ``honeypot_rate`` the coordinator queues one of these for that node (a task
pinned to it) as an ordinary-looking job; it is paid at the node's price like any task,
from the treasury (protocol fees and slashes fund the programme; with too little in the
treasury no honeypot is sent). A wrong answer is slashed with the evidence, resets the
node's trust, and the clients of the node's recent unverified results are told
(``job.suspect`` events) so they can dispute them within the window.

Limits, said plainly: a node that remembers input hashes can recognise data it has seen
before, so honeypots are drawn from results the node did not take part in; the pool
only holds what the network has already verified.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.accounts.staking import slash
from quackmesh.coordinator.db.models import Honeypot, Job, Node, Task
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.jobs.service import new_task
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.ids import new_id
from quackmesh.core.schemas import JobState
from quackmesh.ledger import TREASURY, job_escrow_account
from quackmesh.workloads import get_workload
from quackmesh.workloads.registry import required_model

__all__ = ["HONEYPOT_OWNER", "POOL_MAX", "inject", "judge", "maybe_inject", "remember"]

# Owner of honeypot jobs: no key exists for it, so no one can sign as it or read them.
HONEYPOT_OWNER = "0x0000000000000000000000000000000000000001"
POOL_MAX = 1_000


def remember(session: Session, *, job: Job, output_sha256: str, now: float) -> None:
    """Add a verified result to the pool (one entry per source job)."""
    if job.honeypot or not output_sha256:
        return
    if session.scalar(select(Honeypot.id).where(Honeypot.source_job == job.id)) is not None:
        return
    count = len(session.scalars(select(Honeypot.id).limit(POOL_MAX)).all())
    if count >= POOL_MAX:
        return
    session.add(
        Honeypot(
            id=new_id("hp"),
            kind=job.kind,
            params=dict(job.params),
            inputs=dict(job.inputs),
            units=job.units,
            output_sha256=output_sha256,
            source_job=job.id,
            created_at=now,
            uses=0,
        )
    )


def maybe_inject(rt: Runtime, session: Session, *, node: Node, now: float) -> Job | None:
    if rt.rng.random() >= rt.settings.honeypot_rate:
        return None
    return inject(rt, session, node=node, now=now)


def inject(rt: Runtime, session: Session, *, node: Node, now: float) -> Job | None:
    """Queue a known-answer job pinned to ``node``; ``None`` if none fits or is affordable."""
    candidates = session.scalars(
        select(Honeypot)
        .where(Honeypot.kind.in_(node.workloads))
        .order_by(Honeypot.uses, Honeypot.created_at)
        .limit(20)
    )
    served = {str(m.get("name")) for m in node.models or []}
    for entry in candidates:
        model = required_model(entry.kind, entry.params)
        if model is not None and model not in served:
            continue  # a generation honeypot goes only to a node serving its model
        seen = session.scalar(
            select(Task.id).where(Task.job_id == entry.source_job, Task.node == node.address)
        )
        if seen is not None:
            continue  # the node ran the source job: it could recognise the inputs
        cost = node.price_per_unit * entry.units
        if rt.ledger.balance(session, TREASURY) < cost:
            return None
        return _queue(rt, session, entry=entry, node=node, cost=cost, now=now)
    return None


def _queue(
    rt: Runtime, session: Session, *, entry: Honeypot, node: Node, cost: int, now: float
) -> Job:
    job = Job(
        id=new_id("job"),
        owner=HONEYPOT_OWNER,
        kind=entry.kind,
        params=dict(entry.params),
        inputs=dict(entry.inputs),
        state=JobState.QUEUED.value,
        units=entry.units,
        max_price=node.price_per_unit,
        escrowed=cost,
        paid=0,
        fee=0,
        refunded=0,
        max_attempts=1,
        timeout_s=600.0,
        memory_mb=2048,
        created_at=now,
        updated_at=now,
        policy="none",
        replicas=1,
        quorum=1,
        max_replicas=1,
        priority=0,
        honeypot=True,
        expected_sha256=entry.output_sha256,
    )
    session.add(job)
    # Role "primary" as any job's first task: nothing in it says "honeypot".
    session.add(new_task(job, role="primary", now=now, pinned_node=node.address))
    if cost > 0:
        rt.ledger.transfer(
            session,
            src=TREASURY,
            dst=job_escrow_account(job.id),
            amount=cost,
            kind="escrow",
            memo="honeypot",
            ref=job.id,
        )
    entry.uses += 1
    session.info["tasks_queued"] = session.info.get("tasks_queued", 0) + 1
    # The same public event a client's submission makes: the stream does not give it away.
    emit(session, "job.submitted", job_id=job.id, at=now, kind=job.kind, escrowed=job.escrowed)
    return job


def judge(rt: Runtime, session: Session, *, task: Task, job: Job, node: Node, now: float) -> int:
    """Compare a honeypot's result with the known answer; pay, or slash. Returns the pay."""
    from quackmesh.coordinator.verify.service import load_output, record_verdict, task_price

    expected = load_output(rt, job.expected_sha256)
    got = load_output(rt, task.output_sha256)
    correct = get_workload(job.kind).agree(expected, got)
    record_verdict(rt, session, node=node, kind=job.kind, valid=correct, now=now)
    escrow = job_escrow_account(job.id)
    held = rt.ledger.balance(session, escrow)
    job.state = JobState.SUCCEEDED.value if correct else JobState.FAILED.value
    job.completed_at = now
    job.updated_at = now
    if correct:
        task.verdict = "valid"
        amount = min(held, task_price(task, job))
        _, tx = rt.ledger.settle_many(
            session, escrow=escrow, payouts=[(node.address, amount, 0)], owner=None, ref=job.id
        )
        task.paid = amount
        task.payment_state = "paid"
        task.payment_tx = tx.tx_id if tx is not None else None
        job.paid = amount
        emit(session, "payment.settled", job_id=job.id, node=node.address, at=now, amount=amount)
        held -= amount
    else:
        task.verdict = "invalid"
        task.payment_state = "slashed"
        row = slash(
            rt,
            session,
            node=node.address,
            reason="honeypot",
            evidence={
                "kind": job.kind,
                "job_id": job.id,
                "expected_sha256": job.expected_sha256,
                "reported_sha256": task.output_sha256,
            },
            now=now,
            job_id=job.id,
            task_id=task.id,
        )
        session.flush()
        task.payment_tx = row.tx_id
        _flag_suspect_jobs(rt, session, node=node.address, now=now)
    if held > 0:
        rt.ledger.transfer(
            session,
            src=escrow,
            dst=TREASURY,
            amount=held,
            kind="refund",
            memo="honeypot",
            ref=job.id,
        )
    return task.paid


def _flag_suspect_jobs(rt: Runtime, session: Session, *, node: str, now: float) -> None:
    """Tell clients whose unverified results came from a node just caught cheating."""
    since = now - rt.settings.dispute_window_s
    rows = session.execute(
        select(Job.id, Job.owner)
        .join(Task, Task.job_id == Job.id)
        .where(
            Task.node == node,
            Task.verdict == "unchecked",
            Job.honeypot.is_(False),
            Job.state == JobState.SUCCEEDED.value,
            Job.completed_at >= since,
        )
        .distinct()
    )
    for job_id, owner in rows:
        emit(
            session,
            "job.suspect",
            job_id=job_id,
            address=owner,
            node=node,
            at=now,
            reason="the node that ran it failed a known-answer check; you may dispute",
        )
