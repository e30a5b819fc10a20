"""Event-stream benchmark: events/s fanned out to many WebSocket subscribers, and the delay.

One coordinator runs in its own process (uvicorn, as ``quackmesh up`` serves it, SQLite in a
temporary ``QUACKMESH_HOME``). ``--subscribers`` WebSocket clients (the ``websockets``
asyncio client, spread over ``--client-procs`` processes) connect to ``/v1/events/ws`` on
127.0.0.1, signed out, with no filter. The coordinator declines permessage-deflate, as
``quackmesh up`` serves it (``--compression deflate`` turns it on at both ends, to show
what compressing every frame once per connection costs). Once every one is registered
with the hub, load
phases run one after another, each drained before the next starts:

* **in-process** (the headline): a thread inside the coordinator process commits one event
  per write transaction at a fixed rate (``--rates``, for ``--seconds`` each). Each commit
  kicks the hub through its ``after_commit`` hook, as an API handler's commit does, so the
  phase measures the hub's poll → serialise → fan-out → WebSocket path, sharing the process
  (and its GIL) with the thread that commits, as it shares it with API handlers.
* **API** (``--api-rate``, 0 to skip): signed ``POST /v1/faucet`` calls from this process,
  each emitting ``faucet.minted``: the same path behind a real request handler.

The delay of one delivery is the subscriber's receive time minus the event's ``at`` (stamped
in the committing transaction; one machine, one clock). Reported per phase: p50/p95/p99/max
over all (event, subscriber) deliveries, delivered events/s over all subscribers, frames/s
and events per frame (the hub batches what arrived since its last poll), CPU of the server
(and of its event-loop thread alone) and of each client process. At the end every
subscriber must have received every event committed while it was connected exactly once,
in increasing id order. Run ``python benchmarks/events.py -h``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from _common import FastSignedAuth, ServerProcess, coordinator_spec, fmt, server_info
from _events_clients import Clients
from _events_server import raise_open_files

AIM_RATE = 200.0  # events/s: the aim is p99 < 100 ms at this rate
AIM_P99_MS = 100.0
HERE = Path(__file__).resolve().parent
FAUCET_TYPE = "faucet.minted"


@contextlib.contextmanager
def events_server(spec: dict[str, Any]) -> Iterator[ServerProcess]:
    """A ``ServerProcess`` that runs ``_events_server.py`` (or QM_BENCH_EVENTS_SERVE_SCRIPT,
    another launcher with the same ``serve SPEC`` interface, to A/B a patched hub)."""
    script = os.environ.get("QM_BENCH_EVENTS_SERVE_SCRIPT") or str(HERE / "_events_server.py")
    saved = os.environ.get("QM_BENCH_SERVE_SCRIPT")
    os.environ["QM_BENCH_SERVE_SCRIPT"] = script
    try:
        server = ServerProcess(spec)
        server.start()
    finally:
        if saved is None:
            os.environ.pop("QM_BENCH_SERVE_SCRIPT", None)
        else:
            os.environ["QM_BENCH_SERVE_SCRIPT"] = saved
    try:
        yield server
    finally:
        server.stop()


def server_cpu(server: ServerProcess) -> tuple[float, float]:
    """(whole process, event-loop thread) CPU seconds of the server so far."""
    import psutil

    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    total = proc.cpu_times()
    main = next((t for t in proc.threads() if t.id == proc.pid), None)
    loop_s = (main.user_time + main.system_time) if main is not None else math.nan
    return float(total.user + total.system), float(loop_s)


def machine_busy() -> float:
    """CPU seconds all cores of this machine have spent busy so far (every process)."""
    import psutil

    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


@dataclass
class PhasePlan:
    name: str
    source: str
    type_: str
    rate: float
    seconds: float


def run_api_load(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Signed faucet calls at a fixed rate over one connection (each emits one event)."""
    from quackmesh.core.wallet import Wallet

    auth = FastSignedAuth(Wallet.create())
    planned = max(1, round(rate * seconds))
    ok = errors = 0
    start_wall, t0 = time.time(), time.monotonic()
    with httpx.Client(base_url=url, timeout=10.0) as http:
        for i in range(planned):
            wait = t0 + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif time.monotonic() > t0 + 2 * seconds + 5:
                break  # the server is starved: stop rather than stretch the phase
            r = http.post("/v1/faucet", json={"amount": 1}, auth=auth)
            ok, errors = (ok + 1, errors) if r.status_code == 200 else (ok, errors + 1)
    return {
        "events": ok,
        "request_errors": errors,
        "start_wall": start_wall,
        "end_wall": time.time(),
        "generator_max_late_ms": None,
        "cut_short": ok + errors < planned,
    }


def run_generator(plan: PhasePlan, http: httpx.Client) -> dict[str, Any]:
    """The coordinator's own event generator, until it has committed the phase's events."""
    params = {"rate": plan.rate, "seconds": plan.seconds, "limit_s": 2 * plan.seconds + 5}
    http.post("/bench/load", params={**params, "type": plan.type_}).raise_for_status()
    while not (gen := http.get("/bench/load").json())["done"]:
        time.sleep(0.1)
    if gen["error"]:
        raise RuntimeError(f"event generator failed: {gen['error']}")
    return {
        "events": gen["committed"],
        "request_errors": 0,
        "start_wall": gen["start_wall"],
        "end_wall": gen["end_wall"],
        "generator_max_late_ms": round(1000 * gen["max_late_s"], 1),
        "cut_short": gen["cut_short"],
    }


def run_phase(
    plan: PhasePlan, server: ServerProcess, clients: Clients, http: httpx.Client,
    drain_s: float,
) -> dict[str, Any]:  # fmt: skip
    """One load phase, drained: every subscriber has the phase's last event (or time ran out)."""
    cpu0, loop0 = server_cpu(server)
    ccpu0 = [p["cpu_s"] for p in clients.ask("progress")]
    busy0, me0 = machine_busy(), time.process_time()
    t0 = time.monotonic()
    api = plan.source == "api"
    load = run_api_load(server.url, plan.rate, plan.seconds) if api else run_generator(plan, http)
    head = http.get("/bench/state").json()["head"]
    deadline = time.monotonic() + drain_s
    drained = False
    while True:
        prog = clients.ask("progress")
        if all(p["min_last"] >= head or p["closed"] for p in prog):
            drained = all(p["min_last"] >= head for p in prog)
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    cpu1, loop1 = server_cpu(server)
    busy, me = machine_busy() - busy0, time.process_time() - me0
    clients_s = sum(p["cpu_s"] - c for p, c in zip(prog, ccpu0, strict=True))
    others = max(0.0, busy - (cpu1 - cpu0) - clients_s - me)
    made_s = load["end_wall"] - load["start_wall"]
    return {
        "name": plan.name,
        "source": plan.source,
        "type": plan.type_,
        "rate": plan.rate,
        "seconds": plan.seconds,
        **load,
        # n events at a fixed rate span (n - 1) intervals
        "made_per_s": round((load["events"] - 1) / made_s, 1) if made_s > 0 else None,
        "drained": drained,
        "elapsed_s": round(elapsed, 2),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed),
        "server_loop_cpu_pct": round(100 * (loop1 - loop0) / elapsed),
        "client_cpu_pct": [
            round(100 * (p["cpu_s"] - c) / elapsed) for p, c in zip(prog, ccpu0, strict=True)
        ],
        "driver_cpu_pct": round(100 * me / elapsed),
        # Work of other processes on the machine during the phase, in % of one core: the
        # benchmark shares the cores, so its delays include waiting for a CPU.
        "other_processes_cpu_pct": round(100 * others / elapsed),
        "server_loop_cpu_s": loop1 - loop0,
        "server_cpu_s": cpu1 - cpu0,
    }


def client_lag(parts: list[dict[str, Any]], start: float, end: float) -> Any:
    """The client processes' event-loop lateness samples taken between start and end."""
    import numpy as np

    out = []
    for p in parts:
        at = np.frombuffer(p["lag_at"], dtype=np.float64)
        lag = np.frombuffer(p["lag"], dtype=np.float64)
        out.append(lag[(at >= start) & (at <= end)])
    return np.concatenate(out or [np.zeros(0)])


def summarise(phase: dict[str, Any], parts: list[dict[str, Any]], subscribers: int) -> None:
    """Merge the client processes' figures for ``phase`` into it."""
    import numpy as np

    mine = [p["phases"][phase["type"]] for p in parts if phase["type"] in p["phases"]]
    delays = np.concatenate(
        [np.frombuffer(m["delays"], dtype=np.float64) for m in mine] or [np.zeros(0)]
    )
    deliveries = int(sum(m["deliveries"] for m in mine))
    frames = int(sum(m["frames"] for m in mine))
    last_recv = max((m["last_recv"] for m in mine), default=0.0)
    window = last_recv - phase["start_wall"]
    phase["deliveries"] = deliveries
    phase["expected_deliveries"] = phase["events"] * subscribers
    phase["offered_deliveries_per_s"] = round(phase["rate"] * subscribers, 1)
    phase["delivered_events_per_s"] = round(deliveries / window, 1) if window > 0 else None
    phase["frames"] = frames
    phase["events_per_frame"] = round(deliveries / frames, 2) if frames else None
    phase["frames_per_s"] = round(frames / window, 1) if window > 0 else None
    # CPU per WebSocket message sent: the figure least disturbed by other work on the
    # machine; one fan-out round to every subscriber costs about subscribers × this.
    loop_s, cpu_s = phase.pop("server_loop_cpu_s"), phase.pop("server_cpu_s")
    phase["server_loop_cpu_us_per_frame"] = round(1e6 * loop_s / frames, 1) if frames else None
    phase["server_cpu_us_per_delivery"] = round(1e6 * cpu_s / deliveries, 2) if deliveries else None
    phase["round_ms_at_one_core"] = (
        round(subscribers * loop_s / frames * 1000, 1) if frames else None
    )
    if delays.size:
        q = np.percentile(delays, [50, 95, 99]) * 1000.0
        phase["delay_ms"] = {
            "p50": round(float(q[0]), 2),
            "p95": round(float(q[1]), 2),
            "p99": round(float(q[2]), 2),
            "max": round(float(delays.max()) * 1000.0, 2),
            "min": round(float(delays.min()) * 1000.0, 2),
        }
    else:
        phase["delay_ms"] = {"p50": None, "p95": None, "p99": None, "max": None, "min": None}
    lag = client_lag(parts, phase["start_wall"], last_recv)
    phase["client_loop_lag_ms"] = {
        "p99": round(float(np.percentile(lag, 99)) * 1000.0, 2) if lag.size else None,
        "max": round(float(lag.max()) * 1000.0, 2) if lag.size else None,
    }
    phase.pop("start_wall")
    phase.pop("end_wall")


def check_delivery(subs: list[dict[str, Any]], head0: int, head1: int) -> dict[str, Any]:
    """Every subscriber got ids head0+1..head1, each once, in increasing order."""
    expected = head1 - head0
    ok = missing = 0
    for s in subs:
        unique = s["count"] - s["duplicates"] - s["reordered"]
        missing += max(0, expected - unique)
        ok += (
            s["count"] == expected
            and s["duplicates"] == s["reordered"] == s["gaps"] == 0
            and (expected == 0 or (s["first"] == head0 + 1 and s["last"] == head1))
            and s["closed"] is None
        )
    return {
        "expected_events_per_subscriber": expected,
        "subscribers_ok": ok,
        "missing_deliveries": missing,
        "duplicates": sum(s["duplicates"] for s in subs),
        "reordered": sum(s["reordered"] for s in subs),
        "gap_ids": sum(s["gaps"] for s in subs),
        "closed_early": sum(s["closed"] is not None for s in subs),
        "close_codes": sorted({s["closed"] for s in subs if s["closed"] is not None}),
    }


def print_report(
    args: argparse.Namespace, phases: list[dict[str, Any]], check: dict[str, Any]
) -> None:
    print(
        f"  {'delay: state change -> delivery':<32}{'made/s':>8}{'events':>8}"
        f"{'deliv ev/s':>12}{'ev/frame':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    for ph in phases:
        d = ph["delay_ms"]
        print(
            f"  {ph['name']:<32}{fmt(ph['made_per_s'], 0):>8}{ph['events']:>8}"
            f"{fmt(ph['delivered_events_per_s'], 0):>12}{fmt(ph['events_per_frame'], 1):>10}"
            f"{fmt(d['p50']):>9}{fmt(d['p95']):>9}{fmt(d['p99']):>9}{fmt(d['max']):>9}"
        )
    print(
        f"  {'CPU (% of one core)':<32}{'server':>8}{'loop':>8}{'loop us/frame':>15}"
        f"{'round ms':>10}{'clients':>12}{'others':>8}{'client lag p99 ms':>19}"
    )
    for ph in phases:
        ccpu = "+".join(f"{c}%" for c in ph["client_cpu_pct"])
        print(
            f"  {ph['name']:<32}{str(ph['server_cpu_pct']) + '%':>8}"
            f"{str(ph['server_loop_cpu_pct']) + '%':>8}"
            f"{fmt(ph['server_loop_cpu_us_per_frame']):>15}{fmt(ph['round_ms_at_one_core']):>10}"
            f"{ccpu:>12}{str(ph['other_processes_cpu_pct']) + '%':>8}"
            f"{fmt(ph['client_loop_lag_ms']['p99']):>19}"
        )
    for line in (
        "made/s: events committed per second (the target unless the coordinator lagged);",
        "deliv ev/s: events received per second over all subscribers; loop: the server's",
        "event-loop thread (the hub and every WebSocket send); round ms: its CPU for one",
        "frame to every subscriber; others: processes outside this benchmark on the",
        f"{os.cpu_count()} cores; client lag: how late the subscriber processes' event loops",
        "woke up, which is part of every delay they measure",
    ):
        print(f"    {line}")
    for ph in phases:
        if not ph["drained"]:
            print(f"  NOTE: {ph['name']} did not drain within {args.drain_s:g}s")
        if ph["cut_short"]:
            print(
                f"  NOTE: {ph['name']}: the load was cut short at {2 * ph['seconds'] + 5:g}s "
                f"with {ph['events']} events committed (the coordinator could not keep up)"
            )
        if ph["source"] == "in-process" and ph["generator_max_late_ms"] > 50:
            print(
                f"  NOTE: {ph['name']}: the generator ran up to {ph['generator_max_late_ms']:.0f}"
                " ms behind its schedule (the coordinator process was busy)"
            )
        if ph["other_processes_cpu_pct"] >= 50:
            print(
                f"  NOTE: {ph['name']}: other processes used {ph['other_processes_cpu_pct']}% of"
                " a core meanwhile: the delays include waiting for a CPU"
            )
    print(
        f"  delivery: {check['subscribers_ok']}/{args.subscribers} subscribers got all "
        f"{check['expected_events_per_subscriber']} events exactly once in id order; "
        f"missing {check['missing_deliveries']}, duplicates {check['duplicates']}, "
        f"reordered {check['reordered']}, closed early {check['closed_early']}"
        + (f" (codes {', '.join(check['close_codes'])})" if check["close_codes"] else "")
    )


def aim(phases: list[dict[str, Any]]) -> dict[str, Any]:
    ph = next((p for p in phases if p["source"] == "in-process" and p["rate"] == AIM_RATE), None)
    p99 = ph["delay_ms"]["p99"] if ph else None
    return {
        "rate": AIM_RATE,
        "p99_limit_ms": AIM_P99_MS,
        "p99_ms": p99,
        "met": None if p99 is None else bool(p99 < AIM_P99_MS and ph and ph["drained"]),
    }


def plan_phases(args: argparse.Namespace) -> list[PhasePlan]:
    plans = [
        PhasePlan(f"in-process {r:g}/s", "in-process", f"bench.r{i}", r, args.seconds)
        for i, r in enumerate(args.rates)
    ]
    if args.api_rate > 0:
        name = f"POST /v1/faucet {args.api_rate:g}/s"
        plans.append(PhasePlan(name, "api", FAUCET_TYPE, args.api_rate, args.api_seconds))
    return plans


def measure(args: argparse.Namespace, plans: list[PhasePlan]) -> dict[str, Any] | None:
    """Serve, connect every subscriber, run the phases; ``None`` if some could not connect."""
    compression = None if args.compression == "none" else "deflate"
    with tempfile.TemporaryDirectory(prefix="qm-bench-events-") as home:
        spec = coordinator_spec(Path(home), None)
        spec["deflate"] = args.compression == "deflate"
        if args.profile_server:
            spec["profile"] = str(Path(args.profile_server).resolve())
        with events_server(spec) as server, httpx.Client(base_url=server.url, timeout=30) as http:
            ws_url = server.url.replace("http://", "ws://") + "/v1/events/ws"
            t = time.monotonic()
            clients = Clients(ws_url, args.subscribers, args.client_procs, compression)
            try:
                hello = clients.recv_all(timeout=180.0)
                connected = sum(h["connected"] for h in hello)
                deadline = time.monotonic() + 30.0
                while http.get("/bench/state").json()["subscribers"] < connected:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                state = http.get("/bench/state").json()
                print(
                    f"  connected {connected}/{args.subscribers} subscribers in "
                    f"{time.monotonic() - t:.1f}s (the hub counts {state['subscribers']})"
                )
                if connected < args.subscribers:
                    print(f"  connect errors: {[e for h in hello for e in h['errors']]}")
                    return None
                phases = [run_phase(p, server, clients, http, args.drain_s) for p in plans]
                head1 = http.get("/bench/state").json()["head"]
                parts = clients.ask("finish", timeout=120.0)
            finally:
                clients.stop()
    log = server.log().strip()
    if log:
        print("  coordinator log (tail):\n" + log[-1500:])
    for ph in phases:
        summarise(ph, parts, args.subscribers)
    subs = [s for p in parts for s in p["subs"]]
    return {"phases": phases, "delivery": check_delivery(subs, state["head"], head1)}


def main_run(args: argparse.Namespace) -> int:
    raise_open_files()
    plans = plan_phases(args)
    print(
        f"event-stream benchmark: {args.subscribers} WebSocket subscribers on 127.0.0.1 over "
        f"{args.client_procs} client process(es) (websockets client, compression="
        f"{args.compression}); phases: "
        + ", ".join(f"{p.name} for {p.seconds:g}s" for p in plans)
        + f"; server: {server_info()}, SQLite; {os.cpu_count()} cores, load average "
        + "/".join(f"{x:.1f}" for x in os.getloadavg())
    )
    result = measure(args, plans)
    if result is None:
        return 1
    phases, check = result["phases"], result["delivery"]
    print_report(args, phases, check)
    goal = aim(phases)
    if goal["met"] is None:
        print(f"  aim p99 < {AIM_P99_MS:g} ms at {AIM_RATE:g} events/s: not measured in this run")
    else:
        print(
            f"  aim p99 < {AIM_P99_MS:g} ms at {AIM_RATE:g} events/s with {args.subscribers} "
            f"subscribers: {'met' if goal['met'] else 'missed'} (p99 {fmt(goal['p99_ms'])} ms)"
        )
    exactly_once = check["subscribers_ok"] == args.subscribers
    ok = exactly_once and all(p["drained"] and p["request_errors"] == 0 for p in phases)
    if args.profile_server:
        print_profile(args.profile_server)
    if args.json:
        out = {
            "benchmark": "events",
            "args": vars(args),
            "server": server_info(),
            "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "subscribers": args.subscribers,
            "phases": phases,
            "delivery": check,
            "exactly_once_in_order": exactly_once,
            "aim": goal,
            "ok": ok,
        }
        print(json.dumps(out))
    return 0 if ok else 1


def print_profile(path: str, top: int = 25) -> None:
    import pstats

    print(f"  server event-loop profile ({path}), top {top} by own time:")
    pstats.Stats(path, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=1000, help="WebSocket clients (1000)")
    p.add_argument("--client-procs", type=int, default=2, help="subscriber processes (2)")
    p.add_argument(
        "--rates", default="50,200,500",
        help="in-process events/s, one phase each, comma list (default 50,200,500)",
    )  # fmt: skip
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per phase (10)")
    p.add_argument("--api-rate", type=float, default=20.0, help="faucet calls/s; 0 skips (20)")
    p.add_argument("--api-seconds", type=float, default=5.0, help="seconds of faucet calls (5)")
    p.add_argument(
        "--drain-s", type=float, default=30.0, help="most seconds to wait for delivery (30)"
    )
    p.add_argument(
        "--compression", choices=["deflate", "none"], default="none",
        help="permessage-deflate at both ends (default none: the coordinator declines it)",
    )  # fmt: skip
    p.add_argument("--profile-server", metavar="FILE", help="cProfile the server's event loop")
    p.add_argument(
        "--smoke", action="store_true",
        help="tiny run for tests: 20 subscribers, 1 process, 50 events/s for 2 s, 10 faucet/s",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON line with every figure")
    args = p.parse_args(argv)
    if args.smoke:
        args.subscribers, args.client_procs, args.rates = 20, 1, "50"
        args.seconds, args.api_rate, args.api_seconds, args.drain_s = 2.0, 10.0, 1.0, 15.0
    try:
        args.rates = [float(r) for r in str(args.rates).split(",") if r.strip()]
    except ValueError:
        p.error("--rates must be a comma list of numbers")
    if args.subscribers < 1 or not 1 <= args.client_procs <= args.subscribers:
        p.error("--subscribers must be >= 1 and --client-procs in [1, subscribers]")
    if not args.rates or any(not 0 < r <= 100_000 for r in args.rates) or args.api_rate < 0:
        p.error("--rates must be in (0, 100000] and --api-rate >= 0")
    if not 0 < args.seconds <= 600 or not 0 < args.api_seconds <= 600 or args.drain_s <= 0:
        p.error("--seconds and --api-seconds must be in (0, 600], --drain-s > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    return main_run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
