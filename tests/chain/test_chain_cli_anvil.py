"""The on-chain CLI against a real EVM node (anvil): ``chain deploy``, a coordinator on that
deployment, deposits and withdrawals sent from the wallet's own key (``--rpc``), and a
balance proof checked against the Vault with no coordinator in between."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from quackmesh.cli.exit_codes import ExitCode
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.cli.main import app
from quackmesh.contracts import compile_contract
from quackmesh.core.wallet import Wallet
from tests.chain.conftest import CHAIN_ID
from tests.e2e.conftest import e2e_settings

pytestmark = pytest.mark.slow

DUCK = 10**6
ANVIL_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
OPERATOR_PASSWORD = "operator secret"
WALLET_PASSWORD = "correct horse"


def flat(text: str) -> str:
    return " ".join(text.split())


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("QUACKMESH_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("QUACKMESH_WALLET_PASSWORD", WALLET_PASSWORD)
    for name in ("QUACKMESH_WALLET", "QUACKMESH_CHAIN_DEPLOYMENT", "QUACKMESH_CHAIN_KEY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


@pytest.fixture
def operator_key(tmp_path: Path) -> tuple[Path, Path]:
    """anvil's dev key #0 in a keystore, and a file holding its password."""
    key_file = tmp_path / "operator.json"
    Wallet.from_key(ANVIL_KEY).save(key_file, OPERATOR_PASSWORD, kdf="pbkdf2")
    password_file = tmp_path / "operator-password"
    password_file.write_text(OPERATOR_PASSWORD + "\n")
    return key_file, password_file


def deploy(cli: CliRunner, anvil_url: str, operator_key: tuple[Path, Path], home: Path) -> Any:
    key_file, password_file = operator_key
    args = [
        *("chain", "deploy", "--rpc", anvil_url, "--key-file", str(key_file)),
        *("--password-file", str(password_file), "--out", str(home / "chain.json")),
        *("--escape-period", "3600", "--json"),
    ]
    return json.loads(ok(cli.invoke(app, args)).stdout)


@contextmanager
def coordinator_on(
    anvil_url: str, home: Path, key_file: Path, **overrides: object
) -> Iterator[LocalNetwork]:
    values: dict[str, object] = {
        "chain": anvil_url,
        "chain_key_file": key_file,
        "chain_key_password": OPERATOR_PASSWORD,
        "chain_confirmations": 0,
        "chain_epoch_s": 0.5,
        "chain_poll_s": 0.1,
    }
    values.update(overrides)
    net = LocalNetwork(e2e_settings(home, **values))
    net.start_coordinator_thread()
    try:
        yield net
    finally:
        net.stop()


def funded_wallet(w3: Any, tmp_path: Path) -> str:
    """The CLI's default wallet (fast KDF) with 1 ETH for gas from anvil's account #2."""
    wallet = Wallet.create()
    wallet.save(tmp_path / "cli-home" / "wallets" / "default.json", WALLET_PASSWORD, kdf="pbkdf2")
    tx = w3.eth.send_transaction(
        {"from": w3.eth.accounts[2], "to": wallet.address, "value": 10**18}
    )
    w3.eth.wait_for_transaction_receipt(tx, timeout=10)
    return wallet.address


def token_balance(w3: Any, token: str, address: str) -> int:
    contract = w3.eth.contract(address=token, abi=compile_contract("DuckToken").abi)
    return int(contract.functions.balanceOf(address).call())


def test_deploy_direct_deposit_withdraw_and_a_trustless_proof(
    cli: CliRunner, w3: Any, anvil_url: str, operator_key: tuple[Path, Path], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    deployed = deploy(cli, anvil_url, operator_key, home)
    assert deployed["chain_id"] == CHAIN_ID
    assert deployed["operator"] == Wallet.from_key(ANVIL_KEY).address
    assert bytes(w3.eth.get_code(deployed["vault"])) and bytes(w3.eth.get_code(deployed["token"]))
    record = json.loads((home / "chain.json").read_text())
    assert record == {k: deployed[k] for k in ("chain_id", "token", "vault", "block")}
    assert deployed["env"]["QUACKMESH_CHAIN"] == anvil_url
    assert deployed["env"]["QUACKMESH_CHAIN_KEY_FILE"] == str(operator_key[0].resolve())
    again = cli.invoke(
        app,
        [
            *("chain", "deploy", "--rpc", anvil_url, "--key-file", str(operator_key[0])),
            *("--password-file", str(operator_key[1]), "--out", str(home / "chain.json")),
        ],
    )
    assert again.exit_code == ExitCode.USAGE and "--force" in flat(again.stderr)

    with coordinator_on(anvil_url, home, operator_key[0]) as net:
        url = ["--coordinator", net.url]
        rpc = ["--rpc", anvil_url]
        info = json.loads(ok(cli.invoke(app, ["chain", "info", "--json", *url])).stdout)
        assert (info["mode"], info["vault"], info["token"]) == (
            "rpc",
            deployed["vault"],
            deployed["token"],
        )
        address = funded_wallet(w3, tmp_path)
        ok(cli.invoke(app, ["wallet", "tokens", "50", *url]))
        assert token_balance(w3, deployed["token"], address) == 50 * DUCK

        # Deposit from the wallet's own key: the wallet sends (and pays for) the deposit.
        got = json.loads(
            ok(cli.invoke(app, ["wallet", "deposit", "20", *rpc, "--json", *url])).stdout
        )
        assert got["deposit"]["amount"] == 20 * DUCK and got["balance"]["available"] == 20 * DUCK
        assert w3.eth.get_transaction(got["tx_hash"])["from"] == address
        assert token_balance(w3, deployed["token"], address) == 30 * DUCK

        # Withdraw by submitting the voucher ourselves.
        out = json.loads(
            ok(cli.invoke(app, ["wallet", "withdraw", "5", *rpc, "--json", *url])).stdout
        )
        assert out["voucher"]["state"] == "paid" and out["balance"]["available"] == 15 * DUCK
        assert w3.eth.get_transaction(out["tx_hash"])["from"] == address
        assert token_balance(w3, deployed["token"], address) == 35 * DUCK

        # A proof of the 15 DUCK left, once a root covers it.
        proof_file = tmp_path / "proof.json"
        deadline = time.monotonic() + 30
        while True:
            shown = cli.invoke(app, ["ledger", "proof", address, "-o", str(proof_file), *url])
            if shown.exit_code == 0 and json.loads(proof_file.read_text())["balance"] == 15 * DUCK:
                break
            assert time.monotonic() < deadline, f"no root covers 15 DUCK: {shown.output}"
            time.sleep(0.1)
        proof = json.loads(proof_file.read_text())

    # The coordinator is gone: the check reads the chain alone.
    checked = ok(cli.invoke(app, ["ledger", "check-proof", str(proof_file), *rpc]))
    assert "proof OK" in checked.stdout and "warning" not in checked.stderr
    assert proof["root"] in flat(checked.stdout)
    as_json = json.loads(
        ok(cli.invoke(app, ["ledger", "check-proof", str(proof_file), *rpc, "--json"])).stdout
    )
    assert as_json["ok"] and not as_json["trusts_coordinator"]
    assert (as_json["vault"], as_json["chain_id"]) == (deployed["vault"], CHAIN_ID)

    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps({**proof, "balance": proof["balance"] + 1}))
    bad = cli.invoke(app, ["ledger", "check-proof", str(tampered), *rpc])
    assert bad.exit_code == ExitCode.CHECK_FAILED, bad.output
    assert "verify_balance rejects" in flat(bad.stderr) and "does not link" in flat(bad.stderr)
    tampered.write_text(json.dumps({**proof, "epoch": proof["epoch"] + 1000}))
    unposted = cli.invoke(app, ["ledger", "check-proof", str(tampered), *rpc])
    assert unposted.exit_code == ExitCode.CHECK_FAILED
    assert "holds no root for epoch" in flat(unposted.stderr)
    elsewhere = cli.invoke(
        app, ["ledger", "check-proof", str(proof_file), *rpc, "--vault", Wallet.create().address]
    )
    assert elsewhere.exit_code == ExitCode.CHECK_FAILED and "no contract" in flat(elsewhere.stderr)


def test_deposit_wait_is_bounded_until_the_confirmations_arrive(
    cli: CliRunner, w3: Any, anvil_url: str, operator_key: tuple[Path, Path], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    deploy(cli, anvil_url, operator_key, home)
    with coordinator_on(anvil_url, home, operator_key[0], chain_confirmations=3) as net:
        url = ["--coordinator", net.url]
        funded_wallet(w3, tmp_path)
        ok(cli.invoke(app, ["wallet", "tokens", "5", *url]))
        waited = cli.invoke(
            app, ["wallet", "deposit", "2", "--rpc", anvil_url, "--timeout", "1", *url]
        )
        assert waited.exit_code == ExitCode.TIMEOUT, waited.output
        assert "not credited after 1s" in flat(waited.stderr)
        assert "waiting for the coordinator to credit" in flat(waited.stderr)
        listed = json.loads(ok(cli.invoke(app, ["wallet", "deposits", "--json", *url])).stdout)
        assert listed == []

        w3.provider.make_request("anvil_mine", [3])
        deadline = time.monotonic() + 30
        while not listed:
            assert time.monotonic() < deadline, "the confirmed deposit was never credited"
            time.sleep(0.1)
            result = ok(cli.invoke(app, ["wallet", "deposits", "--json", *url]))
            listed = json.loads(result.stdout)
        assert [d["amount"] for d in listed] == [2 * DUCK]
        sent = ok(cli.invoke(app, ["wallet", "deposit", "1", "--no-wait", *url]))
        assert "deposited 1 DUCK on chain: tx 0x" in flat(sent.stdout)
        assert "credited" not in sent.stdout
