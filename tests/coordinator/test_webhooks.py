"""Webhooks end to end: a real HTTP receiver on loopback, the dispatcher in the app's loop.

Every wait is bounded; timings are only ever checked as lower bounds that hold by
construction (a retry is never sent before its backoff has passed), never as speeds.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from quackmesh.cli.localnet import free_port
from quackmesh.coordinator import Settings, create_app
from quackmesh.coordinator.app import build_runtime
from quackmesh.coordinator.db.models import Cursor, Event, Webhook, WebhookDelivery
from quackmesh.coordinator.events.service import emit, event_dict
from quackmesh.coordinator.webhooks.dispatcher import backoff_delay
from quackmesh.coordinator.webhooks.fanout import CURSOR, LogTail, fan_out, type_matches
from quackmesh.coordinator.webhooks.service import check_url
from quackmesh.coordinator.webhooks.transport import make_transport
from quackmesh.core.errors import InvalidState, NotFound, ValidationFailed
from quackmesh.core.schemas import Hardware, NodeRegister
from quackmesh.core.webhooks import verify
from quackmesh.sdk import Client
from tests.coordinator.conftest import BASE, Net

T = TypeVar("T")
FAST = {
    "webhook_poll_s": 0.02,
    "webhook_backoff_s": 0.05,
    "webhook_max_backoff_s": 1.0,
    "webhook_timeout_s": 5.0,
}
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def wait_until(predicate: Callable[[], T], *, what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# --- a real receiver ----------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.time() when the request arrived
    answered_at: float = 0.0  # …and when it was answered


class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1 that records every POST.

    ``statuses`` are answered in order (then ``default``). While ``gate`` is closed, the
    requests numbered ``hold_from`` and later wait for it (at most ``hold_s``).
    """

    def __init__(self, statuses: tuple[int, ...] = (), *, default: int = 200) -> None:
        self.statuses = list(statuses)
        self.default = default
        self.requests: list[Received] = []
        self.cond = threading.Condition()
        self.gate = threading.Event()
        self.gate.set()
        self.hold_from = 1
        self.hold_s = 10.0
        self.holding = 0
        self.max_holding = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                got = Received(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    at=time.time(),
                )
                with receiver.cond:
                    receiver.requests.append(got)
                    number = len(receiver.requests)
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default
                    hold = number >= receiver.hold_from and not receiver.gate.is_set()
                    if hold:
                        receiver.holding += 1
                        receiver.max_holding = max(receiver.max_holding, receiver.holding)
                    receiver.cond.notify_all()
                if hold:
                    receiver.gate.wait(receiver.hold_s)
                    with receiver.cond:
                        receiver.holding -= 1
                payload = b"boom" if status >= 400 else b"ok"
                got.answered_at = time.time()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the dispatcher gave up on this one (its timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, count: int, *, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver got {len(self.requests)} of {count} requests")
                self.cond.wait(left)
            return list(self.requests)

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    try:
        yield rec
    finally:
        rec.close()


@pytest.fixture
def hooks_net(net_factory: Callable[..., Net]) -> Net:
    return net_factory(**FAST)


@contextmanager
def running(settings: Settings) -> Iterator[Net]:
    """An app with its lifespan (and so its dispatcher) running, stopped on exit."""
    app = create_app(settings, configure_logs=False)
    with TestClient(app, base_url=BASE) as tc:
        yield Net(tc, app.state.runtime, settings.home)


def deliveries(client: Client, hook_id: str) -> list[dict[str, Any]]:
    return [d.model_dump() for d in client.webhook_deliveries(hook_id)]


def settled(client: Client, hook_id: str, count: int = 1) -> list[dict[str, Any]]:
    """Wait until ``hook_id`` has ``count`` deliveries and none is pending."""

    def done() -> list[dict[str, Any]]:
        rows = deliveries(client, hook_id)
        ok = len(rows) >= count and all(r["state"] != "pending" for r in rows)
        return rows if ok else []

    return wait_until(done, what=f"{count} settled deliveries of {hook_id}")


# --- deliveries ---------------------------------------------------------------------------


def test_event_is_delivered_signed_with_the_event_as_body(
    hooks_net: Net, receiver: Receiver
) -> None:
    client = hooks_net.client()
    hook = client.webhook_create(receiver.url(), types=["faucet.*"], description="ci")
    assert hook.secret.startswith("whsec_") and hook.types == ["faucet.*"]
    client.faucet(1_234)

    got = receiver.wait_for(1)[0]
    headers = got.headers
    assert verify(
        hook.secret,
        timestamp_header=headers["quackmesh-timestamp"],
        signature_header=headers["quackmesh-signature"],
        body=got.body,
    )
    assert not verify(
        "whsec_wrong",
        timestamp_header=headers["quackmesh-timestamp"],
        signature_header=headers["quackmesh-signature"],
        body=got.body,
    )
    payload = json.loads(got.body)
    with hooks_net.rt.reads() as session:
        stored = session.get(Event, payload["id"])
        assert stored is not None
        assert payload == event_dict(stored)  # the full event, nothing projected away
    assert payload["type"] == "faucet.minted" and payload["address"] == client.address
    assert payload["data"] == {"amount": 1_234}
    assert got.body == json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    assert headers["quackmesh-event"] == "faucet.minted"
    assert headers["quackmesh-event-id"] == str(payload["id"])
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("QuackMesh-Webhooks/")

    [row] = settled(client, hook.id)
    assert headers["quackmesh-delivery"] == str(row["id"])
    assert row["state"] == "delivered" and row["attempts"] == 1 and row["last_status"] == 200
    assert row["event_id"] == payload["id"] and row["event_type"] == "faucet.minted"
    assert row["delivered_at"] is not None and row["next_attempt_at"] is None
    assert row["last_error"] is None and row["last_duration_ms"] >= 0
    listed = client.webhooks()
    assert [h.id for h in listed] == [hook.id]
    assert "secret" not in listed[0].model_dump() and client.webhook(hook.id).description == "ci"


def test_failing_receiver_is_retried_with_growing_backoff_until_delivered(
    hooks_net: Net, receiver: Receiver
) -> None:
    receiver.statuses = [500, 500, 200]
    receiver.hold_from = 2  # the second attempt waits until the test has looked
    receiver.gate.clear()
    client = hooks_net.client()
    hook = client.webhook_create(receiver.url(), types=["faucet.minted"])
    client.faucet(10)

    receiver.wait_for(2)
    [row] = deliveries(client, hook.id)
    assert row["state"] == "pending" and row["attempts"] == 1
    assert row["last_status"] == 500 and row["last_error"] == "HTTP 500: boom"
    receiver.gate.set()

    [row] = settled(client, hook.id)
    assert row["state"] == "delivered" and row["attempts"] == 3 and row["last_status"] == 200
    first, second, third = receiver.wait_for(3)
    assert len(receiver.requests) == 3
    assert first.headers["quackmesh-delivery"] == third.headers["quackmesh-delivery"]
    assert first.body == second.body == third.body
    # Never earlier than the backoff: 0.05 s after the first failure, 0.1 s after the second.
    assert second.at - first.answered_at >= 0.05
    assert third.at - second.answered_at >= 0.1


def test_dead_receiver_fails_after_max_attempts(net_factory: Callable[..., Net]) -> None:
    net = net_factory(**{**FAST, "webhook_backoff_s": 0.01, "webhook_max_attempts": 3})
    client = net.client()
    hook = client.webhook_create(f"http://127.0.0.1:{free_port()}/gone", types=["*"])
    client.faucet(10)
    [row] = settled(client, hook.id)
    assert row["state"] == "failed" and row["attempts"] == 3
    assert row["last_status"] is None and "ConnectError" in row["last_error"]
    assert client.webhook_deliveries(hook.id, state="failed")[0].id == row["id"]
    assert client.webhook_deliveries(hook.id, state="delivered") == []


def test_slow_receiver_does_not_slow_the_api(
    net_factory: Callable[..., Net], receiver: Receiver
) -> None:
    # A long timeout: if sending blocked the event loop, no API call below could finish
    # until the receiver let go (it holds each request for up to 10 s).
    net = net_factory(**{**FAST, "webhook_timeout_s": 30.0, "webhook_concurrency": 8})
    receiver.gate.clear()
    client = net.client()
    hook = client.webhook_create(receiver.url(), types=["faucet.*"])
    for _ in range(6):
        client.faucet(1)
    wait_until(lambda: receiver.holding >= 1, what="the receiver to hold a delivery")

    for i in range(20):  # reads and writes (each write emits an event to deliver later)
        assert client.balance().available >= 6
        if i % 4 == 0:
            client.faucet(1)
        assert client.webhook(hook.id).active
    assert receiver.holding >= 1 and not receiver.gate.is_set()
    # At most a quarter of the slots (8 // 4) go to one webhook, however slow it is.
    assert receiver.max_holding <= 2

    receiver.gate.set()
    rows = settled(client, hook.id, count=11)
    assert len(rows) == 11 and all(r["state"] == "delivered" for r in rows)


def test_receiver_slower_than_the_timeout_is_retried(
    net_factory: Callable[..., Net], receiver: Receiver
) -> None:
    net = net_factory(**{**FAST, "webhook_timeout_s": 0.3})
    receiver.gate.clear()
    client = net.client()
    hook = client.webhook_create(receiver.url(), types=["faucet.*"])
    client.faucet(1)

    def timed_out() -> list[dict[str, Any]]:
        return [r for r in deliveries(client, hook.id) if r["attempts"] >= 1]

    [row] = wait_until(timed_out, what="an attempt to time out")
    assert row["state"] == "pending" and row["last_status"] is None
    assert row["last_error"] == "timed out after 0.3 s"
    receiver.gate.set()
    [row] = settled(client, hook.id)
    assert row["state"] == "delivered" and row["attempts"] >= 2


# --- who gets what ------------------------------------------------------------------------


def test_other_owners_events_are_never_delivered(hooks_net: Net, receiver: Receiver) -> None:
    alice, bob = hooks_net.client(), hooks_net.client()
    hook = alice.webhook_create(receiver.url("/alice"), types=["*"])
    bob.faucet(7)
    bob.stake(7)
    alice.faucet(5)  # after bob's: once it arrives, bob's events were fanned out too
    [got] = receiver.wait_for(1)
    settled(alice, hook.id)
    assert json.loads(got.body)["address"] == alice.address
    with hooks_net.rt.reads() as session:
        rows = session.scalars(select(WebhookDelivery)).all()
        assert [r.event_type for r in rows] == ["faucet.minted"]
    assert len(receiver.requests) == 1
    # Bob cannot see, remove or page alice's webhook: it answers like a missing one.
    with pytest.raises(NotFound):
        bob.webhook(hook.id)
    with pytest.raises(NotFound):
        bob.webhook_delete(hook.id)
    with pytest.raises(NotFound):
        bob.webhook_deliveries(hook.id)
    with pytest.raises(NotFound):
        bob.webhook_redeliver(hook.id, 1)
    assert bob.webhooks() == [] and alice.webhook(hook.id).active


def test_type_patterns_filter_deliveries(hooks_net: Net, receiver: Receiver) -> None:
    client = hooks_net.client()  # a client that also runs a node: node events are its own
    exact = client.webhook_create(receiver.url("/exact"), types=["faucet.minted"])
    prefix = client.webhook_create(receiver.url("/prefix"), types=["stake.*", "node.*"])
    none = client.webhook_create(receiver.url("/none"), types=["job.*", "faucet.minted.x"])
    client.register_node(
        NodeRegister(
            name="hooked",
            hardware=Hardware(cpu_cores=1, ram_bytes=2**30),
            price_per_unit=1,
            slots=1,
            workloads=["ml.kmeans"],
        )
    )
    client.faucet(9)
    client.stake(9)
    assert [r["event_type"] for r in settled(client, exact.id)] == ["faucet.minted"]
    by_prefix = settled(client, prefix.id, count=2)
    assert sorted(r["event_type"] for r in by_prefix) == ["node.registered", "stake.added"]
    assert deliveries(client, none.id) == []  # stake.added was the last event fanned out
    got = receiver.wait_for(3)
    assert sorted(r.path for r in got) == ["/exact", "/prefix", "/prefix"]
    node_event = next(
        json.loads(r.body) for r in got if r.headers["quackmesh-event"] == "node.registered"
    )
    assert node_event["node"] == client.address and node_event["address"] is None


def test_type_matching_rules() -> None:
    assert type_matches(["*"], "anything.at_all")
    assert type_matches(["job.*"], "job.succeeded") and not type_matches(["job.*"], "jobs.x")
    assert type_matches(["job.succeeded"], "job.succeeded")
    assert not type_matches(["job.succeeded"], "job.succeeded.late")
    assert not type_matches([], "job.succeeded")


# --- restart, removal, redelivery ---------------------------------------------------------


def test_restart_neither_redelivers_nor_misses_events(
    settings_factory: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = settings_factory(**FAST)
    with running(settings) as first:
        client = first.client()
        owner = client.wallet
        hook = client.webhook_create(receiver.url(), types=["faucet.*"])
        client.faucet(1)
        settled(client, hook.id)

    # While no coordinator runs, an event is written (as a crashed one might have left it).
    app = create_app(settings, configure_logs=False)
    rt = app.state.runtime
    with rt.sessions.begin() as session:
        emit(session, "faucet.minted", address=owner.address, amount=2)
    with TestClient(app, base_url=BASE) as tc:
        client = Net(tc, rt, settings.home).client(owner)
        client.faucet(3)
        rows = settled(client, hook.id, count=3)
        assert len(rows) == 3 and {r["state"] for r in rows} == {"delivered"}
        amounts = [json.loads(r.body)["data"]["amount"] for r in receiver.wait_for(3)]
        assert sorted(amounts) == [1, 2, 3] and len(receiver.requests) == 3
        with rt.reads() as session:
            cursor = session.get(Cursor, CURSOR)
            last = session.scalars(select(Event.id).order_by(Event.id.desc())).first()
            assert cursor is not None and cursor.value == last


@sqlite_only
def test_stopping_mid_send_leaves_the_delivery_due_again(
    settings_factory: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = settings_factory(**{**FAST, "webhook_timeout_s": 30.0})
    receiver.gate.clear()
    with running(settings) as first:
        client = first.client()
        hook = client.webhook_create(receiver.url(), types=["faucet.*"])
        client.faucet(1)
        wait_until(lambda: receiver.holding >= 1, what="the receiver to hold the delivery")
        wallet = client.wallet
    # Stopped with the send in flight: not counted as an attempt, and due again at once
    # (not after the claim's lease), so the next coordinator sends it first thing.
    app = create_app(settings, configure_logs=False)
    with app.state.runtime.reads() as session:
        [row] = session.scalars(select(WebhookDelivery)).all()
        assert row.state == "pending" and row.attempts == 0 and row.next_attempt_at <= time.time()
    receiver.gate.set()
    with TestClient(app, base_url=BASE) as tc:
        client = Net(tc, app.state.runtime, settings.home).client(wallet)
        [done] = settled(client, hook.id)
        assert done["state"] == "delivered" and done["attempts"] == 1
    first_try, second_try = receiver.wait_for(2)
    assert first_try.headers["quackmesh-delivery"] == second_try.headers["quackmesh-delivery"]


def test_removed_webhook_stops_and_its_pending_deliveries_fail(
    net_factory: Callable[..., Net], receiver: Receiver
) -> None:
    net = net_factory(**{**FAST, "webhook_backoff_s": 60.0})
    receiver.default = 503
    client = net.client()
    hook = client.webhook_create(receiver.url(), types=["faucet.*"])
    client.faucet(1)
    receiver.wait_for(1)
    wait_until(lambda: deliveries(client, hook.id)[0]["attempts"] == 1, what="a failed attempt")
    client.webhook_delete(hook.id)
    client.webhook_delete(hook.id)  # idempotent
    [row] = deliveries(client, hook.id)  # the history stays readable
    assert row["state"] == "failed" and row["last_error"] == "webhook removed"
    assert not client.webhook(hook.id).active and client.webhooks() == []
    with pytest.raises(InvalidState):
        client.webhook_redeliver(hook.id, row["id"])

    other = client.webhook_create(receiver.url("/other"), types=["faucet.*"])
    receiver.default = 200
    client.faucet(2)
    settled(client, other.id)
    assert len(deliveries(client, hook.id)) == 1  # nothing new for the removed one
    assert [r.path for r in receiver.requests].count("/hook") == 1


def test_redeliver_sends_the_same_event_again(hooks_net: Net, receiver: Receiver) -> None:
    client = hooks_net.client()
    hook = client.webhook_create(receiver.url(), types=["faucet.*"])
    client.faucet(1)
    [row] = settled(client, hook.id)
    receiver.hold_from = 2  # hold the redelivery until the test has tried a second one
    receiver.gate.clear()
    again = client.webhook_redeliver(hook.id, row["id"])
    assert again.state == "pending" and again.attempts == 0 and again.delivered_at is None
    receiver.wait_for(2)
    with pytest.raises(InvalidState):
        client.webhook_redeliver(hook.id, row["id"])  # already pending
    receiver.gate.set()
    first, second = receiver.wait_for(2)
    [row] = settled(client, hook.id)
    assert row["state"] == "delivered" and row["attempts"] == 1
    assert first.body == second.body
    assert first.headers["quackmesh-event-id"] == second.headers["quackmesh-event-id"]
    with pytest.raises(NotFound):
        client.webhook_redeliver(hook.id, row["id"] + 1000)


# --- validation and auth ------------------------------------------------------------------


BAD_URLS = [
    "ftp://hooks.example.com/x",
    "https://user:pw@hooks.example.com/x",
    "https:///nohost",
    "https://hooks.example.com/a b",
    "https://hooks.example.com:99999/",
    "hooks.example.com/x",
    "https://hooks.example.com/" + "x" * 2100,
]
BAD_TYPES = [[], ["Job.*"], ["job.**"], ["job.*.x"], [""], ["job succeeded"], ["*.job"], ["x"] * 21]


@sqlite_only
def test_register_rejects_bad_input_and_unsigned_requests(hooks_net: Net) -> None:
    http = hooks_net.client()._http  # signed, but without the SDK's own validation

    def register(url: str, types: list[str]) -> dict[str, Any]:
        response = http.post("/v1/webhooks", json={"url": url, "types": types})
        assert response.status_code == 422, (url, types, response.text)
        body: dict[str, Any] = response.json()
        assert body["code"] == "validation_failed"
        return body

    for url in BAD_URLS:
        assert register(url, ["job.*"])["detail"].startswith("url:"), url
    for types in BAD_TYPES:
        assert register("https://hooks.example.com/x", types)["detail"].startswith("types"), types

    tc = hooks_net.tc  # unsigned: refused before anything else
    assert tc.post("/v1/webhooks", json={"url": "x", "types": []}).status_code == 401
    assert tc.get("/v1/webhooks").status_code == 401
    assert tc.get("/v1/webhooks/wh_x").status_code == 401
    assert tc.delete("/v1/webhooks/wh_x").status_code == 401
    assert tc.get("/v1/webhooks/wh_x/deliveries").status_code == 401
    assert tc.post("/v1/webhooks/wh_x/deliveries/1/redeliver").status_code == 401


@sqlite_only
def test_private_urls_need_dev_mode_or_the_setting(net_factory: Callable[..., Net]) -> None:
    strict = net_factory(dev_mode=False).client()
    for url in (
        "http://127.0.0.1:9/x",
        "http://[::1]/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest",
        "http://localhost:8000/x",
        "http://db.internal/x",
        "http://intranet/x",
        "http://2130706433/x",
    ):
        with pytest.raises(ValidationFailed) as err:
            strict.webhook_create(url, types=["*"])
        assert err.value.context.get("field") == "url", url
    public = strict.webhook_create("https://hooks.example.com/x", types=["*"])
    assert public.url == "https://hooks.example.com/x" and public.after_event >= 0

    allowed = net_factory(dev_mode=False, webhook_allow_private=True).client()
    assert allowed.webhook_create("http://127.0.0.1:9/x", types=["*"]).active


def test_check_url_rules() -> None:
    assert check_url("https://8.8.8.8/x", allow_private=False)
    assert check_url("http://hooks.example.com.:8080/a?b=c", allow_private=False)
    with pytest.raises(ValidationFailed):
        check_url("http://[::ffff:127.0.0.1]/", allow_private=False)
    assert check_url("http://localhost:1/", allow_private=True)
    with pytest.raises(ValidationFailed):
        check_url("file:///etc/passwd", allow_private=True)


# --- the connect-time guard (SSRF) ----------------------------------------------------------


def test_guarded_transport_refuses_private_addresses(receiver: Receiver) -> None:
    async def post(url: str, *, allow_private: bool) -> int:
        transport = make_transport(allow_private=allow_private, max_connections=2)
        async with httpx.AsyncClient(transport=transport, timeout=5.0) as http:
            return (await http.post(url, content=b"{}")).status_code

    for url in (receiver.url(), f"http://localhost:{receiver.port}/hook"):
        with pytest.raises(httpx.ConnectError, match="not a public address"):
            asyncio.run(post(url, allow_private=False))
    assert receiver.requests == []
    assert asyncio.run(post(receiver.url(), allow_private=True)) == 200


@sqlite_only
def test_dispatcher_refuses_a_private_address_outside_dev_mode(
    net_factory: Callable[..., Net], receiver: Receiver
) -> None:
    # A row that names a loopback URL (registered while private addresses were allowed)
    # is still refused when the connection is opened.
    net = net_factory(**{**FAST, "dev_mode": False, "webhook_max_attempts": 1})
    owner = net.client()
    with net.rt.sessions.begin() as session:
        session.add(
            Webhook(
                id="wh_private",
                owner=owner.address,
                url=receiver.url(),
                types=["*"],
                secret="whsec_x",
                active=True,
                created_at=time.time(),
                description="",
                after_event=0,
            )
        )
        emit(session, "faucet.minted", address=owner.address, amount=1)
    [row] = settled(owner, "wh_private")
    assert row["state"] == "failed" and "not a public address" in row["last_error"]
    assert receiver.requests == []


# --- pieces -----------------------------------------------------------------------------


def test_backoff_doubles_is_capped_and_jitter_only_adds() -> None:
    delays = [backoff_delay(n, base=2.0, cap=600.0) for n in range(1, 11)]
    assert delays[:5] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert max(delays) == 600.0 and backoff_delay(500, base=2.0, cap=600.0) == 600.0

    class High:
        def random(self) -> float:
            return 0.999

    jittered = backoff_delay(3, base=2.0, cap=600.0, rng=High())  # type: ignore[arg-type]
    assert 8.0 <= jittered <= 8.8


def test_fan_out_fills_gaps_in_event_ids_and_is_idempotent(
    settings_factory: Callable[..., Settings],
) -> None:
    # PostgreSQL hands out ids before commit, so id 2 can commit after id 3 was read.
    rt = build_runtime(settings_factory())
    try:
        owner = "0x" + "ab" * 20
        with rt.sessions.begin() as session:
            session.add(
                Webhook(
                    id="wh_gap",
                    owner=owner,
                    url="http://127.0.0.1:9/",
                    types=["*"],
                    secret="whsec_x",
                    active=True,
                    created_at=0.0,
                    description="",
                    after_event=0,
                )
            )
            session.add(Event(id=1, type="a.b", at=0.0, address=owner, data={}))
            session.add(Event(id=3, type="a.b", at=0.0, address=owner, data={}))
        tail = LogTail()
        assert fan_out(rt, tail, now=1.0, clock=100.0) == (2, 2)
        assert tail.gaps == {2: 100.0} and tail.cursor == 1
        with rt.sessions.begin() as session:
            session.add(Event(id=2, type="a.b", at=0.0, node=owner, data={}))
        assert fan_out(rt, tail, now=2.0, clock=101.0) == (0, 1)
        assert tail.gaps == {} and tail.cursor == 3
        assert fan_out(rt, LogTail(), now=3.0, clock=102.0) == (0, 0)  # a restart: no repeats
        replay = LogTail(high=0, cursor=0)  # even a full replay adds nothing twice
        assert fan_out(rt, replay, now=4.0, clock=103.0) == (3, 0)
        with rt.reads() as session:
            ids = sorted(session.scalars(select(WebhookDelivery.event_id)))
            assert ids == [1, 2, 3]
            cursor = session.get(Cursor, CURSOR)
            assert cursor is not None and cursor.value == 3
        # A gap that never fills (a rolled-back transaction) is given up after the grace.
        with rt.sessions.begin() as session:
            session.add(Event(id=5, type="a.b", at=0.0, address=owner, data={}))
        assert fan_out(rt, tail, now=5.0, clock=200.0) == (1, 1)
        assert tail.cursor == 3 and 4 in tail.gaps
        fan_out(rt, tail, now=6.0, clock=200.0 + 11.0)
        assert tail.gaps == {} and tail.cursor == 5
    finally:
        rt.engine.dispose()
        read_engine = rt.reads.kw.get("bind")
        if read_engine is not None:
            read_engine.dispose()
