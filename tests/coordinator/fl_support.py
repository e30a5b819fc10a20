"""In-process federated nodes for coordinator tests.

An :class:`FlNode` is a registered, staked node that leases its round tasks over the real
HTTP API (in-process transport) and answers them with the same code a node process runs:
``fl.secagg`` steps with :func:`quackmesh.node.fl_client.secagg_step`, training with the
``fl.local_train`` workload's ``execute()`` (in-process instead of a sandbox subprocess, to
keep tests fast), masked with :func:`~quackmesh.node.fl_client.mask_update`. The end-to-end
tests run real node subprocesses.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from quackmesh.core.schemas import Hardware, NodeRegister, TaskLease, TaskReport
from quackmesh.fl.data import Dataset, subset, write_csv
from quackmesh.node.datasets import describe_file
from quackmesh.node.fl_client import flip_update, mask_update, secagg_step
from quackmesh.sdk import Client
from quackmesh.workloads import get_workload

from .conftest import Net

KINDS = ["fl.local_train", "fl.secagg"]


class FlNode:
    """A federated node holding ``data`` as its dataset ``name``."""

    def __init__(
        self,
        net: Net,
        data: Dataset,
        *,
        name: str = "digits",
        index: int = 0,
        price: int = 100,
        behaviour: str = "honest",
    ) -> None:
        self.net = net
        self.dir = net.tmp / f"flnode-{index}-{secrets.token_hex(3)}"
        self.dir.mkdir(parents=True)
        self.path = self.dir / f"{name}.csv"
        write_csv(data, self.path)
        self.info = describe_file(name, self.path, label="label")
        self.client: Client = net.client()
        self.client.register_node(
            NodeRegister(
                name=f"fl-{index}",
                hardware=Hardware(cpu_cores=2, ram_bytes=2**31),
                price_per_unit=price,
                slots=4,
                workloads=KINDS,
                datasets=[self.info],
            )
        )
        stake = net.rt.settings.min_stake
        self.client.faucet(stake)
        self.client.stake(stake)
        self.secret = secrets.token_bytes(32)
        self.unmasked: set[str] = set()
        self.behaviour = behaviour
        self.address = self.client.address
        self.answered: list[str] = []

    def leases(self) -> list[TaskLease]:
        return self.client.lease(max_tasks=4, wait_s=0).tasks

    def answer(self, lease: TaskLease, *, skip_phases: tuple[str, ...] = ()) -> bool:
        """Run one leased task and report it; False when told to stay silent."""
        phase = lease.params.get("phase", "train") if lease.kind == "fl.secagg" else "train"
        if phase in skip_phases:
            return False
        self.answered.append(phase)
        if lease.kind == "fl.secagg":
            output: dict[str, Any] = secagg_step(
                lease.params, secret=self.secret, answered=self.unmasked
            )
        else:
            output = self._train(lease)
        self.client.report(
            lease.task_id, TaskReport(lease_id=lease.lease_id, outcome="succeeded", output=output)
        )
        return True

    def _train(self, lease: TaskLease) -> dict[str, Any]:
        inputs: dict[str, Path] = {}
        for ref in lease.inputs:
            inputs[ref.name] = self.client.download(
                ref.url, self.dir / f"{lease.task_id}-{ref.name}", sha256=ref.sha256
            )
        for name in lease.local_inputs:
            inputs[name] = self.path
        params = {k: v for k, v in lease.params.items() if k != "secagg"}
        result = get_workload("fl.local_train").execute(params, inputs)
        if self.behaviour == "wrong":
            result = flip_update(result, lease.params)
        if "secagg" in lease.params:
            result = mask_update(result, lease.params, secret=self.secret)
        return result

    def fail(self, lease: TaskLease) -> None:
        self.client.report(
            lease.task_id,
            TaskReport(
                lease_id=lease.lease_id, outcome="failed", failure_reason="crash", detail="boom"
            ),
        )


def partitions(data: Dataset, n: int, *, seed: int = 0) -> list[Dataset]:
    from quackmesh.fl.data import partition_iid

    return [subset(data, idx) for idx in partition_iid(data.rows, n, seed=seed)]


def drive(
    nodes: list[FlNode],
    *,
    max_steps: int = 200,
    silent: dict[int, tuple[str, ...]] | None = None,
    until: Any = None,
) -> int:
    """Let every node answer its leased tasks until none has work (bounded); returns how
    many tasks were answered. ``silent[i]`` lists phases node i never answers."""
    answered = 0
    for _ in range(max_steps):
        progressed = False
        for i, node in enumerate(nodes):
            for lease in node.leases():
                if node.answer(lease, skip_phases=(silent or {}).get(i, ())):
                    answered += 1
                    progressed = True
        if until is not None and until():
            return answered
        if not progressed:
            return answered
    raise AssertionError(f"federated run still busy after {max_steps} steps")
