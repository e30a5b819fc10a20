"""``quackmesh node datasets`` and ``quackmesh train`` / ``train-status`` from the CLI."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quackmesh.cli.exit_codes import ExitCode
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.cli.main import app
from quackmesh.core.wallet import Wallet
from quackmesh.fl.data import load_builtin, subset, train_holdout_split, write_csv
from quackmesh.sdk import Client
from tests.coordinator.fl_support import KINDS
from tests.e2e.conftest import e2e_settings

DUCK = 1_000_000


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("QUACKMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUACKMESH_WALLET_PASSWORD", "correct horse")
    monkeypatch.delenv("QUACKMESH_WALLET", raising=False)
    monkeypatch.delenv("QUACKMESH_DATASETS", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


@pytest.fixture
def digits_csv(tmp_path: Path) -> Path:
    path = tmp_path / "digits.csv"
    write_csv(subset(load_builtin("digits"), list(range(300))), path)
    return path


def test_datasets_add_list_remove_never_stores_rows(
    cli: CliRunner, tmp_path: Path, digits_csv: Path
) -> None:
    result = cli.invoke(
        app, ["node", "datasets", "add", "digits", str(digits_csv), "--coarsen", "10"]
    )
    assert result.exit_code == 0, result.output
    assert "300 rows, 64 features" in result.output
    registry = tmp_path / "home" / "datasets.json"
    stored = json.loads(registry.read_text())
    info = stored["digits"]["info"]
    assert info["rows"] == 300 and info["coarsen"] == 10
    assert all(v % 10 == 0 for v in info["label_histogram"].values())
    assert "0.0" not in registry.read_text()  # a description, not data
    listed = cli.invoke(app, ["node", "datasets", "list", "--json"])
    assert json.loads(listed.output)["digits"]["path"] == str(digits_csv.resolve())
    again = cli.invoke(app, ["node", "datasets", "add", "digits", str(digits_csv)])
    assert again.exit_code == ExitCode.REJECTED and "--replace" in again.output
    removed = cli.invoke(app, ["node", "datasets", "remove", "digits"])
    assert removed.exit_code == 0 and json.loads(registry.read_text()) == {}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--label", "nope"], "label column 'nope'"),
        (["--format", "parquet"], "looks like csv"),
    ],
)
def test_datasets_add_refuses_bad_files_in_one_line(
    cli: CliRunner, digits_csv: Path, args: list[str], needle: str
) -> None:
    result = cli.invoke(app, ["node", "datasets", "add", "digits", str(digits_csv), *args])
    assert result.exit_code == ExitCode.REJECTED
    assert needle in result.output and "Traceback" not in result.output


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[LocalNetwork]:
    settings = e2e_settings(tmp_path / "home", offline_after_s=600.0, match_window_s=0.0)
    net = LocalNetwork(settings)
    net.start_coordinator_thread()
    try:
        yield net
    finally:
        net.stop()


def _serve(url: str, data: Path, stop: threading.Event) -> None:
    """An in-process node answering its training tasks (see tests/coordinator/fl_support)."""
    from quackmesh.core.schemas import Hardware, NodeRegister, TaskReport
    from quackmesh.node.datasets import describe_file
    from quackmesh.workloads import get_workload

    with Client(url, Wallet.create()) as node:
        node.register_node(
            NodeRegister(
                name="cli-fl",
                hardware=Hardware(cpu_cores=2, ram_bytes=2**31),
                price_per_unit=100,
                slots=2,
                workloads=KINDS,
                datasets=[describe_file("digits", data, label="label")],
            )
        )
        node.faucet(1000 * DUCK)
        node.stake(1000 * DUCK)
        while not stop.is_set():
            for lease in node.lease(max_tasks=2, wait_s=0.5).tasks:
                inputs = {
                    r.name: node.download(
                        r.url, data.parent / f"{lease.task_id}-{r.name}", sha256=r.sha256
                    )
                    for r in lease.inputs
                }
                inputs["data"] = data
                out = get_workload("fl.local_train").execute(lease.params, inputs)
                node.report(
                    lease.task_id,
                    TaskReport(lease_id=lease.lease_id, outcome="succeeded", output=out),
                )


def test_train_follow_shows_progress_and_saves_the_model(
    cli: CliRunner, coordinator: LocalNetwork, tmp_path: Path
) -> None:
    train, holdout = train_holdout_split(load_builtin("digits"), holdout=200, seed=0)
    stop = threading.Event()
    threads = []
    for i in range(2):
        path = tmp_path / f"node{i}.csv"
        write_csv(subset(train, list(range(i, train.rows, 2))), path)
        t = threading.Thread(target=_serve, args=(coordinator.url, path, stop), daemon=True)
        t.start()
        threads.append(t)
    hold = tmp_path / "holdout.csv"
    write_csv(holdout, hold)
    url = ["--coordinator", coordinator.url]
    assert cli.invoke(app, ["wallet", "new"]).exit_code == 0
    assert cli.invoke(app, ["wallet", "faucet", "100", *url]).exit_code == 0
    try:
        found = cli.invoke(app, ["market", "list", "--dataset", "digits", *url])
        assert "digits (" in found.output
        out = tmp_path / "model.safetensors"
        result = cli.invoke(
            app,
            ["train", "--model", "logreg", "--dataset", "digits", "--rounds", "2", "--clients", "2",
             "--epochs", "2", "--lr", "0.1", "--eval", str(hold), "--reward", "1", "--follow",
             "--out", str(out), *url],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "round 2/2" in result.output and "accuracy" in result.output
        assert out.stat().st_size > 0
        card = json.loads(out.with_suffix(".card.json").read_text())
        assert card["arch"] == "logreg" and card["n_features"] == 64
        job_id = re.findall(r"job_[0-9a-f]{20}", result.output)[-1]
        status = cli.invoke(app, ["train-status", job_id, "--json", *url])
        run = json.loads(status.output)
        assert [r["round"] for r in run["history"]] == [1, 2] and run["reward_paid"] == DUCK
        dispute = cli.invoke(app, ["job", "dispute", job_id, *url])
        assert dispute.exit_code == ExitCode.REJECTED and "cannot be disputed" in dispute.output
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)


def test_train_needs_exactly_one_data_source(cli: CliRunner) -> None:
    result = cli.invoke(app, ["train", "--model", "logreg"])
    assert result.exit_code == ExitCode.USAGE and "exactly one of --dataset" in result.output
