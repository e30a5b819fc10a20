"""Fixtures for the ledger tests: a ledger on a fresh database with its tables created."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .ledger_support import LedgerDB, open_ledger_db


@pytest.fixture
def ldb(db_url: str) -> Iterator[LedgerDB]:
    """The ledger on SQLite and on PostgreSQL (the contract-test parametrisation)."""
    db = open_ledger_db(db_url)
    try:
        yield db
    finally:
        db.engine.dispose()


@pytest.fixture
def pg_ldb(pg_url: str) -> Iterator[LedgerDB]:
    """The ledger on PostgreSQL only."""
    db = open_ledger_db(pg_url)
    try:
        yield db
    finally:
        db.engine.dispose()


@pytest.fixture
def sqlite_ldb(sqlite_url: str) -> Iterator[LedgerDB]:
    """The ledger on SQLite only."""
    db = open_ledger_db(sqlite_url)
    try:
        yield db
    finally:
        db.engine.dispose()
