"""Job rules. Each public function is one state change in the caller's transaction.

Money flow of a job (all in micro-DUCK, see DESIGN.md "Money")::

    submit   wallet:<owner>   -> escrow:job:<id>       max_price × units
             (× max_replicas of the verification policy; 0 for a job on a rental)
    success  escrow:job:<id>  -> wallet:<provider>     price × units − fee, per accepted replica
             escrow:job:<id>  -> treasury              fee = price × units × fee_bps / 10⁴
             escrow:job:<id>  -> wallet:<owner>        whatever is left (refund)
    failure / cancel: the whole escrow back to the owner
    (verification, slashing and disputes: see quackmesh.coordinator.verify)
"""

from __future__ import annotations

import json
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Job, Task
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.rentals.service import require_rental
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.scheduler.rules import client_priority
from quackmesh.coordinator.scheduler.views import effective_stakes
from quackmesh.coordinator.verify.policy import Plan, Policy, plan_for
from quackmesh.core.canon import canonical_json
from quackmesh.core.errors import InvalidState, JobNotFound, ValidationFailed
from quackmesh.core.ids import new_id
from quackmesh.core.schemas import (
    JobCreate,
    JobPublic,
    JobResultPublic,
    JobState,
    TaskFailure,
    TaskPublic,
    TaskState,
    Verification,
)
from quackmesh.ledger import TREASURY, job_escrow_account
from quackmesh.workloads import get_workload

__all__ = [
    "cancel_job",
    "check_uploaded_result",
    "end_rental_jobs",
    "fail_job",
    "get_owned_job",
    "job_public",
    "job_result",
    "list_jobs",
    "new_task",
    "prepare_submission",
    "refund_job",
    "submit_job",
]

TERMINAL = {JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value}


def task_public(task: Task) -> TaskPublic:
    return TaskPublic(
        id=task.id,
        state=TaskState(task.state),
        node=task.node,
        attempts=task.attempts,
        failures=[TaskFailure.model_validate(f) for f in task.failures],
        leased_at=task.leased_at,
        finished_at=task.finished_at,
        output_sha256=task.output_sha256,
        paid=task.paid,
        role=task.role,
        verdict=task.verdict,
        payment_state=task.payment_state,  # type: ignore[arg-type]
        payment_tx=task.payment_tx,
    )


def job_public(job: Job, tasks: list[Task]) -> JobPublic:
    return JobPublic(
        id=job.id,
        owner=job.owner,
        kind=job.kind,
        params=job.params,
        inputs=job.inputs,
        state=JobState(job.state),
        units=job.units,
        max_price=job.max_price,
        escrowed=job.escrowed,
        paid=job.paid,
        fee=job.fee,
        refunded=job.refunded,
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
        tasks=[task_public(t) for t in tasks],
        verification=Verification(
            policy=job.policy,  # type: ignore[arg-type]
            replicas=job.replicas,
            quorum=job.quorum,
            max_replicas=job.max_replicas,
        ),
        priority=job.priority,
        rental_id=job.rental_id,
        completed_at=job.completed_at,
    )


def tasks_of(session: Session, job_id: str) -> list[Task]:
    return list(session.scalars(select(Task).where(Task.job_id == job_id).order_by(Task.queued_at)))


def prepare_submission(
    rt: Runtime, session: Session, *, owner: str, body: JobCreate
) -> tuple[dict[str, object], int]:
    """Validate kind, params and data before anything is written; returns (spec, units)."""
    workload = get_workload(body.kind)
    spec = workload.parse_spec(body.params)
    paths = {name: rt.blobs.path_for(sha) for name, sha in body.inputs.items()}
    workload.check_input_names(paths)
    for sha in body.inputs.values():
        rt.blobs.owned(session, sha, owner)  # 404 unless the submitter uploaded it
    params = spec.model_dump(mode="json")
    key = canonical_json([body.kind, sorted(body.inputs.items()), params]).decode()
    units = rt.validated.get(key)
    if units is None:
        units = workload.cost(spec, workload.check_inputs(spec, paths))
        rt.validated.put(key, units)
    return params, units


def new_task(
    job: Job,
    *,
    role: str,
    now: float,
    excluded: list[str] | None = None,
    max_price: int | None = None,
    priority: int | None = None,
    min_reputation: float = 0.0,
    dispute_id: str | None = None,
    rental_id: str | None = None,
    pinned_node: str | None = None,
) -> Task:
    """A queued task of ``job`` (the job's price, priority and rental unless given)."""
    rental = job.rental_id if rental_id is None and role != "dispute" else rental_id
    return Task(
        id=new_id("task"),
        job_id=job.id,
        kind=job.kind,
        state=TaskState.QUEUED.value,
        max_price=job.max_price if max_price is None else max_price,
        attempts=0,
        failures=[],
        excluded_nodes=list(excluded or []),
        queued_at=now,
        paid=0,
        role=role,
        verdict="pending",
        payment_state="rental" if rental else "escrowed",
        priority=job.priority if priority is None else priority,
        verifier_only=role == "reference",
        min_reputation=min_reputation,
        dispute_id=dispute_id,
        rental_id=rental,
        pinned_node=pinned_node,
    )


def _plan(body: JobCreate) -> Plan:
    v = body.verification
    try:
        return plan_for(
            Policy(v.policy), replicas=v.replicas, quorum=v.quorum, max_replicas=v.max_replicas
        )
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise ValidationFailed(message, field=f"verification.{field}") from exc


def submit_job(rt: Runtime, session: Session, *, owner: str, body: JobCreate) -> Job:
    plan = _plan(body)
    params, units = prepare_submission(rt, session, owner=owner, body=body)
    now = time.time()
    if body.rental_id is not None:
        require_rental(session, rental_id=body.rental_id, owner=owner, now=now)
    stake = effective_stakes(rt.ledger, session, [owner])[owner]
    priority = client_priority(stake, rt.settings.priority_stake_step)
    escrowed = 0 if body.rental_id else body.max_price * units * plan.max_replicas
    job = Job(
        id=new_id("job"),
        owner=owner,
        kind=body.kind,
        params=params,
        inputs=dict(body.inputs),
        state=JobState.QUEUED.value,
        units=units,
        max_price=body.max_price,
        escrowed=escrowed,
        paid=0,
        fee=0,
        refunded=0,
        max_attempts=body.max_attempts,
        timeout_s=body.timeout_s,
        memory_mb=body.memory_mb,
        created_at=now,
        updated_at=now,
        policy=plan.policy.value,
        replicas=plan.initial,
        quorum=plan.quorum,
        max_replicas=plan.max_replicas,
        priority=priority,
        rental_id=body.rental_id,
    )
    session.add(job)
    roles = ["primary"] + ["replica"] * (plan.initial - 1)
    if plan.policy is Policy.REFERENCE:
        roles = ["primary", "reference"]
    for role in roles:
        session.add(new_task(job, role=role, now=now))
    # Escrow last: InsufficientBalance rolls back the whole transaction, job rows included.
    if escrowed > 0:
        rt.ledger.escrow(
            session, owner=owner, account=job_escrow_account(job.id), amount=escrowed, ref=job.id
        )
    emit(
        session, "job.submitted", job_id=job.id, address=owner, kind=job.kind, escrowed=job.escrowed
    )
    return job


def get_owned_job(session: Session, job_id: str, owner: str, *, for_update: bool = False) -> Job:
    stmt = select(Job).where(Job.id == job_id)
    if for_update:
        stmt = stmt.with_for_update()
    job = session.scalars(stmt).first()
    # Someone else's job answers exactly like a missing one: ids are not an oracle.
    if job is None or job.owner != owner:
        raise JobNotFound(f"no job {job_id} of yours", job_id=job_id)
    return job


def list_jobs(session: Session, *, owner: str, state: JobState | None, limit: int) -> list[Job]:
    stmt = select(Job).where(Job.owner == owner)
    if state is not None:
        stmt = stmt.where(Job.state == state.value)
    return list(session.scalars(stmt.order_by(Job.created_at.desc()).limit(limit)))


def refund_job(rt: Runtime, session: Session, job: Job) -> None:
    """Return whatever the job's escrow still holds (to the owner; a honeypot's to the
    treasury)."""
    if job.honeypot:  # funded by the treasury: unspent money goes back there
        escrow = job_escrow_account(job.id)
        held = rt.ledger.balance(session, escrow)
        if held > 0:
            rt.ledger.transfer(
                session, src=escrow, dst=TREASURY, amount=held, kind="refund", ref=job.id
            )
        return
    job.refunded += rt.ledger.refund(
        session, escrow=job_escrow_account(job.id), owner=job.owner, ref=job.id
    )


def fail_job(rt: Runtime, session: Session, job: Job, *, error: str, now: float) -> None:
    for task in tasks_of(session, job.id):
        if task.payment_state == "escrowed":
            task.payment_state = "refunded"
    job.state = JobState.FAILED.value
    job.error = error
    job.updated_at = now
    refund_job(rt, session, job)
    emit(
        session, "job.failed", job_id=job.id, address=job.owner, error=error, refunded=job.refunded
    )


def end_rental_jobs(rt: Runtime, session: Session, *, rental_id: str, now: float) -> int:
    """A rental ended: its unfinished jobs can run nowhere else, so they fail (their
    escrow is zero: rental jobs are paid by the hour). Returns how many failed."""
    jobs = session.scalars(
        select(Job)
        .where(
            Job.rental_id == rental_id,
            Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]),
        )
        .with_for_update()
    )
    count = 0
    for job in jobs:
        for task in tasks_of(session, job.id):
            if task.state in (TaskState.QUEUED.value, TaskState.LEASED.value):
                task.state = TaskState.CANCELLED.value
                task.lease_id = None
                task.finished_at = now
        fail_job(
            rt, session, job, error=f"rental {rental_id} ended before the job finished", now=now
        )
        count += 1
    return count


def cancel_job(rt: Runtime, session: Session, job: Job) -> None:
    if job.state in TERMINAL:
        raise InvalidState(f"job {job.id} is already {job.state}", job_id=job.id, state=job.state)
    now = time.time()
    for task in tasks_of(session, job.id):
        if task.state in (TaskState.QUEUED.value, TaskState.LEASED.value):
            task.state = TaskState.CANCELLED.value
            task.lease_id = None
            task.finished_at = now
        if task.payment_state == "escrowed":
            task.payment_state = "refunded"
    job.state = JobState.CANCELLED.value
    job.updated_at = now
    refund_job(rt, session, job)
    emit(session, "job.cancelled", job_id=job.id, address=job.owner, refunded=job.refunded)


def check_uploaded_result(rt: Runtime, session: Session, *, sha256: str, node: str) -> None:
    """An uploaded result must be the reporting node's blob, within limits, a JSON object."""
    rt.blobs.owned(session, sha256, node)
    path = rt.blobs.path_for(sha256)
    if path.stat().st_size > rt.settings.max_result_bytes:
        raise ValidationFailed(
            "result is larger than the coordinator accepts", field="output_sha256"
        )
    try:
        result = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"result is not JSON: {exc}", field="output_sha256") from exc
    if not isinstance(result, dict):
        raise ValidationFailed("result must be a JSON object", field="output_sha256")


def job_result(rt: Runtime, job: Job) -> JobResultPublic:
    if job.state != JobState.SUCCEEDED.value or job.result_sha256 is None:
        raise InvalidState(
            f"job {job.id} has no result: it is {job.state}", job_id=job.id, state=job.state
        )
    data = json.loads(rt.blobs.path_for(job.result_sha256).read_bytes())
    return JobResultPublic(
        job_id=job.id, kind=job.kind, output_sha256=job.result_sha256, result=data
    )
