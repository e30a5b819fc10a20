"""Ledger account names: who owns a balance, spelled as one string.

========================  ==========================================================
``wallet:<0xAddress>``    spendable DUCK of an actor (EIP-55 checksummed address)
``stake:<0xAddress>``     a provider's stake, slashable
``escrow:job:<job_id>``   payment held for a job until it settles or is refunded
``escrow:rental:<id>``    payment held for a node rental
``treasury``              protocol fees and slashed stake
``mint``                  development faucet source; the only account that may go negative
========================  ==========================================================

Names are at most 128 characters (the width of the ``account`` columns). Builders take an
address in any case and return the checksummed form, so one actor has exactly one wallet.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from quackmesh.core.errors import ValidationFailed
from quackmesh.core.ids import normalize_address

__all__ = [
    "ACCOUNT_MAX_LEN",
    "MINT",
    "TREASURY",
    "is_escrow_account",
    "is_valid_account",
    "job_escrow_account",
    "rental_escrow_account",
    "stake_account",
    "validate_account",
    "wallet_account",
]

ACCOUNT_MAX_LEN = 128
TREASURY = "treasury"
MINT = "mint"

_ID = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
_ID_RE = re.compile(rf"^{_ID}$")
_ESCROW_RE = re.compile(rf"^escrow:(job|rental):{_ID}$")
_ADDRESS_ACCOUNT_RE = re.compile(r"^(wallet|stake):(0x[0-9a-fA-F]{40})$")


def _address(address: str) -> str:
    try:
        return normalize_address(address)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"not an Ethereum address: {address!r}", field="address") from exc


def _escrow(kind: str, ident: str) -> str:
    name = f"escrow:{kind}:{ident}"
    if not isinstance(ident, str) or not _ID_RE.match(ident) or len(name) > ACCOUNT_MAX_LEN:
        raise ValidationFailed(f"not a valid {kind} id for an escrow account: {ident!r}")
    return name


def wallet_account(address: str) -> str:
    """``wallet:<checksummed address>``; ``ValidationFailed`` for a malformed address."""
    return f"wallet:{_address(address)}"


def stake_account(address: str) -> str:
    """``stake:<checksummed address>``; ``ValidationFailed`` for a malformed address."""
    return f"stake:{_address(address)}"


def job_escrow_account(job_id: str) -> str:
    """``escrow:job:<job_id>``; the id is letters, digits, ``_``, ``.`` and ``-``."""
    return _escrow("job", job_id)


def rental_escrow_account(rental_id: str) -> str:
    """``escrow:rental:<rental_id>``; the id is letters, digits, ``_``, ``.`` and ``-``."""
    return _escrow("rental", rental_id)


def is_valid_account(name: object) -> TypeGuard[str]:
    """Whether ``name`` is a well-formed account name (addresses must be checksummed)."""
    if not isinstance(name, str) or len(name) > ACCOUNT_MAX_LEN:
        return False
    if name in (TREASURY, MINT) or _ESCROW_RE.match(name):
        return True
    match = _ADDRESS_ACCOUNT_RE.match(name)
    if match is None:
        return False
    # A lower-case or mis-cased address would split one actor's money over two accounts.
    return normalize_address(match.group(2)) == match.group(2)


def is_escrow_account(name: str) -> bool:
    return is_valid_account(name) and name.startswith("escrow:")


def validate_account(name: object) -> str:
    """Return ``name`` unchanged if it is a valid account name, else ``ValidationFailed``."""
    if not is_valid_account(name):
        raise ValidationFailed(f"not a valid ledger account: {name!r}", account=repr(name))
    return name
