"""Append events in the caller's transaction; page them by increasing id."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Event

__all__ = ["emit", "list_events"]


def emit(
    session: Session,
    type_: str,
    *,
    job_id: str | None = None,
    node: str | None = None,
    address: str | None = None,
    at: float | None = None,
    **data: Any,
) -> None:
    session.add(
        Event(
            type=type_,
            at=time.time() if at is None else at,
            job_id=job_id,
            node=node,
            address=address,
            data=data,
        )
    )


def list_events(session: Session, *, after: int, limit: int) -> list[Event]:
    stmt = select(Event).where(Event.id > after).order_by(Event.id).limit(limit)
    return list(session.scalars(stmt))
