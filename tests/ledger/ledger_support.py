"""Helpers shared by the ledger tests (a plain module: fixtures live in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from quackmesh.coordinator.db.engine import make_engine, make_session_factory
from quackmesh.core.ids import normalize_address
from quackmesh.ledger import LedgerBase, LedgerCheck, LedgerTransaction, SqlLedger

ALICE = normalize_address("0x" + "a1" * 20)
BOB = normalize_address("0x" + "b2" * 20)
CAROL = normalize_address("0x" + "c3" * 20)
DUCK = 1_000_000


@dataclass
class LedgerDB:
    """One database with the ledger tables, a session factory and a ledger over it."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    ledger: SqlLedger

    def tx_count(self) -> int:
        stmt = select(func.count()).select_from(LedgerTransaction)
        with self.sessions() as session:
            return int(session.execute(stmt).scalar_one())

    def balances(self, prefix: str | None = None) -> dict[str, int]:
        with self.sessions() as session:
            return self.ledger.balances(session, prefix=prefix)

    def verify(self) -> LedgerCheck:
        with self.sessions() as session:
            return self.ledger.verify(session)


def open_ledger_db(url: str) -> LedgerDB:
    engine = make_engine(url)
    LedgerBase.metadata.create_all(engine)
    return LedgerDB(url, engine, make_session_factory(engine), SqlLedger())
