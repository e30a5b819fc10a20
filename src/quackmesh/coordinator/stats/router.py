"""``GET /v1/stats`` (public), ``/v1/wallet/history`` and ``/v1/nodes/{address}/earnings``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from quackmesh.coordinator.deps import ReadSigner, RuntimeDep
from quackmesh.coordinator.stats.service import earnings, network_stats, wallet_history
from quackmesh.core.errors import Forbidden, ValidationFailed
from quackmesh.core.ids import normalize_address

router = APIRouter(prefix="/v1", tags=["stats"])


@router.get("/stats")
def stats(rt: RuntimeDep) -> dict[str, Any]:
    """The dashboard's live counters: nodes and GPUs online, jobs, DUCK paid in 24 h, health."""
    with rt.reads() as session:
        return network_stats(session, dev_mode=rt.settings.dev_mode)


@router.get("/wallet/history")
def history(
    signer: ReadSigner,
    rt: RuntimeDep,
    limit: int = Query(default=50, ge=1, le=500),
    before: int | None = Query(default=None, ge=1, description="page back from this seq"),
) -> dict[str, Any]:
    """Your wallet's and stake's ledger entries, newest first (+ credit, − debit)."""
    with rt.reads() as session:
        return wallet_history(session, rt.ledger, address=signer, limit=limit, before_seq=before)


@router.get("/nodes/{address}/earnings")
def node_earnings(address: str, signer: ReadSigner, rt: RuntimeDep) -> dict[str, Any]:
    """What a node has earned; only the node's own address may read it."""
    try:
        address = normalize_address(address)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"not an address: {address!r}", field="address") from exc
    if address != signer:
        raise Forbidden("only the node itself may read its earnings (sign in as it)")
    with rt.reads() as session:
        return earnings(session, rt.ledger, address=address)
