"""Webhook endpoints: register, list, read, remove; deliveries and redelivery."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from quackmesh.coordinator.deps import ReadSigner, RuntimeDep, SubmitSigner
from quackmesh.coordinator.webhooks.schemas import (
    DeliveryListPublic,
    DeliveryPublic,
    DeliveryState,
    WebhookCreate,
    WebhookCreatedPublic,
    WebhookListPublic,
    WebhookPublic,
)
from quackmesh.coordinator.webhooks.service import (
    create_webhook,
    delivery_public,
    get_owned_webhook,
    list_deliveries,
    list_webhooks,
    private_allowed,
    redeliver,
    remove_webhook,
    webhook_public,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

DeliveryId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("", response_model=WebhookCreatedPublic, status_code=201)
def register(body: WebhookCreate, signer: SubmitSigner, rt: RuntimeDep) -> WebhookCreatedPublic:
    """Send the signer's events whose type matches ``types`` to ``url`` from now on.

    The answer carries the signing secret, this once only: keep it to verify the
    ``QuackMesh-Signature`` header of every delivery (README "Webhooks").
    """
    with rt.sessions.begin() as session:
        hook = create_webhook(
            session,
            owner=signer,
            body=body,
            allow_private=private_allowed(rt.settings),
            now=time.time(),
        )
        public = webhook_public(hook)
        secret = hook.secret
    return WebhookCreatedPublic(**public.model_dump(), secret=secret)


@router.get("", response_model=WebhookListPublic)
def list_my_webhooks(signer: ReadSigner, rt: RuntimeDep) -> WebhookListPublic:
    """The signer's active webhooks, newest first (secrets are never shown again)."""
    with rt.reads() as session:
        return WebhookListPublic(
            webhooks=[webhook_public(h) for h in list_webhooks(session, owner=signer)]
        )


@router.get("/{webhook_id}", response_model=WebhookPublic)
def read_webhook(webhook_id: str, signer: ReadSigner, rt: RuntimeDep) -> WebhookPublic:
    with rt.reads() as session:
        return webhook_public(get_owned_webhook(session, webhook_id, signer))


@router.delete("/{webhook_id}", status_code=204, response_class=Response)
def remove(webhook_id: str, signer: SubmitSigner, rt: RuntimeDep) -> Response:
    """Stop sending to a webhook; its pending deliveries fail, its history stays readable."""
    with rt.sessions.begin() as session:
        hook = get_owned_webhook(session, webhook_id, signer, for_update=True)
        remove_webhook(session, hook, now=time.time())
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryListPublic)
def deliveries(
    webhook_id: str,
    signer: ReadSigner,
    rt: RuntimeDep,
    state: DeliveryState | None = None,
    limit: int = Query(default=50, ge=1, le=500),
) -> DeliveryListPublic:
    """A webhook's deliveries, newest first: state, attempts and the last attempt's outcome."""
    with rt.reads() as session:
        hook = get_owned_webhook(session, webhook_id, signer)
        rows = list_deliveries(session, hook, state=state, limit=limit)
        return DeliveryListPublic(deliveries=[delivery_public(r) for r in rows])


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", response_model=DeliveryPublic)
def redeliver_one(
    webhook_id: str, delivery_id: DeliveryId, signer: SubmitSigner, rt: RuntimeDep
) -> DeliveryPublic:
    """Send a delivered or failed delivery again now, with a fresh set of attempts."""
    with rt.sessions.begin() as session:
        hook = get_owned_webhook(session, webhook_id, signer)
        row = redeliver(session, hook, delivery_id, now=time.time())
        return delivery_public(row)
