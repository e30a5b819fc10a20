"""Cancels racing leases and reports: no deadlock, no error, money and states consistent."""

from __future__ import annotations

import contextlib
import json
import threading

from quackmesh.core.errors import InvalidState, LeaseLost
from quackmesh.core.schemas import JobState, TaskReport, TaskState
from quackmesh.ledger import job_escrow_account

from .conftest import Net

JOBS = 24


def test_cancels_racing_leases_and_reports_stay_consistent(net: Net) -> None:
    client = net.funded(10_000_000)
    path = net.csv()
    sha = client.upload(path).sha256
    jobs = [
        client.submit(
            "ml.linear_regression", inputs={"data": sha}, params={"target": "y"}, max_price=1_000
        ).id
        for _ in range(JOBS)
    ]
    nodes = [net.node(slots=4) for _ in range(2)]
    output = nodes[0].upload(json.dumps({"coefficients": [2.0]}).encode()).sha256
    nodes[1].upload(json.dumps({"coefficients": [2.0]}).encode())
    errors: list[BaseException] = []

    def work(node_index: int) -> None:
        node = nodes[node_index]
        try:
            for _ in range(JOBS):
                for lease in node.lease(max_tasks=4, wait_s=0).tasks:
                    with contextlib.suppress(LeaseLost):  # cancelled under our feet: fine
                        node.report(
                            lease.task_id,
                            TaskReport(
                                lease_id=lease.lease_id, outcome="succeeded", output_sha256=output
                            ),
                        )
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    def cancel_all() -> None:
        try:
            for job_id in reversed(jobs):
                with contextlib.suppress(InvalidState):  # already finished
                    client.cancel(job_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)] + [
        threading.Thread(target=cancel_all)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors

    paid = 0
    for job_id in jobs:
        job = client.status(job_id)
        task = job.tasks[0]
        assert job.state in (JobState.SUCCEEDED, JobState.CANCELLED)
        if job.state == JobState.CANCELLED:
            assert task.state == TaskState.CANCELLED and job.paid == 0 and job.refunded == 1_000
        else:
            assert task.state == TaskState.SUCCEEDED and job.paid == 400 and job.refunded == 600
        paid += job.paid
    with net.rt.sessions() as session:
        assert all(net.rt.ledger.balance(session, job_escrow_account(j)) == 0 for j in jobs)
    assert client.balance().available == 10_000_000 - paid
    check = client.ledger_check()
    assert check.ok and check.total == 0
