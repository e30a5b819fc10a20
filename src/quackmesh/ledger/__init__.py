"""Layer 3: the double-entry DUCK ledger.

Amounts are ``int`` micro-DUCK; every transaction's entries sum to zero and each
transaction is hash-chained to the one before it (see :mod:`quackmesh.ledger.hashchain` for
the exact hash, so an outside auditor can re-check an export). :class:`SqlLedger` keeps
the journal in the coordinator's database; a later EVM backend implements the same
:class:`Ledger` interface.

    ledger = SqlLedger()
    with session_factory.begin() as session:
        ledger.faucet(session, address=addr, amount=parse_duck("10"))
        ledger.escrow(session, owner=addr, account=job_escrow_account(job_id),
                      amount=3_000_000, ref=job_id)
"""

from __future__ import annotations

from quackmesh.ledger.accounts import (
    MINT,
    NEGATIVE_ALLOWED,
    TREASURY,
    VAULT,
    is_escrow_account,
    is_valid_account,
    job_escrow_account,
    rental_escrow_account,
    stake_account,
    validate_account,
    wallet_account,
    withdrawal_account,
)
from quackmesh.ledger.base import HistoryEntry, Ledger, LedgerCheck, PostedTx, Posting
from quackmesh.ledger.export import CSV_COLUMNS, read_jsonl, write_csv, write_jsonl
from quackmesh.ledger.hashchain import GENESIS_HASH, ChainAudit, audit_chain, tx_hash
from quackmesh.ledger.sql import SqlLedger
from quackmesh.ledger.tables import (
    LedgerBalance,
    LedgerBase,
    LedgerEntry,
    LedgerHead,
    LedgerTransaction,
)

__all__ = [
    "CSV_COLUMNS",
    "GENESIS_HASH",
    "MINT",
    "NEGATIVE_ALLOWED",
    "TREASURY",
    "VAULT",
    "ChainAudit",
    "HistoryEntry",
    "Ledger",
    "LedgerBalance",
    "LedgerBase",
    "LedgerCheck",
    "LedgerEntry",
    "LedgerHead",
    "LedgerTransaction",
    "PostedTx",
    "Posting",
    "SqlLedger",
    "audit_chain",
    "is_escrow_account",
    "is_valid_account",
    "job_escrow_account",
    "read_jsonl",
    "rental_escrow_account",
    "stake_account",
    "tx_hash",
    "validate_account",
    "wallet_account",
    "withdrawal_account",
    "write_csv",
    "write_jsonl",
]
