"""Real node subprocesses over real HTTP: crash recovery, draining, another host, the demo."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sklearn.datasets import load_iris

from quackmesh.cli.localnet import LocalNetwork
from quackmesh.core.schemas import JobPublic, JobState, TaskState
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

from .conftest import e2e_settings

pytestmark = pytest.mark.slow
PRICE = 1_000


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def iris_csv(folder: Path) -> Path:
    path = folder / "iris.csv"
    load_iris(as_frame=True).data.to_csv(path, index=False)
    return path


_open_clients: list[Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open_clients:
        _open_clients.pop().close()


def submit_kmeans(net: LocalNetwork, tmp_path: Path) -> tuple[Client, JobPublic]:
    client = Client(net.url, Wallet.create())
    _open_clients.append(client)
    client.faucet(1_000_000)
    job = client.submit(
        "ml.kmeans", data=iris_csv(tmp_path), params={"n_clusters": 3}, max_price=PRICE
    )
    return client, job


def settlements_for(client: Client, job: JobPublic) -> list[dict[str, object]]:
    txs = [json.loads(line) for line in client.ledger_journal().splitlines()]
    return [tx for tx in txs if tx["kind"] == "settle" and tx["ref"] == job.id]


def test_node_killed_mid_task_loses_lease_and_task_completes_elsewhere_paid_once(
    localnet: LocalNetwork, tmp_path: Path
) -> None:
    (victim,) = localnet.start_nodes(1, price=PRICE, heartbeat_s=0.5)
    assert localnet.wait_nodes_online(1, timeout=60) == 1
    client, job = submit_kmeans(localnet, tmp_path)
    wait_for(
        lambda: client.status(job.id).tasks[0].state == TaskState.LEASED, 60, "the first lease"
    )
    victim.kill()  # SIGKILL: no drain, no release, no goodbye
    victim.wait()
    localnet.start_nodes(1, price=PRICE, heartbeat_s=0.5)

    done = client.wait(job.id, timeout=120, poll=0.2)
    assert done.state == JobState.SUCCEEDED, done.error
    task = done.tasks[0]
    first, second = (w.address for w in localnet.node_wallets)
    assert task.node == second
    assert [(f.node, f.reason) for f in task.failures] == [(first, "lease_expired")]
    settled = settlements_for(client, done)
    assert len(settled) == 1, "exactly one payment"
    credited = {e["account"] for e in settled[0]["entries"] if e["amount_micro"] > 0}  # type: ignore[union-attr]
    assert f"wallet:{second}" in credited and f"wallet:{first}" not in credited
    assert client.ledger_check().ok


def test_ctrl_c_drains_the_running_task_then_exits(localnet: LocalNetwork, tmp_path: Path) -> None:
    (node,) = localnet.start_nodes(1, price=PRICE, heartbeat_s=0.5)
    localnet.wait_nodes_online(1, timeout=60)
    client, job = submit_kmeans(localnet, tmp_path)
    wait_for(lambda: client.status(job.id).tasks[0].state == TaskState.LEASED, 60, "the lease")
    node.send_signal(signal.SIGINT)
    assert node.wait(timeout=120) == 0
    assert client.status(job.id).state == JobState.SUCCEEDED


# --- a node on another host: a network namespace joined by a veth pair ----------------------


def _netns_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.fixture
def other_host() -> Iterator[tuple[str, str, str]]:
    """A network namespace with its own stack; yields (namespace, host_ip, guest_ip)."""
    if not _netns_available():
        pytest.skip("network namespaces need root and iproute2")
    tag = secrets.token_hex(3)
    ns, veth_host, veth_ns = f"qm-{tag}", f"qmh{tag}", f"qmn{tag}"
    octet = int(tag[:2], 16) % 250 + 1
    host_ip, guest_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", ns)
        ip("link", "add", veth_host, "type", "veth", "peer", "name", veth_ns)
        ip("link", "set", veth_ns, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", veth_host)
        ip("link", "set", veth_host, "up")
        ip("-n", ns, "addr", "add", f"{guest_ip}/30", "dev", veth_ns)
        ip("-n", ns, "link", "set", veth_ns, "up")
        ip("-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.decode().strip()}")
    try:
        yield ns, host_ip, guest_ip
    finally:
        subprocess.run(["ip", "link", "del", veth_host], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.netns
def test_node_on_another_host_joins_over_http_and_runs_a_job(
    other_host: tuple[str, str, str], tmp_path: Path
) -> None:
    ns, host_ip, _guest_ip = other_host
    net = LocalNetwork(e2e_settings(tmp_path / "home"), host=host_ip)
    net.start_coordinator_thread()
    try:
        # The guest cannot reach the host's loopback: only the veth address works.
        probe = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c",
             f"import httpx; print(httpx.get('http://127.0.0.1:{net.port}/healthz', timeout=2).status_code)"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert probe.returncode != 0, "the namespace must not share the host's loopback"
        net.start_nodes(1, price=PRICE, heartbeat_s=0.5, prefix=["ip", "netns", "exec", ns])
        assert net.wait_nodes_online(1, timeout=60) == 1
        client, job = submit_kmeans(net, tmp_path)
        done = client.wait(job.id, timeout=120, poll=0.2)
        assert done.state == JobState.SUCCEEDED, done.error
        assert done.tasks[0].node == net.node_wallets[0].address
        assert done.paid == PRICE * done.units
    finally:
        net.stop()


def test_demo_json_reports_every_check(tmp_path: Path) -> None:
    env = {**os.environ, "QUACKMESH_HOME": str(tmp_path / "unused-home")}
    proc = subprocess.run(
        [sys.executable, "-m", "quackmesh", "demo", "--json"],
        capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True
    assert summary["nodes_online"] == 4 and summary["ledger_verified"] and summary["conserved"]
    kinds = [j["kind"] for j in summary["jobs"]]
    assert sorted(kinds[:4]) == [
        "ml.kmeans",
        "ml.linear_regression",
        "ml.linear_regression",
        "ml.pca",
    ]
    # More redundant jobs only when the cheater's replica of the first was not needed.
    assert set(kinds[4:]) <= {"ml.linear_regression"} and len(kinds) <= 4 + 3
    for job in summary["jobs"]:
        assert job["state"] == "succeeded" and job["result_ok"] is True and job["paid"] > 0
    # The cheating node lost a vote somewhere and was slashed; the results above are right
    # all the same. (Which job catches it depends on timing: once slashed below the
    # minimum stake it gets no more work, and the redundant job's quorum can then be met
    # by the honest nodes alone.)
    cheater = summary["cheater"]
    assert cheater["caught"] and cheater["slashed"] >= 100 * 10**6
    assert any(cheater["address"] in j["rejected"] for j in summary["jobs"])
    # Inference (cli/demo_infer.py): an honest node, not the cheater, served MiniLM; the
    # four sentences came back as unit vectors with the two similar ones closest, at the
    # node's price per text; the federated model's prediction job got the run's accuracy.
    inference = summary["inference"]
    assert inference["ok"] is True
    embeddings = inference["embeddings"]
    assert embeddings["ok"] and embeddings["node"] != cheater["address"]
    assert embeddings["dims"] == 384 and len(embeddings["cosine"]) == len(embeddings["texts"]) == 4
    assert all(abs(n - 1.0) < 1e-4 for n in embeddings["norms"])
    assert embeddings["closest"] == embeddings["expected_closest"] == [0, 1]
    assert embeddings["price"] == 4 * embeddings["price_per_text"] > 0
    prediction = inference["prediction"]
    assert prediction["ok"] and prediction["state"] == "succeeded" and prediction["rows"] == 1000
    assert prediction["accuracy"] == pytest.approx(summary["federated"]["accuracy"][-1], abs=1e-6)
    assert prediction["matches_local"] and prediction["max_prob_diff"] <= 1e-4
    assert prediction["paid"] > 0 and prediction["node"] != cheater["address"]
    assert not Path(summary["home"]).exists(), "the demo cleans up its temporary home"
