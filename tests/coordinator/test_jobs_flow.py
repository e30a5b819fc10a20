"""Contract tests of the job life cycle and its money, run on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from quackmesh.coordinator.db.models import Task
from quackmesh.coordinator.sweeper import sweep_once
from quackmesh.core.canon import canonical_json, sha256_hex
from quackmesh.core.errors import (
    InvalidState,
    JobNotFound,
    LeaseLost,
    PayloadTooLarge,
    ValidationFailed,
)
from quackmesh.core.schemas import INLINE_RESULT_MAX, JobState, TaskLease, TaskReport, TaskState
from quackmesh.ledger import TREASURY, job_escrow_account, wallet_account
from quackmesh.sdk import Client

from .conftest import Net

LINE_RESULT = {"coefficients": [2.0], "intercept": 1.0, "r2": 1.0, "mse": 0.0}


def lease_one(node: Client) -> TaskLease:
    tasks = node.lease(max_tasks=1, wait_s=0).tasks
    assert len(tasks) == 1, "expected exactly one task to lease"
    return tasks[0]


def succeed(node: Client, lease: TaskLease, result: dict[str, object] = LINE_RESULT) -> int:
    blob = node.upload(json.dumps(result).encode())
    report = TaskReport(lease_id=lease.lease_id, outcome="succeeded", output_sha256=blob.sha256)
    return node.report(lease.task_id, report).paid


def fail(node: Client, lease: TaskLease, reason: str = "crash") -> TaskState:
    report = TaskReport(
        lease_id=lease.lease_id, outcome="failed", failure_reason=reason, detail="boom"
    )  # type: ignore[arg-type]
    return node.report(lease.task_id, report).state


def balances(net: Net, *accounts: str) -> list[int]:
    with net.rt.sessions() as session:
        return [net.rt.ledger.balance(session, a) for a in accounts]


def test_job_succeeds_and_money_moves_exactly(net: Net) -> None:
    client = net.funded(10_000_000)
    job = client.submit(
        "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
    )
    assert job.state == JobState.QUEUED and job.units == 1 and job.escrowed == 1_000
    assert client.balance().available == 10_000_000 - 1_000

    node = net.node(price=400)
    lease = lease_one(node)
    assert lease.kind == "ml.linear_regression" and lease.params["target"] == "y"
    assert client.status(job.id).state == JobState.RUNNING
    assert succeed(node, lease) == 400

    done = client.status(job.id)
    assert done.state == JobState.SUCCEEDED
    assert (done.paid, done.fee, done.refunded) == (400, 20, 600)  # fee is 5 % of 400
    assert client.result(job.id).result["coefficients"] == [2.0]
    assert client.balance().available == 10_000_000 - 400
    provider, treasury, escrow = balances(
        net, wallet_account(node.address), TREASURY, job_escrow_account(job.id)
    )
    assert (provider, treasury, escrow) == (380, 20, 0)
    check = client.ledger_check()
    assert check.ok and check.total == 0, check.problems


def test_node_above_max_price_gets_no_lease(net: Net) -> None:
    client = net.funded()
    client.submit("ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=100)
    expensive = net.node(price=101)
    assert expensive.lease(max_tasks=1, wait_s=0).tasks == []
    cheap = net.node(price=100)
    assert len(cheap.lease(max_tasks=1, wait_s=0).tasks) == 1


def test_node_only_gets_workloads_it_advertises(net: Net) -> None:
    client = net.funded()
    client.submit("ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1000)
    only_pca = net.node(kinds=("ml.pca",))
    assert only_pca.lease(max_tasks=1, wait_s=0).tasks == []


def test_failed_task_is_retried_elsewhere_then_job_fails_with_full_refund(net: Net) -> None:
    client = net.funded(5_000)
    job = client.submit(
        "ml.linear_regression",
        data=net.csv(),
        params={"target": "y"},
        max_price=1_000,
        max_attempts=2,
    )
    node_a, node_b = net.node(), net.node()
    assert fail(node_a, lease_one(node_a)) == TaskState.QUEUED
    assert node_a.lease(max_tasks=1, wait_s=0).tasks == [], "a node never retries a task it failed"
    assert fail(node_b, lease_one(node_b), reason="memory_limit") == TaskState.FAILED

    done = client.status(job.id)
    assert done.state == JobState.FAILED and done.paid == 0 and done.refunded == 1_000
    assert [f.reason for f in done.tasks[0].failures] == ["crash", "memory_limit"]
    assert "memory_limit" in (done.error or "")
    assert client.balance().available == 5_000
    assert client.ledger_check().ok


def test_expired_lease_is_requeued_and_only_the_new_holder_is_paid(
    net_factory: Callable[..., Net],
) -> None:
    net = net_factory(lease_s=5, offline_after_s=600)  # the lease lapses while nodes stay online
    client = net.funded()
    job = client.submit(
        "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
    )
    slow, fast = net.node(), net.node()
    stale = lease_one(slow)
    assert sweep_once(net.rt, now=time.time() + net.rt.settings.lease_s + 1) == 1

    fresh = lease_one(fast)
    with pytest.raises(LeaseLost):
        succeed(slow, stale)
    assert succeed(fast, fresh) == 400
    done = client.status(job.id)
    assert done.state == JobState.SUCCEEDED and done.tasks[0].node == fast.address
    assert done.tasks[0].failures[0].reason == "lease_expired"
    assert balances(net, wallet_account(slow.address), wallet_account(fast.address)) == [0, 380]
    settlements = [json.loads(line) for line in client.ledger_journal().splitlines()]
    assert sum(1 for tx in settlements if tx["kind"] == "settle" and tx["ref"] == job.id) == 1


def test_silent_node_goes_offline_and_its_lease_is_requeued(net: Net) -> None:
    client = net.funded()
    job = client.submit(
        "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
    )
    node = net.node()
    lease_one(node)
    sweep_once(net.rt, now=time.time() + net.rt.settings.offline_after_s + 1)
    assert [n.status for n in client.nodes() if n.address == node.address] == ["offline"]
    task = client.status(job.id).tasks[0]
    assert task.state == TaskState.QUEUED and task.failures[0].detail == "node went offline"


def test_heartbeat_extends_lease_and_tells_node_to_stop_cancelled_task(net: Net) -> None:
    from quackmesh.core.schemas import HeartbeatCreate

    client = net.funded()
    job = client.submit(
        "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
    )
    node = net.node()
    lease = lease_one(node)
    time.sleep(0.05)  # so the heartbeat's clock is past the lease's start
    node.heartbeat(HeartbeatCreate(running=[lease.task_id], free_slots=1))
    sweep_once(net.rt)
    with net.rt.sessions() as session:
        extended = session.get(Task, lease.task_id)
        assert extended is not None and extended.lease_expires_at is not None
        assert extended.lease_expires_at > lease.lease_expires_at

    client.cancel(job.id)
    node.heartbeat(HeartbeatCreate(running=[lease.task_id], free_slots=1))
    sweep_once(net.rt)
    reply = node.heartbeat(HeartbeatCreate(running=[], free_slots=2))
    assert reply.cancel == [lease.task_id]


def test_release_requeues_without_counting_an_attempt(net: Net) -> None:
    client = net.funded()
    job = client.submit(
        "ml.linear_regression",
        data=net.csv(),
        params={"target": "y"},
        max_price=1_000,
        max_attempts=1,
    )
    node = net.node()
    lease = lease_one(node)
    assert node.release(lease.task_id, lease.lease_id).state == TaskState.QUEUED
    task = client.status(job.id).tasks[0]
    assert (task.state, task.attempts, task.failures) == (TaskState.QUEUED, 0, [])
    assert succeed(node, lease_one(node)) == 400  # max_attempts=1 still allows the real run


def test_cancel_refunds_escrow_and_second_cancel_conflicts(net: Net) -> None:
    client = net.funded(3_000)
    job = client.submit(
        "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
    )
    cancelled = client.cancel(job.id)
    assert cancelled.state == JobState.CANCELLED and cancelled.refunded == 1_000
    assert client.balance().available == 3_000
    with pytest.raises(InvalidState):
        client.cancel(job.id)
    assert net.node().lease(max_tasks=1, wait_s=0).tasks == []


def test_report_by_another_node_or_wrong_lease_is_rejected(net: Net) -> None:
    client = net.funded()
    client.submit("ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000)
    holder, thief = net.node(), net.node()
    lease = lease_one(holder)
    with pytest.raises(LeaseLost):
        succeed(thief, lease)
    forged = lease.model_copy(update={"lease_id": "0" * 24})
    with pytest.raises(LeaseLost):
        succeed(holder, forged)
    assert succeed(holder, lease) == 400


def test_other_clients_cannot_see_a_job(net: Net) -> None:
    owner = net.funded()
    job = owner.submit(
        "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
    )
    stranger = net.client()
    with pytest.raises(JobNotFound):
        stranger.status(job.id)
    with pytest.raises(JobNotFound):
        stranger.cancel(job.id)
    assert stranger.list_jobs() == []
    assert [j.id for j in owner.list_jobs()] == [job.id]


def test_long_poll_wakes_when_work_arrives(net: Net) -> None:
    import threading

    node = net.node()
    client = net.funded()
    timer = threading.Timer(
        0.5,
        lambda: client.submit(
            "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
        ),
    )
    timer.start()
    started = time.monotonic()
    tasks = node.lease(max_tasks=1, wait_s=10).tasks
    timer.join()
    assert len(tasks) == 1
    assert time.monotonic() - started < 9, "the lease returned on notify, not on timeout"


def test_small_results_travel_inline_in_the_report(net: Net) -> None:
    client = net.funded()
    job = client.submit(
        "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
    )
    node = net.node()
    lease = lease_one(node)
    mismatch = TaskReport(
        lease_id=lease.lease_id, outcome="succeeded", output=LINE_RESULT, output_sha256="0" * 64
    )
    with pytest.raises(ValidationFailed, match="does not match"):
        node.report(lease.task_id, mismatch)
    paid = node.report(
        lease.task_id, TaskReport(lease_id=lease.lease_id, outcome="succeeded", output=LINE_RESULT)
    ).paid
    assert paid == 400
    result = client.result(job.id)
    assert result.result == LINE_RESULT
    assert result.output_sha256 == sha256_hex(canonical_json(LINE_RESULT))


def test_oversized_inline_result_is_413_and_the_task_stays_leased(net: Net) -> None:
    client = net.funded()
    job = client.submit(
        "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
    )
    node = net.node()
    lease = lease_one(node)
    huge = {"labels": [1] * (INLINE_RESULT_MAX // 2 + 1)}
    with pytest.raises(PayloadTooLarge):
        node.report(
            lease.task_id, TaskReport(lease_id=lease.lease_id, outcome="succeeded", output=huge)
        )
    assert client.status(job.id).tasks[0].state == TaskState.LEASED
    assert succeed(node, lease, huge) == 400  # the blob path takes it
