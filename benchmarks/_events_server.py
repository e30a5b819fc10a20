"""The coordinator that ``benchmarks/events.py`` measures, with an in-process event source.

``python benchmarks/_events_server.py serve SPEC`` serves ``create_app(Settings(...))``
under uvicorn exactly as ``benchmarks/_common.py serve`` does (the ``ServerProcess``
interface), and adds three routes for the benchmark driver:

* ``POST /bench/load?rate=&seconds=&type=`` starts a thread in the coordinator process that
  commits ``rate × seconds`` events at a fixed rate, each one a real state change: its own
  write transaction through ``rt.sessions.begin()`` and ``events.service.emit``, so the
  commit kicks the hub exactly as an API handler's commit would. ``at`` is stamped inside
  the transaction, just before its COMMIT (so a delay includes the commit).
* ``GET /bench/load`` says how far the generator got and how late it ran behind schedule.
* ``GET /bench/state`` reports the hub: head id, frontier, subscribers, events delivered.

With ``"profile": PATH`` in the spec the event-loop thread (the hub's fan-out and every
WebSocket send) runs under cProfile and the stats are written to PATH on shutdown.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Generator", "add_bench_routes", "raise_open_files"]


def raise_open_files() -> int:
    """Raise this process's open-files soft limit to the hard limit; returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


@dataclass
class GenStatus:
    rate: float = 0.0
    planned: int = 0
    committed: int = 0
    start_wall: float = 0.0
    end_wall: float = 0.0
    max_late_s: float = 0.0  # worst lag behind the fixed-rate schedule
    cut_short: bool = False  # ran out of its time limit before committing every event
    done: bool = True
    error: str | None = None


class Generator:
    """Commits events at a fixed rate from one thread of the coordinator process."""

    def __init__(self, rt: Any) -> None:
        self._rt = rt
        self._lock = threading.Lock()
        self.status = GenStatus()

    def start(self, *, rate: float, seconds: float, type_: str, limit_s: float) -> GenStatus:
        """Commit ``rate × seconds`` events; stop early once ``limit_s`` have passed (a
        starved generator must not stretch a phase without bound)."""
        with self._lock:
            if not self.status.done:
                raise RuntimeError("a load is already running")
            planned = max(1, round(rate * seconds))
            self.status = GenStatus(rate=rate, planned=planned, done=False)
            t0 = time.monotonic() + 0.05
            self.status.start_wall = time.time() + 0.05
        threading.Thread(
            target=self._run,
            args=(rate, planned, t0, t0 + limit_s, type_),
            name="bench-events",
            daemon=True,
        ).start()
        return self.status

    def _run(self, rate: float, planned: int, t0: float, stop: float, type_: str) -> None:
        from quackmesh.coordinator.events.service import emit

        st = self.status
        try:
            for i in range(planned):
                due = t0 + i / rate
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif time.monotonic() > stop:
                    st.cut_short = True
                    break
                st.max_late_s = max(st.max_late_s, time.monotonic() - due)
                with self._rt.sessions.begin() as session:
                    # `round` is one of the data keys the public projection keeps.
                    emit(session, type_, round=i)
                st.committed += 1
        except Exception as exc:  # reported to the driver, which fails the run
            st.error = f"{type(exc).__name__}: {exc}"
        finally:
            st.end_wall = time.time()
            st.done = True


def add_bench_routes(app: Any) -> Generator:
    """The driver's control routes (outside ``/v1``: the coordinator's API is untouched)."""
    from dataclasses import asdict

    from fastapi import HTTPException, Query

    from quackmesh.coordinator.events.service import head_id

    rt = app.state.runtime
    gen = Generator(rt)

    def start_load(
        rate: float = Query(gt=0, le=100_000),
        seconds: float = Query(gt=0, le=600),
        limit_s: float = Query(gt=0, le=1200),
        type: str = Query(default="bench.tick", max_length=48),
    ) -> dict[str, Any]:
        try:
            return asdict(gen.start(rate=rate, seconds=seconds, type_=type, limit_s=limit_s))
        except RuntimeError as exc:
            raise HTTPException(409, str(exc)) from exc

    def load_status() -> dict[str, Any]:
        return asdict(gen.status)

    def state() -> dict[str, Any]:
        with rt.reads() as session:
            head = head_id(session)
        hub = rt.hub
        return {
            "head": head,
            "frontier": hub.frontier,
            "subscribers": hub.subscribers,
            "delivered": hub.delivered,
        }

    app.post("/bench/load")(start_load)
    app.get("/bench/load")(load_status)
    app.get("/bench/state")(state)
    return gen


def _serve(spec: dict[str, Any]) -> None:
    import uvicorn

    from quackmesh.coordinator import Settings, create_app

    raise_open_files()
    app = create_app(Settings(**spec["settings"]))
    add_bench_routes(app)
    # The same uvicorn settings as ``quackmesh up`` (LocalNetwork.server_config).
    from quackmesh.cli.localnet import SERVER_OPTIONS, freeze_startup_objects

    options = dict(SERVER_OPTIONS)
    if spec.get("deflate"):  # --compression deflate: what compressing per connection costs
        options["ws_per_message_deflate"] = True
    config = uvicorn.Config(app, host="127.0.0.1", port=spec["port"], **options)
    server = uvicorn.Server(config)
    freeze_startup_objects()  # as ``quackmesh up`` does
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it shut down on (as uvicorn.run)
        pass
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(spec["profile"])


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        raise SystemExit("usage: _events_server.py serve SPEC_JSON")
    _serve(json.loads(sys.argv[2]))
