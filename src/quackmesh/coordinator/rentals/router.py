"""Rental endpoints for clients: rent, list, read, cancel."""

from __future__ import annotations

import time

from fastapi import APIRouter, Query

from quackmesh.coordinator.deps import ReadSigner, RuntimeDep, SubmitSigner
from quackmesh.coordinator.rentals.service import (
    RentalState,
    cancel_rental,
    create_rental,
    get_owned_rental,
    list_rentals,
    quote_rental,
    rental_public,
    rental_publics,
)
from quackmesh.core.schemas import (
    RentalCreate,
    RentalListPublic,
    RentalNodePublic,
    RentalPublic,
    RentalQuotePublic,
)

router = APIRouter(prefix="/v1/rentals", tags=["rentals"])


@router.post("", response_model=RentalPublic, status_code=201)
def rent(body: RentalCreate, signer: SubmitSigner, rt: RuntimeDep) -> RentalPublic:
    """Reserve the named nodes (or ``gpus`` GPUs' worth of the cheapest) for ``hours``.

    The whole cost (``hours × Σ price_per_hour``, rounded up) is escrowed at once and must
    fit the ``budget``; providers are paid from it per settle period of online time, and
    what is left goes back when the rental ends or is cancelled.
    """
    with rt.sessions.begin() as session:
        rental = create_rental(rt, session, client=signer, body=body, now=time.time())
        public = rental_public(session, rental)
    rt.notifier.notify_all()  # the rented nodes now take only this client's work
    return public


@router.post("/quote", response_model=RentalQuotePublic)
def quote(body: RentalCreate, signer: SubmitSigner, rt: RuntimeDep) -> RentalQuotePublic:
    """The cost preview: the nodes a rental would take and what it would cost; nothing
    is reserved or escrowed (the same checks as renting, except budget and balance)."""
    del signer  # signed so quotes are rate-limited per address like the rental itself
    with rt.reads() as session:
        nodes, per_hour, cost = quote_rental(rt, session, body=body)
        members = [
            RentalNodePublic(node=n.address, price_per_hour=n.price_per_hour, online_s=0, paid=0)
            for n in nodes
        ]
    return RentalQuotePublic(
        nodes=members,
        hours=body.hours,
        price_per_hour=per_hour,
        cost=cost,
        budget=body.budget,
        within_budget=cost <= body.budget,
    )


@router.get("", response_model=RentalListPublic)
def list_my_rentals(
    signer: ReadSigner,
    rt: RuntimeDep,
    state: RentalState | None = None,
    limit: int = Query(default=50, ge=1, le=500),
) -> RentalListPublic:
    with rt.reads() as session:
        rentals = list_rentals(session, client=signer, state=state, limit=limit)
        return RentalListPublic(rentals=rental_publics(session, rentals))


@router.get("/{rental_id}", response_model=RentalPublic)
def read_rental(rental_id: str, signer: ReadSigner, rt: RuntimeDep) -> RentalPublic:
    with rt.reads() as session:
        return rental_public(session, get_owned_rental(session, rental_id, signer))


@router.post("/{rental_id}/cancel", response_model=RentalPublic)
def cancel(rental_id: str, signer: SubmitSigner, rt: RuntimeDep) -> RentalPublic:
    """End an active rental now: the time used is paid, the rest of the escrow refunded."""
    with rt.sessions.begin() as session:
        rental = get_owned_rental(session, rental_id, signer, for_update=True)
        cancel_rental(rt, session, rental, now=time.time())
        public = rental_public(session, rental)
    rt.notifier.notify_all()  # the nodes are back on the open market
    return public
