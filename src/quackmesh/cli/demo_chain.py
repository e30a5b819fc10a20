"""The on-chain part of ``quackmesh demo --chain local`` (README "On-chain settlement").

The client deposits tokens with a gasless EIP-2612 permit; the client's and a provider's
balances are proven against the Merkle root the Vault holds (read back from the chain);
the provider withdraws with a relayed voucher; the Vault must still cover every DUCK the
ledger holds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console

from quackmesh.core.chain_schemas import ProofPublic
from quackmesh.core.errors import NotFound
from quackmesh.core.money import UNIT, format_duck
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

if TYPE_CHECKING:
    from quackmesh.cli.localnet import LocalNetwork

__all__ = ["CHAIN_DEPOSIT", "CHAIN_EPOCH_S", "CHAIN_POLL_S", "chain_tour"]

CHAIN_EPOCH_S = 2.0  # a balance root goes on chain this often (when the ledger moved)
CHAIN_DEPOSIT = 25 * UNIT  # tokens the client mints and deposits gaslessly
CHAIN_POLL_S = 0.2  # the deposit watcher and epoch closer run this often


def chain_tour(net: LocalNetwork, wallet: Wallet, cheater: str, out: Console) -> dict[str, Any]:
    """Deposit, prove and withdraw for real against the coordinator's chain."""
    with Client(net.url, wallet) as client:
        info = client.chain_info()
        out.print(
            f"[bold]On chain[/] — chain id {info.chain_id}, DuckToken {info.token}, Vault"
            f" {info.vault}; the Vault backs {format_duck(info.backed)} (every faucet credit"
            " above was a real deposit). In local mode this chain is an in-process EVM that"
            " lives inside the coordinator, so reading it back is only as independent as the"
            " coordinator itself; on a public chain you would read Vault.roots from your own node."
        )
        deposit = _deposit(client, out)
        provider = _richest_provider(net, exclude=cheater)
        last_epoch = info.last_epoch.epoch if info.last_epoch is not None else 0
        proven = _prove(client, provider.address, deposit["wallet_after"], last_epoch, out)
    summary: dict[str, Any] = {
        "chain_id": info.chain_id, "token": info.token, "vault": info.vault,
        "operator": info.operator, "deposit": deposit, **proven,
    }  # fmt: skip
    if not proven["proofs"]:
        return {**summary, "ok": False}
    withdrawal = _withdraw(net, provider, out)
    with Client(net.url, wallet) as client:
        end = client.chain_info()
        check = client.ledger_check()
    covered = end.vault_balance >= end.backed
    out.print(
        f"• Vault holds {format_duck(end.vault_balance)} on chain and backs"
        f" {format_duck(end.backed)} off chain: {'[green]covered ✓[/]' if covered else '[red]UNDER-BACKED[/]'};"
        f" ledger hash chain {'ok' if check.ok else 'BROKEN'}, sum of all accounts {check.total}"
    )
    ok = (
        deposit["ok"]
        and all(p["verified"] and p["forged_rejected"] for p in proven["proofs"])
        and withdrawal["ok"]
        and covered
        and check.ok
        and check.total == 0
    )
    return {
        **summary,
        "withdrawal": withdrawal,
        "vault_balance": end.vault_balance,
        "backed": end.backed,
        "ledger_ok": check.ok and check.total == 0,
        "ok": bool(ok),
    }


def _deposit(client: Client, out: Console) -> dict[str, Any]:
    """Tokens from the development token faucet into the Vault with a gasless permit."""
    client.token_faucet(CHAIN_DEPOSIT)
    tokens = client.chain_account().token_balance
    before = client.balance().available
    relay = client.deposit(CHAIN_DEPOSIT)
    after = client.balance().available
    out.print(
        f"• client minted {format_duck(tokens)} of tokens (dev token faucet), deposited"
        f" {format_duck(CHAIN_DEPOSIT)} with a gasless EIP-2612 permit the coordinator"
        f" relayed (tx {relay.tx_hash[:12]}…): {'credited' if relay.credited else 'NOT credited'},"
        f" wallet {format_duck(before)} → {format_duck(after)}"
    )
    return {
        "amount": CHAIN_DEPOSIT, "tx_hash": relay.tx_hash, "credited": relay.credited,
        "wallet_before": before, "wallet_after": after,
        "ok": relay.credited and after - before == CHAIN_DEPOSIT,
    }  # fmt: skip


def _prove(
    client: Client, provider: str, balance: int, after_epoch: int, out: Console
) -> dict[str, Any]:
    """Wait for a root holding the client's ``balance``, then check the client's and the
    provider's proofs here against that root as read back from the Vault."""
    started = time.monotonic()
    mine = _wait_root(client, balance, after_epoch=after_epoch, timeout=15 * CHAIN_EPOCH_S)
    waited = round(time.monotonic() - started, 1)
    if mine is None:
        out.print(
            f"• [red]no balance root with the client's {format_duck(balance)} after {waited}s[/]"
        )
        return {"epoch": None, "root": None, "root_wait_s": waited, "proofs": []}
    theirs = client.balance_proof(provider, epoch=mine.epoch)
    on_chain = client.chain_root(mine.epoch)
    proofs = [_verify(mine, on_chain.root, "client"), _verify(theirs, on_chain.root, "provider")]
    out.print(
        f"• epoch {mine.epoch} root {on_chain.root[:14]}… read back from the Vault after"
        f" {waited}s; checked here with verify_proof: "
        + "; ".join(
            f"{p['role']} {p['account'][:10]}… {format_duck(p['balance'])}"
            f" {'[green]✓ proven[/]' if p['verified'] else '[red]✗ NOT proven[/]'}"
            f" ({p['siblings']} sibling hashes; +1 µDUCK"
            f" {'rejected' if p['forged_rejected'] else 'ACCEPTED'})"
            for p in proofs
        )
    )
    return {"epoch": mine.epoch, "root": on_chain.root, "root_wait_s": waited, "proofs": proofs}


def _wait_root(
    client: Client, balance: int, *, after_epoch: int, timeout: float
) -> ProofPublic | None:
    """The client's proof in the first posted epoch past ``after_epoch`` holding ``balance``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            proof = client.balance_proof()
        except NotFound:  # no epoch posted yet
            proof = None
        if proof is not None and proof.epoch > after_epoch and proof.balance == balance:
            return proof
        time.sleep(0.2)
    return None


def _verify(proof: ProofPublic, root: str, role: str) -> dict[str, Any]:
    """Check ``proof`` here against ``root`` (read from the Vault), and that a forged
    balance one micro-DUCK higher does not pass."""
    from quackmesh.ledger.merkle import verify_proof

    root_bytes = bytes.fromhex(root.removeprefix("0x"))
    siblings = [bytes.fromhex(h.removeprefix("0x")) for h in proof.proof]
    ok = proof.root == root and verify_proof(root_bytes, proof.account, proof.balance, siblings)
    forged = verify_proof(root_bytes, proof.account, proof.balance + 1, siblings)
    return {
        "role": role,
        "account": proof.account,
        "balance": proof.balance,
        "proof": proof.proof,
        "siblings": len(siblings),
        "verified": ok,
        "forged_rejected": not forged,
    }


def _richest_provider(net: LocalNetwork, *, exclude: str) -> Wallet:
    """The honest node with the most DUCK in its wallet (its earnings)."""
    balances: list[tuple[int, Wallet]] = []
    for wallet in net.node_wallets:
        if wallet.address != exclude:
            with Client(net.url, wallet) as node:
                balances.append((node.balance().available, wallet))
    return max(balances, key=lambda b: b[0])[1]


def _withdraw(net: LocalNetwork, provider: Wallet, out: Console) -> dict[str, Any]:
    """Half of the provider's earnings out of the Vault, through a relayed voucher."""
    with Client(net.url, provider) as node:
        tokens_before = node.chain_account().token_balance
        wallet_before = node.balance().available
        amount = max(1, wallet_before // 2)
        voucher = node.withdraw(amount, relay=True)
        tokens_after = node.chain_account().token_balance
        wallet_after = node.balance().available
    out.print(
        f"• provider {provider.address[:10]}… withdrew {format_duck(amount)} of its earnings:"
        f" voucher #{voucher.id} signed by the coordinator, relayed on chain"
        f" (tx {(voucher.tx_hash or '-')[:12]}…) → {voucher.state}; its DUCK tokens on chain"
        f" {format_duck(tokens_before)} → {format_duck(tokens_after)}, wallet"
        f" {format_duck(wallet_before)} → {format_duck(wallet_after)}"
    )
    ok = (
        voucher.state == "paid"
        and tokens_after - tokens_before == amount
        and wallet_before - wallet_after == amount
    )
    return {
        "account": provider.address, "amount": amount, "voucher": voucher.id,
        "state": voucher.state, "tx_hash": voucher.tx_hash,
        "token_before": tokens_before, "token_after": tokens_after,
        "wallet_before": wallet_before, "wallet_after": wallet_after, "ok": bool(ok),
    }  # fmt: skip
