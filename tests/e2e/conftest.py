"""A real coordinator on loopback (uvicorn in a thread) with real node subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quackmesh.cli.localnet import LocalNetwork
from quackmesh.coordinator import Settings


def e2e_settings(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "dev_mode": True,
        "access_log": False,
        "log_level": "WARNING",
        "offline_after_s": 3.0,
        "sweep_interval_s": 0.5,
        "lease_s": 30.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def localnet(tmp_path: Path) -> Iterator[LocalNetwork]:
    net = LocalNetwork(e2e_settings(tmp_path / "home"))
    net.start_coordinator_thread()
    try:
        yield net
    finally:
        net.stop()
