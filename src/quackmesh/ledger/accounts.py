"""Ledger account names: who owns a balance, spelled as one string.

========================  ==========================================================
``wallet:<0xAddress>``    spendable DUCK of an actor (EIP-55 checksummed address)
``stake:<0xAddress>``     a provider's stake, slashable
``escrow:job:<job_id>``   payment held for a job until it settles or is refunded
``escrow:rental:<id>``    payment held for a node rental
``escrow:infer:<id>``     the most an inference request may cost, held until it is
                          answered (then paid out, the rest refunded) or fails
``treasury``              protocol fees and slashed stake
``mint``                  development faucet source (no chain); may go negative
``vault``                 the on-chain Vault's side (chain mode): minus what it holds
                          for the ledger, so it may go negative too
``withdrawal:<id>``       DUCK promised by withdrawal voucher ``<id>`` until the chain
                          shows it paid (then to ``vault``) or it expires (back)
========================  ==========================================================

In chain mode DUCK enters the ledger only by a confirmed ``Deposit`` (``vault`` →
``wallet``) and leaves only by a confirmed ``Withdrawal`` (``withdrawal:<id>`` →
``vault``), so every other balance is backed by tokens the Vault holds.

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
    "NEGATIVE_ALLOWED",
    "TREASURY",
    "VAULT",
    "infer_escrow_account",
    "is_escrow_account",
    "is_valid_account",
    "job_escrow_account",
    "rental_escrow_account",
    "stake_account",
    "validate_account",
    "wallet_account",
    "withdrawal_account",
]

ACCOUNT_MAX_LEN = 128
TREASURY = "treasury"
MINT = "mint"
VAULT = "vault"
NEGATIVE_ALLOWED = frozenset({MINT, VAULT})  # the two sources of DUCK; everything else >= 0

_ID = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
_ID_RE = re.compile(rf"^{_ID}$")
_ESCROW_RE = re.compile(rf"^escrow:(job|rental|infer):{_ID}$")
_WITHDRAWAL_RE = re.compile(r"^withdrawal:[1-9][0-9]{0,18}$")
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


def infer_escrow_account(request_id: str) -> str:
    """``escrow:infer:<request_id>``: an inference request's reservation (issue 6)."""
    return _escrow("infer", request_id)


def withdrawal_account(voucher_id: int) -> str:
    """``withdrawal:<voucher id>``: what one withdrawal voucher holds until it settles."""
    if type(voucher_id) is not int or voucher_id <= 0:
        raise ValidationFailed(f"not a voucher id: {voucher_id!r}", field="voucher_id")
    return f"withdrawal:{voucher_id}"


def is_valid_account(name: object) -> TypeGuard[str]:
    """Whether ``name`` is a well-formed account name (addresses must be checksummed)."""
    if not isinstance(name, str) or len(name) > ACCOUNT_MAX_LEN:
        return False
    if name in (TREASURY, MINT, VAULT) or _ESCROW_RE.match(name) or _WITHDRAWAL_RE.match(name):
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
