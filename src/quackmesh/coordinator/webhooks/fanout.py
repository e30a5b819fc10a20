"""Fan-out: turn new rows of the event log into webhook deliveries, restart-safe.

A webhook receives an event when its owner is one of the event's parties
(``owner in (event.address, event.node)``: its jobs, rentals, stakes, and the node it runs
when the owner is a node address), the event came after the webhook was registered, and
the event's type matches one of the webhook's patterns.

Position. The ``Cursor`` row ``"webhooks"`` holds the id up to which every event has been
fanned out; the delivery rows and the cursor move in one transaction per batch, and the
unique ``(webhook_id, event_id)`` pair makes replaying a batch harmless (existing pairs are
skipped), so a restart neither repeats nor misses an event.

Gaps. Ids come from a sequence and PostgreSQL hands them out before commit, so a
transaction can commit event 41 after event 42 was already seen. An id missing below the
highest one seen is remembered as a gap and looked for on every pass for
:data:`GAP_GRACE_S`; events found late are fanned out then. The cursor stays below the
oldest open gap, so a restart re-reads from there (skipping what was done). A gap that
outlives the grace is taken to be a rolled-back transaction and forgotten. SQLite commits
its single writer's ids in order and has no such gaps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Cursor, Event, Webhook, WebhookDelivery
from quackmesh.coordinator.events.service import head_id, type_pattern_matches
from quackmesh.coordinator.runtime import Runtime

__all__ = ["BATCH", "CURSOR", "GAP_GRACE_S", "LogTail", "fan_out", "matches", "type_matches"]

CURSOR = "webhooks"
BATCH = 500
GAP_GRACE_S = 10.0  # longer than any coordinator transaction that emits events
MAX_GAP_RUN = 1000  # a longer jump in ids is a sequence reset or cache, not open writes
MAX_GAPS = 5000  # past this many open gaps the oldest are given up (bounds the IN list)


def type_matches(patterns: Iterable[str], type_: str) -> bool:
    """Whether ``type_`` matches one of ``patterns`` (exact, ``prefix.*`` or ``*``)."""
    return any(p == "*" or type_pattern_matches(p, type_) for p in patterns)


def matches(hook: Webhook, event: Event) -> bool:
    """Whether ``hook`` receives ``event`` (the visibility rule in the module docstring)."""
    return (
        hook.active
        and hook.owner in (event.address, event.node)
        and event.id > hook.after_event
        and type_matches(hook.types, event.type)
    )


@dataclass
class LogTail:
    """The dispatcher's in-memory position: the highest id read and the ids missing below
    it (id -> monotonic time first missed). ``cursor`` mirrors the stored row."""

    high: int | None = None
    cursor: int = 0
    gaps: dict[int, float] = field(default_factory=dict)


def _start(session: Session) -> int:
    """The stored cursor, created on first use at the head of the log (or earlier, when an
    active webhook was registered before the log's head: it still gets what follows)."""
    row = session.get(Cursor, CURSOR, with_for_update=True)
    if row is not None:
        return row.value
    start = head_id(session)
    oldest = session.scalar(select(func.min(Webhook.after_event)).where(Webhook.active.is_(True)))
    if oldest is not None:
        start = min(start, oldest)
    session.add(Cursor(name=CURSOR, value=start))
    return start


def _deliveries(session: Session, events: Sequence[Event], *, now: float) -> int:
    """Add the missing delivery rows for ``events``; returns how many were added."""
    owners = {p for e in events for p in (e.address, e.node) if p}
    if not owners:
        return 0
    by_owner: dict[str, list[Webhook]] = defaultdict(list)
    for hook in session.scalars(
        select(Webhook).where(Webhook.active.is_(True), Webhook.owner.in_(owners))
    ):
        by_owner[hook.owner].append(hook)
    pairs: list[tuple[Webhook, Event]] = []
    for event in events:
        parties = {p for p in (event.address, event.node) if p}
        for owner in parties:
            pairs.extend((h, event) for h in by_owner.get(owner, ()) if matches(h, event))
    if not pairs:
        return 0
    existing = session.execute(
        select(WebhookDelivery.webhook_id, WebhookDelivery.event_id).where(
            WebhookDelivery.webhook_id.in_({h.id for h, _ in pairs}),
            WebhookDelivery.event_id.in_({e.id for _, e in pairs}),
        )
    )
    done = {(webhook_id, event_id) for webhook_id, event_id in existing}
    added = 0
    for hook, event in pairs:
        if (hook.id, event.id) in done:
            continue
        done.add((hook.id, event.id))
        session.add(
            WebhookDelivery(
                webhook_id=hook.id,
                event_id=event.id,
                event_type=event.type,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
        added += 1
    return added


def fan_out(
    rt: Runtime, tail: LogTail, *, now: float, clock: float, batch: int = BATCH
) -> tuple[int, int]:
    """One pass: read up to ``batch`` new events (plus late ones filling gaps), add their
    deliveries and move the cursor, in one transaction. Returns (events read, deliveries
    added); a full batch means more are waiting. ``clock`` is monotonic (gap ageing)."""
    if tail.high is None:
        with rt.sessions.begin() as session:
            tail.high = tail.cursor = _start(session)
    with rt.reads() as session:
        fresh = list(
            session.scalars(
                select(Event).where(Event.id > tail.high).order_by(Event.id).limit(batch)
            )
        )
        late = (
            list(session.scalars(select(Event).where(Event.id.in_(list(tail.gaps)))))
            if tail.gaps
            else []
        )
    saved = (tail.high, dict(tail.gaps))
    expected = tail.high + 1
    for event in fresh:
        if event.id - expected <= MAX_GAP_RUN:
            for missing in range(expected, event.id):
                tail.gaps[missing] = clock
        expected = event.id + 1
    if fresh:
        tail.high = fresh[-1].id
    for event in late:
        tail.gaps.pop(event.id, None)
    for missing in [i for i, seen in tail.gaps.items() if clock - seen > GAP_GRACE_S]:
        del tail.gaps[missing]
    for missing in sorted(tail.gaps)[: max(0, len(tail.gaps) - MAX_GAPS)]:
        del tail.gaps[missing]
    cursor = min(tail.gaps) - 1 if tail.gaps else tail.high
    if not fresh and not late and cursor == tail.cursor:
        return 0, 0
    try:
        with rt.sessions.begin() as session:
            # Lock the cursor first: a second dispatcher on the database waits here
            # instead of racing this one to the same delivery rows.
            row = session.get(Cursor, CURSOR, with_for_update=True)
            added = _deliveries(session, sorted([*late, *fresh], key=lambda e: e.id), now=now)
            if row is None:
                session.add(Cursor(name=CURSOR, value=cursor))
            else:
                row.value = max(row.value, cursor)
    except Exception:
        tail.high, tail.gaps = saved
        raise
    tail.cursor = cursor
    return len(fresh), added
