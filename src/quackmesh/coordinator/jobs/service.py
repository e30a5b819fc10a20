"""Job rules. Each public function is one state change in the caller's transaction.

Money flow of a job (all in micro-DUCK, see DESIGN.md "Money")::

    submit   wallet:<owner>   -> escrow:job:<id>       max_price × units
    success  escrow:job:<id>  -> wallet:<provider>     price × units − fee
             escrow:job:<id>  -> treasury              fee = price × units × fee_bps / 10⁴
             escrow:job:<id>  -> wallet:<owner>        whatever is left (refund)
    failure / cancel: the whole escrow back to the owner
"""

from __future__ import annotations

import json
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Job, Node, Task
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.runtime import Runtime
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
)
from quackmesh.ledger import job_escrow_account
from quackmesh.workloads import get_workload

__all__ = [
    "cancel_job",
    "check_uploaded_result",
    "complete_task",
    "fail_job",
    "get_owned_job",
    "job_public",
    "job_result",
    "list_jobs",
    "prepare_submission",
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


def submit_job(rt: Runtime, session: Session, *, owner: str, body: JobCreate) -> Job:
    params, units = prepare_submission(rt, session, owner=owner, body=body)
    now = time.time()
    job = Job(
        id=new_id("job"),
        owner=owner,
        kind=body.kind,
        params=params,
        inputs=dict(body.inputs),
        state=JobState.QUEUED.value,
        units=units,
        max_price=body.max_price,
        escrowed=body.max_price * units,
        paid=0,
        fee=0,
        refunded=0,
        max_attempts=body.max_attempts,
        timeout_s=body.timeout_s,
        memory_mb=body.memory_mb,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.add(
        Task(
            id=new_id("task"),
            job_id=job.id,
            kind=body.kind,
            state=TaskState.QUEUED.value,
            max_price=body.max_price,
            attempts=0,
            failures=[],
            excluded_nodes=[],
            queued_at=now,
            paid=0,
        )
    )
    # Escrow last: InsufficientBalance rolls back the whole transaction, job rows included.
    rt.ledger.escrow(
        session, owner=owner, account=job_escrow_account(job.id), amount=job.escrowed, ref=job.id
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


def _refund(rt: Runtime, session: Session, job: Job) -> None:
    job.refunded += rt.ledger.refund(
        session, escrow=job_escrow_account(job.id), owner=job.owner, ref=job.id
    )


def fail_job(rt: Runtime, session: Session, job: Job, *, error: str, now: float) -> None:
    job.state = JobState.FAILED.value
    job.error = error
    job.updated_at = now
    _refund(rt, session, job)
    emit(
        session, "job.failed", job_id=job.id, address=job.owner, error=error, refunded=job.refunded
    )


def cancel_job(rt: Runtime, session: Session, job: Job) -> None:
    if job.state in TERMINAL:
        raise InvalidState(f"job {job.id} is already {job.state}", job_id=job.id, state=job.state)
    now = time.time()
    for task in tasks_of(session, job.id):
        if task.state in (TaskState.QUEUED.value, TaskState.LEASED.value):
            task.state = TaskState.CANCELLED.value
            task.lease_id = None
            task.finished_at = now
    job.state = JobState.CANCELLED.value
    job.updated_at = now
    _refund(rt, session, job)
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


def complete_task(
    rt: Runtime,
    session: Session,
    *,
    task: Task,
    job: Job,
    node: Node,
    output_sha256: str,
    now: float,
) -> int:
    """Accept a task's (already checked) output, pay the provider, refund the rest.

    Returns the payment. The output blob is checked by :func:`check_uploaded_result` or was
    stored from an inline report.
    """
    price = task.price_per_unit if task.price_per_unit is not None else node.price_per_unit
    amount = price * job.units
    fee = amount * rt.settings.fee_bps // 10_000
    refund = rt.ledger.settle_and_refund(
        session,
        escrow=job_escrow_account(job.id),
        provider=node.address,
        owner=job.owner,
        amount=amount,
        fee=fee,
        ref=task.id,
    )
    task.state = TaskState.SUCCEEDED.value
    task.output_sha256 = output_sha256
    task.finished_at = now
    task.lease_id = None
    task.paid = amount
    node.tasks_completed += 1
    job.state = JobState.SUCCEEDED.value
    job.result_sha256 = output_sha256
    job.paid += amount
    job.fee += fee
    job.refunded += refund
    job.updated_at = now
    emit(session, "task.succeeded", job_id=job.id, node=node.address, task_id=task.id)
    emit(
        session,
        "payment.settled",
        job_id=job.id,
        node=node.address,
        address=job.owner,
        amount=amount,
        fee=fee,
    )
    emit(
        session,
        "job.succeeded",
        job_id=job.id,
        address=job.owner,
        paid=job.paid,
        refunded=job.refunded,
    )
    return amount


def job_result(rt: Runtime, job: Job) -> JobResultPublic:
    if job.state != JobState.SUCCEEDED.value or job.result_sha256 is None:
        raise InvalidState(
            f"job {job.id} has no result: it is {job.state}", job_id=job.id, state=job.state
        )
    data = json.loads(rt.blobs.path_for(job.result_sha256).read_bytes())
    return JobResultPublic(
        job_id=job.id, kind=job.kind, output_sha256=job.result_sha256, result=data
    )
