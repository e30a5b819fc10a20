"""Contract tests for the SQL ledger, run on SQLite and on PostgreSQL (``db_url``)."""

from __future__ import annotations

import hashlib
import json

import pytest

from quackmesh.core.errors import InsufficientBalance, ValidationFailed
from quackmesh.core.ids import normalize_address
from quackmesh.core.wallet import Wallet
from quackmesh.ledger import (
    GENESIS_HASH,
    MINT,
    TREASURY,
    Posting,
    job_escrow_account,
    rental_escrow_account,
    stake_account,
    wallet_account,
)

from .ledger_support import ALICE, BOB, DUCK, LedgerDB

ESCROW = job_escrow_account("job_1")


def test_faucet_escrow_settle_refund_moves_exact_amounts(ldb: LedgerDB) -> None:
    led = ldb.ledger
    with ldb.sessions.begin() as s:
        led.faucet(s, address=ALICE.lower(), amount=10 * DUCK)
        led.escrow(s, owner=ALICE, account=ESCROW, amount=3 * DUCK, ref="job_1")
        led.settle(s, escrow=ESCROW, provider=BOB, amount=2 * DUCK, fee=100_000, ref="job_1")
        refunded = led.refund(s, escrow=ESCROW, owner=ALICE, ref="job_1")
    assert refunded == DUCK
    assert ldb.balances() == {
        ESCROW: 0,
        MINT: -10 * DUCK,
        TREASURY: 100_000,
        wallet_account(ALICE): 8 * DUCK,
        wallet_account(BOB): 1_900_000,
    }
    with ldb.sessions() as s:
        assert led.balance(s, wallet_account(ALICE)) == 8 * DUCK
        assert led.balance(s, wallet_account(normalize_address("0x" + "c3" * 20))) == 0
        assert led.balances(s, prefix="wallet:") == {
            wallet_account(ALICE): 8 * DUCK,
            wallet_account(BOB): 1_900_000,
        }
        kinds = [tx.kind for tx in led.iter_journal(s)]
        assert kinds == ["faucet", "escrow", "settle", "refund"]
        assert led.verify(s).ok


def test_settle_skips_zero_legs_and_zero_amount(ldb: LedgerDB) -> None:
    led = ldb.ledger
    with ldb.sessions.begin() as s:
        led.faucet(s, address=ALICE, amount=5 * DUCK)
        led.escrow(s, owner=ALICE, account=ESCROW, amount=5 * DUCK, ref="job_1")
        no_fee = led.settle(s, escrow=ESCROW, provider=BOB, amount=DUCK, fee=0, ref="job_1")
        all_fee = led.settle(s, escrow=ESCROW, provider=BOB, amount=DUCK, fee=DUCK, ref="job_1")
        nothing = led.settle(s, escrow=ESCROW, provider=BOB, amount=0, fee=0, ref="job_1")
    assert no_fee is not None and all_fee is not None and nothing is None
    assert {e.account for e in no_fee.entries} == {ESCROW, wallet_account(BOB)}
    assert {e.account for e in all_fee.entries} == {ESCROW, TREASURY}
    assert ldb.tx_count() == 4


def test_settle_rejects_fee_above_amount_and_bad_escrow(ldb: LedgerDB) -> None:
    with ldb.sessions() as s:
        with pytest.raises(ValidationFailed):
            ldb.ledger.settle(s, escrow=ESCROW, provider=BOB, amount=1, fee=2, ref="j")
        with pytest.raises(ValidationFailed):
            ldb.ledger.settle(s, escrow=TREASURY, provider=BOB, amount=1, fee=0, ref="j")
        with pytest.raises(ValidationFailed):
            ldb.ledger.escrow(s, owner=ALICE, account=wallet_account(BOB), amount=1, ref="j")


def test_refund_of_empty_escrow_writes_nothing(ldb: LedgerDB) -> None:
    with ldb.sessions.begin() as s:
        assert ldb.ledger.refund(s, escrow=rental_escrow_account("r1"), owner=ALICE, ref="r1") == 0
    assert ldb.tx_count() == 0


def test_settle_more_than_escrowed_is_refused(ldb: LedgerDB) -> None:
    with ldb.sessions.begin() as s:
        ldb.ledger.faucet(s, address=ALICE, amount=DUCK)
        ldb.ledger.escrow(s, owner=ALICE, account=ESCROW, amount=DUCK, ref="job_1")
    with ldb.sessions() as s, pytest.raises(InsufficientBalance) as info:
        ldb.ledger.settle(s, escrow=ESCROW, provider=BOB, amount=DUCK + 1, fee=0, ref="job_1")
    assert info.value.context == {"account": ESCROW, "available": DUCK, "required": DUCK + 1}


def test_insufficient_balance_leaves_nothing_written(ldb: LedgerDB) -> None:
    led = ldb.ledger
    with ldb.sessions.begin() as s:
        led.faucet(s, address=ALICE, amount=DUCK)
        head_before = led.verify(s).head
    before = ldb.balances()
    with ldb.sessions() as s:
        with pytest.raises(InsufficientBalance) as info:
            led.escrow(s, owner=ALICE, account=ESCROW, amount=DUCK + 1, ref="job_1")
        s.commit()  # even a caller that commits regardless must not persist anything
    assert info.value.status == 402
    assert info.value.context == {
        "account": wallet_account(ALICE),
        "available": DUCK,
        "required": DUCK + 1,
    }
    assert ldb.balances() == before
    assert ldb.tx_count() == 1
    with ldb.sessions() as s:
        check = led.verify(s)
    assert check.ok and check.head == head_before and check.transactions == 1


def test_ledger_never_commits_so_callers_rollback_discards_the_posting(ldb: LedgerDB) -> None:
    with ldb.sessions() as s:
        ldb.ledger.faucet(s, address=ALICE, amount=DUCK)
        s.rollback()
    assert ldb.tx_count() == 0
    assert ldb.balances() == {}


@pytest.mark.parametrize(
    "postings",
    [
        [],
        [Posting(TREASURY, 5)],
        [Posting(MINT, -5), Posting(TREASURY, 4)],
        [Posting(MINT, 0), Posting(TREASURY, 0)],
        [Posting(MINT, -1.0), Posting(TREASURY, 1.0)],  # type: ignore[arg-type]
        [Posting(MINT, -True), Posting(TREASURY, True)],
        [Posting(MINT, -1), Posting("wallet:nobody", 1)],
        [Posting(MINT, -1), Posting("wallet:" + ALICE.lower(), 1)],
        [Posting(MINT, -(2**64)), Posting(TREASURY, 2**64)],
    ],
    ids=["empty", "one-sided", "unbalanced", "zero", "float", "bool", "bad-name", "lower", "huge"],
)
def test_post_rejects_invalid_postings(ldb: LedgerDB, postings: list[Posting]) -> None:
    with ldb.sessions() as s, pytest.raises(ValidationFailed) as info:
        ldb.ledger.post(s, kind="test", memo="", postings=postings)
    assert info.value.status == 422
    assert ldb.tx_count() == 0


@pytest.mark.parametrize(
    ("kind", "memo", "ref"), [("", "", None), ("Bad Kind", "", None), ("ok", "x" * 257, None)]
)
def test_post_rejects_bad_header(ldb: LedgerDB, kind: str, memo: str, ref: str | None) -> None:
    postings = [Posting(MINT, -1), Posting(TREASURY, 1)]
    with ldb.sessions() as s, pytest.raises(ValidationFailed):
        ldb.ledger.post(s, kind=kind, memo=memo, postings=postings, ref=ref)


def test_transfer_stakes_and_slashes(ldb: LedgerDB) -> None:
    led = ldb.ledger
    with ldb.sessions.begin() as s:
        led.faucet(s, address=BOB, amount=10 * DUCK)
        led.transfer(
            s, src=wallet_account(BOB), dst=stake_account(BOB), amount=4 * DUCK, kind="stake"
        )
        led.transfer(
            s, src=stake_account(BOB), dst=TREASURY, amount=DUCK, kind="slash", ref="job_9"
        )
    assert ldb.balances()[stake_account(BOB)] == 3 * DUCK
    with ldb.sessions() as s:
        with pytest.raises(ValidationFailed):
            led.transfer(s, src=TREASURY, dst=TREASURY, amount=1)
        with pytest.raises(InsufficientBalance):
            led.transfer(s, src=stake_account(BOB), dst=TREASURY, amount=3 * DUCK + 1)


def test_hash_chain_matches_the_documented_construction(ldb: LedgerDB) -> None:
    with ldb.sessions.begin() as s:
        ldb.ledger.faucet(s, address=ALICE, amount=DUCK)
        ldb.ledger.escrow(s, owner=ALICE, account=ESCROW, amount=DUCK, ref="job_1")
    with ldb.sessions() as s:
        txs = list(ldb.ledger.iter_journal(s))
    prev = GENESIS_HASH
    for tx in txs:
        payload = {
            "prev": prev,
            "seq": tx.seq,
            "tx_id": tx.tx_id,
            "kind": tx.kind,
            "memo": tx.memo,
            "ref": tx.ref,
            "created_at_us": round(tx.created_at * 1_000_000),
            "entries": sorted([e.account, e.amount] for e in tx.entries),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert tx.prev_hash == prev
        assert tx.hash == hashlib.sha256(blob.encode()).hexdigest()
        prev = tx.hash
    assert [tx.seq for tx in txs] == [1, 2]


def test_iter_journal_pages_by_seq(ldb: LedgerDB) -> None:
    with ldb.sessions.begin() as s:
        for i in range(5):
            ldb.ledger.faucet(s, address=ALICE, amount=i + 1)
    with ldb.sessions() as s:
        assert [t.seq for t in ldb.ledger.iter_journal(s, after_seq=1, limit=2)] == [2, 3]
        assert [t.seq for t in ldb.ledger.iter_journal(s, after_seq=3, limit=10)] == [4, 5]
        assert list(ldb.ledger.iter_journal(s, limit=0)) == []
        assert list(ldb.ledger.iter_journal(s, after_seq=5)) == []
        with pytest.raises(ValidationFailed):
            ldb.ledger.iter_journal(s, after_seq=-1)


def test_posted_tx_round_trips_through_the_database(ldb: LedgerDB) -> None:
    with ldb.sessions.begin() as s:
        posted = ldb.ledger.post(
            s,
            kind="test",
            memo="ünïcode memo",
            ref="job_1",
            postings=[Posting(MINT, -7), Posting(TREASURY, 3), Posting(wallet_account(BOB), 4)],
        )
    with ldb.sessions() as s:
        (stored,) = ldb.ledger.iter_journal(s)
    assert stored == posted


def test_settle_and_refund_closes_the_escrow_in_one_transaction(ldb: LedgerDB) -> None:
    """Provider, treasury and the owner's refund in a single journal transaction."""
    led = ldb.ledger
    owner, provider = Wallet.create().address, Wallet.create().address
    escrow = job_escrow_account("job_x")
    with ldb.sessions.begin() as s:
        led.faucet(s, address=owner, amount=1_000)
        led.escrow(s, owner=owner, account=escrow, amount=1_000, ref="job_x")
    before = ldb.tx_count()
    with ldb.sessions.begin() as s:
        refund = led.settle_and_refund(
            s, escrow=escrow, provider=provider, owner=owner, amount=400, fee=20, ref="task_x"
        )
    assert refund == 600
    assert ldb.tx_count() == before + 1
    balances = ldb.balances()
    assert balances[escrow] == 0 and balances[TREASURY] == 20
    assert balances[wallet_account(provider)] == 380 and balances[wallet_account(owner)] == 600
    with ldb.sessions() as s:
        (tx,) = [t for t in led.iter_journal(s) if t.ref == "task_x"]
        assert Posting(escrow, -1_000) in tx.entries and led.verify(s).ok


def test_settle_and_refund_cannot_pay_more_than_the_escrow(ldb: LedgerDB) -> None:
    led = ldb.ledger
    owner = Wallet.create().address
    escrow = job_escrow_account("job_y")
    with ldb.sessions.begin() as s:
        led.faucet(s, address=owner, amount=100)
        led.escrow(s, owner=owner, account=escrow, amount=100, ref="job_y")
    before = ldb.tx_count()
    with pytest.raises(InsufficientBalance), ldb.sessions.begin() as s:
        led.settle_and_refund(
            s, escrow=escrow, provider=owner, owner=owner, amount=101, fee=0, ref="t"
        )
    assert ldb.tx_count() == before


def test_history_lists_an_accounts_entries_newest_first_with_paging(ldb: LedgerDB) -> None:
    led = ldb.ledger
    with ldb.sessions.begin() as s:
        led.faucet(s, address=ALICE, amount=10 * DUCK)
        led.escrow(s, owner=ALICE, account=ESCROW, amount=3 * DUCK, ref="job_1")
        led.settle(s, escrow=ESCROW, provider=BOB, amount=2 * DUCK, fee=100_000, ref="job_1")
        led.refund(s, escrow=ESCROW, owner=ALICE, ref="job_1")
    alice = wallet_account(ALICE)
    with ldb.sessions() as s:
        rows = led.history(s, accounts=[alice], limit=10)
        assert [(r.kind, r.amount) for r in rows] == [
            ("refund", DUCK),
            ("escrow", -3 * DUCK),
            ("faucet", 10 * DUCK),
        ]
        assert sum(r.amount for r in rows) == led.balance(s, alice)
        older = led.history(s, accounts=[alice], limit=10, before_seq=rows[0].seq)
        assert [r.kind for r in older] == ["escrow", "faucet"]
        paid = led.history(s, accounts=[wallet_account(BOB)], limit=10, kinds=["settle"])
        assert [(r.amount, r.ref) for r in paid] == [(1_900_000, "job_1")]
        assert led.history(s, accounts=[alice], limit=10, since=rows[0].at + 1) == []
        with pytest.raises(ValidationFailed):
            led.history(s, accounts=["nonsense"], limit=10)
