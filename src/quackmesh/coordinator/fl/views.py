"""Read models of a federated run: its round history, clients, scores and rewards."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import FlClient, FlRound, FlRun, Job
from quackmesh.core.errors import InvalidState, NotFound
from quackmesh.core.schemas import FlClientPublic, FlRoundPublic, FlRunPublic, JobState

__all__ = ["model_sha", "run_of", "run_public"]


def run_of(session: Session, job: Job) -> FlRun:
    run = session.get(FlRun, job.id)
    if run is None:
        raise NotFound(f"job {job.id} is not a federated training job", job_id=job.id)
    return run


def _client(c: FlClient) -> FlClientPublic:
    return FlClientPublic(
        node=c.node,
        state=c.state,
        n_examples=c.n_examples,
        loss=c.loss,
        fed_loss=c.fed_loss,
        fed_accuracy=c.fed_accuracy,
        score=c.score,
        accepted=c.accepted,
        reward=c.reward,
        compute_paid=c.compute_paid,
    )


def run_public(session: Session, job: Job) -> FlRunPublic:
    run = run_of(session, job)
    rounds = list(
        session.scalars(select(FlRound).where(FlRound.job_id == job.id).order_by(FlRound.round))
    )
    history = []
    for r in rounds:
        clients = session.scalars(
            select(FlClient)
            .where(FlClient.job_id == job.id, FlClient.round == r.round)
            .order_by(FlClient.attempt, FlClient.client_id)
        )
        history.append(
            FlRoundPublic(
                round=r.round,
                state=r.state,  # type: ignore[arg-type]
                started_at=r.started_at,
                finished_at=r.finished_at,
                participants=r.participants,
                dropped=r.dropped,
                loss=r.loss,
                accuracy=r.accuracy,
                fed_loss=r.fed_loss,
                fed_accuracy=r.fed_accuracy,
                epsilon=r.epsilon,
                reward=r.reward,
                compute=r.compute,
                model_sha256=r.model_sha,
                clients=[_client(c) for c in clients],
                detail=r.detail,
            )
        )
    return FlRunPublic(
        job_id=job.id,
        state=JobState(job.state),
        round=run.round,
        rounds=int(job.params.get("rounds", 0)),
        phase=run.phase,
        epsilon=run.eps_spent if job.params.get("dp") else None,
        reward_paid=run.reward_paid,
        compute_paid=run.compute_paid,
        spent=run.reward_paid + run.compute_paid,
        model_sha256=run.model_sha,
        stop_reason=run.stop_reason,
        history=history,
    )


def model_sha(session: Session, job: Job, *, round_no: int | None) -> str:
    """The final model (a finished job), or the model after round ``round_no``."""
    run = run_of(session, job)
    if round_no is None:
        if job.state != JobState.SUCCEEDED.value:
            raise InvalidState(
                f"job {job.id} is {job.state}: ask for a finished round with ?round=N",
                job_id=job.id,
                state=job.state,
            )
        return run.model_sha
    row = session.get(FlRound, (job.id, round_no))
    if row is None:
        raise NotFound(f"job {job.id} has no finished round {round_no}", job_id=job.id)
    return row.model_sha
