"""Browser sign-in (EIP-4361), session cookies with CSRF, and the dashboard's figures."""

from __future__ import annotations

import time
from collections.abc import Callable

from eth_account import Account
from eth_account.messages import encode_defunct

from quackmesh.coordinator.auth.sessions import write_dev_key
from quackmesh.coordinator.auth.siwe import parse_message
from quackmesh.core.wallet import Wallet
from tests.coordinator.conftest import Net


def _sign(message: str, key: bytes) -> str:
    signed = Account.sign_message(encode_defunct(text=message), private_key=key)
    return "0x" + bytes(signed.signature).hex().removeprefix("0x")


def _siwe(net: Net, wallet: Wallet) -> dict[str, object]:
    message = net.tc.post("/v1/auth/challenge", json={"address": wallet.address}).json()["message"]
    response = net.tc.post(
        "/v1/auth/siwe", json={"message": message, "signature": _sign(message, wallet.private_key)}
    )
    assert response.status_code == 200, response.text
    session: dict[str, object] = response.json()
    return session


def test_siwe_sign_in_sets_an_http_only_strict_cookie_and_reads_work(net: Net) -> None:
    wallet = Wallet.create()
    net.client(wallet).faucet(2_000_000)
    session = _siwe(net, wallet)
    assert session["address"] == wallet.address and session["method"] == "siwe"
    cookie = net.tc.cookies.get("qm_session")
    assert cookie
    set_cookie = net.tc.post("/v1/auth/dev", json={}).headers.get("set-cookie", "")
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
    _siwe(net, wallet)  # back to the wallet's session
    balance = net.tc.get("/v1/balance").json()
    assert balance["address"] == wallet.address and balance["available"] == 2_000_000
    assert net.tc.get("/v1/auth/session").json()["address"] == wallet.address


def test_siwe_refuses_replays_other_domains_and_wrong_signers(net: Net) -> None:
    wallet, other = Wallet.create(), Wallet.create()
    message = net.tc.post("/v1/auth/challenge", json={"address": wallet.address}).json()["message"]
    good = _sign(message, wallet.private_key)
    # Signed by someone else: 401.
    bad = net.tc.post(
        "/v1/auth/siwe", json={"message": message, "signature": _sign(message, other.private_key)}
    )
    assert bad.status_code == 401
    assert net.tc.post("/v1/auth/siwe", json={"message": message, "signature": good}).is_success
    # The nonce is spent: the same signed message cannot open a second session.
    replay = net.tc.post("/v1/auth/siwe", json={"message": message, "signature": good})
    assert replay.status_code == 401 and "nonce" in replay.json()["detail"]
    # A message for another site is refused even with a valid signature.
    fresh = net.tc.post("/v1/auth/challenge", json={"address": wallet.address}).json()["message"]
    phished = fresh.replace("testserver", "evil.example")
    response = net.tc.post(
        "/v1/auth/siwe", json={"message": phished, "signature": _sign(phished, wallet.private_key)}
    )
    assert response.status_code == 403
    for body in ({"message": "hello", "signature": good}, {"message": message}):
        assert net.tc.post("/v1/auth/siwe", json=body).status_code == 422
    assert net.tc.post("/v1/auth/challenge", json={"address": "0x12"}).status_code == 422


def test_siwe_message_round_trips_through_the_parser(net: Net) -> None:
    wallet = Wallet.create()
    body = net.tc.post("/v1/auth/challenge", json={"address": wallet.address.lower()}).json()
    msg = parse_message(body["message"])
    assert msg.address == wallet.address and msg.domain == "testserver"
    assert msg.uri == "http://testserver" and msg.nonce == body["nonce"]
    assert msg.text() == body["message"] and msg.expiration_time > time.time()


def test_session_writes_need_the_csrf_header(net: Net) -> None:
    wallet = Wallet.create()
    session = _siwe(net, wallet)
    refused = net.tc.post("/v1/faucet", json={"amount": 1_000})
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
    wrong = net.tc.post("/v1/faucet", json={"amount": 1_000}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    token = str(session["csrf_token"])
    ok = net.tc.post("/v1/faucet", json={"amount": 1_000}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200 and ok.json()["available"] == 1_000
    upload = net.tc.post(
        "/v1/blobs",
        content=b"x,y\n1,2\n",
        headers={"X-CSRF-Token": token, "content-type": "application/octet-stream"},
    )
    assert upload.status_code == 201
    assert net.tc.post("/v1/blobs", content=b"a").status_code == 403
    assert net.tc.post("/v1/auth/logout").status_code == 403  # logout needs it too
    assert net.tc.post("/v1/auth/logout", headers={"X-CSRF-Token": token}).status_code == 204
    assert net.tc.get("/v1/balance").status_code == 401
    assert net.tc.get("/v1/auth/session").json()["address"] is None


def test_dev_sign_in_uses_local_keys_and_is_refused_outside_dev_mode(
    net_factory: Callable[..., Net],
) -> None:
    dev = net_factory()
    client_key = Account.create().key
    write_dev_key(dev.rt.settings, "client", client_key)
    accounts = dev.tc.get("/v1/auth/session").json()["dev_accounts"]
    client_address = Account.from_key(client_key).address
    assert accounts[0] == {"label": "client", "address": client_address}
    signed_in = dev.tc.post("/v1/auth/dev", json={}).json()
    assert signed_in["address"] == client_address and signed_in["method"] == "dev"
    unknown = dev.tc.post("/v1/auth/dev", json={"address": Wallet.create().address})
    assert unknown.status_code == 422
    prod = net_factory(dev_mode=False)
    refused = prod.tc.post("/v1/auth/dev", json={})
    assert refused.status_code == 403 and refused.json()["code"] == "dev_mode_only"
    assert prod.tc.get("/v1/auth/session").json()["dev_accounts"] == []


def test_stats_count_nodes_jobs_and_payments(net: Net) -> None:
    stats = net.tc.get("/v1/stats").json()
    assert stats["nodes_online"] == 0 and stats["health"]["status"] == "down"
    node = net.node()
    client = net.funded()
    blob = client.upload(net.csv())
    job = client.submit(
        "ml.linear_regression", inputs={"data": blob.sha256}, params={"target": "y"}, max_price=900
    )
    stats = net.tc.get("/v1/stats").json()
    assert stats["nodes_online"] == 1 and stats["slots_online"] == 2
    assert stats["jobs_queued"] + stats["jobs_running"] == 1
    assert stats["health"]["status"] == "healthy" and stats["head_event"] > 0
    assert job.id not in str(stats)
    # Earnings are the node's own business: signed out 401, anyone else 403, the node 200.
    path = f"/v1/nodes/{node.address}/earnings"
    assert net.tc.get(path).status_code == 401
    stranger = Wallet.create().sign_request(method="GET", path=path).as_dict()
    assert net.tc.get(path, headers=stranger).status_code == 403
    own = node.wallet.sign_request(method="GET", path=path).as_dict()
    earned = net.tc.get(path, headers=own).json()
    assert earned["total"] == 0 and earned["payments"] == 0 and len(earned["by_hour"]) == 25


def test_wallet_history_lists_own_entries_newest_first(net: Net) -> None:
    client = net.funded(3_000_000)
    client.faucet(1_000_000)
    client.stake(500_000)
    token = _siwe(net, client.wallet)["csrf_token"]
    assert token
    history = net.tc.get("/v1/wallet/history").json()
    assert history["address"] == client.address
    amounts = [(e["kind"], e["account"].split(":")[0], e["amount"]) for e in history["entries"]]
    assert amounts[:2] == [("stake", "stake", 500_000), ("stake", "wallet", -500_000)]
    assert sum(e["amount"] for e in history["entries"] if e["account"].startswith("wallet")) == (
        3_500_000
    )
    assert net.tc.get("/v1/wallet/history?limit=0").status_code == 422


def test_market_explain_names_the_first_failing_filter(net: Net) -> None:
    net.node(price=400, name="cheap")
    net.node(price=2_000, name="dear", region="eu")
    body = net.tc.get("/v1/market/nodes?max_price=1000&region=eu&explain=true").json()
    assert body["total"] == 0
    reasons = {e["name"]: (e["reason"], e["detail"]) for e in body["excluded"]}
    assert reasons["dear"][0] == "max_price" and "2000" in reasons["dear"][1]
    assert reasons["cheap"][0] == "region"
    assert body["summary"] == "0 of 2 nodes match; excluded: 1 max_price, 1 region"
    plain = net.tc.get("/v1/market/nodes?max_price=1000").json()
    assert plain["excluded"] is None and plain["total"] == 1
    assert net.tc.get("/v1/market/nodes?explain=maybe").status_code == 422
