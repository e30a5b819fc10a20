"""Webhook rules: register (with the URL checks), list, remove, deliveries, redelivery.

Each public function works in the caller's transaction. Who sees what: a webhook belongs
to the address that registered it; someone else's webhook (or delivery) answers exactly
like a missing one, so ids are not an oracle.

URL rule (server-side request forgery): only ``http``/``https``, no credentials in the
URL, at most 2048 characters. Unless ``dev_mode`` or ``webhook_allow_private`` is on, the
host must be a public name or a public IP literal: loopback, private, link-local and
other non-global addresses, ``localhost``, single-label names (``intranet``) and the
internal suffixes below are refused with a 422 naming ``url``. A name can still resolve
to a private address later, so the delivery transport checks again at connect time
(:mod:`.transport`); this check only gives the client an early, clear answer.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import cast
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Webhook, WebhookDelivery
from quackmesh.coordinator.events.service import head_id
from quackmesh.coordinator.settings import Settings
from quackmesh.coordinator.webhooks.transport import is_public_ip
from quackmesh.core.errors import Conflict, InvalidState, NotFound, ValidationFailed
from quackmesh.core.ids import new_id
from quackmesh.core.webhook_schemas import (
    MAX_URL_LENGTH,
    DeliveryPublic,
    DeliveryState,
    WebhookCreate,
    WebhookPublic,
)

__all__ = [
    "MAX_WEBHOOKS_PER_OWNER",
    "check_url",
    "create_webhook",
    "delivery_public",
    "get_owned_webhook",
    "list_deliveries",
    "list_webhooks",
    "private_allowed",
    "redeliver",
    "remove_webhook",
    "webhook_public",
]

MAX_WEBHOOKS_PER_OWNER = 20
SECRET_PREFIX = "whsec_"
PENDING: DeliveryState = "pending"
DELIVERED: DeliveryState = "delivered"
FAILED: DeliveryState = "failed"
# Names that only make sense inside a private network (RFC 6761, RFC 6762, RFC 8375).
INTERNAL_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".home.arpa", ".lan")


def private_allowed(settings: Settings) -> bool:
    return settings.dev_mode or settings.webhook_allow_private


def _bad_url(message: str) -> ValidationFailed:
    return ValidationFailed(f"url: {message}", field="url")


def check_url(url: str, *, allow_private: bool) -> str:
    """``url`` if it may receive webhooks, else ValidationFailed naming ``url``."""
    if len(url) > MAX_URL_LENGTH:
        raise _bad_url(f"at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise _bad_url("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port out of range
    except ValueError as exc:
        raise _bad_url(f"not a valid URL ({exc})") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise _bad_url("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise _bad_url("must not contain credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise _bad_url("has no host")
    if port == 0:
        raise _bad_url("port 0 is not a port")
    if allow_private:
        return url
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if not is_public_ip(ip):
            raise _bad_url(f"{host} is not a public address")
        return url
    name = host.rstrip(".")
    labels = name.split(".")
    if name == "localhost" or name.endswith(INTERNAL_SUFFIXES):
        raise _bad_url(f"{host} is an internal host name")
    if len(labels) < 2 or labels[-1].isdigit() or not all(labels):
        raise _bad_url(f"{host} is not a public host name")
    return url


# --- webhooks ---------------------------------------------------------------------------


def webhook_public(hook: Webhook) -> WebhookPublic:
    return WebhookPublic(
        id=hook.id,
        owner=hook.owner,
        url=hook.url,
        types=list(hook.types),
        description=hook.description,
        active=hook.active,
        created_at=hook.created_at,
        after_event=hook.after_event,
    )


def create_webhook(
    session: Session, *, owner: str, body: WebhookCreate, allow_private: bool, now: float
) -> Webhook:
    """Register ``body.url`` for ``owner``'s events of ``body.types`` from now on."""
    url = check_url(body.url, allow_private=allow_private)
    active = session.scalar(
        select(func.count())
        .select_from(Webhook)
        .where(Webhook.owner == owner, Webhook.active.is_(True))
    )
    if (active or 0) >= MAX_WEBHOOKS_PER_OWNER:
        raise Conflict(
            f"at most {MAX_WEBHOOKS_PER_OWNER} webhooks per address; remove one first",
            limit=MAX_WEBHOOKS_PER_OWNER,
        )
    hook = Webhook(
        id=new_id("wh"),
        owner=owner,
        url=url,
        types=list(body.types),
        secret=SECRET_PREFIX + secrets.token_hex(24),
        active=True,
        created_at=now,
        description=body.description,
        after_event=head_id(session),
    )
    session.add(hook)
    session.flush()
    return hook


def list_webhooks(session: Session, *, owner: str) -> list[Webhook]:
    """The owner's active webhooks, newest first."""
    stmt = (
        select(Webhook)
        .where(Webhook.owner == owner, Webhook.active.is_(True))
        .order_by(Webhook.created_at.desc(), Webhook.id)
    )
    return list(session.scalars(stmt))


def get_owned_webhook(
    session: Session, webhook_id: str, owner: str, *, for_update: bool = False
) -> Webhook:
    stmt = select(Webhook).where(Webhook.id == webhook_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    hook = session.scalars(stmt).first()
    if hook is None or hook.owner != owner:
        raise NotFound(f"no webhook {webhook_id} of yours", webhook_id=webhook_id)
    return hook


def remove_webhook(session: Session, hook: Webhook, *, now: float) -> None:
    """Deactivate ``hook`` (kept for its delivery history); what was pending now fails."""
    hook.active = False
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == hook.id, WebhookDelivery.state == PENDING)
        .values(state=FAILED, last_error="webhook removed")
    )


# --- deliveries -------------------------------------------------------------------------


def delivery_public(row: WebhookDelivery) -> DeliveryPublic:
    return DeliveryPublic(
        id=row.id,
        webhook_id=row.webhook_id,
        event_id=row.event_id,
        event_type=row.event_type,
        state=cast(DeliveryState, row.state),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.state == PENDING else None,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        last_status=row.last_status,
        last_error=row.last_error,
        last_duration_ms=row.last_duration_ms,
    )


def list_deliveries(
    session: Session, hook: Webhook, *, state: DeliveryState | None = None, limit: int = 50
) -> list[WebhookDelivery]:
    """``hook``'s deliveries, newest first."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    if state is not None:
        stmt = stmt.where(WebhookDelivery.state == state)
    return list(session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit)))


def redeliver(session: Session, hook: Webhook, delivery_id: int, *, now: float) -> WebhookDelivery:
    """Send a delivered or failed delivery again, now, with a fresh set of attempts."""
    row = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == hook.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        raise NotFound(
            f"no delivery {delivery_id} of webhook {hook.id}",
            webhook_id=hook.id,
            delivery_id=delivery_id,
        )
    if not hook.active:
        raise InvalidState(f"webhook {hook.id} was removed", webhook_id=hook.id)
    if row.state == PENDING:
        raise InvalidState(
            f"delivery {delivery_id} is already pending (attempt {row.attempts + 1} is due)",
            delivery_id=delivery_id,
        )
    row.state = PENDING
    row.attempts = 0
    row.next_attempt_at = now
    row.delivered_at = None
    return row
