"""Smoke tests for benchmarks/: each one runs end to end with tiny sizes.

They start real coordinator processes and assert that the scripts exit 0, print the
figures they promise and that the money checks hold — never on timing numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.slow


def run(script: str, *args: str, timeout: float = 150.0) -> tuple[str, dict[str, Any]]:
    """Run a benchmark script; returns its stdout and its final JSON line."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    lines = proc.stdout.strip().splitlines()
    return proc.stdout, json.loads(lines[-1])


def check_dispatch(out: str, data: dict[str, Any], backend: str, tasks: int) -> None:
    for words in ("end-to-end", "dispatch-only", "submit-only", "tasks/s", "p50", "p99"):
        assert words in out
    assert "BOINC" in out
    assert "lease max_tasks=2" in out  # the batch size used is reported
    (result,) = data["results"]
    assert result["backend"] == backend
    for key in (
        "end_to_end_tasks_per_s",
        "dispatch_tasks_per_s",
        "submit_jobs_per_s",
        "lease_p50_ms",
        "lease_p99_ms",
        "report_p50_ms",
        "report_p99_ms",
        "submit_p50_ms",
        "submit_p99_ms",
        "boinc_ratio",
    ):
        assert key in result, key
    # Every task went the whole way and was paid exactly once through the ledger.
    assert result["completed_tasks"] == 2 * tasks
    assert result["paid_tasks"] == result["completed_tasks"]
    assert result["ledger_ok"] is True
    assert result["ledger_total"] == 0
    assert result["ledger_transactions"] == result["expected_transactions"]
    assert result["provider_earnings"] == result["expected_provider_earnings"]
    assert result["verified"] is True


def test_dispatch_sqlite_smoke() -> None:
    args = (
        "--tasks",
        "20",
        "--nodes",
        "4",
        "--clients",
        "2",
        "--batch",
        "2",
        "--lease-wait",
        "0.5",
    )
    out, data = run("dispatch.py", *args, "--backend", "sqlite", "--max-seconds", "90")
    check_dispatch(out, data, "sqlite", 20)
    assert "SQLite target" in out
    assert "target_ratio" in data["results"][0]


@pytest.mark.postgres
def test_dispatch_postgres_smoke(pg_server: str) -> None:
    args = (
        "--tasks",
        "20",
        "--nodes",
        "4",
        "--clients",
        "2",
        "--batch",
        "2",
        "--lease-wait",
        "0.5",
    )
    out, data = run(
        "dispatch.py", *args, "--backend", "postgres", "--pg-admin-url", pg_server,
        "--max-seconds", "90",
    )  # fmt: skip
    check_dispatch(out, data, "postgres", 20)


def test_heartbeats_smoke() -> None:
    out, data = run("heartbeats.py", "--nodes", "5", "--seconds", "1", "--warmup", "0.3")
    for words in ("coordinator /v1/nodes/heartbeat", "bare FastAPI /beat", "beats/s", "p50", "p99"):
        assert words in out
    assert "coordinator/bare" in out
    for key in ("coordinator_heartbeats_per_s", "bare_heartbeats_per_s", "ratio", "cpu_ratio"):
        assert key in data, key
    for side in ("coordinator", "bare"):
        assert {"per_s", "p50_ms", "p99_ms", "server_cpu_pct", "errors"} <= set(data[side])
        assert data[side]["errors"] == 0


def test_heartbeats_bare_verifies_with_httpx_smoke() -> None:
    out, data = run(
        "heartbeats.py", "--nodes", "3", "--seconds", "1", "--warmup", "0.3",
        "--bare-verifies", "--client", "httpx", "--concurrency", "4",
    )  # fmt: skip
    assert "bare FastAPI + verify /beat" in out
    assert data["bare_verifies"] is True
    assert data["bare"]["errors"] == 0  # the bare app accepted every signature


def test_fast_signer_matches_the_coordinator_check() -> None:
    """The load generator's signer produces headers the coordinator's verifier accepts."""
    code = (
        "import httpx, sys; sys.path.insert(0, 'benchmarks');"
        "from _common import FastSignedAuth;"
        "from quackmesh.core.wallet import Wallet;"
        "from quackmesh.core.signing import NonceCache, verify_request;"
        "w = Wallet.create();"
        "req = httpx.Request('POST', 'http://h/v1/x?a=1', content=b'{}');"
        "signed = next(FastSignedAuth(w).auth_flow(req));"
        "got = verify_request(signed.headers, method='POST', path='/v1/x?a=1', body=b'{}',"
        " window=60, nonces=NonceCache(120));"
        "assert got == w.address, (got, w.address); print('ok')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"
