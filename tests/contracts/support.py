"""Helpers for the contract tests: EIP-712 signatures made in Python, event names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boa
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from quackmesh.ledger.vouchers import sign_withdrawal, typed_data

ONE_DUCK = 10**6  # 6 decimals: amounts are ints of micro-DUCK
ESCAPE_PERIOD_S = 7 * 24 * 3600

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_PERMIT_TYPE = [
    {"name": "owner", "type": "address"},
    {"name": "spender", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


@dataclass(frozen=True)
class Sig:
    """An ECDSA signature split the way the contracts take it."""

    v: int
    r: bytes
    s: bytes


def _typed(
    *, name: str, contract: str, primary: str, fields: list[dict[str, str]], message: dict[str, Any]
) -> dict[str, Any]:
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, primary: fields},
        "primaryType": primary,
        "domain": {
            "name": name,
            "version": "1",
            "chainId": boa.env.evm.patch.chain_id,
            "verifyingContract": contract,
        },
        "message": message,
    }


def _sign(signer: LocalAccount, typed: dict[str, Any]) -> Sig:
    signed = Account.sign_message(encode_typed_data(full_message=typed), signer.key)
    return Sig(v=signed.v, r=signed.r.to_bytes(32, "big"), s=signed.s.to_bytes(32, "big"))


def permit_typed(
    token: Any, *, owner: str, spender: str, value: int, nonce: int, deadline: int
) -> dict[str, Any]:
    message = {
        "owner": owner,
        "spender": spender,
        "value": value,
        "nonce": nonce,
        "deadline": deadline,
    }
    return _typed(
        name="Duck",
        contract=str(token.address),
        primary="Permit",
        fields=_PERMIT_TYPE,
        message=message,
    )


def sign_permit(owner: LocalAccount, token: Any, *, spender: str, value: int, deadline: int) -> Sig:
    nonce = token.nonces(owner.address)
    typed = permit_typed(
        token, owner=owner.address, spender=spender, value=value, nonce=nonce, deadline=deadline
    )
    return _sign(owner, typed)


def voucher_typed(
    vault: Any, *, account: str, amount: int, nonce: int, expiry: int
) -> dict[str, Any]:
    """The production voucher structure (``quackmesh.ledger.vouchers``) for ``vault``."""
    return typed_data(
        vault=str(vault.address),
        chain_id=boa.env.evm.patch.chain_id,
        account=account,
        amount=amount,
        nonce=nonce,
        expiry=expiry,
    )


def sign_voucher(
    signer: LocalAccount, vault: Any, *, account: str, amount: int, nonce: int, expiry: int
) -> Sig:
    """A voucher signed by the coordinator's own signer (``sign_withdrawal``)."""
    voucher = sign_withdrawal(
        bytes(signer.key),
        vault=str(vault.address),
        chain_id=boa.env.evm.patch.chain_id,
        account=account,
        amount=amount,
        nonce=nonce,
        expiry=expiry,
    )
    _, _, _, v, r, s = voucher.args()
    return Sig(v=v, r=r, s=s)


def own_logs(contract: Any) -> list[Any]:
    """The events the last call logged from ``contract`` itself (not from contracts it called)."""
    return [log for log in contract.get_logs() if log.address == contract.address]


def event_names(contract: Any) -> list[str]:
    """The names of the events ``contract`` logged in the last call, in order."""
    return [type(log).__name__ for log in own_logs(contract)]


def in_one_hour() -> int:
    return int(boa.env.timestamp) + 3600
