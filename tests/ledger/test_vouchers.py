"""Withdrawal vouchers: EIP-712 signatures the Vault's signer makes, and their validation."""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from quackmesh.core.errors import ValidationFailed
from quackmesh.core.wallet import Wallet
from quackmesh.ledger.vouchers import sign_withdrawal, typed_data

VAULT = "0x" + "ab" * 20


def test_a_voucher_recovers_to_its_signer() -> None:
    signer, holder = Wallet.create(), Wallet.create()
    voucher = sign_withdrawal(
        signer.private_key, vault=VAULT, chain_id=31337, account=holder.address.lower(),
        amount=5, nonce=1, expiry=2_000_000_000,
    )  # fmt: skip
    assert voucher.account == holder.address  # checksummed
    data = typed_data(
        vault=voucher.vault, chain_id=31337, account=holder.address, amount=5, nonce=1,
        expiry=2_000_000_000,
    )  # fmt: skip
    recovered = Account.recover_message(
        encode_typed_data(full_message=data),
        vrs=(voucher.v, int(voucher.r, 16), int(voucher.s, 16)),
    )
    assert recovered == signer.address
    assert json.loads(voucher.to_json())["amount"] == 5
    amount, nonce, expiry, v, r, s = voucher.args()
    assert (amount, nonce, expiry, v) == (5, 1, 2_000_000_000, voucher.v) and len(r + s) == 64


@pytest.mark.parametrize(
    ("field", "value"), [("amount", -1), ("nonce", 2**256), ("expiry", 1.5), ("account", "0x12")]
)
def test_bad_voucher_fields_are_refused(field: str, value: object) -> None:
    args: dict[str, object] = {
        "vault": VAULT, "chain_id": 1, "account": Wallet.create().address,
        "amount": 1, "nonce": 1, "expiry": 10,
    }  # fmt: skip
    args[field] = value
    with pytest.raises(ValidationFailed):
        sign_withdrawal(Wallet.create().private_key, **args)  # type: ignore[arg-type]
