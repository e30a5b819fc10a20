"""The ``quackmesh`` command: documented exit codes, one-line errors, wallets, jobs, ledger."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quackmesh.cli.exit_codes import HELP, ExitCode
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.cli.main import app
from tests.e2e.conftest import e2e_settings

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("QUACKMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUACKMESH_WALLET_PASSWORD", "correct horse")
    monkeypatch.delenv("QUACKMESH_WALLET", raising=False)
    return CliRunner()


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[LocalNetwork]:
    net = LocalNetwork(e2e_settings(tmp_path / "home"))
    net.start_coordinator_thread()
    try:
        yield net
    finally:
        net.stop()


def test_every_exit_code_is_documented_in_the_readme() -> None:
    readme = README.read_text()
    assert set(HELP) == set(ExitCode)
    for code, text in HELP.items():
        assert f"| {int(code)} | {text} |" in readme, f"exit code {code.name} missing from README"


def test_wallet_new_show_and_refuse_overwrite(cli: CliRunner, tmp_path: Path) -> None:
    made = cli.invoke(app, ["wallet", "new", "--json"])
    assert made.exit_code == 0, made.output
    info = json.loads(made.stdout)
    assert Path(info["path"]).exists()
    shown = cli.invoke(app, ["wallet", "show", "--json"])
    assert json.loads(shown.stdout)["address"].lower() == info["address"].lower()
    again = cli.invoke(app, ["wallet", "new"])
    assert again.exit_code == ExitCode.WALLET and "refusing to overwrite" in again.stderr


def test_wrong_password_and_missing_wallet_are_exit_3(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = cli.invoke(app, ["wallet", "balance"])
    assert missing.exit_code == ExitCode.WALLET and "wallet new" in missing.stderr
    cli.invoke(app, ["wallet", "new"])
    monkeypatch.setenv("QUACKMESH_WALLET_PASSWORD", "wrong")
    wrong = cli.invoke(app, ["wallet", "balance"])
    assert wrong.exit_code == ExitCode.WALLET and "wrong password" in wrong.stderr


def test_unreachable_coordinator_is_one_line_exit_4(cli: CliRunner) -> None:
    cli.invoke(app, ["wallet", "new"])
    result = cli.invoke(app, ["wallet", "balance", "--coordinator", "http://127.0.0.1:9"])
    assert result.exit_code == ExitCode.UNREACHABLE
    assert "cannot reach the coordinator" in result.stderr
    assert "Traceback" not in result.output


def test_bad_param_syntax_is_a_usage_error(cli: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("x,y\n1,2\n")
    result = cli.invoke(
        app, ["job", "submit", "ml.kmeans", "--data", str(data), "--max-price", "1", "-p", "oops"]
    )
    assert result.exit_code == ExitCode.USAGE and "key=value" in result.stderr


def test_job_cli_against_a_live_coordinator(
    cli: CliRunner, coordinator: LocalNetwork, tmp_path: Path
) -> None:
    url = ["--coordinator", coordinator.url]
    cli.invoke(app, ["wallet", "new"])
    assert cli.invoke(app, ["wallet", "faucet", "1", *url]).exit_code == 0
    data = tmp_path / "line.csv"
    data.write_text("x,y\n1,3\n2,5\n3,7\n4,9\n")

    unknown = cli.invoke(
        app, ["job", "submit", "ml.nope", "--data", str(data), "--max-price", "0.1", *url]
    )
    assert unknown.exit_code == ExitCode.REJECTED and "unknown workload kind" in unknown.stderr
    too_dear = cli.invoke(
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
            "5",
            *url,
        ],
    )
    assert too_dear.exit_code == ExitCode.INSUFFICIENT_BALANCE

    ok = cli.invoke(
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
            "--json",
            *url,
        ],
    )
    assert ok.exit_code == 0, ok.output
    job_id = json.loads(ok.stdout)["id"]
    listed = cli.invoke(app, ["job", "list", "--json", *url])
    assert [j["id"] for j in json.loads(listed.stdout)] == [job_id]
    cancelled = cli.invoke(app, ["job", "cancel", job_id, *url])
    assert cancelled.exit_code == 0 and "refunded 0.1 DUCK" in cancelled.stdout
    not_ready = cli.invoke(app, ["job", "result", job_id, *url])
    assert not_ready.exit_code == ExitCode.REJECTED and "no result" in not_ready.stderr
    balance = cli.invoke(app, ["wallet", "balance", "--json", *url])
    assert json.loads(balance.stdout)["available"] == 1_000_000

    remote = cli.invoke(app, ["ledger", "verify", "--json", *url])
    assert remote.exit_code == 0 and json.loads(remote.stdout)["transactions"] == 3


def test_ledger_verify_and_export_on_the_local_database_detect_tampering(
    cli: CliRunner, coordinator: LocalNetwork, tmp_path: Path
) -> None:
    cli.invoke(app, ["wallet", "new"])
    cli.invoke(app, ["wallet", "faucet", "2", "--coordinator", coordinator.url])
    db = coordinator.settings.resolved_database_url()
    assert cli.invoke(app, ["ledger", "verify", "--database-url", db]).exit_code == 0
    out = tmp_path / "journal.jsonl"
    assert (
        cli.invoke(
            app, ["ledger", "export", "--format", "jsonl", "-o", str(out), "--database-url", db]
        ).exit_code
        == 0
    )
    (tx,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert tx["kind"] == "faucet" and sorted(e["amount_micro"] for e in tx["entries"]) == [
        -2_000_000,
        2_000_000,
    ]

    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE ledger_entries SET amount = amount * 10 WHERE amount > 0")
    tampered = cli.invoke(app, ["ledger", "verify", "--database-url", db])
    assert tampered.exit_code == ExitCode.CHECK_FAILED and "problem" in tampered.stdout
