"""``quackmesh market list`` and ``quackmesh job explain`` against a live coordinator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quackmesh.cli.exit_codes import ExitCode
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.cli.main import app
from quackmesh.core.schemas import GpuInfo, Hardware, NodeRegister
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client
from tests.e2e.conftest import e2e_settings

GIB = 2**30


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("QUACKMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUACKMESH_WALLET_PASSWORD", "correct horse")
    monkeypatch.delenv("QUACKMESH_WALLET", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that table cells are not cut
    return CliRunner()


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[LocalNetwork]:
    # Nodes registered by the test do not heartbeat: keep them online for the whole test.
    settings = e2e_settings(tmp_path / "home", offline_after_s=600.0, match_window_s=0.0)
    net = LocalNetwork(settings)
    net.start_coordinator_thread()
    try:
        yield net
    finally:
        net.stop()


def register(url: str, *, name: str, price: int, gpus: int = 0, stake: bool = True) -> str:
    with Client(url, Wallet.create()) as node:
        node.register_node(
            NodeRegister(
                name=name,
                hardware=Hardware(
                    cpu_cores=4,
                    ram_bytes=8 * GIB,
                    gpus=[GpuInfo(model="RTX 4090", memory_bytes=24 * GIB)] * gpus,
                ),
                price_per_unit=price,
                slots=1,
                workloads=["ml.linear_regression"],
                region="eu-west",
            )
        )
        if stake:
            node.faucet(1_000_000_000)
            node.stake(1_000_000_000)
        return node.address


def test_market_list_filters_sorts_and_refuses_bad_options(
    cli: CliRunner, coordinator: LocalNetwork
) -> None:
    url = ["--coordinator", coordinator.url]
    gpu = register(coordinator.url, name="gpu-rig", price=300, gpus=2)
    cpu = register(coordinator.url, name="cpu-box", price=100)

    listed = cli.invoke(app, ["market", "list", "--json", "--sort", "price", *url])
    assert listed.exit_code == 0, listed.output
    body = json.loads(listed.stdout)
    assert [n["address"] for n in body["nodes"]] == [cpu, gpu] and body["total"] == 2

    gpus = cli.invoke(
        app, ["market", "list", "--json", "--gpu-model", "4090", "--min-gpus", "2", *url]
    )
    assert [n["address"] for n in json.loads(gpus.stdout)["nodes"]] == [gpu]
    cheap = cli.invoke(app, ["market", "list", "--json", "--max-price", "0.0002", *url])
    assert [n["address"] for n in json.loads(cheap.stdout)["nodes"]] == [cpu]

    table = cli.invoke(app, ["market", "list", "--online", "--region", "eu-west", *url])
    assert table.exit_code == 0, table.output
    assert "gpu-rig" in table.stdout and "2× RTX 4090 (24 GiB)" in table.stdout
    assert "2 of 2 matching nodes" in table.stdout

    bad_sort = cli.invoke(app, ["market", "list", "--sort", "speed", *url])
    assert bad_sort.exit_code == ExitCode.REJECTED
    assert "unknown sort key 'speed'" in bad_sort.stderr and "Traceback" not in bad_sort.output
    bad_rep = cli.invoke(app, ["market", "list", "--min-reputation", "2", *url])
    assert bad_rep.exit_code == ExitCode.REJECTED and "min_reputation" in bad_rep.stderr
    unknown = cli.invoke(app, ["market", "list", "--cheapest", *url])
    assert unknown.exit_code == ExitCode.USAGE


def test_job_explain_lists_each_node_and_its_reason(
    cli: CliRunner, coordinator: LocalNetwork, tmp_path: Path
) -> None:
    url = ["--coordinator", coordinator.url]
    cli.invoke(app, ["wallet", "new"])
    assert cli.invoke(app, ["wallet", "faucet", "1", *url]).exit_code == 0
    data = tmp_path / "line.csv"
    data.write_text("x,y\n1,3\n2,5\n3,7\n4,9\n")
    submitted = cli.invoke(
        app,
        [
            "job",
            "submit",
            "ml.linear_regression",
            "--data",
            str(data),
            "-p",
            "target=y",
            "--max-price",
            "0.0002",
            "--json",
            *url,
        ],
    )
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.stdout)["id"]
    dear = register(coordinator.url, name="dear", price=300)
    poor = register(coordinator.url, name="poor", price=100, stake=False)

    as_json = cli.invoke(app, ["job", "explain", job_id, "--json", *url])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    reasons = {c["node"]: c["reason"] for c in report["tasks"][0]["candidates"]}
    assert reasons == {dear: "price", poor: "stake"}
    assert report["summary"] == "no node can take it: 1 price, 1 stake"

    table = cli.invoke(app, ["job", "explain", job_id, *url])
    assert table.exit_code == 0, table.output
    assert "asks 0.0003 DUCK/unit, job pays at most 0.0002 DUCK/unit" in table.stdout
    assert "no node can take it: 1 price, 1 stake" in table.stdout

    missing = cli.invoke(app, ["job", "explain", "nope", *url])
    assert missing.exit_code == ExitCode.REJECTED and "no job nope" in missing.stderr
