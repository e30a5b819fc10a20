"""Vault: deposits, voucher withdrawals, root posting, life-cycle events, access control."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from .conftest import key
from .support import (
    ESCAPE_PERIOD_S,
    ONE_DUCK,
    event_names,
    in_one_hour,
    own_logs,
    sign_permit,
    sign_voucher,
    voucher_typed,
)

ROOT = b"\x11" * 32
HEAD = b"\x22" * 32


def deposit(token: Any, vault: Any, who: LocalAccount, amount: int) -> Any:
    with boa.env.prank(who.address):
        token.approve(vault.address, amount)
        vault.deposit(amount)
    return own_logs(vault)


def withdraw(vault: Any, signer: LocalAccount, who: LocalAccount, amount: int, nonce: int) -> None:
    expiry = in_one_hour()
    sig = sign_voucher(
        signer, vault, account=who.address, amount=amount, nonce=nonce, expiry=expiry
    )
    with boa.env.prank(who.address):
        vault.withdraw(amount, nonce, expiry, sig.v, sig.r, sig.s)


def test_constructor_stores_its_arguments(
    vault: Any, token: Any, operator: str, signer: LocalAccount
) -> None:
    assert vault.token() == token.address
    assert vault.operator() == operator
    assert vault.signer() == signer.address
    assert vault.escape_period() == ESCAPE_PERIOD_S
    assert vault.last_epoch() == 0
    assert vault.deposit_count() == 0
    assert not vault.escape_mode()


def test_constructor_refuses_zero_addresses(
    vault_deployer: Any, token: Any, operator: str, signer: LocalAccount
) -> None:
    zero = "0x" + "00" * 20
    with boa.reverts("vault: operator is zero address"):
        vault_deployer.deploy(token.address, zero, signer.address, ESCAPE_PERIOD_S)
    with boa.reverts("vault: signer is zero address"):
        vault_deployer.deploy(token.address, operator, zero, ESCAPE_PERIOD_S)


# --- deposits ---------------------------------------------------------------------------


def test_deposit_pulls_tokens_and_logs_increasing_ids(
    vault: Any, token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    (first,) = deposit(token, vault, alice, 10 * ONE_DUCK)
    (second,) = deposit(token, vault, bob, 3 * ONE_DUCK)
    (third,) = deposit(token, vault, alice, 1)
    assert type(first).__name__ == "Deposit"
    assert (first.account, first.amount, first.deposit_id) == (alice.address, 10 * ONE_DUCK, 1)
    assert (second.account, second.amount, second.deposit_id) == (bob.address, 3 * ONE_DUCK, 2)
    assert third.deposit_id == 3
    assert vault.deposit_count() == 3
    assert token.balanceOf(vault.address) == 13 * ONE_DUCK + 1
    assert token.balanceOf(alice.address) == 990 * ONE_DUCK - 1


def test_deposit_refuses_zero_and_missing_allowance(
    vault: Any, token: Any, alice: LocalAccount
) -> None:
    with boa.env.prank(alice.address):
        with boa.reverts("vault: zero deposit"):
            vault.deposit(0)
        with boa.reverts("duck: insufficient allowance"):
            vault.deposit(5)
    assert vault.deposit_count() == 0


def test_deposit_with_permit_needs_no_approve_transaction(
    vault: Any, token: Any, alice: LocalAccount
) -> None:
    deadline = in_one_hour()
    sig = sign_permit(alice, token, spender=vault.address, value=7 * ONE_DUCK, deadline=deadline)
    with boa.env.prank(alice.address):
        vault.deposit_with_permit(7 * ONE_DUCK, deadline, sig.v, sig.r, sig.s)
    (log,) = own_logs(vault)
    assert (log.account, log.amount, log.deposit_id) == (alice.address, 7 * ONE_DUCK, 1)
    assert token.balanceOf(vault.address) == 7 * ONE_DUCK
    assert token.allowance(alice.address, vault.address) == 0


# --- withdrawals ------------------------------------------------------------------------


def test_voucher_digest_matches_python_eip712(vault: Any, alice: LocalAccount) -> None:
    typed = voucher_typed(vault, account=alice.address, amount=5, nonce=9, expiry=123)
    signable = encode_typed_data(full_message=typed)
    assert vault.DOMAIN_SEPARATOR() == signable.header
    expected = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert vault.voucher_digest(alice.address, 5, 9, 123) == expected


def test_withdraw_pays_the_voucher_once(
    vault: Any, token: Any, signer: LocalAccount, alice: LocalAccount
) -> None:
    deposit(token, vault, alice, 10 * ONE_DUCK)
    withdraw(vault, signer, alice, 4 * ONE_DUCK, nonce=1)
    (log,) = own_logs(vault)
    assert type(log).__name__ == "Withdrawal"
    assert (log.account, log.amount, log.nonce) == (alice.address, 4 * ONE_DUCK, 1)
    assert vault.used_nonce(alice.address, 1)
    assert token.balanceOf(vault.address) == 6 * ONE_DUCK
    assert token.balanceOf(alice.address) == 994 * ONE_DUCK
    with boa.reverts("vault: voucher already used"):
        withdraw(vault, signer, alice, 4 * ONE_DUCK, nonce=1)
    # Nonces are per account: another nonce works, the same nonce for bob is unaffected.
    withdraw(vault, signer, alice, 1 * ONE_DUCK, nonce=2)
    assert token.balanceOf(vault.address) == 5 * ONE_DUCK


def test_nonces_are_per_account(
    vault: Any, token: Any, signer: LocalAccount, alice: LocalAccount, bob: LocalAccount
) -> None:
    deposit(token, vault, alice, 10 * ONE_DUCK)
    withdraw(vault, signer, alice, 1, nonce=7)
    withdraw(vault, signer, bob, 1, nonce=7)
    assert vault.used_nonce(bob.address, 7)


def test_withdraw_refuses_an_expired_voucher(
    vault: Any, token: Any, signer: LocalAccount, alice: LocalAccount
) -> None:
    deposit(token, vault, alice, 10 * ONE_DUCK)
    expiry = in_one_hour()
    sig = sign_voucher(signer, vault, account=alice.address, amount=1, nonce=1, expiry=expiry)
    boa.env.time_travel(seconds=3601)
    with boa.env.prank(alice.address), boa.reverts("vault: voucher expired"):
        vault.withdraw(1, 1, expiry, sig.v, sig.r, sig.s)
    assert not vault.used_nonce(alice.address, 1)


def test_withdraw_refuses_a_voucher_from_the_wrong_signer(
    vault: Any, token: Any, alice: LocalAccount
) -> None:
    deposit(token, vault, alice, 10 * ONE_DUCK)
    with boa.reverts("vault: bad voucher signature"):
        withdraw(vault, alice, alice, ONE_DUCK, nonce=1)  # self-signed


def test_withdraw_refuses_a_tampered_or_stolen_voucher(
    vault: Any, token: Any, signer: LocalAccount, alice: LocalAccount, bob: LocalAccount
) -> None:
    deposit(token, vault, alice, 10 * ONE_DUCK)
    expiry = in_one_hour()
    sig = sign_voucher(signer, vault, account=alice.address, amount=1, nonce=1, expiry=expiry)
    with boa.env.prank(alice.address), boa.reverts("vault: bad voucher signature"):
        vault.withdraw(2, 1, expiry, sig.v, sig.r, sig.s)  # amount raised
    with boa.env.prank(alice.address), boa.reverts("vault: bad voucher signature"):
        vault.withdraw(1, 1, expiry + 1, sig.v, sig.r, sig.s)  # expiry extended
    with boa.env.prank(bob.address), boa.reverts("vault: bad voucher signature"):
        vault.withdraw(1, 1, expiry, sig.v, sig.r, sig.s)  # alice's voucher, bob sends it
    with boa.env.prank(alice.address), boa.reverts("vault: bad voucher signature"):
        vault.withdraw(1, 1, expiry, 27, b"\x01" * 32, b"\x02" * 32)  # garbage
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    twin_s = (n - int.from_bytes(sig.s, "big")).to_bytes(32, "big")
    with boa.env.prank(alice.address), boa.reverts("vault: bad voucher signature"):
        vault.withdraw(1, 1, expiry, 55 - sig.v, sig.r, twin_s)  # malleable twin


def test_withdraw_refuses_a_voucher_from_another_vault(
    vault: Any,
    vault_deployer: Any,
    token: Any,
    operator: str,
    signer: LocalAccount,
    alice: LocalAccount,
) -> None:
    other = vault_deployer.deploy(token.address, operator, signer.address, ESCAPE_PERIOD_S)
    deposit(token, vault, alice, 10 * ONE_DUCK)
    expiry = in_one_hour()
    sig = sign_voucher(signer, other, account=alice.address, amount=1, nonce=1, expiry=expiry)
    with boa.env.prank(alice.address), boa.reverts("vault: bad voucher signature"):
        vault.withdraw(1, 1, expiry, sig.v, sig.r, sig.s)


def test_withdraw_refuses_zero_and_more_than_the_vault_holds(
    vault: Any, token: Any, signer: LocalAccount, alice: LocalAccount
) -> None:
    deposit(token, vault, alice, 10)
    with boa.reverts("vault: zero withdrawal"):
        withdraw(vault, signer, alice, 0, nonce=1)
    with boa.reverts("duck: insufficient balance"):
        withdraw(vault, signer, alice, 11, nonce=1)
    assert not vault.used_nonce(alice.address, 1)  # the failed call changed nothing


def test_set_signer_voids_the_old_signers_vouchers(
    vault: Any, token: Any, operator: str, signer: LocalAccount, alice: LocalAccount
) -> None:
    deposit(token, vault, alice, 10)
    new_signer = key("new signer")
    with boa.env.prank(operator):
        vault.set_signer(new_signer.address)
    assert event_names(vault) == ["SignerChanged"]
    with boa.reverts("vault: bad voucher signature"):
        withdraw(vault, signer, alice, 1, nonce=1)
    withdraw(vault, new_signer, alice, 1, nonce=1)


# --- roots ------------------------------------------------------------------------------


def test_post_root_stores_the_epoch(
    vault: Any, token: Any, operator: str, alice: LocalAccount
) -> None:
    deposit(token, vault, alice, 10 * ONE_DUCK)
    boa.env.time_travel(seconds=60)
    with boa.env.prank(operator):
        vault.post_root(1, ROOT, HEAD, 10 * ONE_DUCK)
    (log,) = own_logs(vault)
    assert type(log).__name__ == "RootPosted"
    assert (log.epoch, log.root, log.journal_head, log.total) == (1, ROOT, HEAD, 10 * ONE_DUCK)
    assert vault.last_epoch() == 1
    assert vault.last_root_at() == boa.env.timestamp
    assert vault.roots(1) == (ROOT, HEAD, 10 * ONE_DUCK, boa.env.timestamp)
    with boa.env.prank(operator):
        vault.post_root(5, HEAD, ROOT, 0)  # epochs may skip
    assert vault.last_epoch() == 5
    assert vault.roots(1)[0] == ROOT


def test_post_root_refuses_a_non_increasing_epoch(vault: Any, operator: str) -> None:
    with boa.env.prank(operator):
        with boa.reverts("vault: epoch not increasing"):
            vault.post_root(0, ROOT, HEAD, 0)
        vault.post_root(2, ROOT, HEAD, 0)
        with boa.reverts("vault: epoch not increasing"):
            vault.post_root(2, ROOT, HEAD, 0)
        with boa.reverts("vault: epoch not increasing"):
            vault.post_root(1, ROOT, HEAD, 0)


def test_post_root_refuses_a_total_the_vault_cannot_cover(
    vault: Any, token: Any, operator: str, alice: LocalAccount
) -> None:
    deposit(token, vault, alice, 10)
    with boa.env.prank(operator):
        with boa.reverts("vault: root total exceeds vault balance"):
            vault.post_root(1, ROOT, HEAD, 11)
        vault.post_root(1, ROOT, HEAD, 10)


# --- life-cycle events ------------------------------------------------------------------


def test_record_jobs_logs_one_event_per_job(vault: Any, operator: str) -> None:
    posted = [bytes([i]) * 32 for i in range(1, 4)]
    finalized = [b"\xaa" * 32]
    with boa.env.prank(operator):
        vault.record_jobs(3, posted, finalized)
    logs = own_logs(vault)
    assert event_names(vault) == ["JobPosted"] * 3 + ["JobFinalized"]
    assert [log.job_id for log in logs] == [*posted, *finalized]
    assert {log.epoch for log in logs} == {3}


def test_record_jobs_takes_a_full_batch(vault: Any, operator: str) -> None:
    batch = [i.to_bytes(32, "big") for i in range(256)]
    with boa.env.prank(operator):
        vault.record_jobs(1, batch, [])
    assert len(own_logs(vault)) == 256


def test_record_slashes_logs_one_event_per_provider(
    vault: Any, operator: str, alice: LocalAccount, bob: LocalAccount
) -> None:
    with boa.env.prank(operator):
        vault.record_slashes(4, [alice.address, bob.address], [5, 6])
        logs = own_logs(vault)
        with boa.reverts("vault: providers and amounts differ in length"):
            vault.record_slashes(4, [alice.address], [5, 6])
    assert [type(log).__name__ for log in logs] == ["ProviderSlashed"] * 2
    assert [(log.epoch, log.provider, log.amount) for log in logs] == [
        (4, alice.address, 5),
        (4, bob.address, 6),
    ]


# --- access control ---------------------------------------------------------------------

OPERATOR_CALLS: dict[str, Any] = {
    "post_root": lambda v, a: v.post_root(1, ROOT, HEAD, 0),
    "record_jobs": lambda v, a: v.record_jobs(1, [ROOT], []),
    "record_slashes": lambda v, a: v.record_slashes(1, [a], [1]),
    "set_operator": lambda v, a: v.set_operator(a),
    "set_signer": lambda v, a: v.set_signer(a),
}


@pytest.mark.parametrize("call", sorted(OPERATOR_CALLS))
def test_operator_functions_refuse_everyone_else(
    vault: Any, operator: str, signer: LocalAccount, alice: LocalAccount, call: str
) -> None:
    for outsider in (alice.address, signer.address):
        with boa.env.prank(outsider), boa.reverts("vault: caller is not the operator"):
            OPERATOR_CALLS[call](vault, outsider)
    with boa.env.prank(operator):
        OPERATOR_CALLS[call](vault, alice.address)


def test_set_operator_hands_the_role_on(vault: Any, operator: str, alice: LocalAccount) -> None:
    with boa.env.prank(operator):
        vault.set_operator(alice.address)
    assert event_names(vault) == ["OperatorChanged"]
    assert vault.operator() == alice.address
    with boa.env.prank(operator), boa.reverts("vault: caller is not the operator"):
        vault.post_root(1, ROOT, HEAD, 0)
    with boa.env.prank(alice.address):
        vault.post_root(1, ROOT, HEAD, 0)
        with boa.reverts("vault: operator is zero address"):
            vault.set_operator("0x" + "00" * 20)


def test_deposit_with_permit_survives_a_front_run_permit(
    vault: Any, token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    deadline = in_one_hour()
    sig = sign_permit(alice, token, spender=vault.address, value=7, deadline=deadline)
    with boa.env.prank(bob.address):  # bob copies the permit from the mempool
        token.permit(alice.address, vault.address, 7, deadline, sig.v, sig.r, sig.s)
    with boa.env.prank(alice.address):
        vault.deposit_with_permit(7, deadline, sig.v, sig.r, sig.s)
    assert token.balanceOf(vault.address) == 7


def test_deposit_with_a_bad_permit_and_no_allowance_reverts(
    vault: Any, token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    deadline = in_one_hour()
    sig = sign_permit(bob, token, spender=vault.address, value=7, deadline=deadline)
    with boa.env.prank(alice.address), boa.reverts("duck: insufficient allowance"):
        vault.deposit_with_permit(7, deadline, sig.v, sig.r, sig.s)
    assert vault.deposit_count() == 0


def test_deposit_for_credits_the_named_account_and_pulls_from_the_caller(
    vault: Any, token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    with boa.env.prank(alice.address):
        token.approve(vault.address, 4 * ONE_DUCK)
        vault.deposit_for(bob.address, 4 * ONE_DUCK)
        (log,) = [e for e in own_logs(vault) if type(e).__name__ == "Deposit"]
        with boa.reverts("vault: account is zero address"):
            vault.deposit_for("0x" + "00" * 20, 1)
        with boa.reverts("duck: insufficient allowance"):
            vault.deposit_for(bob.address, 1)
    assert (log.account, log.amount, log.deposit_id) == (bob.address, 4 * ONE_DUCK, 1)
    assert token.balanceOf(alice.address) == 996 * ONE_DUCK
    assert token.balanceOf(bob.address) == 1000 * ONE_DUCK  # bob paid nothing
    assert vault.deposited_since(bob.address, 0) == 4 * ONE_DUCK
    assert vault.deposited_since(alice.address, 0) == 0


def test_a_relayer_deposits_with_the_owners_permit_and_the_owner_is_credited(
    vault: Any, token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    from quackmesh.ledger.vouchers import sign_permit as production_permit

    permit = production_permit(
        bytes(alice.key),
        token=str(token.address),
        chain_id=boa.env.evm.patch.chain_id,
        spender=str(vault.address),
        value=5 * ONE_DUCK,
        nonce=token.nonces(alice.address),
        deadline=in_one_hour(),
    )
    args = (permit.value, permit.deadline, permit.v, bytes.fromhex(permit.r[2:]))
    with boa.env.prank(bob.address):  # bob relays and pays the gas
        vault.deposit_with_permit_for(alice.address, *args, bytes.fromhex(permit.s[2:]))
        (log,) = own_logs(vault)
        with boa.reverts("duck: insufficient allowance"):  # the permit is spent
            vault.deposit_with_permit_for(alice.address, *args, bytes.fromhex(permit.s[2:]))
    assert (log.account, log.amount) == (alice.address, 5 * ONE_DUCK)
    assert token.balanceOf(alice.address) == 995 * ONE_DUCK
    assert token.balanceOf(bob.address) == 1000 * ONE_DUCK


def test_withdraw_for_pays_the_vouchers_account_whoever_submits_it(
    vault: Any, token: Any, signer: LocalAccount, alice: LocalAccount, bob: LocalAccount
) -> None:
    deposit(token, vault, alice, 10 * ONE_DUCK)
    expiry = in_one_hour()
    sig = sign_voucher(
        signer, vault, account=alice.address, amount=4 * ONE_DUCK, nonce=9, expiry=expiry
    )
    with boa.env.prank(bob.address):
        with boa.reverts("vault: bad voucher signature"):  # not bob's voucher
            vault.withdraw(4 * ONE_DUCK, 9, expiry, sig.v, sig.r, sig.s)
        vault.withdraw_for(alice.address, 4 * ONE_DUCK, 9, expiry, sig.v, sig.r, sig.s)
        with boa.reverts("vault: voucher already used"):
            vault.withdraw_for(alice.address, 4 * ONE_DUCK, 9, expiry, sig.v, sig.r, sig.s)
    assert token.balanceOf(alice.address) == 994 * ONE_DUCK
    assert token.balanceOf(bob.address) == 1000 * ONE_DUCK
    assert vault.used_nonce(alice.address, 9)
