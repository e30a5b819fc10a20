"""The dashboard in a real browser against a live coordinator with two real nodes.

Every page is visited; the tests run in file order on one shared network, so later
pages (wallet, ledger) show the money the earlier jobs moved. Each test saves desktop and
phone screenshots of its page into docs/screenshots/ (shown in the README).
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from playwright.sync_api import Page, expect

from quackmesh.core.money import format_duck
from quackmesh.core.schemas import JobState
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

from .conftest import DUCK, Live, dev_sign_in, shoot

pytestmark = pytest.mark.slow

JOB_TIMEOUT_MS = 90_000

# A minimal injected wallet (EIP-1193) whose personal_sign is answered by Python.
FAKE_WALLET = """
window.ethereum = {
  async request({ method, params }) {
    if (method === "eth_requestAccounts" || method === "eth_accounts") return [ADDRESS];
    if (method === "eth_chainId") return "0x1";
    if (method === "personal_sign") return window.__qmTestSign(params[0]);
    throw new Error("unsupported: " + method);
  },
};
"""


def _mark(page: Page) -> None:
    """Set a marker that a page reload would wipe out."""
    page.evaluate("window.__marker = 'no reload'")


def _still_marked(page: Page) -> bool:
    return bool(page.evaluate("window.__marker === 'no reload'"))


@pytest.fixture(scope="module")
def other_job(live: Live) -> Any:
    """A job of another client, which nobody else may see."""
    with Client(live.url, Wallet.create()) as other:
        other.faucet(10 * DUCK)
        job = other.submit(
            "ml.kmeans",
            data=live.data / "iris.csv",
            params={"n_clusters": 2, "seed": 1},
            max_price=DUCK // 20,
        )
        return job, other.wallet.address


def test_dashboard_html_carries_a_strict_csp(live: Live) -> None:
    res = httpx.get(f"{live.url}/", timeout=10)
    assert res.status_code == 200
    csp = res.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert res.headers["x-content-type-options"] == "nosniff"


def test_overview_shows_nodes_online_and_events_arrive_live(page: Page, live: Live) -> None:
    page.goto(live.url)
    expect(page.get_by_role("heading", level=1)).to_have_text("Network overview")
    expect(page.locator('[data-stat="nodes_online"]')).to_have_text("2")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    _mark(page)
    live.client.stake(1 * DUCK)  # a public stake.added event
    expect(page.locator(".feed .feed-type", has_text="stake.added").first).to_be_visible()
    expect(page.get_by_role("img", name=re.compile(r"2 provider nodes, 2 online"))).to_be_attached()
    assert _still_marked(page)


def test_nodes_page_lists_reputation_parts_and_the_join_commands(page: Page, live: Live) -> None:
    page.goto(f"{live.url}/#/nodes")
    rows = page.locator("table.grid tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("demo-node-")
    for part in ("validity", "timeliness", "uptime"):
        expect(rows.first.get_by_role("img", name=re.compile(part))).to_be_visible()
    shoot(page, "nodes")
    page.get_by_role("button", name="Add a node").click()
    commands = page.locator("#add-node pre").inner_text()
    assert f"quackmesh node start --coordinator {live.url}" in commands
    assert "--stake 1000 --faucet" in commands and "wallet new" in commands
    page.get_by_label("Rental price (DUCK per hour)").fill("3")
    expect(page.locator("#add-node pre")).to_contain_text("--price-per-hour 3")
    shoot(page, "add-node")
    page.get_by_role("link", name="demo-node-0").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("demo-node-0")
    expect(page.get_by_role("heading", name="Reputation")).to_be_visible()
    expect(page.get_by_text("Earnings are private")).to_be_visible()


def test_market_filters_explain_why_and_preview_a_rental(page: Page, live: Live) -> None:
    page.goto(f"{live.url}/#/market")
    expect(page.get_by_role("status").filter(has_text="match")).to_have_text("2 nodes match")
    page.get_by_label("Min GPUs").fill("1")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("0 nodes match")).to_be_visible()
    expect(page.get_by_role("heading", name="Why nothing matches")).to_be_visible()
    expect(page.locator(".explain")).to_contain_text("gpus")
    assert "min_gpus=1" in page.url  # the filters are a shareable link
    shoot(page, "market-explain")
    page.get_by_role("button", name="Reset").click()
    expect(page.get_by_text("2 nodes match")).to_be_visible()
    page.get_by_label("Sort by").select_option("price_per_hour")
    page.get_by_role("button", name="Rent demo-node-0").click()
    expect(page.get_by_role("dialog")).to_contain_text("Sign in to see a quote")
    page.get_by_role("button", name="Close").click()

    dev_sign_in(page, live, then="market")
    page.get_by_role("button", name="Rent demo-node-0").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator(".quote-cost")).to_have_text("2 DUCK")  # 1 h × 2 DUCK/h
    dialog.get_by_label("Hours").fill("3")
    expect(dialog.locator(".quote-cost")).to_have_text("6 DUCK")
    expect(dialog).to_contain_text("✗ too low")  # the budget still covers 2 h
    expect(dialog.get_by_role("button", name="Rent now")).to_be_disabled()
    dialog.get_by_label("Budget (DUCK)").fill("10")
    expect(dialog).to_contain_text("✓ enough")
    expect(dialog.get_by_role("button", name="Rent now")).to_be_enabled()
    shoot(page, "market")


def test_signed_out_views_hide_private_data(page: Page, live: Live, other_job: Any) -> None:
    job, owner = other_job
    for path in ("jobs", f"jobs/{job.id}", "wallet"):
        page.goto(f"{live.url}/#/{path}")
        expect(page.get_by_role("heading", name="Sign in to continue")).to_be_visible()
        body = page.locator("body").inner_text()
        assert job.id not in body and owner not in body
        assert "Available" not in body and "In escrow" not in body
    page.goto(live.url)
    expect(page.locator(".feed-item").first).to_be_visible()
    body = page.locator("body").inner_text()
    assert job.id not in body and owner not in body
    assert live.client.wallet.address not in body


def test_a_job_submitted_from_the_page_completes_live(page: Page, live: Live) -> None:
    dev_sign_in(page, live, then="jobs")
    page.get_by_label("Kind").select_option("ml.kmeans")
    page.get_by_label("Data file").set_input_files(live.data / "iris.csv")
    page.get_by_label("Parameters (JSON)").fill('{"n_clusters": 3, "seed": 42}')
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r"#/jobs/[\w-]+$"))
    _mark(page)
    state = page.locator(".job-state")
    expect(state).to_contain_text("succeeded", timeout=JOB_TIMEOUT_MS)
    assert _still_marked(page), "the page reloaded"
    expect(page.locator(".timeline-item .payment-state").first).to_have_text("paid")
    link = page.get_by_role("link", name="Download result (JSON)")
    with page.expect_download() as download:
        link.click()
    result = json.loads(download.value.path().read_text())
    assert len(result["centers"]) == 3
    expect(page.locator(".feed .feed-type", has_text="payment.settled").first).to_be_visible()
    shoot(page, "job-detail")
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.locator("table.grid tbody tr").first).to_contain_text("succeeded")
    shoot(page, "jobs")


def test_a_federated_jobs_chart_gains_points_as_rounds_finish(page: Page, live: Live) -> None:
    dev_sign_in(page, live, then="jobs")  # the same address as the SDK client
    params = {
        "model": {"arch": "logreg", "n_features": 64, "n_classes": 10},
        "dataset": "digits",
        "rounds": 3,
        "clients_per_round": 2,
        "min_clients": 2,
        "local_epochs": 1,
        "lr": 0.1,
        "reward_budget": 3 * DUCK,
        "round_timeout_s": 60.0,
        "dp": {"noise_multiplier": 0.1, "clip_norm": 1.0, "delta": 1e-5},
    }
    job = live.client.train(params, max_price=DUCK // 100, eval_data=live.fl.holdout)
    page.goto(f"{live.url}/#/jobs/{job.id}")
    charts = page.locator(".fl .charts")
    expect(charts).to_be_visible()
    _mark(page)
    first = int(charts.get_attribute("data-rounds") or 0)
    assert first < 3
    expect(charts).to_have_attribute("data-rounds", str(first + 1), timeout=JOB_TIMEOUT_MS)
    expect(charts).to_have_attribute("data-rounds", "3", timeout=JOB_TIMEOUT_MS)
    accuracy = page.locator("figure.chart").filter(has_text="Accuracy per round")
    expect(accuracy.locator("circle.dot")).to_have_count(6)  # holdout + federated, 3 rounds
    expect(page.locator(".job-state")).to_contain_text("succeeded", timeout=JOB_TIMEOUT_MS)
    expect(page.locator('[data-stat="epsilon"]')).not_to_have_text("no DP")
    expect(page.locator(".shares li")).to_have_count(2)
    expect(page.get_by_role("link", name="Download model (safetensors)")).to_be_visible()
    assert _still_marked(page), "the page reloaded"
    assert live.client.fl_run(job.id).state == JobState.SUCCEEDED
    shoot(page, "fl-job")


def test_wallet_shows_balance_stake_history_and_a_providers_earnings(
    page: Page, live: Live
) -> None:
    dev_sign_in(page, live, then="wallet")
    expect(page.get_by_text(live.client.wallet.address)).to_be_visible()
    expect(page.locator('[data-stat="available"]')).to_contain_text("DUCK")
    staked = live.client.balance().staked
    expect(page.locator('[data-stat="staked"]')).to_have_text(format_duck(staked))
    page.get_by_label("Stake (DUCK)", exact=True).fill("2")
    page.get_by_role("button", name="Stake", exact=True).click()
    expect(page.locator('[data-stat="staked"]')).to_have_text(format_duck(staked + 2 * DUCK))
    history = page.get_by_role("table", name="Wallet history")
    expect(history).to_contain_text("faucet")
    expect(page.get_by_role("heading", name="Earnings as a provider")).to_have_count(0)  # a client
    shoot(page, "wallet")

    dev_sign_in(page, live, "node-0", then="wallet")
    expect(page.get_by_role("heading", name="Earnings as a provider")).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("DUCK earned per hour"))).to_be_visible()


def test_ledger_shows_the_journal_and_a_passing_chain_check(page: Page, live: Live) -> None:
    page.goto(f"{live.url}/#/ledger")
    expect(page.locator(".chain-check")).to_have_attribute("data-ok", "true")
    expect(page.locator(".chain-verdict")).to_contain_text("Hash chain intact")
    rows = page.get_by_role("table", name="Journal, newest first").locator("tbody tr")
    expect(rows.first).to_be_visible()
    assert rows.count() > 3
    shoot(page, "ledger")


def test_sign_in_with_an_injected_wallet_uses_siwe(page: Page, live: Live) -> None:
    account = Account.create()
    signed: list[str] = []

    def personal_sign(message_hex: str) -> str:
        message = bytes.fromhex(message_hex.removeprefix("0x")).decode()
        signed.append(message)
        sig = Account.sign_message(encode_defunct(text=message), account.key).signature
        return "0x" + bytes(sig).hex().removeprefix("0x")

    page.expose_function("__qmTestSign", personal_sign)
    page.add_init_script(FAKE_WALLET.replace("ADDRESS", json.dumps(account.address)))
    page.goto(f"{live.url}/#/signin")
    shoot(page, "signin")
    page.get_by_role("button", name="Sign in with wallet").click()
    page.wait_for_url("**/#/wallet")
    expect(page.get_by_text(account.address)).to_be_visible()
    assert "wants you to sign in with your Ethereum account" in signed[0]
    session = page.evaluate("fetch('/v1/auth/session').then(r => r.json())")
    assert session["address"] == account.address and session["method"] == "siwe"


def test_overview_counters_follow_work_live(page: Page, live: Live) -> None:
    """Last, so the screenshot shows a network that has done some work."""
    page.goto(live.url)
    done = page.locator('[data-stat="jobs_running"] + .stat-hint')
    expect(done).to_contain_text("done in 24 h")
    before = int(re.findall(r"(\d+) done", done.inner_text())[0])
    _mark(page)
    job = live.client.submit(
        "ml.kmeans", data=live.data / "iris.csv", params={"n_clusters": 2}, max_price=DUCK // 20
    )
    expect(done).to_contain_text(f"{before + 1} done in 24 h", timeout=JOB_TIMEOUT_MS)
    expect(page.locator('[data-stat="paid_24h"]')).not_to_have_text("0 DUCK")
    expect(page.locator(".feed .feed-type", has_text="payment.settled").first).to_be_visible()
    assert _still_marked(page)
    assert live.client.status(job.id).state == JobState.SUCCEEDED
    shoot(page, "overview")
