"""The webhook delivery worker: an asyncio task in the coordinator's event loop.

Each pass it (a) fans new events out into delivery rows (:mod:`.fanout`) and (b) claims
the deliveries that are due and sends them, signed (:mod:`quackmesh.core.webhooks`), with
one shared ``httpx.AsyncClient``. Every database call goes through ``asyncio.to_thread``,
so the loop that serves the API never waits on the database or on a receiver; sends are
bounded (``webhook_concurrency`` in flight in all, a quarter of that per webhook, and
``webhook_timeout_s`` for the whole request), so a slow or dead receiver costs at most its
own slots and never the API's time.

Outcome of an attempt: a 2xx answer is ``delivered``. Anything else (another status, a
redirect, a timeout, a refused connection) is retried at
``now + min(webhook_max_backoff_s, webhook_backoff_s · 2^(attempts−1))`` plus up to 10 %
jitter, and after ``webhook_max_attempts`` attempts the delivery is ``failed``. The status,
the error and the duration of the last attempt are kept on the row.

Delivery is at least once: a coordinator that stops between sending and recording sends
again (receivers deduplicate on ``QuackMesh-Event-Id``).

Replicas. One dispatcher per database is the design (the embedded default runs exactly
one). Several replicas on PostgreSQL stay correct but do not share the work evenly:
fan-out passes serialise on the cursor row (``SELECT … FOR UPDATE``) and claims take rows
with ``FOR UPDATE SKIP LOCKED`` and push ``next_attempt_at`` past the send's deadline (a
lease), so one delivery is in flight at one replica at a time; a replica that dies with a
claim leaves the delivery to be retried when the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from random import Random

import httpx
from sqlalchemy import select, update

import quackmesh
from quackmesh.coordinator.db.models import Event, Webhook, WebhookDelivery
from quackmesh.coordinator.events.service import event_dict
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.webhooks.fanout import BATCH, LogTail, fan_out
from quackmesh.coordinator.webhooks.service import private_allowed
from quackmesh.coordinator.webhooks.transport import make_transport
from quackmesh.core.webhooks import delivery_headers

__all__ = [
    "Outgoing",
    "WebhookDispatcher",
    "backoff_delay",
    "canonical_body",
    "claim_due",
    "record_attempt",
    "release",
]

log = logging.getLogger("quackmesh.coordinator.webhooks")

LEASE_MARGIN_S = 30.0  # a claim outlives the send's deadline by this much
STOP_TIMEOUT_S = 10.0
ERROR_SNIPPET = 200  # characters of a failed response body kept in last_error
JITTER = 0.1
ERROR_PAUSE_S = 30.0  # longest pause after failed passes (the database is away, say)


def canonical_body(event: Event) -> bytes:
    """The delivery body: the full event as canonical JSON (what the signature covers)."""
    return json.dumps(event_dict(event), separators=(",", ":"), sort_keys=True).encode()


def backoff_delay(attempts: int, *, base: float, cap: float, rng: Random | None = None) -> float:
    """Seconds before retry number ``attempts`` (1 after the first failure): doubling from
    ``base``, up to 10 % jitter on top so retries of one outage spread out, never over
    ``cap``."""
    raw = base * 2.0 ** min(max(attempts - 1, 0), 62)
    jitter = 1.0 + JITTER * (rng.random() if rng is not None else 0.0)
    return min(cap, raw * jitter)


@dataclass(frozen=True)
class Outgoing:
    """A claimed delivery, with everything needed to send it off the database."""

    delivery_id: int
    webhook_id: str
    url: str
    secret: str
    event_id: int
    event_type: str
    body: bytes


def claim_due(
    rt: Runtime,
    *,
    limit: int,
    now: float,
    busy: Mapping[str, int] | None = None,
    per_webhook: int = 4,
) -> list[Outgoing]:
    """Claim up to ``limit`` due deliveries of active webhooks, oldest due first, at most
    ``per_webhook`` in flight per webhook (``busy`` counts those already sending)."""
    due = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
        .limit(1)
    )
    with rt.reads() as session:  # the common case, nothing due, takes no write lock
        if session.scalar(due) is None:
            return []
    in_flight = Counter(busy or {})
    lease = rt.settings.webhook_timeout_s + LEASE_MARGIN_S
    stmt = (
        select(WebhookDelivery, Webhook, Event)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(
            WebhookDelivery.state == "pending",
            WebhookDelivery.next_attempt_at <= now,
            Webhook.active.is_(True),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit * 4)  # room to skip the rows of webhooks at their cap
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    )
    out: list[Outgoing] = []
    with rt.sessions.begin() as session:
        for delivery, hook, event in session.execute(stmt):
            if len(out) >= limit:
                break
            if in_flight[hook.id] >= per_webhook:
                continue
            in_flight[hook.id] += 1
            delivery.next_attempt_at = now + lease
            out.append(
                Outgoing(
                    delivery_id=delivery.id,
                    webhook_id=hook.id,
                    url=hook.url,
                    secret=hook.secret,
                    event_id=event.id,
                    event_type=event.type,
                    body=canonical_body(event),
                )
            )
    return out


def record_attempt(
    rt: Runtime,
    *,
    delivery_id: int,
    status: int | None,
    error: str | None,
    duration_ms: float,
    now: float,
) -> float | None:
    """Store one attempt's outcome (``error`` None = delivered). Returns when the retry is
    due, or None when there is none (delivered, failed, or the webhook was removed)."""
    settings = rt.settings
    with rt.sessions.begin() as session:
        row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if row is None:
            return None
        hook = session.get(Webhook, row.webhook_id)
        row.attempts += 1
        row.last_status = status
        row.last_error = error
        row.last_duration_ms = round(duration_ms, 3)
        if error is None:
            row.state = "delivered"
            row.delivered_at = now
            return None
        if row.state != "pending" or hook is None or not hook.active:
            row.state = "failed"  # removed while in flight
            return None
        if row.attempts >= settings.webhook_max_attempts:
            row.state = "failed"
            return None
        delay = backoff_delay(
            row.attempts,
            base=settings.webhook_backoff_s,
            cap=settings.webhook_max_backoff_s,
            rng=rt.rng,
        )
        row.next_attempt_at = now + delay
        return row.next_attempt_at


def release(rt: Runtime, delivery_ids: Collection[int], *, now: float) -> None:
    """Give claimed deliveries back (due now) when the dispatcher stops mid-send."""
    if not delivery_ids:
        return
    with rt.sessions.begin() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(list(delivery_ids)), WebhookDelivery.state == "pending")
            .values(next_attempt_at=now)
        )


async def _snippet(response: httpx.Response) -> str:
    """The start of a response body, printable, for last_error (never the whole body)."""
    data = b""
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= ERROR_SNIPPET:
            break
    text = data[:ERROR_SNIPPET].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip()


class WebhookDispatcher:
    """Fans out events and sends deliveries until stopped (``start`` inside the loop)."""

    def __init__(self, rt: Runtime, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.rt = rt
        self._transport = transport
        self._tail = LogTail()
        self._inflight: dict[int, tuple[str, asyncio.Task[None]]] = {}
        self._sends: dict[int, asyncio.Future[tuple[int | None, str | None]]] = {}
        self._abandoned: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._soonest: float | None = None

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="quackmesh-webhooks")

    async def stop(self) -> None:
        """Stop sending: deliveries in flight are abandoned and due again at once."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(task, STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("webhook dispatcher did not stop in time")
        except Exception:  # it died on its own; the app must still shut down cleanly
            log.exception("webhook dispatcher failed")

    async def _run(self) -> None:
        settings = self.rt.settings
        transport = self._transport or make_transport(
            allow_private=private_allowed(settings), max_connections=settings.webhook_concurrency
        )
        http = httpx.AsyncClient(
            transport=transport,
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": f"QuackMesh-Webhooks/{quackmesh.__version__}"},
        )
        failures = 0
        try:
            while not self._stopping.is_set():
                more = False
                try:
                    more = await self.step(http)
                    failures = 0
                except Exception:
                    # The database is away, say: retry, backing off to ERROR_PAUSE_S.
                    failures += 1
                    log.exception("webhook dispatch pass failed (%d in a row)", failures)
                    self._soonest = time.time() + min(ERROR_PAUSE_S, 0.5 * 2**failures)
                if not more:
                    await self._sleep(errors=failures > 0)
        finally:
            await self._abandon_inflight()
            await http.aclose()

    async def step(self, http: httpx.AsyncClient) -> bool:
        """One pass; True when more work is waiting right away (a full batch of events)."""
        settings = self.rt.settings
        read, _ = await asyncio.to_thread(
            fan_out, self.rt, self._tail, now=time.time(), clock=time.monotonic()
        )
        free = settings.webhook_concurrency - len(self._inflight)
        if free > 0:
            claimed = await asyncio.to_thread(
                claim_due,
                self.rt,
                limit=free,
                now=time.time(),
                busy=Counter(hook for hook, _ in self._inflight.values()),
                per_webhook=max(1, settings.webhook_concurrency // 4),
            )
            for item in claimed:
                task = asyncio.get_running_loop().create_task(self._deliver(http, item))
                self._inflight[item.delivery_id] = (item.webhook_id, task)
                task.add_done_callback(functools.partial(self._done, item.delivery_id))
        return read >= BATCH

    def _done(self, delivery_id: int, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(delivery_id, None)
        self._wake.set()  # a slot is free: claim the next due delivery now

    async def _sleep(self, *, errors: bool = False) -> None:
        timeout = self.rt.settings.webhook_poll_s
        if self._soonest is not None:
            wait = self._soonest - time.time()
            timeout = max(0.0, wait if errors else min(timeout, wait))
            self._soonest = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _send(self, http: httpx.AsyncClient, item: Outgoing) -> tuple[int | None, str | None]:
        timeout = self.rt.settings.webhook_timeout_s
        headers = delivery_headers(
            item.secret,
            body=item.body,
            event_type=item.event_type,
            event_id=item.event_id,
            delivery_id=item.delivery_id,
        )
        try:
            # The whole request is bounded, not just each read: a receiver that trickles
            # its answer byte by byte cannot hold a slot longer than the timeout.
            async with (
                asyncio.timeout(timeout),
                http.stream("POST", item.url, content=item.body, headers=headers) as response,
            ):
                if response.is_success:
                    return response.status_code, None
                detail = await _snippet(response)
                suffix = f": {detail}" if detail else ""
                return response.status_code, f"HTTP {response.status_code}{suffix}"
        except TimeoutError:
            return None, f"timed out after {timeout:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # a bad URL or a bug: retried like any failure, and logged
            log.exception("webhook delivery %s crashed", item.delivery_id)
            return None, f"internal error: {type(exc).__name__}"

    async def _deliver(self, http: httpx.AsyncClient, item: Outgoing) -> None:
        started = time.monotonic()
        send = asyncio.ensure_future(self._send(http, item))
        self._sends[item.delivery_id] = send
        try:
            status, error = await send
        except asyncio.CancelledError:
            if self._stopping.is_set():
                self._abandoned.add(item.delivery_id)  # released by _abandon_inflight
                return
            raise
        finally:
            self._sends.pop(item.delivery_id, None)
        duration_ms = (time.monotonic() - started) * 1000.0
        try:
            retry_at = await asyncio.to_thread(
                record_attempt,
                self.rt,
                delivery_id=item.delivery_id,
                status=status,
                error=error,
                duration_ms=duration_ms,
                now=time.time(),
            )
        except Exception:
            # The claim's lease runs out and the delivery is retried then.
            log.exception("could not record webhook delivery %s", item.delivery_id)
            return
        if retry_at is not None and (self._soonest is None or retry_at < self._soonest):
            self._soonest = retry_at
        if error is not None:
            log.info(
                "webhook delivery failed",
                extra={
                    "delivery": item.delivery_id,
                    "webhook": item.webhook_id,
                    "error": error,
                    "retry_at": retry_at,
                },
            )

    async def _abandon_inflight(self) -> None:
        """Cancel the sends in flight; let the ones already recording finish (a thread
        that is writing must be done before the app disposes of the engine)."""
        for send in list(self._sends.values()):
            send.cancel()
        await asyncio.gather(*(t for _, t in self._inflight.values()), return_exceptions=True)
        self._inflight.clear()
        abandoned, self._abandoned = self._abandoned, set()
        if abandoned:
            try:
                await asyncio.to_thread(release, self.rt, abandoned, now=time.time())
            except Exception:
                log.exception("could not release %d webhook deliveries", len(abandoned))
