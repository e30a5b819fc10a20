"""``quackmesh chain|wallet deposit|withdraw|ledger proof`` against a live coordinator that
settles on its in-process chain (``chain="local"``, development mode)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from quackmesh.cli.exit_codes import ExitCode
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.cli.main import app
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client
from tests.e2e.conftest import e2e_settings

DUCK = 10**6


def flat(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


PASSWORD = "correct horse"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("QUACKMESH_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("QUACKMESH_WALLET_PASSWORD", PASSWORD)
    monkeypatch.delenv("QUACKMESH_WALLET", raising=False)
    monkeypatch.delenv("QUACKMESH_CHAIN_DEPLOYMENT", raising=False)
    monkeypatch.delenv("QUACKMESH_CHAIN_KEY_PASSWORD", raising=False)
    return CliRunner()


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[LocalNetwork]:
    net = LocalNetwork(
        e2e_settings(tmp_path / "home", chain="local", chain_epoch_s=0.5, chain_poll_s=0.1)
    )
    net.start_coordinator_thread()
    try:
        yield net
    finally:
        net.stop()


def default_wallet(tmp_path: Path) -> str:
    """The CLI's default wallet, with the fast KDF (scrypt costs seconds per command)."""
    wallet = Wallet.create()
    wallet.save(tmp_path / "cli-home" / "wallets" / "default.json", PASSWORD, kdf="pbkdf2")
    return wallet.address


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def fresh_proof(cli: CliRunner, url: list[str], address: str, balance: int, out: Path) -> Any:
    """``ledger proof`` until the posted root covers ``balance`` (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        got = cli.invoke(app, ["ledger", "proof", address, "--out", str(out), "--json", *url])
        if got.exit_code == 0 and json.loads(got.stdout)["balance"] == balance:
            return json.loads(got.stdout)
        assert time.monotonic() < deadline, f"no root with balance {balance}: {got.output}"
        time.sleep(0.1)


def test_tokens_deposit_withdraw_and_proofs_through_the_coordinator(
    cli: CliRunner, coordinator: LocalNetwork, tmp_path: Path
) -> None:
    url = ["--coordinator", coordinator.url]
    address = default_wallet(tmp_path)

    # Not enough tokens on chain: one line with the hint, nothing deposited.
    poor = cli.invoke(app, ["wallet", "deposit", "5", *url])
    assert poor.exit_code == ExitCode.INSUFFICIENT_BALANCE, poor.output
    assert "quackmesh wallet tokens 5" in flat(poor.stderr)

    minted = ok(cli.invoke(app, ["wallet", "tokens", "50", *url]))
    assert "minted 50 DUCK tokens" in flat(minted.stdout) and address in minted.stdout

    deposited = ok(cli.invoke(app, ["wallet", "deposit", "20", "--json", *url]))
    got = json.loads(deposited.stdout)
    assert got["deposit"]["amount"] == 20 * DUCK and got["deposit"]["tx_hash"] == got["tx_hash"]
    assert got["balance"]["available"] == 20 * DUCK
    listed = json.loads(ok(cli.invoke(app, ["wallet", "deposits", "--json", *url])).stdout)
    assert [(d["amount"], d["tx_hash"]) for d in listed] == [(20 * DUCK, got["tx_hash"])]
    table = ok(cli.invoke(app, ["wallet", "deposits", *url]))
    assert "20 DUCK" in table.stdout
    balance = json.loads(ok(cli.invoke(app, ["wallet", "balance", "--json", *url])).stdout)
    assert balance["available"] == 20 * DUCK

    # Withdraw (relayed by the coordinator): paid, and the tokens are back on chain.
    too_much = cli.invoke(app, ["wallet", "withdraw", "21", *url])
    assert too_much.exit_code == ExitCode.INSUFFICIENT_BALANCE, too_much.output
    out = ok(cli.invoke(app, ["wallet", "withdraw", "5", "--json", *url]))
    withdrawn = json.loads(out.stdout)
    assert withdrawn["voucher"]["state"] == "paid" and withdrawn["tx_hash"]
    assert withdrawn["balance"]["available"] == 15 * DUCK
    with Client(coordinator.url, Wallet.create()) as reader:
        assert reader.chain_account(address).token_balance == 35 * DUCK
    vouchers = json.loads(ok(cli.invoke(app, ["wallet", "withdrawals", "--json", *url])).stdout)
    assert [(v["amount"], v["state"]) for v in vouchers] == [(5 * DUCK, "paid")]

    # A proof of the 15 DUCK left, checked through the coordinator (with a warning).
    proof_file = tmp_path / "proof.json"
    proof = fresh_proof(cli, url, address, 15 * DUCK, proof_file)
    assert json.loads(proof_file.read_text()) == proof
    shown = ok(cli.invoke(app, ["ledger", "proof", address, "--epoch", str(proof["epoch"]), *url]))
    assert f"epoch {proof['epoch']}" in shown.stdout and "15 DUCK" in shown.stdout
    checked = ok(cli.invoke(app, ["ledger", "check-proof", str(proof_file), *url]))
    assert "proof OK" in checked.stdout and "trusts" in flat(checked.stderr)
    as_json = json.loads(
        ok(cli.invoke(app, ["ledger", "check-proof", str(proof_file), "--json", *url])).stdout
    )
    assert as_json["ok"] and as_json["trusts_coordinator"] and as_json["root"] == proof["root"]

    dead = cli.invoke(
        app, ["ledger", "check-proof", str(proof_file), "--rpc", "http://127.0.0.1:9"]
    )
    assert dead.exit_code == ExitCode.UNREACHABLE and "cannot reach" in flat(dead.stderr)

    # Tampered files fail with CHECK_FAILED and say why.
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps({**proof, "balance": proof["balance"] + 1}))
    bad = cli.invoke(app, ["ledger", "check-proof", str(tampered), *url])
    assert bad.exit_code == ExitCode.CHECK_FAILED, bad.output
    assert "does not link" in flat(bad.stderr) and "proof OK" not in bad.stdout
    tampered.write_text(json.dumps({**proof, "root": "0x" + "11" * 32}))
    bad_root = cli.invoke(app, ["ledger", "check-proof", str(tampered), *url])
    assert bad_root.exit_code == ExitCode.CHECK_FAILED
    assert "is not the root on chain" in flat(bad_root.stderr)
    tampered.write_text(json.dumps({**proof, "epoch": proof["epoch"] + 1000}))
    unposted = cli.invoke(app, ["ledger", "check-proof", str(tampered), *url])
    assert unposted.exit_code == ExitCode.CHECK_FAILED
    assert "holds no root for epoch" in flat(unposted.stderr)
    tampered.write_text("{not json")
    garbage = cli.invoke(app, ["ledger", "check-proof", str(tampered), *url])
    assert garbage.exit_code == ExitCode.CHECK_FAILED and "not a proof file" in flat(garbage.stderr)

    # Someone with no DUCK has no proof.
    nobody = Wallet.create().address
    missing = cli.invoke(app, ["ledger", "proof", nobody, *url])
    assert missing.exit_code == ExitCode.REJECTED and "no DUCK" in flat(missing.stderr)


def test_chain_info_shows_the_vault_and_its_backing(
    cli: CliRunner, coordinator: LocalNetwork, tmp_path: Path
) -> None:
    url = ["--coordinator", coordinator.url]
    default_wallet(tmp_path)
    ok(cli.invoke(app, ["wallet", "faucet", "7", *url]))  # chain mode: a real deposit
    info = json.loads(ok(cli.invoke(app, ["chain", "info", "--json", *url])).stdout)
    assert info["mode"] == "local" and info["backed"] == 7 * DUCK
    assert info["vault_balance"] >= info["backed"]
    table = flat(ok(cli.invoke(app, ["chain", "info", *url])).stdout)
    assert info["vault"] in table and info["token"] in table and "in-process chain" in table
    assert "7 DUCK owed" in table and "UNDER-BACKED" not in table


def test_chain_commands_on_a_coordinator_without_a_chain(cli: CliRunner, tmp_path: Path) -> None:
    net = LocalNetwork(e2e_settings(tmp_path / "off-home"))
    net.start_coordinator_thread()
    try:
        url = ["--coordinator", net.url]
        off = cli.invoke(app, ["chain", "info", *url])
        assert off.exit_code == ExitCode.REJECTED and "QUACKMESH_CHAIN=off" in flat(off.stderr)
        default_wallet(tmp_path)
        no_deposit = cli.invoke(app, ["wallet", "deposit", "1", *url])
        assert no_deposit.exit_code == ExitCode.REJECTED and "chain_disabled" in no_deposit.stderr
    finally:
        net.stop()


def test_deploy_refuses_to_overwrite_a_record_and_reports_a_dead_node(
    cli: CliRunner, tmp_path: Path
) -> None:
    key_file = tmp_path / "operator.json"
    Wallet.create().save(key_file, "pw", kdf="pbkdf2")
    record = tmp_path / "chain.json"
    record.write_text("{}")
    args = ["chain", "deploy", "--rpc", "http://127.0.0.1:9", "--key-file", str(key_file)]
    kept = cli.invoke(
        app, [*args, "--out", str(record)], env={"QUACKMESH_CHAIN_KEY_PASSWORD": "pw"}
    )
    assert kept.exit_code == ExitCode.USAGE and "--force" in flat(kept.stderr)
    assert record.read_text() == "{}"

    wrong = cli.invoke(
        app, [*args, "--out", str(tmp_path / "new.json")], env={"QUACKMESH_CHAIN_KEY_PASSWORD": "x"}
    )
    assert wrong.exit_code == ExitCode.WALLET, wrong.output
    dead = cli.invoke(
        app,
        [*args, "--out", str(tmp_path / "new.json"), "--force"],
        env={"QUACKMESH_CHAIN_KEY_PASSWORD": "pw"},
    )
    assert dead.exit_code == ExitCode.UNREACHABLE and "cannot reach" in flat(dead.stderr)
    assert not (tmp_path / "new.json").exists()
