"""Shared plumbing for the benchmarks: server processes, a fast request signer, statistics.

The coordinator (or the bare comparison app) always runs in its own process, started with
``python benchmarks/_common.py serve SPEC`` and served by uvicorn exactly as
``quackmesh up`` would (``log_level="warning"``, no access log), so the load generator
never shares the server's GIL. Everything here is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BOINC_TASKS_PER_S",
    "PG_ADMIN_URL",
    "FastSignedAuth",
    "Latencies",
    "RawHttp",
    "ServerProcess",
    "make_auth",
    "make_signer",
    "percentile",
    "pg_database",
    "server_info",
    "speed_up_httpx",
]

BOINC_TASKS_PER_S = 100.0
"""BOINC's published single-server figure: on the order of 100 tasks dispatched per
second (roughly 8.6 million tasks a day) from one server machine."""

PG_ADMIN_URL = os.environ.get(
    "QUACKMESH_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
HERE = Path(__file__).resolve().parent

# Rate limits are per signing address; the benchmark's clients submit far faster than a
# person would, so lift them well out of the way (they are not what is being measured).
NO_RATE_LIMITS: dict[str, Any] = {
    "rate_submit_per_s": 1_000_000.0,
    "rate_submit_burst": 1_000_000,
    "rate_read_per_s": 1_000_000.0,
    "rate_read_burst": 1_000_000,
}


# --- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class Latencies:
    """Latencies in seconds per operation name, and error counts."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)

    def add(self, op: str, seconds: float) -> None:
        self.samples.setdefault(op, []).append(seconds)

    def error(self, op: str) -> None:
        self.errors[op] = self.errors.get(op, 0) + 1

    def retry(self, op: str) -> None:
        """A request that failed in transit and was sent again (e.g. a keep-alive race)."""
        self.retries[op] = self.retries.get(op, 0) + 1

    def merge(self, other: Latencies) -> None:
        for op, values in other.samples.items():
            self.samples.setdefault(op, []).extend(values)
        for op, count in other.errors.items():
            self.errors[op] = self.errors.get(op, 0) + count
        for op, count in other.retries.items():
            self.retries[op] = self.retries.get(op, 0) + count

    def ms(self, op: str, q: float) -> float | None:
        """Milliseconds, or ``None`` (JSON ``null``) when there are no samples."""
        values = self.samples.get(op, [])
        return round(percentile(values, q) * 1000.0, 2) if values else None

    def summary(self, op: str) -> dict[str, Any]:
        return {
            "count": len(self.samples.get(op, [])),
            "p50_ms": self.ms(op, 50),
            "p99_ms": self.ms(op, 99),
            "errors": self.errors.get(op, 0),
            "retries": self.retries.get(op, 0),
        }


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def speed_up_httpx() -> None:
    """Make httpcore's per-request ``import sniffio`` fail fast when sniffio is absent.

    httpcore 1.0 calls ``current_async_library()`` several times per async request, and
    that function tries ``import sniffio`` each time; anyio 4.16 no longer pulls sniffio
    in, so every try walks ``sys.path`` (~15 % of a load generator's CPU here). A ``None``
    entry in ``sys.modules`` turns that into an immediate ImportError: same behaviour.
    """
    try:
        import sniffio  # noqa: F401
    except ImportError:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


# --- signing ----------------------------------------------------------------------------


class FastSignedAuth(httpx.Auth):
    """Signs exactly like ``quackmesh.sdk.client.SignedAuth``, at about a sixth of the cost.

    The SDK's ``sign_request`` re-derives the address from the private key and goes through
    ``eth_account`` for every request (~340 µs here); this signer caches the address and
    signs the same EIP-191 digest with coincurve directly (~55 µs), so a single load
    process can push several times more requests. The coordinator verifies these headers
    with its normal code path: a wrong signature would be a 401 and fail the benchmark.
    """

    requires_request_body = True

    def __init__(self, wallet: Any) -> None:
        import coincurve

        self.address = wallet.address
        self._key = coincurve.PrivateKey(wallet.private_key)

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        from eth_hash.auto import keccak

        from quackmesh.core.signing import SignedHeaders, canonical_request

        ts = int(time.time())
        nonce = secrets.token_urlsafe(18)
        text = canonical_request(
            method=method,
            path=path,
            body_sha256=hashlib.sha256(body).hexdigest(),
            timestamp=ts,
            nonce=nonce,
        ).encode()
        digest = keccak(b"\x19Ethereum Signed Message:\n" + str(len(text)).encode() + text)
        raw = self._key.sign_recoverable(digest, hasher=None)  # r || s || recovery id
        signature = "0x" + (raw[:64] + bytes([raw[64] + 27])).hex()
        return SignedHeaders(self.address, ts, nonce, signature).as_dict()

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers.update(
            self.headers(request.method, request.url.raw_path.decode(), request.content)
        )
        yield request


def make_auth(wallet: Any, *, sdk_signer: bool) -> httpx.Auth:
    """The SDK's own ``SignedAuth`` with ``sdk_signer``, else the equivalent fast signer."""
    if sdk_signer:
        from quackmesh.sdk.client import SignedAuth

        return SignedAuth(wallet)
    return FastSignedAuth(wallet)


def make_signer(wallet: Any, *, sdk_signer: bool) -> Callable[[str, str, bytes], dict[str, str]]:
    """``sign(method, path, body) -> headers`` for hand-built requests (see RawHttp)."""
    if sdk_signer:
        return lambda method, path, body: wallet.sign_request(
            method=method, path=path, body=body
        ).as_dict()
    return FastSignedAuth(wallet).headers


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client: one connection, one request at a time.

    httpx costs ~1.5-2.5 ms of client CPU per request here, more than the server spends on
    a heartbeat, so on a 2-core machine an httpx load generator cannot saturate one
    uvicorn process. This client writes the request bytes itself and reads a
    ``Content-Length`` (or chunked) response: tens of microseconds per request.
    """

    def __init__(self, url: str) -> None:
        parsed = httpx.URL(url)
        self.host = parsed.host
        self.port = parsed.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """Send one request; returns (status, body). Any error closes the connection."""
        try:
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None
            lines = [
                f"{method} {path} HTTP/1.1",
                f"host: {self.host}:{self.port}",
                "content-type: application/json",
                f"content-length: {len(body)}",
                *(f"{k}: {v}" for k, v in headers.items()),
            ]
            self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status_line, _, rest = head.partition("\r\n")
            status = int(status_line.split(" ", 2)[1])
            fields = {}
            for line in rest.split("\r\n"):
                name, sep, value = line.partition(":")
                if sep:
                    fields[name.strip().lower()] = value.strip().lower()
            if fields.get("transfer-encoding") == "chunked":
                data = b""
                while size := int((await self._reader.readuntil(b"\r\n")).strip(), 16):
                    data += await self._reader.readexactly(size + 2)
                    data = data[:-2]
                await self._reader.readuntil(b"\r\n")
            else:
                data = await self._reader.readexactly(int(fields.get("content-length", "0")))
            if fields.get("connection") == "close":
                await self.close()
            return status, data
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# --- server processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_info() -> str:
    """Which HTTP parser and event loop uvicorn picks on this machine (``auto``)."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"uvicorn (http={http}, loop={loop}), 1 worker process"


class ServerProcess:
    """A uvicorn server in a child process; a context manager that waits for /healthz.

    ``spec`` is ``{"app": "coordinator", "settings": {...}}`` or
    ``{"app": "bare", "verify": bool}``.
    """

    def __init__(self, spec: dict[str, Any], *, startup_s: float = 60.0) -> None:
        self.spec = dict(spec)
        self.port = free_port()
        self.spec["port"] = self.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_s = startup_s
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="qm-bench-server-", suffix=".log", delete=False
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.last_log = ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        # QM_BENCH_SERVE_SCRIPT: another launcher with the same "serve SPEC" interface, e.g.
        # one that patches the coordinator before serving it, to A/B a change (README).
        script = os.environ.get("QM_BENCH_SERVE_SCRIPT") or str(HERE / "_common.py")
        cmd = [sys.executable, script, "serve", json.dumps(self.spec)]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer /healthz in {self.startup_s}s:\n{self.log()}")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used so far."""
        import psutil

        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def log(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of the server's output (its warnings and errors)."""
        with contextlib.suppress(OSError):
            return Path(self._log.name).read_text(errors="replace")[-tail:]
        return self.last_log[-tail:]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown (runs lifespan)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._log.close()
        self.last_log = self.log()  # kept for a report after the file is gone
        if os.environ.get("QM_BENCH_KEEP_LOG"):
            print(f"server log kept: {self._log.name}", file=sys.stderr)
            return
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


def coordinator_spec(home: Path, database_url: str | None, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "home": str(home),
        "database_url": database_url,
        "dev_mode": True,
        "access_log": False,
        "log_level": "WARNING",
        **NO_RATE_LIMITS,
        **overrides,
    }
    return {"app": "coordinator", "settings": settings}


@contextlib.contextmanager
def pg_database(admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """A fresh database on the real PostgreSQL server, dropped afterwards."""
    import psycopg

    name = f"qm_bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_available(admin_url: str = PG_ADMIN_URL) -> str | None:
    """``None`` when the PostgreSQL server answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(admin_url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --- the served apps (run in the child process) -----------------------------------------


class BeatIn(BaseModel):
    """A heartbeat-like body (the shape of ``quackmesh.core.schemas.HeartbeatCreate``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    running: list[str] = Field(default_factory=list, max_length=256)
    free_slots: int = Field(ge=0, le=256)
    draining: bool = False


class BeatOut(BaseModel):
    server_time: float
    status: str
    cancel: list[str]


def make_bare_app(*, verify: bool) -> Any:
    """The comparison app: one ``POST /beat`` that parses a heartbeat-like body.

    With ``verify`` it also checks the request signature with the coordinator's own
    ``verify_request`` (EIP-191 recovery, timestamp window, nonce cache), as the
    coordinator's heartbeat endpoint does.
    """
    from fastapi import FastAPI, Request

    from quackmesh.core.signing import NonceCache, verify_request

    app = FastAPI(title="bare heartbeat baseline")
    nonces = NonceCache(ttl=120)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def beat(body: BeatIn, request: Request) -> BeatOut:
        if verify:
            raw = request.scope.get("raw_path") or request.url.path.encode()
            verify_request(
                request.headers,
                method=request.method,
                path=raw.decode("latin-1"),
                body=await request.body(),
                window=60,
                nonces=nonces,
            )
        return BeatOut(server_time=time.time(), status="online", cancel=[])

    # Annotations are strings here (PEP 563); hand FastAPI the real classes.
    beat.__annotations__ = {"body": BeatIn, "request": Request, "return": BeatOut}
    app.post("/beat", response_model=BeatOut)(beat)
    return app


def _serve(spec: dict[str, Any]) -> None:
    import uvicorn

    if spec["app"] == "coordinator":
        from quackmesh.coordinator import Settings, create_app

        app = create_app(Settings(**spec["settings"]))
    elif spec["app"] == "bare":
        app = make_bare_app(verify=bool(spec.get("verify")))
    else:
        raise SystemExit(f"unknown app {spec['app']!r}")
    uvicorn.run(app, host="127.0.0.1", port=spec["port"], log_level="warning", access_log=False)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        raise SystemExit("usage: _common.py serve SPEC_JSON")
    _serve(json.loads(sys.argv[2]))
