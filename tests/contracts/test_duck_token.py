"""DuckToken: ERC-20 behaviour, the minter role and EIP-2612 permit."""

from __future__ import annotations

from typing import Any

import boa
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from .support import ONE_DUCK, event_names, in_one_hour, permit_typed, sign_permit


def test_metadata_and_minter(token: Any, minter: str) -> None:
    assert token.name() == "Duck"
    assert token.symbol() == "DUCK"
    assert token.decimals() == 6
    assert token.minter() == minter
    assert token.totalSupply() == 0


def test_only_the_minter_mints(token: Any, minter: str, alice: LocalAccount) -> None:
    with boa.env.prank(minter):
        token.mint(alice.address, 5 * ONE_DUCK)
    assert token.balanceOf(alice.address) == 5 * ONE_DUCK
    assert token.totalSupply() == 5 * ONE_DUCK
    with boa.env.prank(alice.address), boa.reverts("duck: caller is not the minter"):
        token.mint(alice.address, 1)


def test_set_minter_hands_the_role_on(token: Any, minter: str, alice: LocalAccount) -> None:
    with boa.env.prank(alice.address), boa.reverts("duck: caller is not the minter"):
        token.set_minter(alice.address)
    with boa.env.prank(minter):
        token.set_minter(alice.address)
    assert event_names(token) == ["MinterChanged"]
    with boa.env.prank(alice.address):
        token.mint(alice.address, 7)
    with boa.env.prank(minter), boa.reverts("duck: caller is not the minter"):
        token.mint(minter, 1)


def test_transfer_moves_balance_and_refuses_overdraft(
    vault: Any, token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    # The vault fixture minted 1000 DUCK to alice and to bob.
    with boa.env.prank(alice.address):
        assert token.transfer(bob.address, 3 * ONE_DUCK)
        assert event_names(token) == ["Transfer"]
        with boa.reverts("duck: insufficient balance"):
            token.transfer(bob.address, 998 * ONE_DUCK)
        with boa.reverts("duck: transfer to zero address"):
            token.transfer("0x" + "00" * 20, 1)
    assert token.balanceOf(alice.address) == 997 * ONE_DUCK
    assert token.balanceOf(bob.address) == 1003 * ONE_DUCK
    assert token.totalSupply() == 2000 * ONE_DUCK


def test_transfer_from_spends_the_allowance(
    vault: Any, token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    with boa.env.prank(alice.address):
        token.approve(bob.address, 10)
    assert token.allowance(alice.address, bob.address) == 10
    with boa.env.prank(bob.address):
        token.transferFrom(alice.address, bob.address, 4)
        assert token.allowance(alice.address, bob.address) == 6
        with boa.reverts("duck: insufficient allowance"):
            token.transferFrom(alice.address, bob.address, 7)


def test_infinite_allowance_is_never_spent(
    vault: Any, token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    infinite = 2**256 - 1
    with boa.env.prank(alice.address):
        token.approve(bob.address, infinite)
    with boa.env.prank(bob.address):
        token.transferFrom(alice.address, bob.address, 5)
    assert token.allowance(alice.address, bob.address) == infinite


def test_domain_separator_matches_eip712(token: Any, alice: LocalAccount) -> None:
    typed = permit_typed(
        token, owner=alice.address, spender=alice.address, value=0, nonce=0, deadline=0
    )
    signable = encode_typed_data(full_message=typed)
    # EIP-191 version 0x01: the header is the domain separator.
    assert token.DOMAIN_SEPARATOR() == signable.header
    expected = keccak(
        keccak(
            text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
        )
        + keccak(text="Duck")
        + keccak(text="1")
        + boa.env.evm.patch.chain_id.to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(str(token.address)[2:])
    )
    assert token.DOMAIN_SEPARATOR() == expected


def test_permit_sets_the_allowance_and_spends_the_nonce(
    token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    deadline = in_one_hour()
    sig = sign_permit(alice, token, spender=bob.address, value=42, deadline=deadline)
    with boa.env.prank(bob.address):  # anyone may submit the owner's signature
        token.permit(alice.address, bob.address, 42, deadline, sig.v, sig.r, sig.s)
    assert event_names(token) == ["Approval"]
    assert token.allowance(alice.address, bob.address) == 42
    assert token.nonces(alice.address) == 1
    with boa.reverts("duck: invalid signature"):  # replay: the nonce moved on
        token.permit(alice.address, bob.address, 42, deadline, sig.v, sig.r, sig.s)


def test_permit_refuses_an_expired_deadline(
    token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    deadline = in_one_hour()
    sig = sign_permit(alice, token, spender=bob.address, value=42, deadline=deadline)
    boa.env.time_travel(seconds=3601)
    with boa.reverts("duck: permit expired"):
        token.permit(alice.address, bob.address, 42, deadline, sig.v, sig.r, sig.s)
    assert token.nonces(alice.address) == 0


def test_permit_refuses_a_signature_by_someone_else(
    token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    deadline = in_one_hour()
    sig = sign_permit(bob, token, spender=bob.address, value=42, deadline=deadline)
    with boa.reverts("duck: invalid signature"):
        token.permit(alice.address, bob.address, 42, deadline, sig.v, sig.r, sig.s)
    # A tampered value does not verify either.
    good = sign_permit(alice, token, spender=bob.address, value=42, deadline=deadline)
    with boa.reverts("duck: invalid signature"):
        token.permit(alice.address, bob.address, 43, deadline, good.v, good.r, good.s)


def test_permit_refuses_a_high_s_signature(
    token: Any, alice: LocalAccount, bob: LocalAccount
) -> None:
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    deadline = in_one_hour()
    sig = sign_permit(alice, token, spender=bob.address, value=42, deadline=deadline)
    twin_s = (n - int.from_bytes(sig.s, "big")).to_bytes(32, "big")
    twin_v = 55 - sig.v  # 27 <-> 28
    with boa.reverts("duck: invalid signature"):
        token.permit(alice.address, bob.address, 42, deadline, twin_v, sig.r, twin_s)
