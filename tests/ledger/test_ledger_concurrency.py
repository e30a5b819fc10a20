"""Concurrent appenders serialise on the head row: no fork, no double spend."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from quackmesh.core.ids import normalize_address
from quackmesh.ledger import TREASURY, job_escrow_account, wallet_account

from .ledger_support import ALICE, DUCK, LedgerDB

THREADS = 8
PER_THREAD = 12


def run_threads(n: int, work: Callable[[int], None]) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


def hammer(db: LedgerDB) -> None:
    """Each thread funds its own wallet and pays the treasury, one commit per posting."""

    def work(i: int) -> None:
        address = normalize_address(f"0x{i + 1:040x}")
        for _ in range(PER_THREAD):
            with db.sessions.begin() as s:
                db.ledger.faucet(s, address=address, amount=DUCK)
            with db.sessions.begin() as s:
                db.ledger.transfer(
                    s, src=wallet_account(address), dst=TREASURY, amount=DUCK // 4, kind="fee"
                )

    run_threads(THREADS, work)
    check = db.verify()
    assert check.ok, check.problems
    assert check.transactions == THREADS * PER_THREAD * 2
    assert db.balances()[TREASURY] == THREADS * PER_THREAD * (DUCK // 4)
    with db.sessions() as s:
        seqs = [tx.seq for tx in db.ledger.iter_journal(s)]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.postgres
def test_concurrent_posting_on_postgres_keeps_one_chain(pg_ldb: LedgerDB) -> None:
    hammer(pg_ldb)


def test_concurrent_posting_on_sqlite_keeps_one_chain(sqlite_ldb: LedgerDB) -> None:
    hammer(sqlite_ldb)


def test_concurrent_refunds_pay_out_once(ldb: LedgerDB) -> None:
    escrow = job_escrow_account("job_race")
    with ldb.sessions.begin() as s:
        ldb.ledger.faucet(s, address=ALICE, amount=5 * DUCK)
        ldb.ledger.escrow(s, owner=ALICE, account=escrow, amount=3 * DUCK, ref="job_race")
    refunded: list[int] = []
    lock = threading.Lock()

    def work(_: int) -> None:
        session: Session
        with ldb.sessions.begin() as session:
            amount = ldb.ledger.refund(session, escrow=escrow, owner=ALICE, ref="job_race")
        with lock:
            refunded.append(amount)

    run_threads(4, work)
    assert sorted(refunded) == [0, 0, 0, 3 * DUCK]
    assert ldb.balances()[wallet_account(ALICE)] == 5 * DUCK
    assert ldb.verify().ok
