"""verify(): a clean journal checks out, and tampering with any table is reported."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from quackmesh.ledger import GENESIS_HASH, TREASURY, job_escrow_account, wallet_account

from .ledger_support import ALICE, BOB, LedgerDB

ESCROW = job_escrow_account("job_1")


@pytest.fixture
def journal(ldb: LedgerDB) -> LedgerDB:
    """Four transactions: faucet, escrow, settle, refund."""
    with ldb.sessions.begin() as s:
        ldb.ledger.faucet(s, address=ALICE, amount=10_000_000)
        ldb.ledger.escrow(s, owner=ALICE, account=ESCROW, amount=4_000_000, ref="job_1")
        ldb.ledger.settle(s, escrow=ESCROW, provider=BOB, amount=3_000_000, fee=30_000, ref="j")
        ldb.ledger.refund(s, escrow=ESCROW, owner=ALICE, ref="job_1")
    return ldb


def tamper(db: LedgerDB, *statements: str) -> None:
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def test_verify_empty_ledger_is_ok(ldb: LedgerDB) -> None:
    check = ldb.verify()
    assert check.ok and check.transactions == 0 and check.head == GENESIS_HASH
    assert check.problems == () and check.total == 0


def test_verify_clean_journal_is_ok(journal: LedgerDB) -> None:
    check = journal.verify()
    assert check.ok, check.problems
    assert check.transactions == 4 and check.total == 0 and check.first_broken_seq is None
    with journal.sessions() as s:
        assert check.head == list(journal.ledger.iter_journal(s))[-1].hash


def test_verify_reports_an_edited_entry_amount(journal: LedgerDB) -> None:
    tamper(
        journal,
        "UPDATE ledger_entries SET amount = amount + 1 "
        "WHERE id = (SELECT MIN(id) FROM ledger_entries WHERE seq = 2)",
    )
    check = journal.verify()
    assert not check.ok
    assert check.first_broken_seq == 2
    assert check.total == 1
    assert any(p.startswith("seq 2: hash does not match") for p in check.problems)
    assert any("seq 2: entries sum to 1" in p for p in check.problems)


def test_verify_reports_an_edited_cached_balance(journal: LedgerDB) -> None:
    tamper(
        journal, f"UPDATE ledger_balances SET balance = balance + 5 WHERE account = '{TREASURY}'"
    )
    check = journal.verify()
    assert not check.ok and check.first_broken_seq is None
    assert check.problems == ("cached balance of treasury is 30005, its entries sum to 30000",)


def test_verify_reports_a_missing_balance_row_and_negative_balance(journal: LedgerDB) -> None:
    wallet = wallet_account(BOB)
    tamper(
        journal,
        f"DELETE FROM ledger_balances WHERE account = '{wallet}'",
        "UPDATE ledger_balances SET balance = -1 WHERE account = 'treasury'",
    )
    problems = journal.verify().problems
    assert f"cached balance of {wallet} is 0, its entries sum to 2970000" in problems
    assert "balance of treasury is negative: -1" in problems


def test_verify_reports_a_deleted_transaction(journal: LedgerDB) -> None:
    tamper(
        journal,
        "DELETE FROM ledger_entries WHERE seq = 2",
        "DELETE FROM ledger_transactions WHERE seq = 2",
    )
    check = journal.verify()
    assert not check.ok and check.first_broken_seq == 3
    assert "seq 3: follows seq 1 (gap or reorder)" in check.problems
    assert "seq 3: prev_hash does not match the previous hash" in check.problems


def test_verify_reports_a_deleted_last_transaction(journal: LedgerDB) -> None:
    tamper(
        journal,
        "DELETE FROM ledger_entries WHERE seq = 4",
        "DELETE FROM ledger_transactions WHERE seq = 4",
        f"UPDATE ledger_balances SET balance = 0 WHERE account = '{wallet_account(ALICE)}'",
    )
    check = journal.verify()
    assert not check.ok and check.first_broken_seq == 4
    assert any(p.startswith("head row points at seq 4") for p in check.problems)


def test_verify_reports_an_edited_memo(journal: LedgerDB) -> None:
    tamper(journal, "UPDATE ledger_transactions SET memo = 'nothing to see' WHERE seq = 3")
    check = journal.verify()
    assert check.first_broken_seq == 3
    assert check.problems == ("seq 3: hash does not match its contents",)


def test_verify_reports_an_entry_stripped_of_its_transaction_link(journal: LedgerDB) -> None:
    tamper(journal, "DELETE FROM ledger_entries WHERE seq = 1")
    check = journal.verify()
    assert check.first_broken_seq == 1
    assert "seq 1: transaction has no entries" in check.problems
