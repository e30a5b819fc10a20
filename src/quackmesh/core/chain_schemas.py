"""Wire schemas of the on-chain settlement endpoints (coordinator, SDK and CLI share them).

Amounts are ``int`` micro-DUCK, which is also the token's base unit (DuckToken has 6
decimals), so an off-chain balance and an on-chain amount are the same number.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quackmesh.core.schemas import _Wire

__all__ = [
    "ChainAccountPublic",
    "ChainEpochListPublic",
    "ChainEpochPublic",
    "ChainInfoPublic",
    "ChainRootPublic",
    "DepositListPublic",
    "DepositPublic",
    "PermitDepositCreate",
    "ProofPublic",
    "RelayPublic",
    "TokenFaucetCreate",
    "VoucherListPublic",
    "VoucherPublic",
    "WithdrawalCreate",
]

_HEX32 = r"^0x[0-9a-fA-F]{64}$"
_U256 = 2**256 - 1


class ChainEpochPublic(_Wire):
    epoch: int
    root: str
    journal_seq: int
    journal_head: str
    total: int = Field(description="sum of the wallet balances in the tree (micro-DUCK)")
    accounts: int
    state: Literal["pending", "posted"]
    created_at: float
    posted_at: float | None = None
    tx_hash: str | None = None
    block: int | None = None


class ChainEpochListPublic(_Wire):
    epochs: list[ChainEpochPublic]


class ChainInfoPublic(_Wire):
    mode: Literal["local", "rpc"]
    chain_id: int
    token: str
    vault: str
    operator: str
    confirmations: int
    epoch_s: float
    scanned_block: int = Field(description="Vault events are applied up to this block")
    head_block: int
    vault_balance: int = Field(description="DUCK the Vault holds on chain (micro-DUCK)")
    backed: int = Field(description="off-chain DUCK the Vault backs: deposits less withdrawals")
    last_epoch: ChainEpochPublic | None = None


class DepositPublic(_Wire):
    deposit_id: int
    account: str
    amount: int
    block: int
    tx_hash: str
    credited_at: float


class DepositListPublic(_Wire):
    deposits: list[DepositPublic]


class PermitDepositCreate(_Wire):
    """A gasless deposit: the owner's EIP-2612 permit for the Vault, relayed on chain."""

    amount: int = Field(gt=0, le=_U256)
    deadline: int = Field(gt=0, le=_U256, description="unix seconds; the permit's expiry")
    v: int = Field(ge=0, le=255)
    r: str = Field(pattern=_HEX32)
    s: str = Field(pattern=_HEX32)


class WithdrawalCreate(_Wire):
    amount: int = Field(gt=0, description="micro-DUCK to take out of the wallet")
    relay: bool = Field(
        default=False,
        description="the coordinator submits the voucher on chain itself (gasless)",
    )


class VoucherPublic(_Wire):
    """A withdrawal voucher: pass ``(amount, nonce, expiry, v, r, s)`` to
    ``Vault.withdraw`` from ``account`` (or anyone to ``withdraw_for(account, …)``)."""

    id: int
    vault: str
    chain_id: int
    account: str
    amount: int
    nonce: int
    expiry: int
    v: int
    r: str
    s: str
    state: Literal["pending", "paid", "expired"]
    created_at: float
    settled_at: float | None = None
    tx_hash: str | None = None


class VoucherListPublic(_Wire):
    vouchers: list[VoucherPublic]


class ProofPublic(_Wire):
    """A balance proof against the root posted on chain for ``epoch`` (see
    ``quackmesh.ledger.merkle.BalanceProof``), with where to find that root."""

    epoch: int
    account: str
    balance: int
    proof: list[str]
    root: str
    chain_id: int
    vault: str
    journal_head: str
    tx_hash: str | None = None


class TokenFaucetCreate(_Wire):
    amount: int = Field(gt=0, description="micro-DUCK tokens minted to the signer on chain")


class RelayPublic(_Wire):
    """A transaction the coordinator submitted for the caller."""

    tx_hash: str
    credited: bool = Field(
        default=False, description="the deposit is already in the off-chain wallet"
    )


class ChainAccountPublic(_Wire):
    """An address as the chain sees it (read live from the token)."""

    address: str
    token_balance: int = Field(description="DUCK tokens held on chain (micro-DUCK)")
    permit_nonce: int = Field(description="the token's nonces(address), for the next permit")
    native_balance: int = Field(description="wei, for gas")


class ChainRootPublic(_Wire):
    """``Vault.roots(epoch)`` as read from the chain now (zeros: not posted)."""

    epoch: int
    root: str
    journal_head: str
    total: int
    posted_at: int
