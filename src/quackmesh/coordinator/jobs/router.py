"""Job endpoints for clients: submit, list, read, result, cancel."""

from __future__ import annotations

import time

from fastapi import APIRouter, Query
from sqlalchemy import select

from quackmesh.coordinator.db.models import Dispute
from quackmesh.coordinator.deps import ReadSigner, RuntimeDep, SubmitSigner
from quackmesh.coordinator.fl.rounds import advance
from quackmesh.coordinator.fl.submit import submit_fl_job
from quackmesh.coordinator.jobs.service import (
    cancel_job,
    get_owned_job,
    job_public,
    job_result,
    list_jobs,
    submit_job,
    tasks_of,
)
from quackmesh.coordinator.verify.disputes import dispute_public, open_dispute
from quackmesh.core.schemas import (
    DisputeCreate,
    DisputePublic,
    JobCreate,
    JobListPublic,
    JobPublic,
    JobResultPublic,
    JobState,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", response_model=JobPublic, status_code=201)
def submit(body: JobCreate, signer: SubmitSigner, rt: RuntimeDep) -> JobPublic:
    """Validate the spec and its data, escrow ``max_price × units``, queue the task.

    Anything wrong (unknown kind, bad parameter, unparsable data, data that does not fit,
    too little balance) is a 4xx and nothing is written or charged.
    """
    with rt.sessions.begin() as session:
        if body.kind == "fl.train":
            job = submit_fl_job(rt, session, owner=signer, body=body)
            advance(rt, session, job=job, now=time.time())  # round 1 starts now if it can
        else:
            job = submit_job(rt, session, owner=signer, body=body)
        public = job_public(job, tasks_of(session, job.id))
    rt.metrics.jobs.labels(body.kind).inc()
    rt.notifier.notify()
    return public


@router.get("", response_model=JobListPublic)
def list_my_jobs(
    signer: ReadSigner,
    rt: RuntimeDep,
    state: JobState | None = None,
    limit: int = Query(default=50, ge=1, le=500),
) -> JobListPublic:
    with rt.reads() as session:
        jobs = list_jobs(session, owner=signer, state=state, limit=limit)
        return JobListPublic(jobs=[job_public(j, tasks_of(session, j.id)) for j in jobs])


@router.get("/{job_id}", response_model=JobPublic)
def read_job(job_id: str, signer: ReadSigner, rt: RuntimeDep) -> JobPublic:
    with rt.reads() as session:
        job = get_owned_job(session, job_id, signer)
        return job_public(job, tasks_of(session, job.id))


@router.get("/{job_id}/result", response_model=JobResultPublic)
def read_result(job_id: str, signer: ReadSigner, rt: RuntimeDep) -> JobResultPublic:
    with rt.reads() as session:
        return job_result(rt, get_owned_job(session, job_id, signer))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel(job_id: str, signer: SubmitSigner, rt: RuntimeDep) -> JobPublic:
    """Cancel a queued or running job; the whole escrow goes back to the owner."""
    with rt.sessions.begin() as session:
        job = get_owned_job(session, job_id, signer, for_update=True)
        cancel_job(rt, session, job)
        return job_public(job, tasks_of(session, job.id))


@router.post("/{job_id}/dispute", response_model=DisputePublic, status_code=201)
def dispute(
    job_id: str, body: DisputeCreate, signer: SubmitSigner, rt: RuntimeDep
) -> DisputePublic:
    """Dispute a succeeded job within the window: escrows the dispute fee plus the re-runs;
    high-reputation nodes re-run it (see README "Disputes")."""
    with rt.sessions.begin() as session:
        job = get_owned_job(session, job_id, signer, for_update=True)
        row = open_dispute(rt, session, job=job, reason=body.reason, now=time.time())
        public = dispute_public(row)
    rt.notifier.notify_all()
    return public


@router.get("/{job_id}/disputes", response_model=list[DisputePublic])
def list_disputes(job_id: str, signer: ReadSigner, rt: RuntimeDep) -> list[DisputePublic]:
    with rt.reads() as session:
        job = get_owned_job(session, job_id, signer)
        rows = session.scalars(
            select(Dispute).where(Dispute.job_id == job.id).order_by(Dispute.opened_at)
        )
        return [dispute_public(r) for r in rows]
