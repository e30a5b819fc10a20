"""The event stream over a real socket: resume across a coordinator restart, CLI follow."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from quackmesh.cli.common import job_changes
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.core.schemas import JobState
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

pytestmark = pytest.mark.slow


def _restart(net: LocalNetwork) -> None:
    """Stop the coordinator's server and start a new one on the same port and database."""
    if net.server is not None:
        net.server.should_exit = True
    if net._thread is not None:
        net._thread.join(timeout=15)
    net.start_coordinator_thread()


def test_stream_resumes_across_a_coordinator_restart_without_gaps_or_duplicates(
    localnet: LocalNetwork,
) -> None:
    client = Client(localnet.url, Wallet.create())
    received: list[dict[str, Any]] = []
    done = threading.Event()

    def consume() -> None:
        stream = client.stream_events(address=client.address, after=0, timeout=60)
        for event in stream:
            received.append(event)
            if len(received) == 6:
                break
        stream.close()  # closes the socket now, not whenever the generator is collected
        done.set()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    for amount in (1, 2, 3):
        client.faucet(amount)
    deadline = time.monotonic() + 20
    while len(received) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(received) == 3
    _restart(localnet)
    for amount in (4, 5, 6):  # some land before the consumer has reconnected
        client.faucet(amount)
    assert done.wait(45), f"only {len(received)} events arrived"
    assert [e["data"]["amount"] for e in received] == [1, 2, 3, 4, 5, 6]
    ids = [e["id"] for e in received]
    assert ids == sorted(set(ids))
    assert all(e["address"] == client.address for e in received)  # signed: whole events
    client.close()


def test_follow_wakes_on_the_jobs_events(localnet: LocalNetwork, tmp_path: Path) -> None:
    client = Client(localnet.url, Wallet.create())
    client.faucet(10_000_000)
    data = tmp_path / "line.csv"
    data.write_text("x,y\n1,3\n2,5\n3,7\n")
    job = client.submit(
        "ml.linear_regression", data=data, params={"target": "y"}, max_price=1_000
    )  # no node: it stays queued until cancelled
    seen: list[JobState] = []
    changes = job_changes(client, job.id, timeout=30)

    def cancel_soon() -> None:
        time.sleep(1.0)
        client.cancel(job.id)

    canceller = threading.Thread(target=cancel_soon, daemon=True)
    canceller.start()
    for _ in changes:
        seen.append(client.status(job.id).state)
        if seen[-1] == JobState.CANCELLED:
            break
    changes.close()
    # The stream can show CANCELLED before the cancel call has read its own response:
    # closing the shared client under it would break that read.
    canceller.join(timeout=30)
    client.close()
    assert seen and seen[-1] == JobState.CANCELLED
