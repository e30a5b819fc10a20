"""The test-only node behaviours (development mode): what each one reports."""

from __future__ import annotations

import random

from quackmesh.core.schemas import TaskState
from quackmesh.core.wallet import Wallet
from quackmesh.node.agent import NodeAgent, NodeConfig, perturb

from .conftest import BASE, Net


class Always(random.Random):
    def random(self) -> float:
        return 0.0


def agent(net: Net, behaviour: str) -> NodeAgent:
    config = NodeConfig(
        coordinator=BASE,
        name=f"{behaviour}-node",
        price_per_unit=400,
        stake=net.rt.settings.min_stake,
        faucet=True,
        behaviour=behaviour,  # type: ignore[arg-type]
        workloads=("ml.linear_regression",),
    )
    node = NodeAgent(config, Wallet.create(), transport=net.tc._transport)
    node.register()
    return node


def test_perturb_keeps_the_shape_and_changes_every_number() -> None:
    result = {"coefficients": [2.0, -1.0], "n_samples": 4, "ok": True, "name": "x"}
    wrong = perturb(result, 0.5)
    assert set(wrong) == set(result) and wrong["ok"] is True and wrong["name"] == "x"
    assert wrong["coefficients"] == [3.5, -1.0] and wrong["n_samples"] == 6.5


def test_flaky_node_reports_a_failure_and_the_task_is_retried(net: Net) -> None:
    client = net.funded()
    job = client.submit(
        "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
    )
    flaky = agent(net, "flaky")
    assert flaky.client.stake_info().eligible  # --stake with --faucet topped it up
    flaky._rng = Always()
    (lease,) = flaky.client.lease(max_tasks=1, wait_s=0).tasks
    assert flaky._misbehave(lease) is True
    task = client.status(job.id).tasks[0]
    assert task.state == TaskState.QUEUED and task.failures[0].detail == "flaky test node"
    flaky.client.close()


def test_lazy_node_answers_from_its_cache_without_running(net: Net) -> None:
    client = net.funded()
    lazy = agent(net, "lazy")
    lazy._lazy_cache["ml.linear_regression"] = {"copied": True}
    job = client.submit(
        "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
    )
    (lease,) = lazy.client.lease(max_tasks=1, wait_s=0).tasks
    assert lazy._misbehave(lease) is True
    assert client.result(job.id).result == {"copied": True}  # policy none: taken as is
    honest = agent(net, "honest")
    assert honest._misbehave(lease) is False
    lazy.client.close()
    honest.client.close()
