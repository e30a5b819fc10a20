"""A real anvil EVM node (from npm, pinned in package.json) on 127.0.0.1 for chain tests.

One anvil process per test module, started on a free port and stopped by its PID; each
test gets fresh chain state through ``evm_snapshot`` / ``evm_revert``. Without the
binary the tests skip, except under ``CI``, where they fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ANVIL = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "anvil"
CHAIN_ID = 31337


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    if not ANVIL.exists():
        reason = f"anvil is not installed at {ANVIL} (run `npm install`)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    port = _free_port()
    proc = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(CHAIN_ID),
         "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 5}))
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"anvil exited with {proc.returncode}: {err[-500:]}")
            try:
                if w3.eth.chain_id == CHAIN_ID:
                    break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail("anvil did not answer within 30 s")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
def w3(anvil_url: str) -> Iterator[Any]:
    """A Web3 client on anvil; whatever a test does is reverted afterwards."""
    from web3 import Web3

    client = Web3(Web3.HTTPProvider(anvil_url, request_kwargs={"timeout": 10}))
    snapshot = client.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield client
    finally:
        client.provider.make_request("evm_revert", [snapshot])
