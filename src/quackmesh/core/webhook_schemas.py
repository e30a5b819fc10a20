"""Wire schemas of the webhook endpoints (shared by the coordinator, the SDK and the CLI).

A webhook is a URL that receives the owner's events whose type matches one of its
patterns: an exact type (``payment.settled``), a prefix (``job.*`` matches every type
that starts with ``job.``) or ``*`` for all of them. See :mod:`quackmesh.core.webhooks`
for how deliveries are signed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from quackmesh.core.schemas import _Wire

__all__ = [
    "MAX_PATTERNS",
    "MAX_URL_LENGTH",
    "DeliveryListPublic",
    "DeliveryPublic",
    "DeliveryState",
    "EventPattern",
    "WebhookCreate",
    "WebhookCreatedPublic",
    "WebhookListPublic",
    "WebhookPublic",
]

MAX_URL_LENGTH = 2048
MAX_PATTERNS = 20

EventPattern = Annotated[
    str,
    Field(
        min_length=1,
        max_length=50,
        pattern=r"^(\*|[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?)$",
        description="an event type (`job.succeeded`), a prefix (`job.*`) or `*`",
    ),
]

DeliveryState = Literal[
    "pending",  # waiting for its first attempt or for the next retry
    "delivered",  # the receiver answered 2xx
    "failed",  # out of attempts, or the webhook was removed first
]


class WebhookCreate(_Wire):
    url: str = Field(
        min_length=1, max_length=MAX_URL_LENGTH, description="http(s) URL that receives POSTs"
    )
    types: list[EventPattern] = Field(min_length=1, max_length=MAX_PATTERNS)
    description: str = Field(default="", max_length=200)

    @field_validator("types")
    @classmethod
    def _dedupe(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class WebhookPublic(_Wire):
    id: str
    owner: str
    url: str
    types: list[str]
    description: str
    active: bool = Field(description="False once removed: nothing more is sent")
    created_at: float
    after_event: int = Field(description="receives events with a larger id than this")


class WebhookCreatedPublic(WebhookPublic):
    """What registering returns: the webhook and, this once only, its signing secret."""

    secret: str = Field(description="HMAC-SHA256 key of the signatures; shown only once")


class WebhookListPublic(_Wire):
    webhooks: list[WebhookPublic]


class DeliveryPublic(_Wire):
    id: int
    webhook_id: str
    event_id: int
    event_type: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float | None = Field(description="when the next try is due (pending only)")
    created_at: float
    delivered_at: float | None
    last_status: int | None = Field(description="HTTP status of the last attempt")
    last_error: str | None = Field(description="why the last attempt failed")
    last_duration_ms: float | None


class DeliveryListPublic(_Wire):
    deliveries: list[DeliveryPublic]
