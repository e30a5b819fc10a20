"""SQL tables of the double-entry ledger, on their own declarative base.

The coordinator's Alembic migration creates these from ``LedgerBase.metadata``; types are
portable between SQLite and PostgreSQL, amounts are ``BIGINT`` micro-DUCK, and every index
and constraint has an explicit name so migrations diff cleanly.

* ``ledger_transactions`` — the journal, one row per transaction, hash-chained (hashchain.py).
  ``seq`` is assigned by the ledger (head seq + 1), never by the database.
* ``ledger_entries`` — the postings of each transaction; they sum to zero per ``seq``.
* ``ledger_balances`` — a cache of ``sum(amount)`` per account, updated in the same
  database transaction as the entries and re-checked by ``verify``.
* ``ledger_head`` — a single row (``id = 1``) holding the last ``seq`` and ``hash``.
  Appenders lock it with ``SELECT … FOR UPDATE``, so concurrent writers on PostgreSQL take
  turns and the chain never forks (on SQLite ``BEGIN IMMEDIATE`` already serialises them).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["LedgerBalance", "LedgerBase", "LedgerEntry", "LedgerHead", "LedgerTransaction"]

# A BIGINT primary key is not a rowid alias on SQLite, so it would not auto-increment there.
_AUTO_ID = BigInteger().with_variant(Integer(), "sqlite")


# Every constraint and index gets a deterministic name, as Alembic recommends.
NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


class LedgerBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class LedgerTransaction(LedgerBase):
    __tablename__ = "ledger_transactions"
    __table_args__ = (
        UniqueConstraint("tx_id"),
        CheckConstraint("seq >= 1", name="seq_positive"),
    )

    seq: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, autoincrement=False, comment="head seq + 1"
    )
    tx_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    memo: Mapped[str] = mapped_column(String(256))
    ref: Mapped[str | None] = mapped_column(String(128), index=True)
    created_at: Mapped[float] = mapped_column(Float, comment="unix seconds, whole microseconds")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class LedgerEntry(LedgerBase):
    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(_AUTO_ID, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, ForeignKey("ledger_transactions.seq"), index=True)
    account: Mapped[str] = mapped_column(String(128), index=True)
    amount: Mapped[int] = mapped_column(BigInteger, comment="micro-DUCK; + credit, - debit")


class LedgerBalance(LedgerBase):
    __tablename__ = "ledger_balances"

    account: Mapped[str] = mapped_column(String(128), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, comment="micro-DUCK; cache of entries")


class LedgerHead(LedgerBase):
    __tablename__ = "ledger_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
