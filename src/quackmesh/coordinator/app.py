"""The coordinator application factory: ``create_app(settings)``; no import-time state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

import quackmesh
from quackmesh.coordinator.accounts.router import router as accounts_router
from quackmesh.coordinator.auth.router import router as auth_router
from quackmesh.coordinator.chain.link import approve_vault, bind_state, open_link
from quackmesh.coordinator.chain.router import router as chain_router
from quackmesh.coordinator.chain.watcher import ChainWatcher
from quackmesh.coordinator.db.engine import is_sqlite, make_engine, make_session_factory
from quackmesh.coordinator.db.migrate import is_at_head, upgrade
from quackmesh.coordinator.deps import RuntimeDep
from quackmesh.coordinator.events.hub import EventHub
from quackmesh.coordinator.events.router import router as events_router
from quackmesh.coordinator.fl.router import router as fl_router
from quackmesh.coordinator.inference.billing import refund_orphans
from quackmesh.coordinator.inference.gateway import router as gateway_router
from quackmesh.coordinator.inference.router import router as inference_router
from quackmesh.coordinator.inference.state import InferenceState
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
from quackmesh.coordinator.stats.router import router as stats_router
from quackmesh.coordinator.storage.router import router as blobs_router
from quackmesh.coordinator.storage.service import LocalBlobStore
from quackmesh.coordinator.sweeper import Sweeper
from quackmesh.coordinator.webhooks.dispatcher import WebhookDispatcher
from quackmesh.coordinator.webhooks.router import router as webhooks_router
from quackmesh.core.signing import NonceCache
from quackmesh.ledger import SqlLedger

__all__ = ["build_runtime", "create_app"]

log = logging.getLogger("quackmesh.coordinator")


def build_runtime(settings: Settings) -> Runtime:
    """Open the database (migrating it to head), the blob store and the in-memory state."""
    settings.home.mkdir(parents=True, exist_ok=True)
    chain = open_link(settings)  # first: a chain that cannot be reached leaves nothing open
    url = settings.resolved_database_url()
    engine = make_engine(url)
    upgrade(engine)
    read_engine = make_engine(url, read_only=True) if is_sqlite(url) else engine
    sessions = make_session_factory(engine)
    reads = make_session_factory(read_engine)
    hub = EventHub(reads, poll_s=settings.events_poll_s, gap_grace_s=settings.events_gap_grace_s)
    hub.watch(sessions)
    metrics = Metrics()
    metrics.event_subscribers.set_function(lambda: hub.subscribers)
    metrics.events_streamed.set_function(lambda: hub.delivered)
    if chain is not None:
        try:
            with sessions.begin() as session:
                bind_state(session, chain)
        except Exception:
            engine.dispose()
            read_engine.dispose()
            raise
        if settings.dev_mode:
            approve_vault(chain)  # the faucet deposits for others from the operator's DUCK
    return Runtime(
        chain=chain,
        settings=settings,
        engine=engine,
        sessions=sessions,
        reads=reads,
        hub=hub,
        ledger=SqlLedger(),
        blobs=LocalBlobStore(settings.resolved_blob_dir(), max_bytes=settings.max_upload_bytes),
        metrics=metrics,
        secret=settings.resolved_secret(),
        nonces=NonceCache(ttl=2 * settings.auth_window_s),
        liveness=Liveness(),
        submit_limiter=RateLimiter(
            rate=settings.rate_submit_per_s, burst=settings.rate_submit_burst, name="submit"
        ),
        read_limiter=RateLimiter(
            rate=settings.rate_read_per_s, burst=settings.rate_read_burst, name="read"
        ),
        inference=InferenceState(
            limiter=RateLimiter(
                rate=settings.rate_inference_per_s,
                burst=settings.rate_inference_burst,
                name="inference",
            )
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
        dispatcher = WebhookDispatcher(rt)
        dispatcher.start()
        watcher = ChainWatcher(rt, rt.chain) if rt.chain is not None else None
        if watcher is not None:
            watcher.start()
        await rt.hub.start()
        await asyncio.to_thread(refund_orphans, rt)  # reservations a dead process left
        rt.inference.start(rt.ledger, rt.reads, every=settings.inference_directory_s)
        log.info(
            "coordinator started",
            extra={
                "database": rt.engine.url.get_backend_name(),
                "dev_mode": settings.dev_mode,
                "chain": "off" if rt.chain is None else rt.chain.vault_address,
            },
        )
        try:
            yield
        finally:
            rt.stop.set()
            rt.notifier.notify_all()
            await rt.inference.stop(timeout=10.0)
            await rt.hub.stop()
            await dispatcher.stop()
            await asyncio.to_thread(sweeper.stop)
            if watcher is not None:
                await asyncio.to_thread(watcher.stop)
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
        gateway_router,  # the inference hot path first: routes are matched in order
        inference_router,
        nodes_router,
        tasks_router,
        jobs_router,
        blobs_router,
        accounts_router,
        market_router,
        rentals_router,
        webhooks_router,
        fl_router,
        events_router,
        auth_router,
        stats_router,
        chain_router,
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

    return app
