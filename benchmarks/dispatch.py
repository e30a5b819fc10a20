"""Dispatch benchmark: simulated nodes lease and report trivial tasks over real HTTP.

One coordinator runs in its own process (uvicorn, as ``quackmesh up`` serves it). In this
process a few simulated clients submit ``ml.linear_regression`` jobs on a tiny CSV, and
many simulated nodes (one wallet each) lease them in batches, upload a small canned result
object, and report it. Every task goes the whole way — submitted and escrowed, leased,
output uploaded, reported, accepted, paid through the SQL ledger — but nothing is computed.

Two phases per database backend:

* **end-to-end**: clients submit while the nodes work; tasks/s is tasks completed over the
  wall time from the first submit to the last accepted report.
* **dispatch-only**: the clients first fill the queue (measuring submissions alone), then
  the nodes drain it; tasks/s is tasks over the lease+report phase only.

At the end the ledger is audited (``GET /v1/ledger/check``: chain ok, total 0), the nodes'
earnings and the number of ledger transactions are checked against the tasks reported as
paid. Everything is bounded by ``--max-seconds``. Run ``python benchmarks/dispatch.py -h``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _common import (
    BOINC_TASKS_PER_S,
    Latencies,
    ServerProcess,
    coordinator_spec,
    fmt,
    make_auth,
    pg_available,
    pg_database,
    server_info,
    speed_up_httpx,
)
from quackmesh.core.wallet import Wallet

TARGET_SQLITE_TASKS_PER_S = 1000.0  # the target for one coordinator on SQLite
KIND = "ml.linear_regression"
MAX_PRICE = 1_000  # micro-DUCK per unit a client offers
PRICE = 600  # micro-DUCK per unit a node asks: each job pays 600, refunds 400
FEE_BPS = 500
MIN_STAKE = 1_000_000_000  # the default minimum stake a node needs for paid work
FEE = PRICE * FEE_BPS // 10_000
CSV = "x1,x2,y\n" + "".join(
    f"{i},{(i * 7) % 5},{2 * i - (i * 7) % 5 + 1 + (0.01 if i % 2 else -0.01)}\n"
    for i in range(1, 21)
)
RESULT = {  # what ml.linear_regression would return for CSV (a node computes nothing here)
    "coefficients": [2.0, -1.0],
    "intercept": 1.0,
    "r2": 0.9999,
    "mse": 0.0001,
    "n_samples": 20,
    "feature_names": ["x1", "x2"],
    "target": "y",
}
OCTET = {"content-type": "application/octet-stream"}


def result_bytes(task_id: str) -> bytes:
    """A valid linear-regression-shaped result, distinct per task as real outputs are."""
    jitter = (int.from_bytes(task_id.encode()[-6:], "big") % 1_000_000) * 1e-12
    return json.dumps({**RESULT, "mse": RESULT["mse"] + jitter}).encode()


@dataclass
class SimNode:
    wallet: Wallet
    client: httpx.AsyncClient
    running: set[str] = field(default_factory=set)


@dataclass
class SimClient:
    wallet: Wallet
    client: httpx.AsyncClient
    data_sha: str = ""


@dataclass
class Phase:
    name: str
    target: int
    lat: Latencies = field(default_factory=Latencies)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    completed: int = 0
    paid_tasks: int = 0
    paid: int = 0
    empty_polls: int = 0
    t0: float = 0.0
    t_last: float = 0.0

    def accepted(self, paid: int) -> None:
        self.completed += 1
        if paid > 0:
            self.paid_tasks += 1
            self.paid += paid
        self.t_last = time.perf_counter()
        if self.completed >= self.target:
            self.done.set()

    def figures(self) -> dict[str, Any]:
        wall = max(self.t_last - self.t0, 1e-9) if self.completed else 0.0
        return {
            "tasks": self.completed,
            "target": self.target,
            "complete": self.completed >= self.target,
            "wall_s": round(wall, 3),
            "tasks_per_s": round(self.completed / wall, 1) if wall else 0.0,
            "empty_polls": self.empty_polls,
        }


class Failed(Exception):
    pass


async def call(
    lat: Latencies,
    op: str,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    expect: int = 200,
    retries: int = 2,
    record: bool = True,
    **kw: Any,
) -> tuple[Any, float]:
    """One request, timed; retried on transport errors and 5xx (bounded)."""
    for attempt in range(retries + 1):
        start = time.perf_counter()
        try:
            response = await client.request(method, path, **kw)
        except httpx.TransportError as exc:
            if attempt == retries:
                lat.error(op)
                raise Failed(f"{op}: {type(exc).__name__}: {exc}") from None
            lat.retry(op)
            await asyncio.sleep(0.05)
            continue
        elapsed = time.perf_counter() - start
        if response.status_code == expect:
            if record:
                lat.add(op, elapsed)
            return response.json(), elapsed
        if response.status_code < 500 or attempt == retries:
            lat.error(op)
            raise Failed(f"{op}: HTTP {response.status_code}: {response.text[:300]}")
        lat.retry(op)
        await asyncio.sleep(0.05)
    raise Failed(op)  # pragma: no cover - the loop always returns or raises


class DispatchBench:
    def __init__(self, args: argparse.Namespace, url: str) -> None:
        self.args = args
        self.url = url
        self.setup_lat = Latencies()
        self.hb_lat = Latencies()
        self.nodes: list[SimNode] = []
        self.clients: list[SimClient] = []
        self.submitted = 0
        self.faucet_calls = 0
        self.cancels = 0
        self.fatal: list[str] = []

    def _http(self, wallet: Wallet, connections: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            auth=make_auth(wallet, sdk_signer=self.args.sdk_signer),
            timeout=httpx.Timeout(60.0 + self.args.lease_wait),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def setup(self) -> None:
        a = self.args
        # Submission workers share one counter, so any client may submit every job: fund
        # each for all of them (two phases of --tasks jobs).
        jobs_per_client = 2 * a.tasks
        for _ in range(a.clients):
            w = Wallet.create()
            self.clients.append(SimClient(w, self._http(w, a.submit_concurrency + 1)))
        for _ in range(a.nodes):
            w = Wallet.create()
            self.nodes.append(SimNode(w, self._http(w, a.batch + 2)))

        async def prepare_client(c: SimClient) -> None:
            amount = jobs_per_client * MAX_PRICE
            await call(
                self.setup_lat, "faucet", c.client, "POST", "/v1/faucet", json={"amount": amount}
            )
            self.faucet_calls += 1
            blob, _ = await call(
                self.setup_lat, "upload", c.client, "POST", "/v1/blobs",
                content=CSV.encode(), headers=OCTET, expect=201,
            )  # fmt: skip
            c.data_sha = blob["sha256"]

        sem = asyncio.Semaphore(16)

        async def register(n: SimNode) -> None:
            body = {
                "name": f"bench-{n.wallet.address[2:10].lower()}",
                "hardware": {"cpu_cores": 2, "ram_bytes": 4 * 1024**3, "gpus": []},
                "price_per_unit": PRICE,
                "slots": a.batch,
                "workloads": [KIND],
                "version": "bench",
            }
            stake = {"amount": MIN_STAKE}
            async with sem:
                await call(
                    self.setup_lat, "register", n.client, "POST", "/v1/nodes/register", json=body
                )
                # Paid work needs the minimum stake (issue 3): mint it, then stake it.
                await call(self.setup_lat, "faucet", n.client, "POST", "/v1/faucet", json=stake)
                await call(self.setup_lat, "stake", n.client, "POST", "/v1/stake", json=stake)
                self.faucet_calls += 2  # two journal transactions: mint and stake

        await asyncio.gather(*(prepare_client(c) for c in self.clients))
        await asyncio.gather(*(register(n) for n in self.nodes))

    # -- clients --------------------------------------------------------------------------

    async def submit(self, n: int, lat: Latencies, deadline: float) -> tuple[int, float, float]:
        """Submit ``n`` jobs from the clients; returns (submitted, first start, last end)."""
        left = n
        first = math.inf
        last = 0.0
        count = 0

        async def worker(c: SimClient) -> None:
            nonlocal left, first, last, count
            body = {
                "kind": KIND,
                "params": {"target": "y"},
                "inputs": {"data": c.data_sha},
                "max_price": MAX_PRICE,
            }
            while left > 0 and time.monotonic() < deadline:
                left -= 1
                first = min(first, time.perf_counter())
                try:
                    job, _ = await call(
                        lat, "submit", c.client, "POST", "/v1/jobs", json=body, expect=201
                    )
                except Failed as exc:
                    self.fatal.append(str(exc))
                    return
                if job["units"] != 1 or job["escrowed"] != MAX_PRICE:
                    self.fatal.append(f"unexpected job cost: {job['units']} units")
                    return
                count += 1
                self.submitted += 1
                last = time.perf_counter()

        await asyncio.gather(
            *(worker(c) for c in self.clients for _ in range(self.args.submit_concurrency))
        )
        return count, first, last

    # -- nodes ----------------------------------------------------------------------------

    async def run_task(self, node: SimNode, task: dict[str, Any], phase: Phase) -> None:
        task_id = task["task_id"]
        node.running.add(task_id)
        try:
            report: dict[str, Any] = {"lease_id": task["lease_id"], "outcome": "succeeded"}
            if self.args.upload_results:  # what the agent does for results over 256 KiB
                blob, _ = await call(
                    phase.lat, "upload", node.client, "POST", "/v1/blobs",
                    content=result_bytes(task_id), headers=OCTET, expect=201,
                )  # fmt: skip
                report["output_sha256"] = blob["sha256"]
            else:  # what the agent does for small results: inline in the report
                report["output"] = json.loads(result_bytes(task_id))
            reply, _ = await call(
                phase.lat, "report", node.client, "POST", f"/v1/tasks/{task_id}/report", json=report
            )
            if reply["state"] == "succeeded":
                phase.accepted(int(reply["paid"]))
            else:
                self.fatal.append(f"task {task_id} ended {reply['state']}")
        except Failed as exc:
            self.fatal.append(str(exc))
        finally:
            node.running.discard(task_id)

    async def node_loop(self, node: SimNode, phase: Phase, deadline: float) -> None:
        body_base = {"max_tasks": self.args.batch}
        while not phase.done.is_set() and not self.fatal:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            body = {**body_base, "wait_s": round(min(self.args.lease_wait, remaining), 3)}
            try:
                lease, elapsed = await call(
                    phase.lat,
                    "lease",
                    node.client,
                    "POST",
                    "/v1/tasks/lease",
                    json=body,
                    record=False,
                )
            except Failed as exc:
                self.fatal.append(str(exc))
                return
            tasks = lease["tasks"]
            if not tasks:
                phase.empty_polls += 1
                continue
            # Only leases that returned work count: an empty long-poll measures waiting.
            phase.lat.add("lease", elapsed)
            await asyncio.gather(*(self.run_task(node, t, phase) for t in tasks))

    async def heartbeat_loop(self, node: SimNode, stop: asyncio.Event) -> None:
        while not stop.is_set():
            body = {
                "running": sorted(node.running),
                "free_slots": max(0, self.args.batch - len(node.running)),
            }
            try:
                reply, _ = await call(
                    self.hb_lat, "heartbeat", node.client, "POST", "/v1/nodes/heartbeat", json=body
                )
                self.cancels += len(reply["cancel"])
            except Failed as exc:
                self.fatal.append(str(exc))
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.args.heartbeat_s)

    async def drain(self, phase: Phase, deadline: float) -> None:
        loops = [asyncio.create_task(self.node_loop(n, phase, deadline)) for n in self.nodes]
        try:
            await asyncio.wait(loops, timeout=max(0.0, deadline - time.monotonic()) + 120.0)
        finally:
            phase.done.set()
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def close(self) -> None:
        for x in (*self.nodes, *self.clients):
            await x.client.aclose()


async def run_backend(
    args: argparse.Namespace, backend: str, url: str, server: ServerProcess
) -> dict[str, Any]:
    bench = DispatchBench(args, url)
    try:
        return await _run_phases(args, backend, bench, server)
    finally:
        await bench.close()


async def _run_phases(
    args: argparse.Namespace, backend: str, bench: DispatchBench, server: ServerProcess
) -> dict[str, Any]:
    t_start = time.monotonic()
    out: dict[str, Any] = {"backend": backend}
    await bench.setup()
    stop_beats = asyncio.Event()
    beats = [asyncio.create_task(bench.heartbeat_loop(n, stop_beats)) for n in bench.nodes]
    try:
        # Phase 1: end-to-end, submissions and dispatch together.
        e2e_deadline = t_start + args.max_seconds / 2
        e2e = Phase("end-to-end", target=args.tasks)
        cpu0, own0, w0 = server.cpu_seconds(), time.process_time(), time.perf_counter()
        draining = asyncio.create_task(bench.drain(e2e, e2e_deadline))
        n, first, _ = await bench.submit(args.tasks, e2e.lat, e2e_deadline)
        e2e.target = n
        if e2e.completed >= n:
            e2e.done.set()
        e2e.t0 = first
        await draining
        w = time.perf_counter() - w0
        out["end_to_end"] = {**e2e.figures(), **_cpu(server, cpu0, own0, w, e2e.completed)}
        out["end_to_end_tasks_per_s"] = out["end_to_end"]["tasks_per_s"]

        # Phase 2: fill the queue (submissions alone), then drain it (dispatch alone).
        deadline = t_start + args.max_seconds
        fill = Latencies()
        cpu0, own0, w0 = server.cpu_seconds(), time.process_time(), time.perf_counter()
        n2, first, last = await bench.submit(args.tasks, fill, deadline)
        w = time.perf_counter() - w0
        wall = max(last - first, 1e-9) if n2 else 0.0
        out["submit"] = {
            "jobs": n2,
            "wall_s": round(wall, 3),
            "jobs_per_s": round(n2 / wall, 1) if wall else 0.0,
            **_cpu(server, cpu0, own0, w, n2),
        }
        out["submit_jobs_per_s"] = out["submit"]["jobs_per_s"]
        queued = bench.submitted - e2e.completed
        disp = Phase("dispatch-only", target=queued)
        cpu0, own0, w0 = server.cpu_seconds(), time.process_time(), time.perf_counter()
        disp.t0 = time.perf_counter()
        if queued > 0:
            await bench.drain(disp, max(deadline, time.monotonic() + 5.0))
        w = time.perf_counter() - w0
        out["dispatch"] = {**disp.figures(), **_cpu(server, cpu0, own0, w, disp.completed)}
        out["dispatch_tasks_per_s"] = out["dispatch"]["tasks_per_s"]
    finally:
        stop_beats.set()
        await asyncio.gather(*beats, return_exceptions=True)

    lat = {
        "submit": fill.summary("submit"),
        "submit_during_e2e": e2e.lat.summary("submit"),
        "lease": disp.lat.summary("lease"),
        "upload": disp.lat.summary("upload"),
        "report": disp.lat.summary("report"),
        "lease_during_e2e": e2e.lat.summary("lease"),
        "upload_during_e2e": e2e.lat.summary("upload"),
        "report_during_e2e": e2e.lat.summary("report"),
        "heartbeat": bench.hb_lat.summary("heartbeat"),
    }
    out["latency_ms"] = lat
    for op in ("lease", "report", "submit", "upload"):
        out[f"{op}_p50_ms"] = lat[op]["p50_ms"]
        out[f"{op}_p99_ms"] = lat[op]["p99_ms"]
    completed = e2e.completed + disp.completed
    paid_tasks = e2e.paid_tasks + disp.paid_tasks
    out["completed_tasks"] = completed
    out["paid_tasks"] = paid_tasks
    out["submitted_jobs"] = bench.submitted
    out["heartbeat_cancels"] = bench.cancels
    out.update(await verify(bench, completed, paid_tasks, e2e.paid + disp.paid))
    out["boinc_ratio"] = round(out["end_to_end_tasks_per_s"] / BOINC_TASKS_PER_S, 2)
    out["dispatch_boinc_ratio"] = round(out["dispatch_tasks_per_s"] / BOINC_TASKS_PER_S, 2)
    if backend == "sqlite":
        out["target_ratio"] = round(out["end_to_end_tasks_per_s"] / TARGET_SQLITE_TASKS_PER_S, 3)
    out["errors"] = bench.fatal[:5]
    out["setup_errors"] = bench.setup_lat.errors
    return out


def _cpu(
    server: ServerProcess, cpu0: float, own0: float, wall: float, count: int
) -> dict[str, float]:
    """CPU use over a phase; CPU per item is the figure least disturbed by a busy machine."""
    wall = max(wall, 1e-9)
    used = server.cpu_seconds() - cpu0
    return {
        "coordinator_cpu_pct": round(100 * used / wall),
        "loadgen_cpu_pct": round(100 * (time.process_time() - own0) / wall),
        "coordinator_cpu_ms_per_item": round(1000 * used / count, 2) if count else 0.0,
    }


async def verify(
    bench: DispatchBench, completed: int, paid_tasks: int, paid: int
) -> dict[str, Any]:
    """Audit the ledger and the providers' wallets against what the reports said."""
    lat = Latencies()
    async with httpx.AsyncClient(base_url=bench.url, timeout=120.0) as anon:
        check, _ = await call(lat, "check", anon, "GET", "/v1/ledger/check")
    earnings = 0
    for n in bench.nodes:
        bal, _ = await call(lat, "balance", n.client, "GET", "/v1/balance")
        earnings += int(bal["available"]) + int(bal["in_escrow"])
    # faucet_calls counts every setup transaction (client mints, node mints and stakes).
    expected_tx = bench.faucet_calls + bench.submitted + completed  # one settle(+refund) each
    expected_earnings = completed * (PRICE - FEE)
    verified = (
        bool(check["ok"])
        and check["total"] == 0
        and paid_tasks == completed
        and paid == completed * PRICE
        and earnings == expected_earnings
        and check["transactions"] == expected_tx
        and not bench.fatal
    )
    return {
        "ledger_ok": bool(check["ok"]),
        "ledger_total": check["total"],
        "ledger_transactions": check["transactions"],
        "expected_transactions": expected_tx,
        "ledger_problems": check["problems"][:5],
        "provider_earnings": earnings,
        "expected_provider_earnings": expected_earnings,
        "verified": verified,
    }


def print_backend(r: dict[str, Any], args: argparse.Namespace) -> None:
    e, d, s, lat = r["end_to_end"], r["dispatch"], r["submit"], r["latency_ms"]
    b = r["backend"]
    print(f"\n== {b}: {args.nodes} nodes, {args.clients} clients, lease max_tasks={args.batch} ==")
    print(
        f"  end-to-end     {e['tasks']:>6} tasks in {e['wall_s']:>7.2f} s = {e['tasks_per_s']:>7.1f} tasks/s"
        f"   (first submit -> last accepted report; coordinator CPU {e['coordinator_cpu_pct']}%"
        f" = {e['coordinator_cpu_ms_per_item']} ms/task, load generator {e['loadgen_cpu_pct']}%)"
    )
    print(
        f"  dispatch-only  {d['tasks']:>6} tasks in {d['wall_s']:>7.2f} s = {d['tasks_per_s']:>7.1f} tasks/s"
        f"   (lease+upload+report, pre-filled queue; coordinator CPU {d['coordinator_cpu_pct']}%"
        f" = {d['coordinator_cpu_ms_per_item']} ms/task, load generator {d['loadgen_cpu_pct']}%)"
    )
    print(
        f"  submit-only    {s['jobs']:>6} jobs  in {s['wall_s']:>7.2f} s = {s['jobs_per_s']:>7.1f} jobs/s"
        f"    (coordinator CPU {s['coordinator_cpu_pct']}% = {s['coordinator_cpu_ms_per_item']} ms/job,"
        f" load generator {s['loadgen_cpu_pct']}%)"
    )
    for name, ph in (("end-to-end", e), ("dispatch-only", d)):
        if not ph["complete"]:
            print(f"  NOTE: {name} hit --max-seconds: {ph['tasks']} of {ph['target']} tasks done")
    print(f"  {'latency (ms)':<30}{'p50':>9}{'p99':>9}{'count':>8}{'errors':>8}{'retries':>8}")
    rows = [
        ("submit (queue filling)", "submit"),
        ("lease (dispatch-only)", "lease"),
        ("upload result (dispatch-only)", "upload"),
        ("report (dispatch-only)", "report"),
        ("submit (end-to-end)", "submit_during_e2e"),
        ("lease (end-to-end)", "lease_during_e2e"),
        ("report (end-to-end)", "report_during_e2e"),
        ("heartbeat", "heartbeat"),
    ]
    for label, key in rows:
        x = lat[key]
        print(
            f"  {label:<30}{fmt(x['p50_ms'], 2):>9}{fmt(x['p99_ms'], 2):>9}"
            f"{x['count']:>8}{x['errors']:>8}{x['retries']:>8}"
        )
    print(
        f"  ledger check: ok={r['ledger_ok']} total={r['ledger_total']} "
        f"transactions={r['ledger_transactions']} (expected {r['expected_transactions']})"
    )
    print(
        f"  paid tasks {r['paid_tasks']} / completed tasks {r['completed_tasks']} "
        f"(submitted {r['submitted_jobs']}); provider earnings {r['provider_earnings']} "
        f"(expected {r['expected_provider_earnings']}) -> verified={r['verified']}"
    )
    for err in r["errors"]:
        print(f"  ERROR: {err[:400]}")
    if r["coordinator_log_lines"]:
        print(f"  coordinator log: {r['coordinator_log_lines']} line(s); last ones:")
        for line in r["coordinator_log_tail"]:
            print(f"    {line[:400]}")


def print_summary(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n== summary ({args.nodes} nodes, lease max_tasks={args.batch}, {args.tasks} tasks/phase) =="
    )
    head = (
        f"{'backend':<10}{'e2e tasks/s':>12}{'dispatch tasks/s':>17}{'submit jobs/s':>14}"
        f"{'lease p50/p99':>16}{'report p50/p99':>16}{'submit p50/p99':>16}{'verified':>9}"
    )
    print(head)
    for r in results:

        def pair(op: str, r: dict[str, Any] = r) -> str:
            return f"{fmt(r[f'{op}_p50_ms'])}/{fmt(r[f'{op}_p99_ms'])}"

        print(
            f"{r['backend']:<10}{r['end_to_end_tasks_per_s']:>12.1f}{r['dispatch_tasks_per_s']:>17.1f}"
            f"{r['submit_jobs_per_s']:>14.1f}{pair('lease'):>16}{pair('report'):>16}"
            f"{pair('submit'):>16}{r['verified']!s:>9}"
        )
    for r in results:
        line = (
            f"{r['backend']}: end-to-end {r['end_to_end_tasks_per_s']:.1f} tasks/s = "
            f"{r['boinc_ratio']:.2f}x BOINC's ~{BOINC_TASKS_PER_S:.0f} tasks/s single server"
            f" (dispatch-only {r['dispatch_boinc_ratio']:.2f}x)"
        )
        if "target_ratio" in r:
            line += (
                f"; {100 * r['target_ratio']:.1f}% of the {TARGET_SQLITE_TASKS_PER_S:.0f} tasks/s"
                " SQLite target"
            )
        print(line)


async def amain(args: argparse.Namespace) -> int:
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results: list[dict[str, Any]] = []
    print(
        f"dispatch benchmark: {args.nodes} nodes, {args.clients} clients, {args.tasks} tasks per "
        f"phase, lease max_tasks={args.batch}, lease wait_s={args.lease_wait}, heartbeat every "
        f"{args.heartbeat_s}s, signer={'sdk' if args.sdk_signer else 'fast'}; server: {server_info()}"
    )
    code = 0
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"qm-bench-{backend}-") as home:
            if backend == "postgres":
                why = pg_available(args.pg_admin_url)
                if why:
                    print(f"\n== postgres: skipped, server unavailable: {why} ==")
                    code = code or (2 if args.backend == "postgres" else 0)
                    continue
            try:
                if backend == "postgres":
                    with pg_database(args.pg_admin_url) as db_url:
                        r = await _run_one(args, backend, Path(home), db_url)
                else:
                    r = await _run_one(args, backend, Path(home), None)
            except (Failed, RuntimeError, httpx.HTTPError) as exc:
                print(f"\n== {backend}: FAILED: {type(exc).__name__}: {exc}")
                code = 1
                continue
        results.append(r)
        print_backend(r, args)
        if not r["verified"]:
            code = 1
    if results:
        print_summary(results, args)
    if args.json:
        print(json.dumps({"benchmark": "dispatch", "args": vars(args), "results": results}))
    return code


async def _run_one(
    args: argparse.Namespace, backend: str, home: Path, db_url: str | None
) -> dict[str, Any]:
    spec = coordinator_spec(home, db_url, lease_s=600.0, fee_bps=FEE_BPS)
    server = ServerProcess(spec)
    with server:
        result = await run_backend(args, backend, server.url, server)
    # The coordinator logs at WARNING: anything it said is worth seeing (sweeper errors…).
    lines = [ln for ln in server.last_log.splitlines() if ln.strip()]
    result["coordinator_log_lines"] = len(lines)
    result["coordinator_log_tail"] = lines[-5:]
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--tasks", type=int, default=2000, help="tasks per phase (default 2000)")
    p.add_argument("--nodes", type=int, default=50, help="simulated nodes (default 50)")
    p.add_argument("--clients", type=int, default=4, help="simulated clients (default 4)")
    p.add_argument(
        "--batch", type=int, default=4,
        help="max_tasks per lease request, and the nodes' slots (default 4)",
    )  # fmt: skip
    p.add_argument("--submit-concurrency", type=int, default=4, help="jobs in flight per client")
    p.add_argument(
        "--lease-wait", type=float, default=2.0, help="lease long-poll wait_s (default 2)"
    )
    p.add_argument(
        "--heartbeat-s", type=float, default=5.0, help="node heartbeat interval (default 5)"
    )
    p.add_argument(
        "--max-seconds", type=float, default=120.0,
        help="time budget per backend: the end-to-end phase gets half, fill + dispatch the rest",
    )  # fmt: skip
    p.add_argument(
        "--sdk-signer", action="store_true", help="sign with the SDK's SignedAuth (slower)"
    )
    p.add_argument(
        "--pg-admin-url", default=None, help="PostgreSQL admin URL (default: local server)"
    )
    p.add_argument(
        "--upload-results",
        action="store_true",
        help="upload each result as a blob before reporting (the agent's path for results "
        "over 256 KiB) instead of sending it inline in the report (its path for small ones)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON line with every figure")
    args = p.parse_args(argv)
    if args.pg_admin_url is None:
        from _common import PG_ADMIN_URL

        args.pg_admin_url = PG_ADMIN_URL
    if min(args.tasks, args.nodes, args.clients, args.batch, args.submit_concurrency) < 1:
        p.error("--tasks, --nodes, --clients, --batch and --submit-concurrency must be >= 1")
    if not 1 <= args.batch <= 64:
        p.error("--batch must be 1..64 (the coordinator's max_tasks limit)")
    return args


def main(argv: list[str] | None = None) -> int:
    speed_up_httpx()
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
