"""Marketplace endpoints: ``GET /v1/market/nodes`` (public) and ``GET /v1/jobs/{id}/explain``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from quackmesh.coordinator.deps import ReadSigner, RuntimeDep
from quackmesh.coordinator.jobs.service import get_owned_job
from quackmesh.coordinator.market.explain import Rules, explain_job
from quackmesh.coordinator.market.service import (
    openapi_parameters,
    parse_market_query,
    search_nodes,
)
from quackmesh.core.schemas import ExplainPublic, MarketNodesPublic
from quackmesh.workloads import list_kinds
from quackmesh.workloads.registry import PROTOCOL_KINDS

router = APIRouter()


@router.get(
    "/v1/market/nodes",
    response_model=MarketNodesPublic,
    tags=["market"],
    openapi_extra={"parameters": openapi_parameters()},
)
def market_nodes(request: Request, rt: RuntimeDep) -> MarketNodesPublic:
    """Nodes matching every filter, sorted; an unknown or malformed parameter is a 422."""
    query = parse_market_query(
        request.query_params.multi_items(), known_kinds=[*list_kinds(), *PROTOCOL_KINDS]
    )
    with rt.reads() as session:
        return search_nodes(session, query, ledger=rt.ledger)


@router.get("/v1/jobs/{job_id}/explain", response_model=ExplainPublic, tags=["jobs"])
def explain(job_id: str, signer: ReadSigner, rt: RuntimeDep) -> ExplainPublic:
    """For each waiting task: every node and the scheduler rule that keeps it from the task."""
    rules = Rules(
        min_stake=rt.settings.min_stake, window_s=rt.settings.match_window_s, now=time.time()
    )
    with rt.reads() as session:
        job = get_owned_job(session, job_id, signer)
        return explain_job(session, job, ledger=rt.ledger, rules=rules)
