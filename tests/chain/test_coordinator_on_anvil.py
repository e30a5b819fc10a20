"""A coordinator settling on a real anvil node, restarted in the middle.

deposit on chain → credited after 2 confirmations → a job paid off-chain → coordinator
stopped → a deposit and a voucher redemption happen while it is down → restarted on the
same database → both applied exactly once → root posted → the proof checks out against
the root read straight from anvil (not from the coordinator) → withdrawal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from quackmesh.cli.localnet import LocalNetwork
from quackmesh.contracts import compile_contract
from quackmesh.core.schemas import Hardware, JobState, NodeRegister, TaskReport
from quackmesh.core.wallet import Wallet
from quackmesh.ledger.chain import ChainClient
from quackmesh.ledger.deployment import deploy_contracts
from quackmesh.ledger.merkle import verify_proof
from quackmesh.sdk import Client
from tests.e2e.conftest import e2e_settings

from .test_settlement_flow import ANVIL_KEYS

CONFIRMATIONS = 2
PASSWORD = "anvil operator"


def wait_for(check: Callable[[], bool], *, what: str, w3: Any, timeout: float = 30.0) -> None:
    """Mine a block and look again until ``check`` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        w3.provider.make_request("evm_mine", [])
        time.sleep(0.1)


@pytest.fixture
def home(tmp_path: Path, w3: Any, anvil_url: str) -> Path:
    """A coordinator home with an operator keystore and a fresh deployment on anvil."""
    home = tmp_path / "home"
    home.mkdir()
    Wallet.from_key(ANVIL_KEYS[0]).save(home / "operator.json", PASSWORD, kdf="pbkdf2")
    _, _, deployment = deploy_contracts(ChainClient(w3, ANVIL_KEYS[0]), escape_period_s=86_400)
    (home / "chain.json").write_text(deployment.to_json())
    return home


def coordinator(home: Path, anvil_url: str) -> LocalNetwork:
    settings = e2e_settings(
        home,
        chain=anvil_url,
        chain_key_file=home / "operator.json",
        chain_key_password=PASSWORD,
        chain_confirmations=CONFIRMATIONS,
        chain_poll_s=0.1,
        chain_epoch_s=0.5,
        match_window_s=0.0,
        offline_after_s=600.0,  # the provider below never heartbeats; a slow run must not drop it
    )
    net = LocalNetwork(settings)
    net.start_coordinator_thread()
    return net


@pytest.fixture
def running(home: Path, anvil_url: str) -> Iterator[list[Any]]:
    """Coordinators and SDK clients, stopped and closed whatever the test's outcome."""
    opened: list[Any] = []
    yield opened
    for thing in reversed(opened):
        if isinstance(thing, LocalNetwork):
            thing.stop()
        else:
            thing.close()


def test_deposits_jobs_restart_root_proof_and_withdrawal(
    home: Path, anvil_url: str, w3: Any, running: list[Any]
) -> None:
    deployment = json.loads((home / "chain.json").read_text())
    operator = ChainClient(w3, ANVIL_KEYS[0])
    holder_chain = ChainClient(w3, ANVIL_KEYS[1])
    token = holder_chain.at(compile_contract("DuckToken"), deployment["token"])
    vault = holder_chain.at(compile_contract("Vault"), deployment["vault"])
    holder = Wallet.from_key(ANVIL_KEYS[1])
    operator.transact(token.functions.mint(holder.address, 50_000_000))
    holder_chain.transact(token.functions.approve(vault.address, 2**256 - 1))

    first = coordinator(home, anvil_url)
    running.append(first)
    client = Client(first.url, holder)
    running.append(client)

    # 1. A deposit counts only after its confirmations.
    holder_chain.transact(vault.functions.deposit(20_000_000))
    assert client.balance().available == 0
    wait_for(lambda: client.balance().available == 20_000_000, what="the deposit", w3=w3)

    # 2. A job paid off-chain: a provider staked from a faucet deposit does the work.
    provider = Client(first.url, Wallet.create())
    running.append(provider)
    provider.register_node(
        NodeRegister(
            name="anvil-node",
            hardware=Hardware(cpu_cores=2, ram_bytes=2**30),
            price_per_unit=400,
            slots=1,
            workloads=["ml.linear_regression"],
        )
    )
    stake = first.settings.min_stake
    provider.faucet(stake)
    wait_for(lambda: provider.balance().available == stake, what="the faucet deposit", w3=w3)
    provider.stake(stake)
    data = home / "line.csv"
    data.write_text("x,y\n1,3\n2,5\n3,7\n4,9\n")
    job = client.submit("ml.linear_regression", data=data, params={"target": "y"}, max_price=1_000)
    [lease] = provider.lease(max_tasks=1, wait_s=5).tasks
    result = provider.upload(json.dumps({"coefficients": [2.0], "intercept": 1.0}).encode())
    report = TaskReport(lease_id=lease.lease_id, outcome="succeeded", output_sha256=result.sha256)
    assert provider.report(lease.task_id, report).paid > 0
    assert client.status(job.id).state == JobState.SUCCEEDED
    voucher = client.withdraw(5_000_000, relay=False)  # redeemed while the coordinator is down
    after_job = client.balance().available

    # 3. Restart in the middle: while it is down, a deposit and a redemption happen.
    first.stop()
    holder_chain.transact(vault.functions.deposit(3_000_000))
    holder_chain.transact(
        vault.functions.withdraw(
            voucher.amount,
            voucher.nonce,
            voucher.expiry,
            voucher.v,
            bytes.fromhex(voucher.r[2:]),
            bytes.fromhex(voucher.s[2:]),
        )
    )
    for _ in range(CONFIRMATIONS):
        w3.provider.make_request("evm_mine", [])
    second = coordinator(home, anvil_url)
    running.append(second)
    client = Client(second.url, holder)
    running.append(client)
    wait_for(lambda: client.withdrawals()[0].state == "paid", what="the redemption applied", w3=w3)
    assert client.balance().available == after_job + 3_000_000
    assert [d.amount for d in client.deposits()] == [3_000_000, 20_000_000]  # once each

    # 4. The root on chain covers the final balances; the proof needs no coordinator.
    balance = client.balance().available
    wait_for(lambda: _proof_balance(client) == balance, what="a root with the final balance", w3=w3)
    proof = client.balance_proof()
    root, posted_at = vault.functions.roots(proof.epoch).call()[0::3]
    assert posted_at > 0 and "0x" + bytes(root).hex() == proof.root
    siblings = [bytes.fromhex(p[2:]) for p in proof.proof]
    assert verify_proof(bytes(root), holder.address, balance, siblings)
    assert vault.functions.verify_balance(holder.address, balance, siblings, root).call()
    info = client.chain_info()
    assert info.vault_balance == info.backed == 18_000_000 + stake

    # 5. And out again: a relayed withdrawal lands in the holder's token balance.
    before = token.functions.balanceOf(holder.address).call()
    voucher = client.withdraw(1_000_000)
    assert token.functions.balanceOf(holder.address).call() == before + 1_000_000
    wait_for(lambda: client.withdrawals()[0].state == "paid", what="the withdrawal", w3=w3)
    assert voucher.id == client.withdrawals()[0].id
    assert client.ledger_check().ok


def _proof_balance(client: Client) -> int | None:
    try:
        return client.balance_proof().balance
    except Exception:
        return None
