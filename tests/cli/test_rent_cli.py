"""``quackmesh rent`` and ``quackmesh rental …`` against a live coordinator on loopback."""

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

PPH = 1_500_000  # 1.5 DUCK an hour


def flat(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("QUACKMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUACKMESH_WALLET_PASSWORD", "correct horse")
    monkeypatch.delenv("QUACKMESH_WALLET", raising=False)
    return CliRunner()


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[LocalNetwork]:
    # Nodes registered through the SDK send no heartbeats: keep them online for the test.
    net = LocalNetwork(e2e_settings(tmp_path / "home", offline_after_s=600.0))
    net.start_coordinator_thread()
    try:
        yield net
    finally:
        net.stop()


def rentable_node(net: LocalNetwork, *, gpus: int) -> str:
    with Client(net.url, Wallet.create()) as node:
        node.register_node(
            NodeRegister(
                name="gpu-box",
                hardware=Hardware(
                    cpu_cores=8,
                    ram_bytes=2**34,
                    gpus=[GpuInfo(model="RTX 4090", memory_bytes=24 * 2**30)] * gpus,
                ),
                price_per_unit=100,
                slots=1,
                workloads=["ml.linear_regression"],
                price_per_hour=PPH,
            )
        )
        node.faucet(net.settings.min_stake)
        node.stake(net.settings.min_stake)
        return node.address


def test_rent_list_show_submit_and_cancel(
    cli: CliRunner, coordinator: LocalNetwork, tmp_path: Path
) -> None:
    url = ["--coordinator", coordinator.url]
    node = rentable_node(coordinator, gpus=2)
    cli.invoke(app, ["wallet", "new"])
    assert cli.invoke(app, ["wallet", "faucet", "10", *url]).exit_code == 0

    too_dear = cli.invoke(app, ["rent", node, "--hours", "24", "--budget", "5", *url])
    assert too_dear.exit_code == ExitCode.REJECTED
    assert "costs 36 DUCK, more than the budget of 5 DUCK" in flat(too_dear.stderr)
    assert "Traceback" not in too_dear.output
    short = cli.invoke(app, ["rent", "--gpus", "4", "--hours", "1", "--budget", "5", *url])
    assert short.exit_code == ExitCode.REJECTED and "only 2 GPU(s) are available" in flat(
        short.stderr
    )

    preview = cli.invoke(app, ["rent", node, "--hours", "2", "--budget", "5", "--quote", *url])
    assert preview.exit_code == 0, preview.output
    assert "would cost 3 DUCK, within the budget of 5 DUCK; nothing reserved" in flat(
        preview.stdout
    )
    assert json.loads(cli.invoke(app, ["rental", "list", "--json", *url]).stdout) == []

    made = cli.invoke(app, ["rent", node, "--hours", "2", "--budget", "5", *url])
    assert made.exit_code == 0, made.output
    assert "escrowed 3 DUCK (budget 5 DUCK)" in flat(made.stdout) and "rental id rental_" in flat(
        made.stdout
    )
    listed = json.loads(cli.invoke(app, ["rental", "list", "--json", *url]).stdout)
    assert [r["state"] for r in listed] == ["active"] and listed[0]["escrowed"] == 2 * PPH
    rental_id = listed[0]["id"]
    shown = cli.invoke(app, ["rental", "show", rental_id, *url])
    assert (
        shown.exit_code == 0 and node in flat(shown.stdout) and "1.5 DUCK/h" in flat(shown.stdout)
    )

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
            "0.1",
            "--rental",
            rental_id,
            "--json",
            *url,
        ],
    )
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.stdout)
    assert job["rental_id"] == rental_id and job["escrowed"] == 0

    cancelled = cli.invoke(app, ["rental", "cancel", rental_id, "--json", *url])
    assert cancelled.exit_code == 0, cancelled.output
    done = json.loads(cancelled.stdout)
    assert done["state"] == "cancelled" and done["paid"] + done["refunded"] == 2 * PPH
    again = cli.invoke(app, ["rental", "cancel", rental_id, *url])
    assert again.exit_code == ExitCode.REJECTED and "already cancelled" in flat(again.stderr)
    balance = json.loads(cli.invoke(app, ["wallet", "balance", "--json", *url]).stdout)
    assert balance["available"] == 10_000_000 - done["paid"]
    verified = cli.invoke(app, ["ledger", "verify", "--json", *url])
    assert verified.exit_code == 0 and json.loads(verified.stdout)["ok"]


def test_rent_needs_nodes_or_gpus_but_not_both(cli: CliRunner) -> None:
    neither = cli.invoke(app, ["rent", "--hours", "1", "--budget", "5"])
    assert neither.exit_code == ExitCode.USAGE and "--gpus N" in flat(neither.stderr)
    both = cli.invoke(
        app, ["rent", "0x" + "ab" * 20, "--gpus", "1", "--hours", "1", "--budget", "5"]
    )
    assert both.exit_code == ExitCode.USAGE and "not both" in flat(both.stderr)
    no_hours = cli.invoke(app, ["rent", "--gpus", "1", "--budget", "5"])
    assert no_hours.exit_code == ExitCode.USAGE and "--hours" in flat(no_hours.stderr)
    bad_budget = cli.invoke(app, ["rent", "--gpus", "1", "--hours", "1", "--budget", "lots"])
    assert bad_budget.exit_code == ExitCode.USAGE and "--budget" in flat(bad_budget.stderr)
