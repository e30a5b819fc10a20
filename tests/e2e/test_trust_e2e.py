"""Trust and the market with real node subprocesses over real HTTP: cheaters caught and
slashed, stake gating paid work (and the CLI that stakes), rentals, explain."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sklearn.datasets import load_diabetes, load_iris

from quackmesh.cli.localnet import LocalNetwork
from quackmesh.core.money import UNIT
from quackmesh.core.schemas import JobPublic, JobState, Verification
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

from .conftest import e2e_settings

pytestmark = pytest.mark.slow
PRICE = 1_000
MIN = 1_000 * UNIT


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalNetwork]:
    network = LocalNetwork(e2e_settings(tmp_path / "home"))
    network.start_coordinator_thread()
    try:
        yield network
    finally:
        network.stop()


@pytest.fixture
def client(net: LocalNetwork) -> Iterator[Client]:
    with Client(net.url, Wallet.create()) as c:
        c.faucet(100 * UNIT)
        yield c


def datasets(folder: Path) -> tuple[Path, Path]:
    iris = folder / "iris.csv"
    load_iris(as_frame=True).data.to_csv(iris, index=False)
    diabetes = folder / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(diabetes, index=False)
    return iris, diabetes


def finished(client: Client, job_id: str) -> JobPublic:
    """Wait until the job and every replica (late ones included) are done."""
    client.wait(job_id, timeout=120, poll=0.2)
    wait_for(
        lambda: all(t.state.value not in ("queued", "leased") for t in client.status(job_id).tasks),
        60,
        "late replicas",
    )
    return client.status(job_id)


def test_wrong_node_loses_the_vote_is_slashed_and_the_client_gets_the_right_answer(
    net: LocalNetwork, client: Client, tmp_path: Path
) -> None:
    net.start_nodes(2, price=PRICE, heartbeat_s=0.5)
    net.start_nodes(1, price=PRICE, heartbeat_s=0.5, behaviours=["wrong"])
    cheater = net.node_wallets[-1].address
    assert net.wait_nodes_online(3, timeout=60) == 3
    _, diabetes = datasets(tmp_path)
    job = client.submit(
        "ml.linear_regression",
        data=diabetes,
        params={"target": "target"},
        max_price=PRICE,
        verification=Verification(policy="redundant", replicas=3),
    )
    done = finished(client, job.id)
    assert done.state == JobState.SUCCEEDED
    by_node = {t.node: t for t in done.tasks if t.node}
    assert set(by_node) == set(w.address for w in net.node_wallets)  # three distinct nodes
    assert (by_node[cheater].verdict, by_node[cheater].payment_state) == ("invalid", "slashed")
    honest = [t for n, t in by_node.items() if n != cheater]
    assert all(t.payment_state == "paid" and t.paid == PRICE * done.units for t in honest)
    result = client.result(job.id).result
    frame = load_diabetes(as_frame=True).frame
    assert result["n_samples"] == len(frame) and 0.5 < result["r2"] < 0.52
    (slash,) = client.slashes(node=cheater)
    assert slash.amount == MIN // 10 and slash.evidence["rejected"]["node"] == cheater
    assert client.stake_info(cheater).eligible is False
    check = client.ledger_check()
    assert check.ok and check.total == 0


def test_lazy_node_copies_an_old_result_and_is_caught(
    net: LocalNetwork, client: Client, tmp_path: Path
) -> None:
    net.start_nodes(2, price=PRICE, heartbeat_s=0.5)
    net.start_nodes(1, price=PRICE, heartbeat_s=0.5, behaviours=["lazy"])
    lazy = net.node_wallets[-1].address
    assert net.wait_nodes_online(3, timeout=60) == 3
    iris, _ = datasets(tmp_path)
    verify = Verification(policy="redundant", replicas=3)
    first = client.submit(
        "ml.kmeans", data=iris, params={"n_clusters": 3, "seed": 1}, max_price=PRICE,
        verification=verify,
    )  # fmt: skip
    assert finished(client, first.id).state == JobState.SUCCEEDED
    assert client.slashes(node=lazy) == []  # the first time it really computed
    second = client.submit(
        "ml.kmeans", data=iris, params={"n_clusters": 4, "seed": 1}, max_price=PRICE,
        verification=verify,
    )  # fmt: skip
    done = finished(client, second.id)
    assert done.state == JobState.SUCCEEDED
    assert len(client.result(second.id).result["centers"]) == 4  # the right answer
    lazy_task = next(t for t in done.tasks if t.node == lazy)
    assert lazy_task.verdict == "invalid"
    assert [s.reason for s in client.slashes(node=lazy)] == ["lost_vote"]


def run_cli(net: LocalNetwork, *args: str, wallet: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "QUACKMESH_WALLET_PASSWORD": net._password,
        "QUACKMESH_HOME": str(net.settings.home),
    }
    return subprocess.run(
        [sys.executable, "-m", "quackmesh", *args, "--coordinator", net.url, "--wallet", str(wallet)],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_an_unstaked_node_waits_with_a_reason_until_it_stakes_with_the_cli(
    net: LocalNetwork, client: Client, tmp_path: Path
) -> None:
    net.start_nodes(1, price=PRICE, heartbeat_s=0.5, stake=0)
    node = net.node_wallets[-1].address
    wallet = net.settings.home / "nodes" / "node-0.json"
    assert net.wait_nodes_online(1, timeout=60) == 1
    iris, _ = datasets(tmp_path)
    job = client.submit("ml.kmeans", data=iris, params={"n_clusters": 2}, max_price=PRICE)
    time.sleep(1.5)  # a few lease polls: the node must not get it
    assert client.status(job.id).state == JobState.QUEUED
    (task,) = client.explain(job.id).tasks
    (entry,) = [c for c in task.candidates if c.node == node]
    assert entry.reason == "stake" and "minimum 1000 DUCK" in entry.detail
    assert run_cli(net, "wallet", "faucet", "1000", wallet=wallet).returncode == 0
    staked = run_cli(net, "node", "stake", "1000", "--json", wallet=wallet)
    assert staked.returncode == 0, staked.stderr
    assert '"eligible": true' in staked.stdout
    done = client.wait(job.id, timeout=120, poll=0.2)
    assert done.state == JobState.SUCCEEDED and done.tasks[0].node == node
    status = run_cli(net, "node", "status", "--json", wallet=wallet)
    assert status.returncode == 0 and '"effective": 1000000000' in status.stdout


def test_a_rental_job_runs_only_on_the_rented_node_and_is_not_paid_per_task(
    net: LocalNetwork, client: Client, tmp_path: Path
) -> None:
    net.start_nodes(2, price=PRICE, heartbeat_s=0.5, price_per_hour=2 * UNIT)
    rented, other = (w.address for w in net.node_wallets)
    assert net.wait_nodes_online(2, timeout=60) == 2
    rental = client.rent(nodes=[rented], hours=1, budget=5 * UNIT)
    assert rental.escrowed == 2 * UNIT
    iris, _ = datasets(tmp_path)
    jobs = [
        client.submit(
            "ml.kmeans",
            data=iris,
            params={"n_clusters": k},
            max_price=PRICE,
            rental_id=rental.id,
        )
        for k in (2, 3)
    ]
    for job in jobs:
        done = client.wait(job.id, timeout=120, poll=0.2)
        assert done.state == JobState.SUCCEEDED and done.escrowed == 0 and done.paid == 0
        assert [t.node for t in done.tasks] == [rented]
        assert [t.payment_state for t in done.tasks] == ["rental"]
    before = client.balance().available
    ended = client.cancel_rental(rental.id)
    assert ended.state == "cancelled"
    assert ended.paid + ended.refunded == ended.escrowed
    assert client.balance().available == before + ended.refunded
    with Client(net.url, Wallet.create()) as anyone:
        assert anyone.node(other).tasks_completed == 0
    check = client.ledger_check()
    assert check.ok and check.total == 0
