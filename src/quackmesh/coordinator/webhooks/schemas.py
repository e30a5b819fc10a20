"""The webhook wire schemas; they live in :mod:`quackmesh.core.webhook_schemas` so the
SDK (which may not import the coordinator) shares them."""

from __future__ import annotations

from quackmesh.core.webhook_schemas import (
    DeliveryListPublic,
    DeliveryPublic,
    DeliveryState,
    EventPattern,
    WebhookCreate,
    WebhookCreatedPublic,
    WebhookListPublic,
    WebhookPublic,
)

__all__ = [
    "DeliveryListPublic",
    "DeliveryPublic",
    "DeliveryState",
    "EventPattern",
    "WebhookCreate",
    "WebhookCreatedPublic",
    "WebhookListPublic",
    "WebhookPublic",
]
