"""Task endpoints for nodes: long-poll lease, report a result, release a lease."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from quackmesh.coordinator.deps import RuntimeDep, Signer
from quackmesh.coordinator.jobs.service import check_uploaded_result
from quackmesh.coordinator.nodes.service import get_node
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.scheduler.service import (
    claim_tasks,
    has_work,
    held_task,
    lease_public,
    release_task,
    retry_or_fail,
)
from quackmesh.coordinator.verify.service import on_success
from quackmesh.core.canon import canonical_json, sha256_hex
from quackmesh.core.errors import PayloadTooLarge, ValidationFailed
from quackmesh.core.schemas import (
    INLINE_RESULT_MAX,
    LeaseCreate,
    LeasePublic,
    NodeStatus,
    ReleaseCreate,
    TaskLease,
    TaskReport,
    TaskReportPublic,
    TaskState,
)

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


def _claim(rt: Runtime, address: str, max_tasks: int, base_url: str) -> list[TaskLease]:
    with rt.reads() as session:
        if not has_work(rt, session, address=address, now=time.time()):
            return []
    with rt.sessions.begin() as session:
        node = get_node(session, address)
        claimed = claim_tasks(
            rt, session, node=node, max_tasks=min(max_tasks, node.slots), now=time.time()
        )
        leases = [
            lease_public(rt, task=t, job=j, reader=address, base_url=base_url) for t, j in claimed
        ]
    return leases


@router.post("/lease", response_model=LeasePublic)
async def lease(body: LeaseCreate, signer: Signer, rt: RuntimeDep, request: Request) -> LeasePublic:
    """Long-poll for up to ``max_tasks`` tasks, waiting at most ``wait_s`` seconds."""
    deadline = time.monotonic() + body.wait_s
    base_url = str(request.base_url)
    while True:
        leases = await run_in_threadpool(_claim, rt, signer, body.max_tasks, base_url)
        remaining = deadline - time.monotonic()
        draining = rt.liveness.status(signer) == NodeStatus.DRAINING
        if leases or remaining <= 0 or rt.stop.is_set() or draining:
            return LeasePublic(tasks=leases)
        # Bounded wait: a notify wakes us early; other replicas' work is seen within 1 s.
        await rt.notifier.wait(min(remaining, 1.0))


@router.post("/{task_id}/report", response_model=TaskReportPublic)
def report(task_id: str, body: TaskReport, signer: Signer, rt: RuntimeDep) -> TaskReportPublic:
    """Report a leased task's outcome; only the current lease holder is heard."""
    now = time.time()
    with rt.sessions.begin() as session:
        task, job = held_task(session, task_id=task_id, node=signer, lease_id=body.lease_id)
        node = get_node(session, signer)
        paid = 0
        if body.outcome == "succeeded":
            output_sha256 = _store_inline_output(rt, session, body, signer)
            paid = on_success(
                rt, session, task=task, job=job, node=node, output_sha256=output_sha256, now=now
            )
            rt.metrics.tasks.labels("succeeded").inc()
        else:
            reason = body.failure_reason or "crash"
            node.tasks_failed += 1
            retry_or_fail(
                rt, session, task=task, job=job, reason=reason, detail=body.detail, now=now
            )
            rt.metrics.tasks.labels("failed").inc()
        state = TaskState(task.state)
        # What the verification service did in this transaction (see verify/service.py).
        queued = session.info.get("tasks_queued", 0)
        slashes = list(session.info.get("slashes", []))
    for reason in slashes:
        rt.metrics.slashes.labels(reason).inc()
    if state == TaskState.QUEUED or queued:
        rt.notifier.notify_all()
    return TaskReportPublic(task_id=task_id, state=state, paid=paid)


def _store_inline_output(rt: Runtime, session: Session, body: TaskReport, node: str) -> str:
    """The result's blob: the inline ``output`` stored now, or an earlier upload, checked."""
    if body.output is None:
        if body.output_sha256 is None:
            raise ValidationFailed(
                "a succeeded report needs output or output_sha256", field="output_sha256"
            )
        check_uploaded_result(rt, session, sha256=body.output_sha256, node=node)
        return body.output_sha256
    data = canonical_json(body.output)
    if len(data) > INLINE_RESULT_MAX:
        raise PayloadTooLarge(
            f"inline output is {len(data)} bytes; above {INLINE_RESULT_MAX} upload it as a blob",
            limit=INLINE_RESULT_MAX,
        )
    if body.output_sha256 is not None and body.output_sha256 != sha256_hex(data):
        raise ValidationFailed(
            "output_sha256 does not match the inline output", field="output_sha256"
        )
    return rt.blobs.put_bytes(session, data, owner=node)


@router.post("/{task_id}/release", response_model=TaskReportPublic)
def release(task_id: str, body: ReleaseCreate, signer: Signer, rt: RuntimeDep) -> TaskReportPublic:
    """Hand a leased task back unfinished (a draining node); it is not counted as a failure."""
    with rt.sessions.begin() as session:
        task, job = held_task(session, task_id=task_id, node=signer, lease_id=body.lease_id)
        release_task(session, task=task, job=job, now=time.time())
    rt.notifier.notify()
    return TaskReportPublic(task_id=task_id, state=TaskState.QUEUED, paid=0)
