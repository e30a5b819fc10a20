"""Coordinator fixtures: an app per test on each database backend, SDK clients in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from quackmesh.coordinator import Settings, create_app
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.schemas import Hardware, NodeRegister
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

BASE = "http://testserver"


class Net:
    """One coordinator app under a TestClient, and helpers to make signed SDK clients."""

    def __init__(self, tc: TestClient, rt: Runtime, tmp: Path) -> None:
        self.tc = tc
        self.rt = rt
        self.tmp = tmp

    def client(self, wallet: Wallet | None = None) -> Client:
        return Client(BASE, wallet or Wallet.create(), transport=self.tc._transport)

    def funded(self, amount: int = 10_000_000) -> Client:
        client = self.client()
        client.faucet(amount)
        return client

    def node(
        self,
        *,
        price: int = 400,
        kinds: tuple[str, ...] = ("ml.linear_regression", "ml.kmeans", "ml.pca"),
        slots: int = 2,
        stake: int | None = None,
        hardware: Hardware | None = None,
        region: str = "",
        price_per_hour: int = 0,
        name: str = "test-node",
    ) -> Client:
        """A registered node, staked with ``min_stake`` (funded by the faucet) by default."""
        client = self.client()
        client.register_node(
            NodeRegister(
                name=name,
                hardware=hardware or Hardware(cpu_cores=2, ram_bytes=2**30),
                price_per_unit=price,
                slots=slots,
                workloads=list(kinds),
                region=region,
                price_per_hour=price_per_hour,
            )
        )
        amount = self.rt.settings.min_stake if stake is None else stake
        if amount > 0:
            client.faucet(amount)
            client.stake(amount)
        return client

    def csv(self, text: str = "x,y\n1,3\n2,5\n3,7\n4,9\n", name: str = "line.csv") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def journal_count(self) -> int:
        return self.client().ledger_check().transactions


@pytest.fixture
def settings_factory(tmp_path: Path, db_url: str) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "home": tmp_path / "home",
            "database_url": db_url,
            "dev_mode": True,
            "access_log": False,
            "log_level": "WARNING",
            "sweep_interval_s": 3600.0,  # tests drive sweep_once() themselves
            "match_window_s": 0.0,  # no head start for better nodes unless a test wants one
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def net_factory(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> Iterator[Callable[..., Net]]:
    opened: list[TestClient] = []

    def make(**overrides: object) -> Net:
        app = create_app(settings_factory(**overrides), configure_logs=False)
        tc = TestClient(app, base_url=BASE)
        tc.__enter__()
        opened.append(tc)
        return Net(tc, app.state.runtime, tmp_path)

    yield make
    for tc in opened:
        tc.__exit__(None, None, None)


@pytest.fixture
def net(net_factory: Callable[..., Net]) -> Net:
    return net_factory()
