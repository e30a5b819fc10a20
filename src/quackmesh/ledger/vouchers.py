"""Withdrawal vouchers: the coordinator's EIP-712 promise that the Vault may pay out.

The Vault contract (``quackmesh/contracts/Vault.vy``) pays ``amount`` to ``account`` once
per ``(account, nonce)`` when it is shown this structure signed by its ``signer``, no
later than ``expiry`` (unix seconds, inclusive)::

    EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
        name "QuackMesh Vault", version "1", the chain id, the vault's address
    Withdrawal(address account,uint256 amount,uint256 nonce,uint256 expiry)

Signatures are low-``s`` (eth-account always makes them so; the Vault refuses others).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from quackmesh.core.errors import ValidationFailed
from quackmesh.core.ids import normalize_address

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "TOKEN_DOMAIN_NAME",
    "Permit",
    "Voucher",
    "sign_permit",
    "sign_withdrawal",
    "typed_data",
]

DOMAIN_NAME = "QuackMesh Vault"
DOMAIN_VERSION = "1"
TOKEN_DOMAIN_NAME = "Duck"  # DuckToken's EIP-712 domain name (EIP-2612 permits)
UINT256_LIMIT = 2**256

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_WITHDRAWAL_TYPE = [
    {"name": "account", "type": "address"},
    {"name": "amount", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "expiry", "type": "uint256"},
]


_PERMIT_TYPE = [
    {"name": "owner", "type": "address"},
    {"name": "spender", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


@dataclass(frozen=True)
class Permit:
    """An EIP-2612 permit for ``Vault.deposit_with_permit_for(owner, value, deadline, v, r, s)``."""

    owner: str
    spender: str
    value: int
    nonce: int
    deadline: int
    v: int
    r: str
    s: str


@dataclass(frozen=True)
class Voucher:
    """A signed withdrawal: pass ``(amount, nonce, expiry, v, r, s)`` to ``Vault.withdraw``
    from ``account``."""

    vault: str
    chain_id: int
    account: str
    amount: int
    nonce: int
    expiry: int
    v: int
    r: str  # 0x + 64 hex
    s: str

    def args(self) -> tuple[int, int, int, int, bytes, bytes]:
        """The arguments of ``Vault.withdraw``."""
        return (
            self.amount,
            self.nonce,
            self.expiry,
            self.v,
            bytes.fromhex(self.r.removeprefix("0x")),
            bytes.fromhex(self.s.removeprefix("0x")),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _uint(name: str, value: int) -> int:
    if type(value) is not int or not 0 <= value < UINT256_LIMIT:
        raise ValidationFailed(f"{name} must be a uint256", field=name)
    return value


def typed_data(
    *, vault: str, chain_id: int, account: str, amount: int, nonce: int, expiry: int
) -> dict[str, Any]:
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, "Withdrawal": _WITHDRAWAL_TYPE},
        "primaryType": "Withdrawal",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": vault,
        },
        "message": {"account": account, "amount": amount, "nonce": nonce, "expiry": expiry},
    }


def sign_withdrawal(
    key: bytes,
    *,
    vault: str,
    chain_id: int,
    account: str,
    amount: int,
    nonce: int,
    expiry: int,
) -> Voucher:
    """Sign a withdrawal voucher with the Vault's ``signer`` key."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    try:
        vault, account = normalize_address(vault), normalize_address(account)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"not an address: {exc}", field="account") from exc
    data = typed_data(
        vault=vault,
        chain_id=_uint("chain_id", chain_id),
        account=account,
        amount=_uint("amount", amount),
        nonce=_uint("nonce", nonce),
        expiry=_uint("expiry", expiry),
    )
    signed = Account.sign_message(encode_typed_data(full_message=data), private_key=key)
    return Voucher(
        vault=vault,
        chain_id=chain_id,
        account=account,
        amount=amount,
        nonce=nonce,
        expiry=expiry,
        v=int(signed.v),
        r="0x" + int(signed.r).to_bytes(32, "big").hex(),
        s="0x" + int(signed.s).to_bytes(32, "big").hex(),
    )


def sign_permit(
    key: bytes,
    *,
    token: str,
    chain_id: int,
    spender: str,
    value: int,
    nonce: int,
    deadline: int,
) -> Permit:
    """Sign DuckToken's EIP-2612 ``Permit`` with the owner's ``key`` (``nonce`` is the
    token's ``nonces(owner)``): lets ``spender`` (the Vault) pull ``value`` once."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    owner = str(Account.from_key(key).address)
    try:
        token, spender = normalize_address(token), normalize_address(spender)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"not an address: {exc}", field="spender") from exc
    message = {
        "owner": owner,
        "spender": spender,
        "value": _uint("value", value),
        "nonce": _uint("nonce", nonce),
        "deadline": _uint("deadline", deadline),
    }
    data = {
        "types": {"EIP712Domain": _DOMAIN_TYPE, "Permit": _PERMIT_TYPE},
        "primaryType": "Permit",
        "domain": {
            "name": TOKEN_DOMAIN_NAME,
            "version": "1",
            "chainId": _uint("chain_id", chain_id),
            "verifyingContract": token,
        },
        "message": message,
    }
    signed = Account.sign_message(encode_typed_data(full_message=data), private_key=key)
    return Permit(
        owner=owner,
        spender=spender,
        value=value,
        nonce=nonce,
        deadline=deadline,
        v=int(signed.v),
        r="0x" + int(signed.r).to_bytes(32, "big").hex(),
        s="0x" + int(signed.s).to_bytes(32, "big").hex(),
    )
