"""The event stream: paging with filters, who sees what, and the WebSocket's resume."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from quackmesh.core.wallet import Wallet
from tests.coordinator.conftest import Net


def _receive(ws: WebSocketTestSession) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(ws.receive_text())["events"]
    return events


def _collect(ws: WebSocketTestSession, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:  # bounded: each receive blocks until a frame or the test times out
        got.extend(_receive(ws))
    return got


def test_page_filters_by_type_job_and_own_address(net: Net) -> None:
    alice = net.funded(5_000_000)
    bob = net.funded(7_000_000)
    everything = net.tc.get("/v1/events").json()
    assert [e["type"] for e in everything].count("faucet.minted") == 2
    assert all(e["address"] is None for e in everything)  # signed out: no addresses
    mine = alice.events(address=alice.address)
    assert {e["address"] for e in mine} == {alice.address}
    assert all(e["data"]["amount"] == 5_000_000 for e in mine if e["type"] == "faucet.minted")
    assert alice.events(type="faucet.*") and not alice.events(type="job.*")
    # Following someone else's address is refused, not silently emptied.
    response = net.tc.get("/v1/events", params={"address": bob.address})
    assert response.status_code == 403
    assert net.tc.get("/v1/events", params={"type": "bad type!"}).status_code == 422
    assert net.tc.get("/v1/events", params={"node": "0x12"}).status_code == 422


def test_public_projection_hides_private_job_data(net: Net) -> None:
    owner = net.funded()
    net.node()
    blob = owner.upload(net.csv())
    owner.submit(
        "ml.linear_regression",
        inputs={"data": blob.sha256},
        params={"target": "y"},
        max_price=1_000,
    )
    public = [e for e in net.tc.get("/v1/events").json() if e["type"] == "job.submitted"]
    assert public and public[0]["data"] == {"kind": "ml.linear_regression"}
    whole = [e for e in owner.events(type="job.submitted")]
    assert whole[0]["data"]["escrowed"] > 0 and whole[0]["address"] == owner.address


def test_websocket_streams_live_and_resumes_without_gaps_or_duplicates(net: Net) -> None:
    client = net.client()
    with net.tc.websocket_connect("/v1/events/ws?type=faucet.minted") as ws:
        client.faucet(1_000)
        client.faucet(2_000)
        first = _collect(ws, 2)
        assert "quackmesh_event_subscribers 1.0" in net.tc.get("/metrics").text
    assert [e["type"] for e in first] == ["faucet.minted", "faucet.minted"]
    last = first[-1]["id"]
    # Missed while disconnected: three more, then reconnect from the last id seen.
    for amount in (3_000, 4_000, 5_000):
        client.faucet(amount)
    with net.tc.websocket_connect(f"/v1/events/ws?type=faucet.minted&after={last}") as ws:
        backlog = _collect(ws, 3)
        client.faucet(6_000)
        live = _collect(ws, 1)
    ids = [e["id"] for e in first + backlog + live]
    assert ids == sorted(set(ids)) and len(ids) == 6
    everything = [e["id"] for e in net.tc.get("/v1/events?type=faucet.minted").json()]
    assert ids == everything


def test_websocket_shows_owners_their_data_and_strangers_the_projection(net: Net) -> None:
    owner = net.client(Wallet.create())
    path = f"/v1/events/ws?address={owner.address}&after=0"
    signed = owner.wallet.sign_request(method="GET", path=path).as_dict()
    owner.faucet(1_234)
    with net.tc.websocket_connect(path, headers=signed) as ws:
        mine = _collect(ws, 1)
    assert mine[0]["address"] == owner.address and mine[0]["data"]["amount"] == 1_234
    # Someone else's address: the socket is refused with the reason.
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        net.tc.websocket_connect(path) as ws,
    ):
        ws.receive_text()
    assert closed.value.code == 1008


@pytest.mark.parametrize(
    "query",
    ["?after=-1", "?after=x", "?bogus=1", "?type=a,,b!", "?after=1&after=2", "?node=nope"],
)
def test_websocket_refuses_bad_filters_with_1008(net: Net, query: str) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        net.tc.websocket_connect(f"/v1/events/ws{query}") as ws,
    ):
        ws.receive_text()
    assert closed.value.code == 1008 and closed.value.reason
