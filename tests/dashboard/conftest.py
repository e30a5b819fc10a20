"""A live network for the dashboard's browser tests, and the browser that drives it.

One coordinator (uvicorn in a thread, serving the dashboard) with two real node
subprocesses is shared by every test of the module; each test gets a fresh browser
context (no cookies: signed out) on Debian's chromium, driven headless by Playwright.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from quackmesh.cli.fldata import NodeData, prepare_node_data
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.coordinator import Settings
from quackmesh.coordinator.auth.sessions import write_dev_key
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
DUCK = 1_000_000
NODE_PRICE = DUCK // 100  # 0.01 DUCK per compute unit
NODE_PRICE_PER_HOUR = 2 * DUCK


@dataclass
class Live:
    net: LocalNetwork
    client: Client  # the demo client, also the "client" development account
    wallet: Wallet
    data: Path  # small CSV files to upload
    fl: NodeData

    @property
    def url(self) -> str:
        return self.net.url


def _settings(home: Path) -> Settings:
    return Settings(
        home=home,
        dev_mode=True,
        access_log=False,
        log_level="WARNING",
        offline_after_s=5.0,
        sweep_interval_s=0.5,
        lease_s=30.0,
        match_window_s=0.0,
    )


def _write_csv_files(folder: Path) -> Path:
    from sklearn.datasets import load_iris

    folder.mkdir(parents=True, exist_ok=True)
    iris = load_iris(as_frame=True).data
    iris.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in iris.columns]
    iris.to_csv(folder / "iris.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("dashboard")
    fl = prepare_node_data(root / "fl", 2, dataset="digits", partition="iid", holdout=300)
    net = LocalNetwork(_settings(root / "home"))  # its coordinator serves the dashboard
    net.start_coordinator_thread()
    try:
        net.start_nodes(
            2,
            price=NODE_PRICE,
            slots=2,
            heartbeat_s=1.0,
            price_per_hour=NODE_PRICE_PER_HOUR,
            datasets=fl.registries,
        )
        wallet = Wallet.create()
        # Development sign-in finds this key (and the nodes', "node-0", …), so the page can
        # act as the SDK's client.
        write_dev_key(net.settings, "client", wallet.private_key)
        assert net.wait_nodes_online(2, timeout=60) == 2
        with Client(net.url, wallet) as client:
            client.faucet(200 * DUCK)
            yield Live(net, client, wallet, _write_csv_files(root / "files"), fl)
    finally:
        net.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser, live: Live) -> Iterator[Page]:
    """A signed-out page on the dashboard; fails the test on any page error or CSP report."""
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and not _expected_console_error(msg.text)
            else None
        ),
    )
    try:
        yield pg
    finally:
        context.close()
    assert not problems, problems


def _expected_console_error(text: str) -> bool:
    # Chromium logs every non-2xx fetch; the pages ask for private data signed out on
    # purpose (a 401 is how they learn to show the sign-in prompt).
    return "Failed to load resource" in text and ("401" in text or "403" in text or "404" in text)


def shoot(page: Page, name: str) -> None:
    """Save ``name``-desktop.png (1280×800) and ``name``-phone.png (390×844) of the page,
    and check that the phone layout does not scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size(DESKTOP)
    _settle(page)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"))
    page.set_viewport_size(PHONE)
    _settle(page)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"))
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.set_viewport_size(DESKTOP)
    _settle(page)
    assert overflow <= 0, f"{name}: the phone layout is {overflow}px wider than the screen"


def _settle(page: Page) -> None:
    # Two animation frames: the layout and the canvas (ResizeObserver) have caught up.
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def dev_sign_in(page: Page, live: Live, account: str = "client", *, then: str = "wallet") -> None:
    """Sign in through the page's development sign-in as one of the local accounts."""
    if page.locator("#session .who").count():
        page.locator("#session").get_by_role("button", name="Sign out").click()
        page.locator("#session").get_by_role("link", name="Sign in").wait_for()
    page.goto(f"{live.url}/#/signin?next={then}")
    page.get_by_label("Account").select_option(label=_account_label(page, account))
    page.get_by_role("button", name="Development sign-in").click()
    page.wait_for_url(f"**/#/{then}")
    page.locator("#session .who").wait_for()


def _account_label(page: Page, account: str) -> str:
    option = page.get_by_label("Account").locator("option", has_text=f"{account} (")
    option.wait_for(state="attached")
    return option.inner_text()
