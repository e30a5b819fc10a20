"""The settlement round trip through ChainClient, on the in-process EVM and on anvil:
deposit → off-chain balances → epoch root → a holder checks their proof against the chain
alone → voucher → withdrawal (and its replay refused)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from quackmesh.contracts import compile_contract
from quackmesh.core.errors import ChainReverted
from quackmesh.ledger.chain import ChainClient
from quackmesh.ledger.merkle import build_tree, verify_proof
from quackmesh.ledger.vouchers import sign_withdrawal

pytestmark = pytest.mark.slow

DUCK = 10**6
# anvil's well-known development keys #0 (operator) and #1 (a holder).
ANVIL_KEYS = (
    bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"),
    bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"),
)


@dataclass
class Deployed:
    operator: ChainClient
    holder: ChainClient
    token: Any
    vault: Any


@pytest.fixture(params=["local", "anvil"])
def deployed(request: pytest.FixtureRequest) -> Iterator[Deployed]:
    if request.param == "local":
        operator = ChainClient.local()
        w3 = operator.w3
        holder_key = bytes(32 * [7])
        holder_address = ChainClient(w3, holder_key).address
        w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": holder_address, "value": 10**20})
        holder = ChainClient(w3, holder_key)
    else:
        w3 = request.getfixturevalue("w3")
        operator, holder = ChainClient(w3, ANVIL_KEYS[0]), ChainClient(w3, ANVIL_KEYS[1])
    token = operator.deploy(compile_contract("DuckToken"))
    vault = operator.deploy(
        compile_contract("Vault"), token.address, operator.address, operator.address, 3600
    )
    operator.transact(token.functions.mint(holder.address, 100 * DUCK))
    yield Deployed(operator, holder, token, vault)


def test_deposit_root_proof_and_withdrawal(deployed: Deployed) -> None:
    op, holder, token, vault = deployed.operator, deployed.holder, deployed.token, deployed.vault
    start = op.w3.eth.block_number
    holder.transact(token.functions.approve(vault.address, 40 * DUCK))
    holder.transact(vault.functions.deposit(40 * DUCK))
    # The coordinator reads the deposit (id 1) and would credit the holder's wallet.
    deposits = op.logs(vault.events.Deposit, from_block=start, to_block=op.safe_head())
    assert [
        (d["args"]["account"], d["args"]["amount"], d["args"]["deposit_id"]) for d in deposits
    ] == [(holder.address, 40 * DUCK, 1)]
    # Off-chain, the holder earned and spent: the epoch root commits to balances that the
    # vault's tokens cover (a total above them is refused on chain).
    balances = {holder.address: 25 * DUCK, op.address: 15 * DUCK}
    tree = build_tree(balances)
    with pytest.raises(ChainReverted, match="exceeds vault balance"):
        op.transact(vault.functions.post_root(1, tree.root, b"\x11" * 32, 41 * DUCK))
    op.transact(vault.functions.post_root(1, tree.root, b"\x11" * 32, tree.total))
    # The holder checks their balance against the chain alone: the root read from the vault.
    onchain_root = bytes(op.call(vault.functions.roots(1))[0])
    proof = tree.proof(holder.address)
    assert verify_proof(onchain_root, holder.address, 25 * DUCK, proof)
    assert holder.call(
        vault.functions.verify_balance(holder.address, 25 * DUCK, proof, onchain_root)
    )
    assert not holder.call(
        vault.functions.verify_balance(holder.address, 26 * DUCK, proof, onchain_root)
    )
    # A voucher signed by the coordinator pays out once.
    voucher = sign_withdrawal(
        bytes(op._account.key),
        vault=vault.address,
        chain_id=op.chain_id,
        account=holder.address,
        amount=10 * DUCK,
        nonce=1,
        expiry=int(time.time()) + 3600,
    )
    before = holder.call(token.functions.balanceOf(holder.address))
    holder.transact(vault.functions.withdraw(*voucher.args()))
    assert holder.call(token.functions.balanceOf(holder.address)) == before + 10 * DUCK
    assert holder.call(token.functions.balanceOf(vault.address)) == 30 * DUCK
    with pytest.raises(ChainReverted, match="voucher already used"):
        holder.transact(vault.functions.withdraw(*voucher.args()))
    # Someone else cannot cash the holder's voucher.
    with pytest.raises(ChainReverted, match="bad voucher signature"):
        op.transact(vault.functions.withdraw(*voucher.args()))


def test_an_expired_voucher_is_refused(deployed: Deployed) -> None:
    op, holder, token, vault = deployed.operator, deployed.holder, deployed.token, deployed.vault
    holder.transact(token.functions.approve(vault.address, 5 * DUCK))
    holder.transact(vault.functions.deposit(5 * DUCK))
    stale = sign_withdrawal(
        bytes(op._account.key),
        vault=vault.address,
        chain_id=op.chain_id,
        account=holder.address,
        amount=DUCK,
        nonce=7,
        expiry=1,  # long past
    )
    with pytest.raises(ChainReverted, match="voucher expired"):
        holder.transact(vault.functions.withdraw(*stale.args()))
