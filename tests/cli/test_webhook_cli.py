"""``quackmesh webhook …`` against a live coordinator and a live receiver on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quackmesh.cli.exit_codes import ExitCode
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.cli.main import app
from quackmesh.core.webhooks import verify
from tests.coordinator.test_webhooks import Receiver
from tests.e2e.conftest import e2e_settings


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
    net = LocalNetwork(e2e_settings(tmp_path / "home", webhook_poll_s=0.05))
    net.start_coordinator_thread()
    try:
        yield net
    finally:
        net.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    try:
        yield rec
    finally:
        rec.close()


def test_add_list_deliveries_redeliver_remove_and_mistakes(
    cli: CliRunner, coordinator: LocalNetwork, receiver: Receiver
) -> None:
    url = ["--coordinator", coordinator.url]
    assert cli.invoke(app, ["wallet", "new"]).exit_code == 0

    shown = cli.invoke(app, ["webhook", "add", receiver.url("/a"), "--type", "job.*", *url])
    assert shown.exit_code == 0, shown.output
    assert "whsec_" in shown.stdout and "will not be shown again" in flat(shown.stderr)
    added = cli.invoke(
        app,
        [
            *("webhook", "add", receiver.url(), "-t", "faucet.*", "-t", "payment.settled"),
            *("--description", "ci", "--json", *url),
        ],
    )
    assert added.exit_code == 0, added.output
    hook = json.loads(added.stdout)
    assert hook["types"] == ["faucet.*", "payment.settled"] and hook["secret"].startswith("whsec_")

    listed = json.loads(cli.invoke(app, ["webhook", "list", "--json", *url]).stdout)
    assert {h["id"] for h in listed} == {hook["id"], shown.stdout.split()[1]}
    assert all("secret" not in h for h in listed)
    table = cli.invoke(app, ["webhook", "list", *url])
    assert table.exit_code == 0 and hook["id"] in flat(table.stdout)

    assert cli.invoke(app, ["wallet", "faucet", "3", *url]).exit_code == 0
    [got] = receiver.wait_for(1)
    assert got.path == "/hook"
    assert verify(
        hook["secret"],
        timestamp_header=got.headers["quackmesh-timestamp"],
        signature_header=got.headers["quackmesh-signature"],
        body=got.body,
    )

    def delivered() -> list[dict[str, Any]]:
        result = cli.invoke(app, ["webhook", "deliveries", hook["id"], "--json", *url])
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows if rows and rows[0]["state"] == "delivered" else []

    deadline = time.monotonic() + 10
    while not (rows := delivered()):
        assert time.monotonic() < deadline, "the delivery was not recorded in time"
        time.sleep(0.05)
    assert rows[0]["event_type"] == "faucet.minted" and rows[0]["attempts"] == 1
    table = cli.invoke(app, ["webhook", "deliveries", hook["id"], "--state", "delivered", *url])
    assert table.exit_code == 0
    assert "faucet.minted" in flat(table.stdout) and "delivered" in flat(table.stdout)

    again = cli.invoke(
        app, ["webhook", "redeliver", hook["id"], str(rows[0]["id"]), "--json", *url]
    )
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["state"] == "pending"
    second = receiver.wait_for(2)[1]
    assert second.body == got.body

    removed = cli.invoke(app, ["webhook", "remove", hook["id"], *url])
    assert removed.exit_code == 0 and f"removed {hook['id']}" in removed.stdout
    after = json.loads(cli.invoke(app, ["webhook", "list", "--json", *url]).stdout)
    assert hook["id"] not in {h["id"] for h in after}

    # Mistakes: one line on stderr and a documented exit code, never a traceback.
    missing = cli.invoke(app, ["webhook", "remove", "wh_missing", *url])
    assert missing.exit_code == ExitCode.REJECTED
    assert "no webhook wh_missing" in flat(missing.stderr)
    bad_url = cli.invoke(app, ["webhook", "add", "ftp://example.com/x", "--type", "*", *url])
    assert bad_url.exit_code == ExitCode.REJECTED and "url:" in flat(bad_url.stderr)
    assert "Traceback" not in bad_url.output
    bad_state = cli.invoke(app, ["webhook", "deliveries", "wh_x", "--state", "lost", *url])
    assert bad_state.exit_code == ExitCode.USAGE
    bad_type = cli.invoke(app, ["webhook", "add", "https://hooks.example.com/x", "-t", "Job.*"])
    assert bad_type.exit_code == ExitCode.USAGE
    assert "--type: 'Job.*' is neither an event type" in flat(bad_type.stderr)
    no_type = cli.invoke(app, ["webhook", "add", "https://hooks.example.com/x", *url])
    assert no_type.exit_code == ExitCode.USAGE and "--type" in flat(no_type.stderr)
