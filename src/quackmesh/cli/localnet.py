"""A local QuackMesh network: the coordinator under uvicorn plus provider-node subprocesses.

Used by ``quackmesh up`` and ``quackmesh demo`` (and by tests and benchmarks that want
real nodes): nodes are real ``quackmesh node start`` processes talking HTTP to the
coordinator on loopback.
"""

from __future__ import annotations

import gc
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn

from quackmesh.coordinator import Settings, create_app
from quackmesh.coordinator.auth.sessions import write_dev_key
from quackmesh.core.money import format_duck
from quackmesh.core.wallet import Wallet
from quackmesh.dashboard import install as install_dashboard

if TYPE_CHECKING:
    from quackmesh.coordinator.chain.link import ChainLink

__all__ = ["LocalNetwork", "free_port"]


# How the coordinator is served. permessage-deflate is off: the event stream sends the
# same frame to every subscriber, and compressing it once per connection was over half
# of the fan-out's CPU (benchmarks/events.py); event frames are small JSON anyway. The
# sans-I/O websockets protocol costs 30 µs per frame sent against 39 for the legacy one.
SERVER_OPTIONS: dict[str, Any] = {
    "log_level": "warning",
    "access_log": False,
    "lifespan": "on",
    "ws_per_message_deflate": False,
    "ws": "websockets-sansio",
}


def freeze_startup_objects() -> None:
    """For a process that serves one coordinator until it exits: move everything built at
    start-up out of the garbage collector's sight, so full collections (which pause every
    request and the event fan-out) scan only what requests allocate. Measured with
    benchmarks/events.py: a 1.1 s pause became 0.2 s. Process-wide, so it belongs to the
    serving edge, not to ``create_app`` (tests build many apps in one process, and frozen
    objects are never freed)."""
    gc.collect()
    gc.freeze()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalNetwork:
    def __init__(self, settings: Settings, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.settings = settings
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.node_wallets: list[Wallet] = []
        self._password = secrets.token_urlsafe(16)
        self.chain: ChainLink | None = None  # set by server_config() in chain mode (issue 7)

    def server_config(self) -> uvicorn.Config:
        """The app to serve; in chain mode this connects to (or deploys) the chain."""
        app = create_app(self.settings)
        self.chain = app.state.runtime.chain
        install_dashboard(app)  # the web dashboard at / (an edge, mounted here, not in layer 4)
        return uvicorn.Config(app, host=self.host, port=self.port, **SERVER_OPTIONS)

    def start_coordinator_thread(self, timeout: float = 30.0) -> None:
        """Serve the coordinator from a background thread and wait until it answers."""
        self.server = uvicorn.Server(self.server_config())
        self._thread = threading.Thread(target=self.server.run, name="coordinator", daemon=True)
        self._thread.start()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"coordinator at {self.url} did not answer within {timeout}s")

    def start_nodes(
        self,
        count: int,
        *,
        price: int,
        slots: int = 1,
        heartbeat_s: float = 2.0,
        prefix: list[str] | None = None,
        coordinator: str | None = None,
        stake: int | None = None,
        behaviours: list[str] | None = None,
        price_per_hour: int = 0,
        extra_args: list[str] | None = None,
        datasets: list[Path] | None = None,
    ) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` node subprocesses, each with a fresh wallet in home/nodes/.

        ``prefix`` wraps the command (e.g. ``ip netns exec NS`` to run it on another
        "host"); ``coordinator`` is the URL the node dials (default: this network's).
        Each node stakes ``stake`` (default: the coordinator's minimum), minted by the
        development faucet; ``behaviours`` gives node i a test behaviour (dev mode only);
        ``datasets`` gives node i its own dataset registry (see ``cli/fldata.py``).
        """
        stake = self.settings.min_stake if stake is None else stake
        wallet_dir = self.settings.home / "nodes"
        logs = self.settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "QUACKMESH_WALLET_PASSWORD": self._password,
            "QUACKMESH_HOME": str(self.settings.home),
        }
        start = len(self.nodes)
        started = []
        for i in range(start, start + count):
            wallet = Wallet.create()
            path = wallet.save(wallet_dir / f"node-{i}.json", self._password, kdf="pbkdf2")
            self.node_wallets.append(wallet)
            if self.settings.dev_mode:  # the dashboard's development sign-in offers it
                write_dev_key(self.settings, f"node-{i}", wallet.private_key)
            cmd = [
                *(prefix or []), sys.executable, "-m", "quackmesh", "node", "start",
                "--coordinator", coordinator or self.url, "--wallet", str(path),
                "--price", format_duck(price, symbol=False), "--slots", str(slots),
                "--name", f"demo-node-{i}", "--heartbeat", str(heartbeat_s),
                "--price-per-hour", format_duck(price_per_hour, symbol=False),
            ]  # fmt: skip
            if stake > 0:
                cmd += ["--stake", format_duck(stake, symbol=False), "--faucet"]
            behaviour = (behaviours or [])[i - start] if i - start < len(behaviours or []) else ""
            if behaviour:
                cmd += ["--behaviour", behaviour]
            if datasets is not None and i - start < len(datasets):
                cmd += ["--datasets", str(datasets[i - start])]
            cmd += extra_args or []
            with (logs / f"node-{i}.log").open("wb") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            self.nodes.append(proc)
            started.append(proc)
        return started

    def online_nodes(self) -> int:
        nodes = httpx.get(f"{self.url}/v1/nodes", params={"status": "online"}, timeout=5).json()
        return len(nodes)

    def wait_nodes_online(self, count: int, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        online = 0
        while time.monotonic() < deadline:
            try:
                online = self.online_nodes()
            except httpx.TimeoutException:
                continue  # a busy coordinator (nodes importing torch at start): ask again
            if online >= count:
                return online
            dead = [p.args for p in self.nodes if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"a node process exited early; see {self.settings.home / 'logs'}"
                )
            time.sleep(0.2)
        return online

    def stop_nodes(self, timeout: float = 15.0) -> None:
        for proc in self.nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for proc in self.nodes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        self.stop_nodes()
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
