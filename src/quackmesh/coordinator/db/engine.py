"""Database engines: SQLite in WAL mode by default, PostgreSQL with QUACKMESH_DATABASE_URL.

SQLite writers get ``BEGIN IMMEDIATE`` (the SQLAlchemy recipe for the pysqlite driver):
a transaction that reads then writes would otherwise fail with "database is locked"
when another writer got there first, instead of waiting its turn. Within one process,
writers queue on a Python lock first, so they wait their turn without spinning in
SQLite's busy-retry loop. Read-only engines (``read_only=True``) begin deferred
transactions: in WAL mode readers never wait for the writer.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["is_postgres", "is_sqlite", "make_engine", "make_session_factory"]


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(database: str) -> threading.RLock:
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(database, threading.RLock())


def make_engine(url: str, *, pool_size: int = 10, read_only: bool = False) -> Engine:
    """Create an engine; a bare ``postgresql://`` URL is routed to the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": 30}
        if not read_only:
            connect_args["factory"] = _WriterConnection
        engine = create_engine(parsed, connect_args=connect_args, pool_size=pool_size)
        _configure_sqlite(engine, read_only=read_only, database=parsed.database or ":memory:")
        return engine
    return create_engine(parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


class _WriterConnection(sqlite3.Connection):
    """A pysqlite connection that lets go of the process's writer lock only *after* the
    real COMMIT/ROLLBACK (SQLAlchemy's commit event fires before it): the next writer then
    finds the database free instead of sleeping in SQLite's busy handler."""

    qm_lock: threading.RLock | None = None
    qm_held = False

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.qm_release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.qm_release()

    def qm_release(self) -> None:
        if self.qm_held and self.qm_lock is not None:
            self.qm_held = False
            self.qm_lock.release()


def _configure_sqlite(engine: Engine, *, read_only: bool, database: str) -> None:
    lock = _write_lock(database)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()
        if isinstance(dbapi_conn, _WriterConnection):
            dbapi_conn.qm_lock = lock

    if read_only:

        @event.listens_for(engine, "begin")
        def _on_begin_read(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")

        return

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        dbapi_conn = conn.connection.dbapi_connection
        lock.acquire()
        dbapi_conn.qm_held = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_conn.qm_release()
            raise


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
