"""Chain plumbing for benchmarks/settlement.py: the anvil node, the deployment, cash-outs.

anvil (the npm binary pinned in package.json) starts on a free loopback port with
automine and is stopped by its PID, as tests/chain/conftest.py does for the chain tests.
The deployment is the project's DuckToken and Vault, driven through ``ChainClient``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ANVIL",
    "ANVIL_CHAIN_ID",
    "OPERATOR_KEY",
    "PER_JOB_EPOCH",
    "PRICE",
    "Deployment",
    "anvil_node",
    "anvil_version",
    "deploy",
    "job_id",
    "run_withdrawal",
]

# anvil's well-known development key #0 (pre-funded on anvil; funded by ChainClient.local):
# the operator, and the vault's voucher signer, on both backends.
OPERATOR_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
PRICE = 570  # micro-DUCK paid to the provider per job (600 minus the 5 % fee)
VAULT_FLOAT = 10**15  # DUCK minted to the vault at setup: deposits backing every root
ESCAPE_PERIOD = 7 * 24 * 3600
PER_JOB_EPOCH = 1  # setup posts epoch 1's root; per-job records into it; batched start at 2

ANVIL = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / "anvil"
ANVIL_CHAIN_ID = 31337


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def anvil_node(binary: Path) -> Iterator[str]:
    """anvil on a free loopback port (automine), stopped by its PID afterwards."""
    from web3 import Web3

    port = _free_port()
    proc = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", str(port),
         "--chain-id", str(ANVIL_CHAIN_ID), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 5}))
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"anvil exited with {proc.returncode}: {err[-500:]}")
            try:
                if w3.eth.chain_id == ANVIL_CHAIN_ID:
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("anvil did not answer within 30 s") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def anvil_version(binary: Path) -> str:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return "anvil"
    return (out.stdout.strip().splitlines() or ["anvil"])[0]


@dataclass
class Deployment:
    client: Any
    token: Any
    vault: Any
    providers: list[str]
    balances: dict[str, int]  # the off-chain provider balances the roots commit to

    def advance_clock(self, seconds: int) -> None:
        """Move chain time on, as real epochs are minutes apart.

        Without it a root may land in the same second as the previous one (anvil mines
        many blocks a second) and its ``last_root_at`` write would be a no-op, 2,800 gas
        cheaper than in production.
        """
        w3 = self.client.w3
        tester = getattr(w3.provider, "ethereum_tester", None)
        if tester is not None:
            tester.time_travel(int(w3.eth.get_block("latest")["timestamp"]) + seconds)
        else:
            w3.provider.make_request("evm_increaseTime", [seconds])

    def fund_gas(self, address: str) -> None:
        """Give ``address`` test ETH for its own transactions."""
        w3 = self.client.w3
        if getattr(w3.provider, "ethereum_tester", None) is not None:
            tx = w3.eth.send_transaction(
                {"from": w3.eth.accounts[0], "to": address, "value": 10**18}
            )
            w3.eth.wait_for_transaction_receipt(tx)
        else:
            w3.provider.make_request("anvil_setBalance", [address, hex(10**18)])


# --- helpers ------------------------------------------------------------------------------


def job_id(n: int) -> bytes:
    from eth_utils.crypto import keccak

    return keccak(text=f"job_{n:020x}")


def provider_key(n: int) -> bytes:
    from eth_utils.crypto import keccak

    return keccak(text=f"provider-{n}")


def provider_addresses(count: int) -> list[str]:
    from eth_account import Account

    return [str(Account.from_key(provider_key(i)).address) for i in range(count)]


def deploy(client: Any, providers: int) -> Deployment:
    """Token and vault, DUCK for the operator and the vault, every provider funded once.

    Setup also posts epoch 1's root: a running network has posted roots before, and the
    very first ``post_root`` pays ~17k gas more (``last_epoch`` goes from zero to non-zero),
    a one-off that would otherwise land on whichever epoch is measured first.
    """
    from quackmesh.contracts import compile_contract
    from quackmesh.ledger.merkle import build_tree

    token = client.deploy(compile_contract("DuckToken"))
    vault = client.deploy(
        compile_contract("Vault"), token.address, client.address, client.address, ESCAPE_PERIOD
    )
    client.transact(token.functions.mint(client.address, VAULT_FLOAT))
    client.transact(token.functions.mint(vault.address, VAULT_FLOAT))
    addresses = provider_addresses(providers)
    for address in addresses:  # providers already hold DUCK: transfers are non-zero writes
        client.transact(token.functions.mint(address, 1))
    dep = Deployment(client, token, vault, addresses, dict.fromkeys(addresses, 1))
    tree = build_tree(dep.balances)
    client.transact(vault.functions.post_root(PER_JOB_EPOCH, tree.root, bytes(32), tree.total))
    return dep


def run_withdrawal(dep: Deployment, *, epoch: int) -> int:
    """Gas of provider 0 cashing out its balance in ``epoch``'s root with one voucher.

    Neither mode counts it: per-job already paid the provider's wallet on chain, while a
    batched provider pays this once per cash-out, however many jobs it covers.
    """
    from quackmesh.ledger.chain import ChainClient
    from quackmesh.ledger.vouchers import sign_withdrawal

    client, token, vault = dep.client, dep.token, dep.vault
    provider = ChainClient(client.w3, provider_key(0))
    dep.fund_gas(provider.address)
    amount = dep.balances[provider.address]
    now = int(client.w3.eth.get_block("latest")["timestamp"])
    voucher = sign_withdrawal(
        OPERATOR_KEY,
        vault=vault.address,
        chain_id=client.chain_id,
        account=provider.address,
        amount=amount,
        nonce=epoch,
        expiry=now + 3600,
    )
    before = client.call(token.functions.balanceOf(provider.address))
    receipt = provider.transact(vault.functions.withdraw(*voucher.args()))
    if client.call(token.functions.balanceOf(provider.address)) != before + amount:
        raise RuntimeError("the withdrawal did not pay the provider its balance")
    return int(receipt["gasUsed"])
