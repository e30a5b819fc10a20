"""Lease rules: claim, report failure, release, expire.

A node may lease a queued task when no rule of :mod:`.rules` excludes it (online, the
workload advertised, price, stake, rental, replicas on distinct nodes, verifier,
reputation, the match window). Tasks go by queue priority, then first in, first out.

On PostgreSQL the claim uses ``FOR UPDATE SKIP LOCKED`` so several coordinator replicas
never hand one task out twice; on SQLite ``BEGIN IMMEDIATE`` serialises writers. Lock
order is always job before task (as in cancel): the scans here take both rows with SKIP
LOCKED, so a busy job is skipped rather than waited for, and no two transactions can
wait on each other. A lease carries a ``lease_id``: a report is only accepted from the
holder of the current lease, so a node that lost its lease is never paid.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.auth.capability import capability_query
from quackmesh.coordinator.db.engine import is_postgres
from quackmesh.coordinator.db.models import Job, Node, Task
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.jobs.service import fail_job
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.scheduler.rules import NodeView, exclusion
from quackmesh.coordinator.scheduler.views import node_views, task_view
from quackmesh.coordinator.verify.disputes import reconsider_dispute
from quackmesh.coordinator.verify.service import (
    REPLICA_ROLES,
    close_late,
    exclude_siblings,
    reconsider,
    record_timeliness,
)
from quackmesh.core.errors import InvalidState, LeaseLost, TaskNotFound
from quackmesh.core.schemas import InputRef, JobState, NodeStatus, TaskLease, TaskLimits, TaskState

__all__ = [
    "claim_tasks",
    "expire_leases",
    "has_work",
    "held_task",
    "lease_public",
    "release_task",
    "retry_or_fail",
]

SCAN_FACTOR = 4  # rows scanned per task wanted, to skip ones this node may not take


def _claimable(node: Node, rental_id: str | None) -> Any:
    """SQL pre-filter (workload, rental, price); :func:`exclusion` decides the rest."""
    stmt = (
        select(Task, Job)
        .join(Job, Job.id == Task.job_id)
        .where(Task.state == TaskState.QUEUED.value, Task.kind.in_(node.workloads))
    )
    if rental_id is not None:
        return stmt.where(Task.rental_id == rental_id)
    return stmt.where(Task.rental_id.is_(None), Task.max_price >= node.price_per_unit)


def _view(rt: Runtime, session: Session, node: Node) -> NodeView:
    return node_views(rt.ledger, session, [node])[node.address]


def _eligible(rt: Runtime, view: NodeView, task: Task, job: Job, now: float) -> bool:
    reason = exclusion(
        view,
        task_view(task, job),
        min_stake=rt.settings.min_stake,
        now=now,
        window_s=rt.settings.match_window_s,
        check_busy=False,
    )
    return reason is None


def has_work(rt: Runtime, session: Session, *, address: str, now: float) -> bool:
    """Read-only: could this node claim anything now? (Keeps idle polls off the write lock.)"""
    node = session.get(Node, address)
    if node is None or node.status != NodeStatus.ONLINE.value:
        return node is None  # unknown nodes go on to the claim, which answers 404
    view = _view(rt, session, node)
    if view.busy >= view.slots or view.stake < rt.settings.min_stake:
        return False
    stmt = _claimable(node, view.rental_id).limit(64)
    return any(_eligible(rt, view, task, job, now) for task, job in session.execute(stmt))


def claim_tasks(
    rt: Runtime, session: Session, *, node: Node, max_tasks: int, now: float
) -> list[tuple[Task, Job]]:
    if node.status != NodeStatus.ONLINE.value:
        return []
    view = _view(rt, session, node)
    max_tasks = min(max_tasks, view.slots - view.busy)
    if max_tasks <= 0 or view.stake < rt.settings.min_stake:
        return []
    stmt = (
        _claimable(node, view.rental_id)
        .order_by(Task.priority.desc(), Task.queued_at)
        .limit(max_tasks * SCAN_FACTOR + 8)
    )
    if is_postgres(str(rt.engine.url)):
        stmt = stmt.with_for_update(skip_locked=True, of=[Task, Job])
    claimed: list[tuple[Task, Job]] = []
    for task, job in session.execute(stmt):
        if not _eligible(rt, view, task, job, now):
            continue
        task.state = TaskState.LEASED.value
        task.node = node.address
        task.lease_id = secrets.token_hex(12)
        task.lease_expires_at = now + rt.settings.lease_s
        task.price_per_unit = 0 if task.rental_id else node.price_per_unit
        task.attempts += 1
        task.leased_at = now
        if job.state == JobState.QUEUED.value:
            job.state = JobState.RUNNING.value
            job.updated_at = now
            if not job.honeypot:
                emit(session, "job.running", job_id=job.id, address=job.owner, at=now)
        emit(
            session,
            "task.leased",
            job_id=job.id,
            node=node.address,
            at=now,
            task_id=task.id,
            attempt=task.attempts,
        )
        if job.max_replicas > 1 or task.role != "primary":
            exclude_siblings(session, task, node.address)  # replicas run on distinct nodes
        claimed.append((task, job))
        if len(claimed) >= max_tasks:
            break
    return claimed


def lease_public(rt: Runtime, *, task: Task, job: Job, reader: str, base_url: str) -> TaskLease:
    expires = int(time.time()) + rt.settings.capability_ttl_s
    inputs = []
    task_inputs = job.inputs if task.inputs is None else task.inputs
    for name, sha in sorted(task_inputs.items()):
        query = capability_query(rt.secret, sha256=sha, reader=reader, expires=expires)
        inputs.append(
            InputRef(
                name=name,
                sha256=sha,
                size=rt.blobs.path_for(sha).stat().st_size,
                url=f"{base_url.rstrip('/')}/v1/blobs/{sha}?{query}",
            )
        )
    if task.lease_id is None or task.lease_expires_at is None:
        raise InvalidState(f"task {task.id} is not leased", task_id=task.id)
    return TaskLease(
        task_id=task.id,
        job_id=job.id,
        lease_id=task.lease_id,
        kind=task.kind,
        params=job.params if task.params is None else task.params,
        inputs=inputs,
        lease_expires_at=task.lease_expires_at,
        limits=TaskLimits(wall_s=job.timeout_s, cpu_s=job.timeout_s * 2, memory_mb=job.memory_mb),
        local_inputs=task.local_inputs or {},
    )


def held_task(session: Session, *, task_id: str, node: str, lease_id: str) -> tuple[Task, Job]:
    """The task if ``node`` still holds lease ``lease_id`` on it, else 404/409."""
    job_id = session.scalar(select(Task.job_id).where(Task.id == task_id))
    if job_id is None:
        raise TaskNotFound(f"no task {task_id}", task_id=task_id)
    # Job first, then task: the same order as cancel, so the two never deadlock.
    job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one()
    task = session.scalars(select(Task).where(Task.id == task_id).with_for_update()).one()
    if task.state != TaskState.LEASED.value or task.node != node or task.lease_id != lease_id:
        raise LeaseLost(
            f"task {task_id} is not leased to you any more (state {task.state})",
            task_id=task_id,
            state=task.state,
        )
    return task, job


def retry_or_fail(
    rt: Runtime, session: Session, *, task: Task, job: Job, reason: str, detail: str, now: float
) -> None:
    """Record a failed attempt; re-queue on another node, or fail the job when out of tries."""
    node = task.node or ""
    task.failures = [
        *task.failures,
        {"node": node, "reason": reason, "detail": detail[:2000], "at": now},
    ]
    if node and node not in task.excluded_nodes:
        task.excluded_nodes = [*task.excluded_nodes, node]
    task.lease_id = None
    task.lease_expires_at = None
    emit(
        session,
        "task.failed",
        job_id=job.id,
        node=node or None,
        at=now,
        task_id=task.id,
        reason=reason,
    )
    if task.role == "fl":  # pinned to its node: a failed round task drops that client
        from quackmesh.coordinator.fl.rounds import on_task_failed

        on_task_failed(rt, session, task=task, job=job, now=now)
        return
    if job.state == JobState.SUCCEEDED.value and task.role in REPLICA_ROLES:
        # A late replica of a decided job failed: nothing to retry; release its kept pay.
        task.state = TaskState.FAILED.value
        task.finished_at = now
        task.payment_state = "unpaid"
        close_late(rt, session, job=job)
        return
    if reason == "lease_expired" and node:
        silent = session.get(Node, node)
        if silent is not None:
            record_timeliness(rt, silent, 0.0)
    if task.attempts >= job.max_attempts:
        task.state = TaskState.FAILED.value
        task.finished_at = now
        if task.role == "dispute":
            task.payment_state = "unpaid"
            reconsider_dispute(rt, session, job=job, now=now)
            return
        if job.max_replicas > 1 and job.state == JobState.RUNNING.value:
            task.payment_state = "unpaid"
            reconsider(rt, session, job=job, now=now)  # other replicas may still decide it
            return
        fail_job(
            rt,
            session,
            job,
            error=f"task failed {task.attempts} times; last: {reason}: {detail[:500]}",
            now=now,
        )
        return
    task.state = TaskState.QUEUED.value
    task.node = None
    task.queued_at = now
    job.updated_at = now
    emit(session, "task.requeued", job_id=job.id, at=now, task_id=task.id, attempt=task.attempts)


def release_task(session: Session, *, task: Task, job: Job, now: float) -> None:
    """A draining node hands a task back: no failure recorded, the attempt not counted."""
    if job.state not in (JobState.QUEUED.value, JobState.RUNNING.value):
        raise InvalidState(f"job {job.id} is {job.state}", job_id=job.id)
    node = task.node
    task.state = TaskState.QUEUED.value
    task.node = None
    task.lease_id = None
    task.lease_expires_at = None
    task.attempts = max(0, task.attempts - 1)
    task.queued_at = now
    emit(session, "task.released", job_id=job.id, node=node, at=now, task_id=task.id)


def expire_leases(rt: Runtime, session: Session, *, now: float, offline_nodes: list[str]) -> int:
    """Leases past their expiry, or held by nodes that just went Offline, go back to the queue."""
    cond = Task.lease_expires_at < now
    if offline_nodes:
        cond = cond | Task.node.in_(offline_nodes)
    stmt = (
        select(Task, Job)
        .join(Job, Job.id == Task.job_id)
        .where(Task.state == TaskState.LEASED.value, cond)
        .with_for_update(skip_locked=True, of=[Task, Job])  # busy rows wait for the next sweep
    )
    count = 0
    for task, job in session.execute(stmt):
        silent = task.node in offline_nodes
        reason_detail = "node went offline" if silent else "lease expired without a report"
        retry_or_fail(
            rt, session, task=task, job=job, reason="lease_expired", detail=reason_detail, now=now
        )
        count += 1
    return count
