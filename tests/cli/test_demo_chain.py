"""``quackmesh demo --chain local`` and ``quackmesh up --chain``: settlement on a real
(in-process) EVM, checked through the figures the commands report, not their prose."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from quackmesh.cli.exit_codes import ExitCode
from quackmesh.cli.localnet import LocalNetwork, free_port
from quackmesh.cli.main import app
from quackmesh.core.money import UNIT
from quackmesh.ledger.merkle import verify_proof
from tests.e2e.conftest import e2e_settings


def _hex(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


@pytest.mark.slow
def test_demo_on_a_local_chain_deposits_proves_and_withdraws(tmp_path: Path) -> None:
    env = {**os.environ, "QUACKMESH_HOME": str(tmp_path / "unused-home")}
    proc = subprocess.run(
        [sys.executable, "-m", "quackmesh", "demo", "--chain", "local", "--json", "--no-stay"],
        capture_output=True, text=True, timeout=280, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True
    # The classic tour still holds with every faucet credit a real Vault deposit.
    assert summary["nodes_online"] == 4 and summary["ledger_verified"] and summary["conserved"]
    assert summary["federated"]["ok"] and summary["cheater"]["caught"]
    assert summary["inference"]["ok"]  # embeddings and the federated model's prediction
    chain = summary["chain"]
    assert chain["ok"] is True and chain["chain_id"] > 0
    assert chain["token"].startswith("0x") and chain["vault"].startswith("0x")

    deposit = chain["deposit"]
    assert deposit["credited"] is True and deposit["tx_hash"].startswith("0x")
    assert deposit["wallet_after"] - deposit["wallet_before"] == deposit["amount"] > 0

    # Both proofs verify here against the root the Vault holds for that epoch; the
    # client's covers its balance after the jobs and the deposit.
    root = _hex(chain["root"])
    proofs = {p["role"]: p for p in chain["proofs"]}
    assert set(proofs) == {"client", "provider"}
    assert proofs["client"]["balance"] == deposit["wallet_after"]
    for p in proofs.values():
        assert p["verified"] and p["forged_rejected"] and p["balance"] > 0
        siblings = [_hex(h) for h in p["proof"]]
        assert verify_proof(root, p["account"], p["balance"], siblings)
        assert not verify_proof(root, p["account"], p["balance"] - 1, siblings)

    # The provider's withdrawal was paid on chain: tokens up, wallet down, same amount.
    out = chain["withdrawal"]
    assert out["account"] == proofs["provider"]["account"]
    assert out["state"] == "paid" and out["tx_hash"].startswith("0x") and out["amount"] > 0
    assert out["token_after"] - out["token_before"] == out["amount"]
    assert out["wallet_before"] - out["wallet_after"] == out["amount"]
    # Node stakes (4 × 1,000) and client funding (300) came in through the faucet's
    # deposits, plus the client's own; less what was withdrawn.
    assert chain["backed"] == 4 * 1_000 * UNIT + 300 * UNIT + deposit["amount"] - out["amount"]
    assert chain["vault_balance"] >= chain["backed"]
    assert chain["ledger_ok"] is True
    assert not Path(summary["home"]).exists(), "the demo cleans up its temporary home"


def test_demo_refuses_an_unknown_chain_mode() -> None:
    result = CliRunner().invoke(app, ["demo", "--chain", "sepolia", "--json"])
    assert result.exit_code == ExitCode.USAGE


def test_up_refuses_a_chain_that_is_not_off_local_or_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUACKMESH_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["up", "--chain", "lcoal"])
    assert result.exit_code == ExitCode.USAGE
    assert "--chain takes off, local or an http(s) JSON-RPC URL" in result.stderr


def test_up_refuses_a_home_bound_to_an_earlier_local_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    LocalNetwork(e2e_settings(home, chain="local")).server_config()  # binds home to a Vault
    monkeypatch.setenv("QUACKMESH_HOME", str(home))
    result = CliRunner().invoke(app, ["up", "--chain", "local", "--port", str(free_port())])
    assert result.exit_code == ExitCode.ERROR
    assert "use a fresh QUACKMESH_HOME" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_up_with_a_local_chain_prints_the_vault_it_serves(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "QUACKMESH_HOME": str(tmp_path / "home"),
        "QUACKMESH_LOG_LEVEL": "WARNING",
        "QUACKMESH_ACCESS_LOG": "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "quackmesh", "up", "--chain", "local", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # the banner comes before the server starts serving
            lines.append(line)
            if "join a node" in line:
                break
        banner = "".join(lines)
        net = LocalNetwork(e2e_settings(tmp_path / "unused"), port=port)
        net.wait_healthy(60)
        info = httpx.get(f"{net.url}/v1/chain", timeout=10).json()
        assert info["mode"] == "local"
        assert f"Vault {info['vault']}" in banner and f"DuckToken {info['token']}" in banner
        assert f"chain id {info['chain_id']}" in banner
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
