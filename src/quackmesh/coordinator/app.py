"""The coordinator application factory: ``create_app(settings)``; no import-time state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

import quackmesh
from quackmesh.coordinator.accounts.router import router as accounts_router
from quackmesh.coordinator.db.engine import is_sqlite, make_engine, make_session_factory
from quackmesh.coordinator.db.migrate import is_at_head, upgrade
from quackmesh.coordinator.deps import RuntimeDep
from quackmesh.coordinator.events.service import list_events
from quackmesh.coordinator.fl.router import router as fl_router
from quackmesh.coordinator.jobs.router import router as jobs_router
from quackmesh.coordinator.market.router import router as market_router
from quackmesh.coordinator.nodes.liveness import Liveness
from quackmesh.coordinator.nodes.router import router as nodes_router
from quackmesh.coordinator.observability import Metrics, RequestContextMiddleware, configure_logging
from quackmesh.coordinator.problems import install_problem_handlers
from quackmesh.coordinator.ratelimit import RateLimiter
from quackmesh.coordinator.rentals.router import router as rentals_router
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.scheduler.router import router as tasks_router
from quackmesh.coordinator.settings import Settings
from quackmesh.coordinator.storage.router import router as blobs_router
from quackmesh.coordinator.storage.service import LocalBlobStore
from quackmesh.coordinator.sweeper import Sweeper
from quackmesh.core.signing import NonceCache
from quackmesh.ledger import SqlLedger

__all__ = ["build_runtime", "create_app"]

log = logging.getLogger("quackmesh.coordinator")


def build_runtime(settings: Settings) -> Runtime:
    """Open the database (migrating it to head), the blob store and the in-memory state."""
    settings.home.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    engine = make_engine(url)
    upgrade(engine)
    read_engine = make_engine(url, read_only=True) if is_sqlite(url) else engine
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        reads=make_session_factory(read_engine),
        ledger=SqlLedger(),
        blobs=LocalBlobStore(settings.resolved_blob_dir(), max_bytes=settings.max_upload_bytes),
        metrics=Metrics(),
        secret=settings.resolved_secret(),
        nonces=NonceCache(ttl=2 * settings.auth_window_s),
        liveness=Liveness(),
        submit_limiter=RateLimiter(
            rate=settings.rate_submit_per_s, burst=settings.rate_submit_burst, name="submit"
        ),
        read_limiter=RateLimiter(
            rate=settings.rate_read_per_s, burst=settings.rate_read_burst, name="read"
        ),
    )


def create_app(settings: Settings | None = None, *, configure_logs: bool = True) -> FastAPI:
    settings = settings or Settings()
    if configure_logs:
        configure_logging(settings.log_level)
    rt = build_runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.notifier.bind(asyncio.get_running_loop())
        rt.stop.clear()
        sweeper = Sweeper(rt)
        sweeper.start()
        log.info(
            "coordinator started",
            extra={"database": rt.engine.url.get_backend_name(), "dev_mode": settings.dev_mode},
        )
        try:
            yield
        finally:
            rt.stop.set()
            rt.notifier.notify_all()
            await asyncio.to_thread(sweeper.stop)
            rt.engine.dispose()
            read_engine = rt.reads.kw.get("bind")
            if read_engine is not None and read_engine is not rt.engine:
                read_engine.dispose()

    app = FastAPI(
        title="QuackMesh coordinator",
        version=quackmesh.__version__,
        description="Matches ML work to provider nodes and settles DUCK payments. "
        "Requests are signed (EIP-191); see the README for the scheme.",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    install_problem_handlers(app)
    app.add_middleware(RequestContextMiddleware, metrics=rt.metrics, access_log=settings.access_log)
    for router in (
        nodes_router,
        tasks_router,
        jobs_router,
        blobs_router,
        accounts_router,
        market_router,
        rentals_router,
        fl_router,
    ):
        app.include_router(router)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz(rt: RuntimeDep) -> JSONResponse:
        """Readiness: database reachable and migrated, blob store writable."""
        checks: dict[str, Any] = {}
        try:
            with rt.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok" if is_at_head(rt.engine) else "not migrated"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        blob_tmp = rt.blobs.root / "tmp"
        checks["blobs"] = "ok" if blob_tmp.is_dir() else "missing"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics(rt: RuntimeDep) -> Response:
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/events", tags=["events"])
    def events(
        rt: RuntimeDep,
        after: int = Query(default=0, ge=0),
        limit: int = Query(default=200, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        """Public state changes after event id ``after`` (node and job lifecycle)."""
        with rt.reads() as session:
            return [
                {
                    "id": e.id,
                    "type": e.type,
                    "at": e.at,
                    "job_id": e.job_id,
                    "node": e.node,
                    "data": e.data,
                }
                for e in list_events(session, after=after, limit=limit)
            ]

    return app
