"""The coordinator settling on an in-process EVM (``chain = local``), on SQLite and PostgreSQL.

Deposits are credited once per Vault deposit id, withdrawals leave only against a signed
voucher the Vault pays once, expired vouchers come back, each epoch's root is on chain and
every proof verifies against it — and the ledger stays backed by the Vault's tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update

from quackmesh.coordinator.app import build_runtime
from quackmesh.coordinator.chain import service
from quackmesh.coordinator.chain.watcher import watch_once
from quackmesh.coordinator.db.models import ChainState
from quackmesh.core.errors import (
    ChainDisabled,
    ChainError,
    ChainReverted,
    DevModeOnly,
    InsufficientBalance,
    NotFound,
    ValidationFailed,
)
from quackmesh.core.schemas import JobState
from quackmesh.ledger import MINT, VAULT, wallet_account
from quackmesh.ledger.merkle import verify_proof

from .conftest import Net
from .test_jobs_flow import lease_one, succeed

CHAIN = {"chain": "local", "chain_poll_s": 3600.0, "chain_epoch_s": 3600.0}


@pytest.fixture
def chain_net(net_factory: Callable[..., Net]) -> Net:
    return net_factory(**CHAIN)


def link(net: Net) -> Any:
    assert net.rt.chain is not None
    return net.rt.chain


def balance_of(net: Net, account: str) -> int:
    with net.rt.reads() as session:
        return net.rt.ledger.balance(session, account)


def backed_everywhere(net: Net) -> None:
    """Everything off-chain but the Vault's own side and promised withdrawals is at most
    what the Vault holds; and the Vault's side is exactly what it holds."""
    with net.rt.reads() as session:
        balances = net.rt.ledger.balances(session)
        assert net.rt.ledger.verify(session).ok
    held = sum(v for a, v in balances.items() if a != VAULT and not a.startswith("withdrawal:"))
    vault_tokens = link(net).vault_balance()
    assert held <= vault_tokens
    assert -balances.get(VAULT, 0) == vault_tokens  # synced: every event applied
    assert balances.get(MINT, 0) == 0  # no unbacked DUCK in chain mode


def token_balance(net: Net, address: str) -> int:
    return int(link(net).call(link(net).token.functions.balanceOf(address)))


def test_without_a_chain_the_endpoints_say_so(net: Net) -> None:
    client = net.client()
    with pytest.raises(ChainDisabled):
        client.chain_info()
    with pytest.raises(ChainDisabled):
        client.withdraw(1)


def test_the_faucet_deposits_real_tokens_and_credits_the_deposit(chain_net: Net) -> None:
    client = chain_net.client()
    assert client.faucet(5_000_000).available == 5_000_000
    [deposit] = client.deposits()
    assert deposit.account == client.address and deposit.amount == 5_000_000
    info = client.chain_info()
    assert info.mode == "local" and info.vault_balance == info.backed == 5_000_000
    assert info.scanned_block == info.head_block
    backed_everywhere(chain_net)


def test_a_permit_deposit_is_gasless_and_credited_once_across_a_rescan(chain_net: Net) -> None:
    client = chain_net.client()
    client.token_faucet(7_000_000)
    assert client.chain_account().token_balance == 7_000_000
    relay = client.deposit(3_000_000)
    assert relay.credited and client.balance().available == 3_000_000
    assert client.chain_account().token_balance == 4_000_000
    # A restart that lost its cursor re-reads every block: nothing is credited twice.
    with chain_net.rt.sessions.begin() as session:
        session.execute(update(ChainState).values(scanned_block=-1))
    assert service.sync(chain_net.rt, link(chain_net)).deposits == 0
    assert client.balance().available == 3_000_000
    backed_everywhere(chain_net)


def test_a_bad_permit_is_refused_with_the_tokens_reason(chain_net: Net) -> None:
    client = chain_net.client()
    client.token_faucet(1_000_000)
    with pytest.raises(ChainReverted):  # more than it holds
        client.deposit(2_000_000)
    assert client.deposits() == [] and client.balance().available == 0


def test_a_relayed_withdrawal_pays_the_wallets_address(chain_net: Net) -> None:
    client = chain_net.client()
    client.faucet(5_000_000)
    voucher = client.withdraw(2_000_000)
    assert voucher.state == "paid" and voucher.tx_hash
    assert client.balance().available == 3_000_000
    assert token_balance(chain_net, client.address) == 2_000_000
    assert balance_of(chain_net, "withdrawal:1") == 0
    backed_everywhere(chain_net)


def test_a_voucher_submitted_by_its_holder_is_paid_once(chain_net: Net) -> None:
    client = chain_net.client()
    client.faucet(5_000_000)
    voucher = client.withdraw(1_500_000, relay=False)
    assert voucher.state == "pending" and voucher.nonce == voucher.id
    assert client.balance().available == 3_500_000
    held = balance_of(chain_net, f"withdrawal:{voucher.id}")
    assert held == 1_500_000
    chain = link(chain_net)
    vault = chain.vault.functions
    args = (
        voucher.amount,
        voucher.nonce,
        voucher.expiry,
        voucher.v,
        bytes.fromhex(voucher.r[2:]),
        bytes.fromhex(voucher.s[2:]),
    )
    # Anyone may submit it; the tokens go to the voucher's account all the same.
    chain.transact(vault.withdraw_for(client.address, *args))
    with pytest.raises(ChainReverted, match="voucher already used"):
        chain.transact(vault.withdraw_for(client.address, *args))
    watch_once(chain_net.rt, chain)
    [paid] = client.withdrawals()
    assert paid.state == "paid" and token_balance(chain_net, client.address) == 1_500_000
    backed_everywhere(chain_net)


def test_withdrawals_need_the_balance_and_a_positive_amount(chain_net: Net) -> None:
    client = chain_net.client()
    client.faucet(1_000_000)
    with pytest.raises(InsufficientBalance):
        client.withdraw(1_000_001)
    for body in ({"amount": 0}, {"amount": -5}, {"amount": "x"}, {"amount": 1, "to": "x"}):
        answer = client._http.post("/v1/chain/withdrawals", json=body)
        assert answer.status_code == 422, body
    bad_permit = {"amount": 1, "deadline": 1, "v": 27, "r": "0x12", "s": "0x" + "00" * 32}
    assert client._http.post("/v1/chain/deposits", json=bad_permit).status_code == 422
    assert client.withdrawals() == [] and client.balance().available == 1_000_000


def test_an_expired_voucher_returns_its_duck_and_can_no_longer_be_paid(
    chain_net: Net,
) -> None:
    client = chain_net.client()
    client.faucet(4_000_000)
    voucher = client.withdraw(3_000_000, relay=False)
    chain = link(chain_net)
    watch_once(chain_net.rt, chain, now=voucher.expiry + 10)  # the chain's clock has not moved
    assert client.withdrawals()[0].state == "pending"
    tester = chain.client.w3.provider.ethereum_tester
    tester.time_travel(voucher.expiry + 5)
    watch_once(chain_net.rt, chain, now=voucher.expiry + 10)
    [expired] = client.withdrawals()
    assert expired.state == "expired" and client.balance().available == 4_000_000
    with pytest.raises(ChainReverted, match="voucher expired"):
        chain.transact(
            chain.vault.functions.withdraw_for(
                client.address,
                voucher.amount,
                voucher.nonce,
                voucher.expiry,
                voucher.v,
                bytes.fromhex(voucher.r[2:]),
                bytes.fromhex(voucher.s[2:]),
            )
        )
    backed_everywhere(chain_net)


def test_each_epoch_root_is_on_chain_and_proofs_verify_against_it(chain_net: Net) -> None:
    alice, bob, carol = chain_net.client(), chain_net.client(), chain_net.client()
    alice.faucet(5_000_000)
    bob.faucet(2_000_000)
    chain = link(chain_net)
    first = service.close_epoch(chain_net.rt, chain, force=True)
    assert first is not None and first.epoch == 1 and first.total == 7_000_000
    assert service.close_epoch(chain_net.rt, chain, force=True) is None  # nothing moved

    for client, balance in ((alice, 5_000_000), (bob, 2_000_000)):
        proof = client.balance_proof()
        assert (proof.epoch, proof.balance) == (1, balance)
        on_chain = client.chain_root(1)
        assert on_chain.root == proof.root and on_chain.posted_at > 0
        root, siblings = bytes.fromhex(proof.root[2:]), [bytes.fromhex(p[2:]) for p in proof.proof]
        assert verify_proof(root, client.address, balance, siblings)
        assert not verify_proof(root, client.address, balance + 1, siblings)
        assert chain.call(
            chain.vault.functions.verify_balance(client.address, balance, siblings, root)
        )
    with pytest.raises(NotFound):
        carol.balance_proof()  # an empty wallet is not in the tree

    bob.withdraw(500_000)  # the journal moves: the next epoch commits the new balances
    second = service.close_epoch(chain_net.rt, chain, force=True)
    assert second is not None and second.epoch == 2 and second.total == 6_500_000
    assert bob.balance_proof().balance == 1_500_000
    assert bob.balance_proof(epoch=1).balance == 2_000_000
    assert [e.epoch for e in alice.chain_epochs()] == [2, 1]
    assert chain_net.client().chain_info().last_epoch == second
    with pytest.raises(ValidationFailed):
        alice.balance_proof("not-an-address")


def test_a_paid_job_shows_in_the_next_root_and_is_mirrored_on_chain(chain_net: Net) -> None:
    client = chain_net.client()
    client.faucet(10_000_000)
    node = chain_net.node()
    job = client.submit(
        "ml.linear_regression", data=chain_net.csv(), params={"target": "y"}, max_price=1_000
    )
    paid = succeed(node, lease_one(node))
    assert paid > 0 and client.status(job.id).state == JobState.SUCCEEDED
    chain = link(chain_net)
    epoch = service.close_epoch(chain_net.rt, chain, force=True)
    assert epoch is not None
    assert node.balance_proof().balance == node.balance().available
    assert client.balance_proof().balance == client.balance().available
    job_hash = service.job_id_bytes(job.id)
    posted = chain.logs(chain.vault.events.JobPosted, from_block=0, to_block=chain.head())
    final = chain.logs(chain.vault.events.JobFinalized, from_block=0, to_block=chain.head())
    assert job_hash in [bytes(e["args"]["job_id"]) for e in posted]
    assert job_hash in [bytes(e["args"]["job_id"]) for e in final]
    backed_everywhere(chain_net)


def test_an_epoch_left_pending_by_a_crash_is_posted_at_the_next_pass(chain_net: Net) -> None:
    client = chain_net.client()
    client.faucet(1_000_000)
    chain = link(chain_net)
    epoch_no = service._snapshot(chain_net.rt, chain, now=time.time())  # crashed before posting
    assert epoch_no == 1 and chain.call(chain.vault.functions.last_epoch()) == 0
    watch_once(chain_net.rt, chain)
    assert chain.call(chain.vault.functions.last_epoch()) == 1
    assert client.chain_epochs()[0].state == "posted"


def test_the_token_faucet_is_for_development_only(net_factory: Callable[..., Net]) -> None:
    net = net_factory(**CHAIN, dev_mode=False)
    client = net.client()
    with pytest.raises(DevModeOnly):
        client.token_faucet(1)
    with pytest.raises(DevModeOnly):
        client.faucet(1)


def test_a_database_bound_to_another_vault_is_refused(chain_net: Net) -> None:
    settings = chain_net.rt.settings
    with pytest.raises(ChainError, match="fresh QUACKMESH_HOME"):
        build_runtime(settings)  # a new local chain: its Vault is not the database's


def test_the_operator_key_must_be_configured_for_a_url(
    settings_factory: Callable[..., Any],
) -> None:
    with pytest.raises(ChainError, match="CHAIN_KEY_FILE"):
        build_runtime(settings_factory(chain="http://127.0.0.1:9"))
    with pytest.raises(ChainError, match="off, local or an http"):
        build_runtime(
            settings_factory(chain="ftp://x", chain_key_file="/nonexistent", chain_key_password="x")
        )


def test_clients_cannot_read_each_others_vouchers(chain_net: Net) -> None:
    alice, bob = chain_net.client(), chain_net.client()
    alice.faucet(1_000_000)
    alice.withdraw(100_000, relay=False)
    assert bob.withdrawals() == [] and len(alice.withdrawals()) == 1
    assert bob.deposits() == []


def test_wallet_accounts_match_the_proofs(chain_net: Net) -> None:
    client = chain_net.client()
    client.faucet(3_000_000)
    service.close_epoch(chain_net.rt, link(chain_net), force=True)
    assert client.balance_proof().balance == balance_of(chain_net, wallet_account(client.address))


def test_a_snapshot_outpaced_by_a_paid_voucher_is_taken_again(chain_net: Net) -> None:
    client = chain_net.client()
    client.faucet(5_000_000)
    chain = link(chain_net)
    assert service._snapshot(chain_net.rt, chain, now=time.time()) == 1  # total 5 DUCK
    client.withdraw(2_000_000)  # paid before the snapshot is posted: the Vault holds 3
    epoch = service.close_epoch(chain_net.rt, chain)
    assert epoch is not None and (epoch.epoch, epoch.total) == (1, 3_000_000)
    assert client.balance_proof().balance == 3_000_000
    assert client.chain_root(1).total == 3_000_000


def test_a_failed_relay_names_the_pending_voucher(
    chain_net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = chain_net.client()
    client.faucet(2_000_000)

    def reverted(*_: object) -> str:
        raise ChainReverted("vault: escape mode, vouchers are void")

    monkeypatch.setattr(service, "relay_withdrawal", reverted)
    with pytest.raises(ChainReverted, match="voucher 1 is signed and pending") as caught:
        client.withdraw(1_000_000)
    assert caught.value.context["voucher_id"] == 1
    [voucher] = client.withdrawals()
    assert voucher.state == "pending" and client.balance().available == 1_000_000
