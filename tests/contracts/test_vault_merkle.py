"""Vault balance proofs: the contract agrees with quackmesh.ledger.merkle; the escape hatch."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from eth_account.signers.local import LocalAccount

from quackmesh.ledger.merkle import BalanceTree, build_tree, leaf_hash

from .conftest import key
from .support import ESCAPE_PERIOD_S, ONE_DUCK, in_one_hour, own_logs, sign_voucher

HEAD = b"\x22" * 32


def deposit(token: Any, vault: Any, who: LocalAccount, amount: int) -> None:
    with boa.env.prank(who.address):
        token.approve(vault.address, amount)
        vault.deposit(amount)


def post(vault: Any, operator: str, epoch: int, tree: BalanceTree) -> None:
    with boa.env.prank(operator):
        vault.post_root(epoch, tree.root, HEAD, tree.total)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16])
def test_contract_verifies_every_python_proof(vault: Any, size: int) -> None:
    balances: dict[str, int] = {
        key(f"holder {i}").address: (i + 1) * 1_234_567 for i in range(size)
    }
    tree = build_tree(balances)
    for account, balance in balances.items():
        proof = tree.proof(account)
        assert vault.leaf(account, balance) == leaf_hash(account, balance)
        assert vault.verify_balance(account, balance, proof, tree.root)
        assert not vault.verify_balance(account, balance + 1, proof, tree.root)
        assert not vault.verify_balance(account, balance, proof, b"\x00" * 32)
    if size > 1:
        first, second = list(balances)[:2]
        # A proof is bound to its account.
        assert not vault.verify_balance(second, balances[first], tree.proof(first), tree.root)


def test_an_internal_node_is_not_a_leaf(vault: Any) -> None:
    # The leaf is hashed twice, so a level-1 node cannot pose as a (account, balance) leaf.
    balances: dict[str, int] = {key(f"holder {i}").address: i + 1 for i in range(4)}
    tree = build_tree(balances)
    account, balance = next(iter(balances.items()))
    assert not vault.verify_balance(account, balance, tree.proof(account)[1:], tree.root)


# --- escape hatch -----------------------------------------------------------------------


@pytest.fixture
def funded(
    vault: Any, token: Any, operator: str, alice: LocalAccount, bob: LocalAccount
) -> BalanceTree:
    """Alice and bob deposited 100 and 50 DUCK; epoch 1's root commits to exactly that."""
    deposit(token, vault, alice, 100 * ONE_DUCK)
    deposit(token, vault, bob, 50 * ONE_DUCK)
    tree = build_tree({alice.address: 100 * ONE_DUCK, bob.address: 50 * ONE_DUCK})
    post(vault, operator, 1, tree)
    return tree


def escape(vault: Any, tree: BalanceTree, who: LocalAccount) -> None:
    with boa.env.prank(who.address):
        vault.escape_withdraw(tree.balance(who.address), tree.proof(who.address))


def test_escape_is_refused_while_roots_are_fresh(
    vault: Any, funded: BalanceTree, alice: LocalAccount
) -> None:
    boa.env.time_travel(seconds=ESCAPE_PERIOD_S)  # exactly at the limit: still fresh
    assert not vault.escape_mode()
    with boa.reverts("vault: not in escape mode"):
        escape(vault, funded, alice)


def test_escape_is_refused_without_any_root(vault: Any, alice: LocalAccount) -> None:
    boa.env.time_travel(seconds=ESCAPE_PERIOD_S + 1)
    assert vault.escape_mode()
    with boa.env.prank(alice.address), boa.reverts("vault: no root posted"):
        vault.escape_withdraw(1, [])


def test_escape_pays_the_proven_balance_once(
    vault: Any,
    token: Any,
    funded: BalanceTree,
    signer: LocalAccount,
    alice: LocalAccount,
    bob: LocalAccount,
) -> None:
    expiry = in_one_hour() + ESCAPE_PERIOD_S
    sig = sign_voucher(signer, vault, account=alice.address, amount=1, nonce=1, expiry=expiry)
    boa.env.time_travel(seconds=ESCAPE_PERIOD_S + 1)
    assert vault.escape_mode()
    # Vouchers stop working, so nothing is paid twice.
    with boa.env.prank(alice.address), boa.reverts("vault: escape mode, vouchers are void"):
        vault.withdraw(1, 1, expiry, sig.v, sig.r, sig.s)
    with boa.env.prank(alice.address), boa.reverts("vault: bad balance proof"):
        vault.escape_withdraw(200 * ONE_DUCK, funded.proof(alice.address))
    escape(vault, funded, alice)
    (log,) = own_logs(vault)
    assert (type(log).__name__, log.account, log.amount, log.epoch) == (
        "EscapeWithdrawal",
        alice.address,
        100 * ONE_DUCK,
        1,
    )
    assert token.balanceOf(alice.address) == 1_000 * ONE_DUCK
    with boa.reverts("vault: nothing to withdraw"):
        escape(vault, funded, alice)
    escape(vault, funded, bob)
    assert token.balanceOf(vault.address) == 0


def test_escape_counts_movements_after_the_root(
    vault: Any,
    token: Any,
    funded: BalanceTree,
    signer: LocalAccount,
    alice: LocalAccount,
    bob: LocalAccount,
) -> None:
    # After epoch 1's root: alice withdraws 30 by voucher, bob deposits 5 more.
    expiry = in_one_hour()
    sig = sign_voucher(
        signer, vault, account=alice.address, amount=30 * ONE_DUCK, nonce=1, expiry=expiry
    )
    with boa.env.prank(alice.address):
        vault.withdraw(30 * ONE_DUCK, 1, expiry, sig.v, sig.r, sig.s)
    deposit(token, vault, bob, 5 * ONE_DUCK)
    assert vault.escape_claimable(alice.address, 100 * ONE_DUCK) == 70 * ONE_DUCK
    assert vault.escape_claimable(bob.address, 50 * ONE_DUCK) == 55 * ONE_DUCK
    boa.env.time_travel(seconds=ESCAPE_PERIOD_S + 1)
    escape(vault, funded, alice)
    escape(vault, funded, bob)
    assert token.balanceOf(alice.address) == 1_000 * ONE_DUCK
    assert token.balanceOf(bob.address) == 1_000 * ONE_DUCK
    assert token.balanceOf(vault.address) == 0


def test_a_new_root_ends_escape_mode(
    vault: Any,
    token: Any,
    funded: BalanceTree,
    operator: str,
    signer: LocalAccount,
    alice: LocalAccount,
    bob: LocalAccount,
) -> None:
    boa.env.time_travel(seconds=ESCAPE_PERIOD_S + 1)
    escape(vault, funded, alice)
    # The operator comes back with a root that reflects alice's escape.
    tree = build_tree({bob.address: 50 * ONE_DUCK})
    post(vault, operator, 2, tree)
    assert not vault.escape_mode()
    with boa.reverts("vault: not in escape mode"):
        escape(vault, tree, bob)
    expiry = in_one_hour()
    sig = sign_voucher(signer, vault, account=bob.address, amount=ONE_DUCK, nonce=1, expiry=expiry)
    with boa.env.prank(bob.address):
        vault.withdraw(ONE_DUCK, 1, expiry, sig.v, sig.r, sig.s)
    # Dark again: bob escapes against epoch 2, less the voucher he cashed since.
    boa.env.time_travel(seconds=ESCAPE_PERIOD_S + 1)
    escape(vault, tree, bob)
    assert token.balanceOf(bob.address) == 1_000 * ONE_DUCK
    with boa.env.prank(alice.address), boa.reverts("vault: bad balance proof"):
        vault.escape_withdraw(100 * ONE_DUCK, funded.proof(alice.address))  # old root
