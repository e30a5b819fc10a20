"""Append events in the caller's transaction; page and filter them by increasing id.

Who sees what: an event names at most one ``address`` (the client or staker it concerns)
and one ``node``. Those two parties see it whole. Everyone else sees the public
projection: no ``address``, and only the data of types that are public anyway (node
lifecycle, stakes, slashes and payments, all auditable through other public endpoints);
for job, task, round, rental and dispute events only a few harmless keys (kind, round,
units) survive, so a job's errors, metrics and escrow stay with its owner.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, or_, select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Event
from quackmesh.core.errors import Forbidden, ValidationFailed
from quackmesh.core.ids import normalize_address

__all__ = [
    "EMITTED",
    "EventFilter",
    "emit",
    "event_dict",
    "head_id",
    "list_events",
    "parse_filter",
    "public_view",
    "type_pattern_matches",
]

# Types whose data is public: the same facts are readable from the market, stake, slash
# and ledger endpoints without signing in.
EMITTED = "events_emitted"  # session.info flag: this transaction wrote events (hub kick)
PUBLIC_DATA_PREFIXES = ("node.", "stake.", "payment.")
PUBLIC_KEYS = frozenset({"kind", "round", "units", "replicas", "attempt"})
MAX_TYPES = 20


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
    session.info[EMITTED] = True
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


def event_dict(e: Event | Row[Any]) -> dict[str, Any]:
    """The full event (what its parties see), from a row object or a plain column row."""
    return {
        "id": e.id,
        "type": e.type,
        "at": e.at,
        "job_id": e.job_id,
        "node": e.node,
        "address": e.address,
        "data": e.data or {},
    }


def public_view(full: dict[str, Any], viewer: str | None) -> dict[str, Any]:
    """``full`` as ``viewer`` (an address, or None when signed out) may see it."""
    if viewer is not None and viewer in (full["address"], full["node"]):
        return full
    data = full["data"]
    if not full["type"].startswith(PUBLIC_DATA_PREFIXES):
        data = {k: v for k, v in data.items() if k in PUBLIC_KEYS}
    return {**full, "address": None, "data": data}


@dataclass(frozen=True)
class EventFilter:
    """A subscriber's filters: every given one must hold (``types`` match any entry)."""

    job: str | None = None
    node: str | None = None
    address: str | None = None
    types: tuple[str, ...] = ()

    def key(self) -> tuple[Any, ...]:
        return (self.job, self.node, self.address, self.types)

    def matches(self, full: dict[str, Any]) -> bool:
        if self.job is not None and full["job_id"] != self.job:
            return False
        if self.node is not None and full["node"] != self.node:
            return False
        if self.address is not None and self.address not in (full["address"], full["node"]):
            return False
        return not self.types or any(type_pattern_matches(p, full["type"]) for p in self.types)

    def where(self, stmt: Select[Event]) -> Select[Event]:
        if self.job is not None:
            stmt = stmt.where(Event.job_id == self.job)
        if self.node is not None:
            stmt = stmt.where(Event.node == self.node)
        if self.address is not None:
            stmt = stmt.where(or_(Event.address == self.address, Event.node == self.address))
        if self.types:
            stmt = stmt.where(
                or_(
                    *(
                        Event.type.startswith(p[:-1]) if p.endswith(".*") else Event.type == p
                        for p in self.types
                    )
                )
            )
        return stmt


def type_pattern_matches(pattern: str, type_: str) -> bool:
    return type_.startswith(pattern[:-1]) if pattern.endswith(".*") else type_ == pattern


def _address(name: str, raw: str) -> str:
    try:
        return normalize_address(raw)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"{name}: not an address: {raw!r}", field=name) from exc


def parse_filter(
    *,
    viewer: str | None,
    job: str | None = None,
    node: str | None = None,
    address: str | None = None,
    type_: str | None = None,
) -> EventFilter:
    """Validate query filters. ``address`` selects the viewer's own events only (403 else)."""
    types: tuple[str, ...] = ()
    if type_:
        types = tuple(t.strip() for t in type_.split(",") if t.strip())
        if len(types) > MAX_TYPES:
            raise ValidationFailed(f"at most {MAX_TYPES} types", field="type")
        for t in types:
            body = t[:-2] if t.endswith(".*") else t
            if not body or len(body) > 48 or not all(c.isalnum() or c in "._" for c in body):
                raise ValidationFailed(
                    f"type: {t!r} is neither an event type nor a prefix like 'job.*'",
                    field="type",
                )
    if job is not None and (not job or len(job) > 32 or not job.replace("_", "").isalnum()):
        raise ValidationFailed(f"job: not a job id: {job!r}", field="job")
    node_addr = _address("node", node) if node is not None else None
    addr = _address("address", address) if address is not None else None
    if addr is not None and addr != viewer:
        raise Forbidden(
            "address: you may only follow your own address (sign in as it)", field="address"
        )
    return EventFilter(job=job, node=node_addr, address=addr, types=types)


def list_events(
    session: Session, *, after: int, limit: int, flt: EventFilter | None = None
) -> list[Event]:
    stmt = select(Event).where(Event.id > after)
    if flt is not None:
        stmt = flt.where(stmt)
    return list(session.scalars(stmt.order_by(Event.id).limit(limit)))


def head_id(session: Session) -> int:
    """The newest event id (0 for an empty log)."""
    last: Sequence[int] = session.scalars(select(Event.id).order_by(Event.id.desc()).limit(1)).all()
    return int(last[0]) if last else 0
