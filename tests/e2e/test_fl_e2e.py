"""Federated training across real node subprocesses, each holding only its own data.

Each node gets its own partition of scikit-learn's digits in its own dataset registry
(``cli/fldata.py``); the client keeps a holdout. Training runs in the nodes' sandboxes.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from quackmesh.cli.fldata import prepare_node_data
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.core.schemas import FlRunPublic, JobState
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

from .conftest import e2e_settings

pytestmark = pytest.mark.slow

DUCK = 1_000_000


def _params(**over: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": {"arch": "logreg", "n_features": 64, "n_classes": 10},
        "dataset": "digits",
        "rounds": 3,
        "clients_per_round": 4,
        "min_clients": 3,
        "local_epochs": 2,
        "lr": 0.1,
        "reward_budget": 3 * DUCK,
        "round_timeout_s": 90.0,
    }
    params.update(over)
    return params


def _wait(client: Client, job_id: str, *, until: Any, timeout: float) -> FlRunPublic:
    deadline = time.monotonic() + timeout
    run = client.fl_run(job_id)
    while not until(run):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; run is {run.state} in {run.phase}: {run}")
        time.sleep(0.3)
        run = client.fl_run(job_id)
    return run


def _network(tmp_path: Path, n: int) -> tuple[LocalNetwork, Path]:
    data = prepare_node_data(tmp_path / "data", n, dataset="digits", partition="iid", holdout=300)
    net = LocalNetwork(e2e_settings(tmp_path / "home"))
    net.start_coordinator_thread()
    net.start_nodes(n, price=100, datasets=data.registries, heartbeat_s=1.0)
    assert net.wait_nodes_online(n, timeout=60) == n
    return net, data.holdout


def test_secagg_and_dp_across_real_nodes_survive_a_killed_node_and_a_coordinator_restart(
    tmp_path: Path,
) -> None:
    """The issue's "done when": real node subprocesses each holding only their own data,
    secure aggregation and DP on, a node dropping out, a coordinator restart mid-run, and
    contributors paid."""
    net, holdout = _network(tmp_path, 4)
    with contextlib.ExitStack() as stack:
        stack.callback(net.stop)
        client = stack.enter_context(Client(net.url, Wallet.create()))
        client.faucet(100 * DUCK)
        dp = {"noise_multiplier": 0.1, "clip_norm": 1.0, "delta": 1e-5}
        job = client.train(
            _params(rounds=3, secure_aggregation=True, dp=dp), max_price=1_000, eval_data=holdout
        )
        _wait(client, job.id, until=lambda r: len(r.history) >= 1, timeout=150)
        net.nodes[3].send_signal(signal.SIGKILL)  # a provider vanishes mid-run
        _wait(client, job.id, until=lambda r: len(r.history) >= 2, timeout=150)
        assert net.server is not None and net._thread is not None
        net.server.should_exit = True  # the coordinator stops mid-run …
        net._thread.join(timeout=30)
        net.start_coordinator_thread()  # … and a new one resumes from the same database
        run = _wait(client, job.id, until=lambda r: r.state != JobState.RUNNING, timeout=240)
        assert run.state == JobState.SUCCEEDED, run
        assert [r.round for r in run.history] == [1, 2, 3]
        assert run.history[0].participants == 4
        assert all(r.participants >= 3 for r in run.history)
        assert all(r.detail["secure_aggregation"]["included"] >= 3 for r in run.history)
        eps = [r.epsilon for r in run.history]
        assert all(e is not None for e in eps) and eps == sorted(eps)  # ε grows every round
        assert run.reward_paid == 3 * DUCK  # an even split among the included clients
        paid = {c.node for r in run.history for c in r.clients if c.reward > 0}
        assert len(paid) >= 3
        assert run.history[-1].accuracy is not None and run.history[-1].accuracy > 0.5
        model = client.download_model(job.id, tmp_path / "model.safetensors")
        assert model.stat().st_size > 0
        assert client.ledger_check().ok
