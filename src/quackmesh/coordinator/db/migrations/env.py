"""Alembic environment: the coordinator's tables plus the SQL ledger's tables."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from quackmesh.coordinator.db.engine import make_engine
from quackmesh.coordinator.db.models import Base
from quackmesh.ledger.tables import LedgerBase

target_metadata = [Base.metadata, LedgerBase.metadata]


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
