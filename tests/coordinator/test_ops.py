"""Operations surface: health, readiness, metrics, OpenAPI, request ids, JSON logs, migrations."""

from __future__ import annotations

import io
import json
import logging

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from quackmesh.coordinator.db.models import Base
from quackmesh.coordinator.observability import JsonFormatter
from quackmesh.ledger import LedgerBase

from .conftest import Net


def test_health_ready_metrics_and_docs(net: Net) -> None:
    assert net.tc.get("/healthz").json() == {"status": "ok"}
    ready = net.tc.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "blobs": "ok"}
    net.tc.get("/v1/nodes")
    metrics = net.tc.get("/metrics").text
    assert 'quackmesh_http_requests_total{method="GET",route="/v1/nodes",status="200"}' in metrics
    assert "quackmesh_nodes_online" in metrics
    assert net.tc.get("/docs").status_code == 200
    paths = net.tc.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/jobs",
        "/v1/tasks/lease",
        "/v1/nodes/heartbeat",
        "/v1/blobs",
        "/v1/ledger/check",
    ):
        assert path in paths


def test_request_id_is_echoed_or_made(net: Net) -> None:
    assert (
        net.tc.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    made = net.tc.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers[
        "x-request-id"
    ]
    assert made and " " not in made


def test_access_log_is_json_with_request_id(net_factory) -> None:  # type: ignore[no-untyped-def]
    net = net_factory(access_log=True)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("quackmesh.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        net.tc.get("/healthz", headers={"X-Request-ID": "req-42"})
    finally:
        access.removeHandler(handler)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["request_id"] == "req-42" and line["path"] == "/healthz" and line["status"] == 200
    assert line["level"] == "info" and isinstance(line["ms"], float)


def test_migrations_create_exactly_the_models(net: Net) -> None:
    with net.rt.engine.connect() as conn:
        diffs = compare_metadata(
            MigrationContext.configure(conn), [Base.metadata, LedgerBase.metadata]
        )
    assert diffs == []


@pytest.mark.anyio
async def test_async_client_runs_in_process_against_the_asgi_app(net: Net) -> None:
    import httpx

    from quackmesh.core.schemas import JobState
    from quackmesh.sdk import AsyncClient

    transport = httpx.ASGITransport(app=net.tc.app)
    async with AsyncClient("http://testserver", net.client().wallet, transport=transport) as client:
        await client.faucet(5_000)
        job = await client.submit(
            "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
        )
        assert (await client.status(job.id)).state == JobState.QUEUED
        assert (await client.balance()).in_escrow == 1_000
        assert (await client.cancel(job.id)).state == JobState.CANCELLED
