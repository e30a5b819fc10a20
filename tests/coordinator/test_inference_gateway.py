"""The inference gateway against a real coordinator on loopback with fake serving nodes.

Fake nodes are threads that lease with the SDK (signed) and stream answers back over
real HTTP, so streaming, a connection that dies mid-body and a stalled stream behave as
they do in production. Answers are deterministic, as greedy decoding is: a function of
the prompt. Every wait is bounded; no test asserts on a speed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib
import inspect
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from quackmesh.cli.localnet import LocalNetwork
from quackmesh.coordinator import Settings
from quackmesh.coordinator.db.models import Event, InferenceRequest, Node, Slash
from quackmesh.coordinator.inference import dispatch
from quackmesh.coordinator.inference.broker import Pending, rank_key
from quackmesh.coordinator.inference.directory import ServingNode
from quackmesh.coordinator.inference.metering import generate_cost, prompt_size
from quackmesh.coordinator.inference.verify import (
    answers_agree,
    check_probability_for,
    cosine,
    verdict_of,
)
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.errors import LeaseLost, NodeNotFound, ValidationFailed
from quackmesh.core.inference_schemas import InferenceChunk, InferenceWork, Usage
from quackmesh.core.schemas import Hardware, HeartbeatCreate, NodeRegister, ServedModel
from quackmesh.core.wallet import Wallet
from quackmesh.ledger import MINT, TREASURY, stake_account, wallet_account
from quackmesh.ledger.accounts import infer_escrow_account
from quackmesh.sdk import Client
from quackmesh.sdk.client import raise_for_problem

T = TypeVar("T")

FAST: dict[str, object] = {
    "inference_pickup_s": 2.0,
    "inference_first_chunk_s": 3.0,
    "inference_stall_s": 1.0,
    "inference_queue_s": 1.5,
    "inference_directory_s": 0.2,
    "inference_check_rate": 0.0,
    "inference_check_adaptive": False,
    "inference_honeypot_rate": 0.0,
}
LEASE_WAIT_S = 2.0  # fake nodes' long-poll
TINY = ServedModel(name="tiny-lm", task="generate", price=2_000, context_len=256)
EMBED = ServedModel(name="mini-embed", task="embed", price=30, context_len=64, dims=16)


def wait_until(predicate: Callable[[], T], *, what: str, timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# --- deterministic "models" -------------------------------------------------------------


def prompt_of(work: InferenceWork) -> str:
    if work.op == "chat":
        return " ".join(m["content"] for m in work.input["messages"])
    return str(work.input["prompt"])


def tokens_of(work: InferenceWork, *, salt: str = "") -> list[tuple[str, int]]:
    """Greedy decoding of a toy model: echo the prompt word by word (``salt``: another
    model, which answers differently)."""
    words = f"echo{salt} {prompt_of(work)}".split()[: work.input["max_tokens"]]
    return [
        (w if i == 0 else f" {w}", zlib.crc32(w.encode()) % 50_000) for i, w in enumerate(words)
    ]


def vector(text: str, *, salt: bytes = b"", step: float | None = None) -> list[float]:
    digest = hashlib.sha256(salt + text.encode()).digest()
    v = np.frombuffer(digest, dtype=np.uint8)[:16].astype(np.float64) - 127.5
    v /= np.linalg.norm(v)
    if step is not None:  # a quantised copy of the model
        v = np.round(v / step) * step
        v /= np.linalg.norm(v)
    return [float(x) for x in v]


class Died(Exception):
    """The fake node's process dies mid-answer (its stream connection closes)."""


Answer = Callable[[InferenceWork], "Iterator[InferenceChunk] | Raw | None"]


def honest(
    *,
    salt: str = "",
    embed_salt: bytes = b"",
    step: float | None = None,
    die_after: int | None = None,
    stall_after: int | None = None,
    delay: float = 0.0,
    ids: bool = True,
) -> Answer:
    def answer(work: InferenceWork) -> Iterator[InferenceChunk]:
        if work.op == "embed":
            texts = work.input["texts"]
            vectors = [vector(t, salt=embed_salt, step=step) for t in texts]
            words = sum(len(t.split()) for t in texts)
            yield InferenceChunk(type="done", embeddings=vectors, usage=Usage(prompt_tokens=words))
            return
        toks = tokens_of(work, salt=salt)
        for i, (text, token) in enumerate(toks):
            if i == die_after:
                raise Died(work.id)
            if i == stall_after:
                time.sleep(4.0)
            if delay:
                time.sleep(delay)
            yield InferenceChunk(type="delta", text=text, token_ids=[token] if ids else [])
        finish = "length" if len(toks) == work.input["max_tokens"] else "stop"
        usage = Usage(prompt_tokens=len(prompt_of(work).split()) + 3, completion_tokens=len(toks))
        yield InferenceChunk(type="done", finish_reason=finish, usage=usage)

    return answer


def silent(work: InferenceWork) -> None:
    """Takes the work and never answers (no stream opened)."""
    return None


def failing(message: str = "CUDA out of memory") -> Answer:
    def answer(work: InferenceWork) -> Iterator[InferenceChunk]:
        yield InferenceChunk(type="error", message=message)

    return answer


class Raw(list[bytes]):
    """An answer sent as these raw body lines, bypassing the SDK's chunk encoding."""


def garbage(work: InferenceWork) -> Raw:
    return Raw([b'{"type": "delta", "text": "ok", "token_ids": [1]}\n', b"not json\n"])


# --- the harness --------------------------------------------------------------------------


@dataclass
class FakeNode:
    gw: Gateway
    models: list[ServedModel]
    answer: Answer
    name: str = "fake"
    stake: bool = True
    slots: int = 1
    price_per_hour: int = 0
    client: Client = field(init=False)
    works: list[InferenceWork] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = self.gw.client()
        self.gw.nodes.append(self)
        self.client.register_node(
            NodeRegister(
                name=self.name,
                hardware=Hardware(cpu_cores=2, ram_bytes=2**30),
                price_per_unit=1,
                slots=self.slots,
                workloads=["ml.kmeans"],
                models=self.models,
                price_per_hour=self.price_per_hour,
            )
        )
        if self.stake:
            amount = self.gw.rt.settings.min_stake
            self.client.faucet(amount)
            self.client.stake(amount)

    @property
    def address(self) -> str:
        return self.client.address

    def start(self) -> FakeNode:
        targets = [self._loop] * self.slots + [self._beat]
        for i, target in enumerate(targets):
            thread = threading.Thread(target=target, name=f"{self.name}-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def _beat(self) -> None:
        """Heartbeats on their own thread, so the lease loop is back at once (routing only
        sees nodes whose long-poll is open)."""
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):
                self.client.heartbeat(HeartbeatCreate(free_slots=1))

    def _loop(self) -> None:
        names = [m.name for m in self.models]
        while not self._stop.is_set():
            try:
                work = self.client.inference_lease(names, wait_s=LEASE_WAIT_S)
            except Exception as exc:
                self.outcomes.append(f"lease: {type(exc).__name__}")
                time.sleep(0.1)
                continue
            if work is None:
                continue
            self.works.append(work)
            chunks = self.answer(work)
            if chunks is None:
                continue
            try:
                if isinstance(chunks, Raw):
                    self._raw(work, chunks)
                else:
                    self.client.inference_stream(work, chunks)
                self.outcomes.append("ok")
            except LeaseLost:
                self.outcomes.append("lease_lost")
            except Exception as exc:
                self.outcomes.append(type(exc).__name__)

    def _raw(self, work: InferenceWork, lines: Raw) -> None:
        response = httpx.post(
            f"{self.gw.url}/v1/inference/{work.id}/stream",
            content=b"".join(lines),
            headers={"Authorization": f"Bearer {work.token}"},
        )
        raise_for_problem(response)

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=LEASE_WAIT_S + 10)


class Gateway:
    """A coordinator on loopback, its runtime, and helpers for callers and nodes."""

    def __init__(self, net: LocalNetwork) -> None:
        self.net = net
        self.url = net.url
        assert net.server is not None
        self.rt: Runtime = net.server.config.app.state.runtime  # type: ignore[attr-defined]
        self.nodes: list[FakeNode] = []
        self.clients: list[Client] = []
        self.http = httpx.Client(base_url=net.url, timeout=30)

    def node(self, models: list[ServedModel], answer: Answer, **kw: Any) -> FakeNode:
        return FakeNode(self, models, answer, **kw).start()

    def client(self) -> Client:
        client = Client(self.url, Wallet.create())
        self.clients.append(client)
        return client

    def caller(self, amount: int = 50_000_000) -> tuple[Client, str]:
        client = self.client()
        if amount:
            client.faucet(amount)
        return client, client.api_key_create("test").key

    def post(self, path: str, key: str | None, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.http.post(path, json=body, headers=headers)

    def row(self, request_id: str) -> InferenceRequest | None:
        with self.rt.reads() as session:
            return session.get(InferenceRequest, request_id)

    def settled(self, request_id: str) -> InferenceRequest:
        def done() -> InferenceRequest | None:
            row = self.row(request_id)
            return row if row is not None and row.state != "reserved" else None

        return wait_until(done, what=f"{request_id} to settle")

    def balance(self, account: str) -> int:
        with self.rt.reads() as session:
            return self.rt.ledger.balance(session, account)

    def events(self, type_: str) -> list[Event]:
        with self.rt.reads() as session:
            return list(
                session.scalars(select(Event).where(Event.type == type_).order_by(Event.id))
            )

    def wait_ready(self, model: str, n: int = 1) -> None:
        broker = self.rt.inference.broker
        wait_until(lambda: broker.idle(model) >= n, what=f"{n} idle node(s) for {model}")

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        for node in self.nodes:
            node.join()
        for client in self.clients:
            client.close()
        self.http.close()


@pytest.fixture
def gateway_factory(settings_factory: Callable[..., Settings]) -> Iterator[Callable[..., Gateway]]:
    opened: list[Gateway] = []

    def make(**overrides: object) -> Gateway:
        net = LocalNetwork(settings_factory(**{**FAST, **overrides}))
        net.start_coordinator_thread()
        gw = Gateway(net)
        opened.append(gw)
        return gw

    yield make
    for gw in opened:
        gw.close()
        gw.net.stop()


@pytest.fixture
def gw(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory()


sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def chat(model: str = TINY.name, text: str = "the quick brown fox", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def sse_events(text: str) -> list[Any]:
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def streamed_text(events: list[Any]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in events
        if isinstance(c, dict) and c.get("choices")
    )


INFERENCE_MODULES = [
    f"quackmesh.coordinator.inference.{name}"
    for name in (
        "billing",
        "broker",
        "directory",
        "dispatch",
        "errors",
        "gateway",
        "honeypots",
        "keys",
        "known",
        "metering",
        "openai_schemas",
        "router",
        "runner",
        "sse",
        "state",
        "verify",
    )
]


@pytest.mark.parametrize("module", INFERENCE_MODULES)
def test_all_is_sorted_and_complete(module: str) -> None:
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    key = lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n)  # noqa: E731
    assert names == sorted(names, key=key), f"{module}.__all__ is not sorted"
    for name in names:
        assert hasattr(mod, name), f"{module}.__all__ names missing {name}"
    if module.endswith(("gateway", "router")):
        return  # route handlers are reached through `router`, as in every router module
    defined = {
        name
        for name, value in vars(mod).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module
    }
    assert defined <= set(names), f"{module}: public but not in __all__: {defined - set(names)}"


# --- pure parts ---------------------------------------------------------------------------


def _serving(address: str, price: int, reputation: float = 0.5) -> ServingNode:
    return ServingNode(
        address=address,
        stake=10,
        reputation=reputation,
        registered_at=0.0,
        rental_client=None,
        models={"m": ServedModel(name="m", task="generate", price=price)},
    )


def test_routing_orders_by_price_then_latency_then_reputation() -> None:
    cheap, dear = _serving("0xa", 1), _serving("0xb", 2)
    assert rank_key(cheap, "m", 900.0) < rank_key(dear, "m", 1.0)
    fast, slow = _serving("0xc", 5), _serving("0xd", 5)
    assert rank_key(fast, "m", 10.0) < rank_key(slow, "m", 20.0)
    trusted, doubtful = _serving("0xf", 5, reputation=0.9), _serving("0xe", 5, reputation=0.4)
    assert rank_key(trusted, "m", 10.0) < rank_key(doubtful, "m", 10.0)


def test_prompt_bounds_bracket_tokens_and_costs_round_up() -> None:
    size = prompt_size(["hello there world"], messages=1)
    assert size.low == 3
    assert size.low <= size.estimate <= size.high
    assert size.high >= len(b"hello there world")
    assert generate_cost(2_000, 1) == 2  # 2000 per 1000 tokens: 2 per token
    assert generate_cost(1, 1) == 1  # never 0 on a priced model
    assert generate_cost(0, 10_000) == 0
    assert generate_cost(1_500, 3) == 5  # 4.5 rounds up


def test_answers_agree_by_token_ids_text_or_cosine() -> None:
    a = dispatch.Output(node="a", price=1, text="x y", token_ids=(1, 2), ids_complete=True)
    b = dispatch.Output(node="b", price=1, text="x  y", token_ids=(1, 2), ids_complete=True)
    c = dispatch.Output(node="c", price=1, text="x z", token_ids=(1, 3), ids_complete=True)
    assert answers_agree(a, b, cosine_min=0.999)
    assert not answers_agree(a, c, cosine_min=0.999)
    no_ids = dispatch.Output(node="d", price=1, text="x y")
    assert answers_agree(a, no_ids, cosine_min=0.999)  # falls back to the text
    exact = vector("t")
    assert cosine(exact, exact) == pytest.approx(1.0)
    assert cosine(exact, vector("t", step=0.125)) < 0.999  # a quantised model is caught
    e1 = dispatch.Output(node="a", price=1, embeddings=[exact])
    e2 = dispatch.Output(node="b", price=1, embeddings=[vector("t", salt=b"other")])
    assert verdict_of([e1, e2], cosine_min=0.999) == ([], [])  # two that differ: no verdict
    e3 = dispatch.Output(node="c", price=1, embeddings=[exact])
    assert verdict_of([e1, e2, e3], cosine_min=0.999) == (["a", "c"], ["b"])


def test_check_probability_is_adaptive_and_floored_by_the_rate(tmp_path: Path) -> None:
    def rt(**values: Any) -> Any:
        return SimpleNamespace(settings=Settings(home=tmp_path, **values))

    adaptive = rt(inference_check_rate=0.05, adaptive_trust=10)
    assert check_probability_for(adaptive, 0) == 1.0  # a new (node, model) is always checked
    assert check_probability_for(adaptive, 9) == 1.0
    assert check_probability_for(adaptive, 10) == pytest.approx(0.1)  # then 1/run
    assert check_probability_for(adaptive, 1000) == 0.05  # never below the rate
    flat = rt(inference_check_rate=0.05, inference_check_adaptive=False)
    assert check_probability_for(flat, 0) == 0.05


# --- the node side ------------------------------------------------------------------------


@sqlite_only
def test_registration_stores_models_and_market_filters_by_model(gw: Gateway) -> None:
    node = FakeNode(gw, [TINY, EMBED], honest())
    FakeNode(gw, [EMBED], honest(), name="embed-only")
    public = node.client.node(node.address)
    assert [m.name for m in public.models] == ["tiny-lm", "mini-embed"]
    assert public.models[0].price == TINY.price
    found = gw.http.get("/v1/market/nodes", params={"model": "tiny-lm"}).json()
    assert [n["address"] for n in found["nodes"]] == [node.address]
    explained = gw.http.get("/v1/market/nodes", params={"model": "tiny-lm", "explain": "true"})
    assert {e["reason"] for e in explained.json()["excluded"]} == {"model"}


@sqlite_only
def test_lease_refuses_unknown_nodes_and_unadvertised_models(gw: Gateway) -> None:
    stranger = gw.client()
    with pytest.raises(NodeNotFound):
        stranger.inference_lease(["tiny-lm"], wait_s=0)
    node = FakeNode(gw, [TINY], honest())
    with pytest.raises(ValidationFailed, match="not advertised"):
        node.client.inference_lease(["other-model"], wait_s=0)
    assert node.client.inference_lease(["tiny-lm"], wait_s=0) is None  # nothing queued


@sqlite_only
def test_understaked_node_gets_no_work_and_its_model_is_not_listed(gw: Gateway) -> None:
    poor = FakeNode(gw, [TINY], honest(), stake=False)
    assert poor.client.inference_lease(["tiny-lm"], wait_s=0.2) is None
    assert gw.http.get("/v1/models").json() == {"object": "list", "data": []}
    _, key = gw.caller()
    refused = gw.post("/v1/chat/completions", key, chat())
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "no_node_available"


@sqlite_only
def test_stream_endpoint_checks_the_work_and_its_token(gw: Gateway) -> None:
    unknown = gw.http.post("/v1/inference/work_nope/stream", content=b"")
    assert unknown.status_code == 404
    node = FakeNode(gw, [TINY], honest())
    _, key = gw.caller()
    got: dict[str, httpx.Response] = {}
    caller = threading.Thread(
        target=lambda: got.setdefault("r", gw.post("/v1/chat/completions", key, chat()))
    )
    caller.start()
    work = wait_until(lambda: node.client.inference_lease(["tiny-lm"], wait_s=0.5), what="work")
    wrong = gw.http.post(
        f"/v1/inference/{work.id}/stream", content=b"", headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    node.client.inference_stream(work, honest()(work) or iter(()))
    caller.join(timeout=30)
    assert got["r"].status_code == 200
    late = gw.http.post(
        f"/v1/inference/{work.id}/stream",
        content=b"",
        headers={"Authorization": f"Bearer {work.token}"},
    )
    assert late.status_code == 409 and late.json()["code"] == "lease_lost"


# --- models, routing and billing --------------------------------------------------------


@sqlite_only
def test_models_lists_what_online_staked_nodes_serve(gw: Gateway) -> None:
    gw.node([TINY, EMBED], honest())
    gw.node([ServedModel(name="unstaked-lm", task="generate", price=1)], honest(), stake=False)
    gw.wait_ready("tiny-lm")  # polling: the directory has seen its stake
    listed = gw.http.get("/v1/models").json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["mini-embed", "tiny-lm"]
    assert all(m["object"] == "model" and m["owned_by"] == "quackmesh" for m in listed["data"])
    assert gw.http.get("/v1/models/tiny-lm").json()["id"] == "tiny-lm"
    missing = gw.http.get("/v1/models/unstaked-lm")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_chat_goes_to_the_cheapest_node_and_bills_exactly(gw: Gateway) -> None:
    dear = gw.node([TINY.model_copy(update={"price": 9_000})], honest(), name="dear")
    cheap = gw.node([TINY], honest(), name="cheap")
    gw.wait_ready("tiny-lm", 2)
    client, key = gw.caller()
    before = client.balance().available
    response = gw.post("/v1/chat/completions", key, chat(text="a b c d"))
    assert response.status_code == 200, response.text
    body = response.json()
    request_id = response.headers["X-QuackMesh-Request-Id"]
    price = int(response.headers["X-QuackMesh-Price"])
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "echo a b c d",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage == {"prompt_tokens": 4 + 3, "completion_tokens": 5, "total_tokens": 12}
    assert price == generate_cost(TINY.price, 12) == 24
    fee = price * gw.rt.settings.fee_bps // 10_000

    row = gw.settled(request_id)
    assert (row.state, row.node, row.charged, row.fee) == ("completed", cheap.address, price, fee)
    assert row.reserved >= price and row.refunded == row.reserved - price
    assert client.balance().available == before - price
    assert gw.balance(wallet_account(cheap.address)) == price - fee
    assert gw.balance(wallet_account(dear.address)) == 0
    assert gw.balance(TREASURY) == fee
    assert gw.balance(infer_escrow_account(request_id)) == 0
    with gw.rt.reads() as session:
        entries = gw.rt.ledger.history(
            session, accounts=[infer_escrow_account(request_id)], limit=10
        )
    assert {e.kind for e in entries} == {"escrow", "settle"}
    assert {e.ref for e in entries} == {request_id}
    (done,) = gw.events("inference.completed")
    assert done.data["request_id"] == request_id and done.data["amount"] == price
    assert done.node == cheap.address and done.address == client.address
    assert dear.works == []


@sqlite_only
def test_streamed_chat_is_openai_sse_with_price_in_the_last_chunk(gw: Gateway) -> None:
    node = gw.node([TINY], honest())
    gw.wait_ready("tiny-lm")
    _, key = gw.caller()
    body = chat(text="one two", stream=True, stream_options={"include_usage": True})
    response = gw.post("/v1/chat/completions", key, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    request_id = response.headers["X-QuackMesh-Request-Id"]
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert streamed_text(chunks) == "echo one two"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3
    price = last["quackmesh"]["price"]
    assert last["quackmesh"] == {"request_id": request_id, "price": price, "node": node.address}
    assert f": quackmesh request_id={request_id} price={price}" in response.text
    assert gw.settled(request_id).charged == price
    assert int(response.headers["X-QuackMesh-Max-Price"]) >= price


@sqlite_only
def test_completions_and_embeddings_in_openai_shapes(gw: Gateway) -> None:
    gw.node([TINY, EMBED], honest())
    gw.wait_ready("tiny-lm")
    client, key = gw.caller()
    before = client.balance().available
    completion = gw.post("/v1/completions", key, {"model": "tiny-lm", "prompt": "x y"})
    assert completion.status_code == 200
    assert completion.json()["object"] == "text_completion"
    assert completion.json()["choices"][0]["text"] == "echo x y"
    streamed = gw.post(
        "/v1/completions", key, {"model": "tiny-lm", "prompt": "x y", "stream": True}
    )
    chunks = [c for c in sse_events(streamed.text) if isinstance(c, dict)]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "echo x y"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "quackmesh" in chunks[-1]

    embedded = gw.post("/v1/embeddings", key, {"model": "mini-embed", "input": ["a b", "c"]})
    assert embedded.status_code == 200, embedded.text
    data = embedded.json()
    assert [d["index"] for d in data["data"]] == [0, 1]
    assert data["data"][0]["object"] == "embedding"
    assert data["data"][1]["embedding"] == pytest.approx(vector("c"))
    assert data["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert int(embedded.headers["X-QuackMesh-Price"]) == 2 * EMBED.price

    b64 = gw.post(
        "/v1/embeddings", key, {"model": "mini-embed", "input": "a b", "encoding_format": "base64"}
    )
    raw = base64.b64decode(b64.json()["data"][0]["embedding"])
    assert np.frombuffer(raw, dtype="<f4") == pytest.approx(vector("a b"), abs=1e-6)
    ids = [
        completion.headers["X-QuackMesh-Request-Id"],
        streamed.headers["X-QuackMesh-Request-Id"],
        embedded.headers["X-QuackMesh-Request-Id"],
        b64.headers["X-QuackMesh-Request-Id"],
    ]
    spent = sum(gw.settled(i).charged for i in ids)
    assert client.balance().available == before - spent


# --- failover -------------------------------------------------------------------------------


@sqlite_only
def test_failover_when_the_cheapest_node_never_answers(gw: Gateway) -> None:
    mute = gw.node([TINY.model_copy(update={"price": 1_000})], silent, name="mute")
    good = gw.node([TINY], honest(), name="good")
    gw.wait_ready("tiny-lm", 2)
    _, key = gw.caller()
    response = gw.post("/v1/chat/completions", key, chat(text="hi"))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo hi"
    row = gw.settled(response.headers["X-QuackMesh-Request-Id"])
    assert (row.node, row.attempts, row.failed_nodes) == (good.address, 2, [mute.address])
    assert len(mute.works) == 1
    (failover,) = gw.events("inference.failover")
    assert failover.node == mute.address and "pick" in failover.data["reason"]
    # the mute node's latency estimate now carries the timeout: the next request avoids
    # waiting on it only by price order, so it is excluded per request, not banned
    assert gw.rt.inference.broker.latency(mute.address, "tiny-lm") is not None


@sqlite_only
def test_stream_continues_on_the_next_node_when_one_dies_mid_stream(gw: Gateway) -> None:
    dying = gw.node([TINY.model_copy(update={"price": 1_000})], honest(die_after=2), name="dying")
    good = gw.node([TINY], honest(), name="good")
    gw.wait_ready("tiny-lm", 2)
    _, key = gw.caller()
    response = gw.post("/v1/chat/completions", key, chat(text="a b c d e", stream=True))
    assert response.status_code == 200
    events = sse_events(response.text)
    assert streamed_text(events) == "echo a b c d e"  # nothing twice, nothing lost
    assert events[-2]["quackmesh"]["node"] == good.address
    row = gw.settled(response.headers["X-QuackMesh-Request-Id"])
    assert (row.node, row.failed_nodes, row.completion_tokens) == (good.address, [dying.address], 6)
    assert dying.outcomes == ["Died"]


@sqlite_only
def test_stalled_stream_fails_over_and_the_staller_is_told_to_stop(gw: Gateway) -> None:
    staller = gw.node(
        [TINY.model_copy(update={"price": 1_000})], honest(stall_after=1), name="slow"
    )
    good = gw.node([TINY], honest(), name="good")
    gw.wait_ready("tiny-lm", 2)
    _, key = gw.caller()
    response = gw.post("/v1/chat/completions", key, chat(text="p q r", stream=True))
    assert streamed_text(sse_events(response.text)) == "echo p q r"
    row = gw.settled(response.headers["X-QuackMesh-Request-Id"])
    assert row.node == good.address and row.failed_nodes == [staller.address]
    wait_until(lambda: staller.outcomes, what="the staller's stream to be refused", timeout=15)
    assert staller.outcomes[0] in {"lease_lost", "RemoteProtocolError", "WriteError", "ReadError"}


@sqlite_only
def test_continuation_that_begins_differently_ends_the_stream_with_an_error(gw: Gateway) -> None:
    gw.node([TINY.model_copy(update={"price": 1_000})], honest(die_after=2), name="dying")
    gw.node([TINY], honest(salt="-other-model"), name="other")
    gw.wait_ready("tiny-lm", 2)
    client, key = gw.caller()
    before = client.balance().available
    response = gw.post("/v1/chat/completions", key, chat(text="a b c d", stream=True))
    events = sse_events(response.text)
    assert events[-1]["error"]["code"] == "upstream_error"
    assert "differ" in events[-1]["error"]["message"]
    assert streamed_text(events) == "echo a"  # what the first node sent, nothing spliced
    row = gw.settled(response.headers["X-QuackMesh-Request-Id"])
    assert row.state == "failed" and client.balance().available == before


@sqlite_only
def test_every_node_failing_is_a_502_and_refunds_everything(gw: Gateway) -> None:
    gw.node([TINY], failing(), name="oom-1")
    gw.node([TINY], failing(), name="oom-2")
    gw.wait_ready("tiny-lm", 2)
    client, key = gw.caller()
    before = client.balance().available
    response = gw.post("/v1/chat/completions", key, chat())
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and "CUDA out of memory" in error["message"]
    row = gw.settled(response.headers["X-QuackMesh-Request-Id"])
    assert row.state == "failed" and row.attempts == 2
    assert client.balance().available == before
    assert gw.balance(infer_escrow_account(row.id)) == 0


@sqlite_only
def test_a_malformed_line_is_a_node_error_and_the_request_fails_over(gw: Gateway) -> None:
    bad = gw.node([TINY.model_copy(update={"price": 1_000})], garbage, name="garbage")
    gw.node([TINY], honest(), name="good")
    gw.wait_ready("tiny-lm", 2)
    _, key = gw.caller()
    response = gw.post("/v1/chat/completions", key, chat(text="z"))
    assert response.json()["choices"][0]["message"]["content"] == "echo z"
    wait_until(lambda: bad.outcomes, what="the bad node's answer")
    assert bad.outcomes == ["ValidationFailed"]


@sqlite_only
def test_no_free_node_within_the_queue_time_is_a_503(gw: Gateway) -> None:
    FakeNode(gw, [TINY], honest())  # registered and staked, but never polls
    client, key = gw.caller()
    before = client.balance().available
    response = gw.post("/v1/chat/completions", key, chat())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_node_available"
    gw.settled(response.headers["X-QuackMesh-Request-Id"])
    assert client.balance().available == before


@sqlite_only
def test_caller_leaving_mid_stream_pays_for_what_it_was_sent(gw: Gateway) -> None:
    node = gw.node([TINY], honest(delay=0.3))
    gw.wait_ready("tiny-lm")
    _, key = gw.caller()
    words = " ".join(f"w{i}" for i in range(30))
    headers = {"Authorization": f"Bearer {key}"}
    with gw.http.stream(
        "POST", "/v1/chat/completions", json=chat(text=words, stream=True), headers=headers
    ) as response:
        request_id = response.headers["X-QuackMesh-Request-Id"]
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"role"' not in line:
                seen += 1
                if seen == 2:
                    break
    row = gw.settled(request_id)
    assert row.state == "completed" and 2 <= row.completion_tokens < 31
    assert row.charged == generate_cost(TINY.price, row.prompt_tokens + row.completion_tokens)
    wait_until(lambda: node.outcomes, what="the node to be told to stop", timeout=15)
    assert node.outcomes[0] == "lease_lost"


@sqlite_only
def test_a_rented_node_serves_only_its_renter_and_free_of_per_token_charges(gw: Gateway) -> None:
    rented = gw.node([TINY], honest(), name="rented", price_per_hour=1_000_000)
    renter, renter_key = gw.caller()
    renter.rent(nodes=[rented.address], hours=1, budget=2_000_000)
    gw.wait_ready("tiny-lm")
    time.sleep(2 * float(FAST["inference_directory_s"]))  # type: ignore[arg-type]
    _, stranger_key = gw.caller()
    refused = gw.post("/v1/chat/completions", stranger_key, chat())
    assert refused.status_code == 503, refused.text
    served = gw.post("/v1/chat/completions", renter_key, chat(text="mine"))
    assert served.status_code == 200, served.text
    assert served.headers["X-QuackMesh-Price"] == "0"
    row = gw.settled(served.headers["X-QuackMesh-Request-Id"])
    assert (row.node, row.charged, row.refunded) == (rented.address, 0, row.reserved)


# --- errors in OpenAI's shape ---------------------------------------------------------------


@sqlite_only
def test_errors_are_answered_in_openai_shape(gw: Gateway) -> None:
    gw.node([TINY, EMBED], honest())
    gw.wait_ready("tiny-lm")
    poor, poor_key = gw.caller(amount=0)
    _, key = gw.caller()

    def error(path: str, body: dict[str, Any], k: str | None = key) -> tuple[int, dict[str, Any]]:
        response = gw.post(path, k, body)
        payload = response.json()
        assert set(payload) == {"error"}
        assert set(payload["error"]) == {"message", "type", "param", "code"}
        return response.status_code, payload["error"]

    status, err = error("/v1/chat/completions", chat(model="no-such-model"))
    assert (status, err["code"], err["param"]) == (404, "model_not_found", "model")
    status, err = error("/v1/chat/completions", {"model": "tiny-lm", "messages": []})
    assert (status, err["type"]) == (400, "invalid_request_error")
    status, err = error("/v1/embeddings", {"model": "mini-embed", "input": ""})
    assert (status, err["param"]) == (400, "input")
    status, err = error("/v1/embeddings", {"model": "mini-embed", "input": []})
    assert status == 400
    long_text = " ".join(["word"] * 300)
    status, err = error("/v1/chat/completions", chat(text=long_text))
    assert (status, err["code"]) == (400, "context_length_exceeded")
    status, err = error("/v1/chat/completions", chat(max_tokens=250, text="a b c d e f g"))
    assert (status, err["code"]) == (400, "context_length_exceeded")
    status, err = error("/v1/embeddings", {"model": "mini-embed", "input": ["ok", long_text]})
    assert (status, err["code"]) == (400, "context_length_exceeded")
    status, err = error("/v1/chat/completions", chat(), k=poor_key)
    assert (status, err["type"], err["code"]) == (402, "insufficient_quota", "insufficient_quota")
    status, err = error("/v1/chat/completions", chat(), k=None)
    assert (status, err["code"]) == (401, "missing_api_key")
    status, err = error("/v1/chat/completions", chat(), k="sk-qm-not-a-real-key")
    assert (status, err["code"]) == (401, "invalid_api_key")
    status, err = error("/v1/chat/completions", chat(temperature=0.7))
    assert (status, err["param"], err["code"]) == (400, "temperature", "unsupported_value")
    status, err = error("/v1/chat/completions", chat(frobnicate=True))
    assert status == 400 and "Unrecognized request argument" in err["message"]
    status, err = error("/v1/embeddings", {"model": "tiny-lm", "input": "x"})
    assert (status, err["code"]) == (400, "model_not_supported")
    status, err = error("/v1/chat/completions", chat(model="mini-embed"))
    assert (status, err["code"]) == (400, "model_not_supported")
    status, err = error("/v1/embeddings", {"model": "mini-embed", "input": [[1, 2]]})
    assert (status, err["code"]) == (400, "unsupported_value")
    bad_json = gw.http.post(
        "/v1/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    assert poor.balance().available == 0


@sqlite_only
def test_a_wallet_that_cannot_pay_gets_402_and_no_node_keeps_working_for_it(gw: Gateway) -> None:
    node = gw.node([TINY], honest(delay=0.2))
    gw.wait_ready("tiny-lm")
    _, key = gw.caller(amount=0)
    first = gw.post("/v1/chat/completions", key, chat(text="a b c d e f"))
    assert first.status_code == 402
    assert first.json()["error"]["code"] == "insufficient_quota"
    handed = len(node.works)  # 0 or 1: the reservation is written while a node is found
    if handed:
        wait_until(lambda: node.outcomes, what="the node to be told to stop")
        assert node.outcomes == ["lease_lost"]
    gw.wait_ready("tiny-lm")
    again = gw.post("/v1/chat/completions", key, chat(text="a b c d e f"))
    assert again.status_code == 402
    assert len(node.works) == handed  # refused a moment ago: it reserves before dispatch
    with gw.rt.reads() as session:
        assert list(session.scalars(select(InferenceRequest))) == []  # nothing half-written


@sqlite_only
def test_greedy_request_with_temperature_zero_is_served(gw: Gateway) -> None:
    gw.node([TINY], honest())
    gw.wait_ready("tiny-lm")
    _, key = gw.caller()
    response = gw.post("/v1/chat/completions", key, chat(temperature=0, top_p=1, seed=7, user="u"))
    assert response.status_code == 200


@sqlite_only
def test_a_node_reporting_context_exceeded_is_a_400_without_failover(gw: Gateway) -> None:
    gw.node([TINY], failing("context_length_exceeded: 300 tokens > 256"), name="strict")
    other = gw.node([TINY], honest(), name="other")
    gw.wait_ready("tiny-lm", 2)
    _, key = gw.caller()
    for _ in range(4):  # whichever node is asked first, a strict answer is not retried
        response = gw.post("/v1/chat/completions", key, chat(text="just under"))
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "context_length_exceeded"
            row = gw.settled(response.headers["X-QuackMesh-Request-Id"])
            assert row.state == "failed" and row.attempts == 0
            return
        assert other.works
    pytest.fail("the strict node was never asked")


# --- verification -------------------------------------------------------------------------


def _verified(gw: Gateway, request_id: str) -> InferenceRequest:
    def checked() -> InferenceRequest | None:
        row = gw.row(request_id)
        return row if row is not None and row.verdict != "unchecked" else None

    return wait_until(checked, what=f"{request_id} to be checked")


def _stake(gw: Gateway, address: str) -> int:
    return gw.balance(stake_account(address))


def _node_row(gw: Gateway, address: str) -> Node:
    with gw.rt.reads() as session:
        node = session.get(Node, address)
        assert node is not None
        return node


def test_verification_catches_a_node_serving_a_quantised_model(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(inference_check_rate=1.0)
    liar = gw.node([EMBED.model_copy(update={"price": 10})], honest(step=0.125), name="quantised")
    honest_a = gw.node([EMBED.model_copy(update={"price": 20})], honest(), name="honest-a")
    honest_b = gw.node([EMBED.model_copy(update={"price": 20})], honest(), name="honest-b")
    gw.wait_ready("mini-embed", 3)
    client, key = gw.caller()
    stake = _stake(gw, liar.address)
    response = gw.post("/v1/embeddings", key, {"model": "mini-embed", "input": ["x y", "z"]})
    assert response.status_code == 200
    request_id = response.headers["X-QuackMesh-Request-Id"]
    charged = int(response.headers["X-QuackMesh-Price"])
    row = _verified(gw, request_id)
    assert row.node == liar.address and row.verdict == "invalid"
    assert sorted(row.checked_by) == sorted([honest_a.address, honest_b.address])
    with gw.rt.reads() as session:
        (slashed,) = session.scalars(select(Slash))
    assert slashed.node == liar.address and slashed.reason == "inference"
    assert slashed.evidence["request_id"] == request_id
    assert slashed.evidence["minority"] == [liar.address]
    assert slashed.amount == stake * gw.rt.settings.slash_bps // 10_000 > 0
    assert _stake(gw, liar.address) == stake - slashed.amount
    assert _node_row(gw, liar.address).rep_validity < 0.5
    assert _node_row(gw, honest_a.address).rep_validity > 0.5
    assert _node_row(gw, honest_b.address).rep_validity > 0.5
    (checked,) = gw.events("inference.checked")
    assert checked.data["verdict"] == "invalid"
    assert checked.data["compensated"] == charged  # the treasury returns the wrong answer's price
    assert gw.balance(wallet_account(client.address)) == 50_000_000


def test_verification_slashes_a_lying_checker_not_the_honest_server(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(inference_check_rate=1.0)
    server = gw.node([TINY.model_copy(update={"price": 1_000})], honest(), name="server")
    liar = gw.node([TINY.model_copy(update={"price": 1_500})], honest(salt="-7b-q4"), name="liar")
    third = gw.node([TINY.model_copy(update={"price": 3_000})], honest(), name="third")
    gw.wait_ready("tiny-lm", 3)
    _, key = gw.caller()
    response = gw.post("/v1/chat/completions", key, chat(text="verify me"))
    row = _verified(gw, response.headers["X-QuackMesh-Request-Id"])
    assert row.node == server.address and row.verdict == "valid"
    assert row.checked_by == [liar.address, third.address]
    with gw.rt.reads() as session:
        slashes = list(session.scalars(select(Slash)))
    assert [s.node for s in slashes] == [liar.address]
    (checked,) = gw.events("inference.checked")
    assert set(checked.data["checkers_paid"]) == {third.address}  # the liar earns nothing


def test_agreeing_check_raises_trust_and_two_that_differ_slash_nobody(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(inference_check_rate=1.0)
    first = gw.node([TINY.model_copy(update={"price": 1_000})], honest(), name="first")
    second = gw.node([TINY], honest(), name="second")
    gw.wait_ready("tiny-lm", 2)
    _, key = gw.caller()
    ok = gw.post("/v1/chat/completions", key, chat(text="same answer"))
    assert _verified(gw, ok.headers["X-QuackMesh-Request-Id"]).verdict == "valid"
    assert _node_row(gw, first.address).results_valid == 1
    assert _node_row(gw, second.address).results_valid == 1
    second.answer = honest(salt="-different")
    gw.wait_ready("tiny-lm", 2)
    differ = gw.post("/v1/chat/completions", key, chat(text="other answer"))
    assert _verified(gw, differ.headers["X-QuackMesh-Request-Id"]).verdict == "inconclusive"
    with gw.rt.reads() as session:
        assert list(session.scalars(select(Slash))) == []


def test_honeypots_pay_an_honest_node_and_slash_one_that_cheats_when_unchecked(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(inference_check_rate=1.0)
    a = gw.node([TINY.model_copy(update={"price": 1_000})], honest(), name="a")
    b = gw.node([TINY.model_copy(update={"price": 1_500})], honest(), name="b")
    gw.wait_ready("tiny-lm", 2)
    _, key = gw.caller()
    first = gw.post("/v1/chat/completions", key, chat(text="a known answer"))
    assert _verified(gw, first.headers["X-QuackMesh-Request-Id"]).verdict == "valid"
    known = gw.rt.inference.known
    wait_until(lambda: known.count("tiny-lm") == 1, what="the agreed answer to be kept")
    assert known.pick("tiny-lm", a.address) is None  # never sent to a node that gave it

    # From now on answers are not re-checked, but every answering node gets a honeypot.
    gw.rt.settings.inference_check_rate = 0.0
    gw.rt.settings.inference_check_adaptive = False
    gw.rt.settings.inference_honeypot_rate = 1.0
    c = gw.node([TINY.model_copy(update={"price": 500})], honest(), name="c")
    gw.wait_ready("tiny-lm", 3)
    with gw.rt.sessions.begin() as session:  # the treasury pays honeypots (fees fund it)
        gw.rt.ledger.transfer(session, src=MINT, dst=TREASURY, amount=1_000_000)
    before = gw.balance(wallet_account(c.address))
    served = gw.post("/v1/chat/completions", key, chat(text="served by c"))
    assert served.status_code == 200
    wait_until(lambda: _node_row(gw, c.address).results_valid == 1, what="c's honeypot")
    earned = gw.balance(wallet_account(c.address)) - before
    price = int(served.headers["X-QuackMesh-Price"])
    assert earned > price - price * gw.rt.settings.fee_bps // 10_000  # + the honeypot's pay
    assert gw.balance(TREASURY) < 1_000_000

    c.answer = honest(salt="-q4")  # now c serves another model whenever it is not checked
    gw.wait_ready("tiny-lm", 3)
    stake = _stake(gw, c.address)
    cheated = gw.post("/v1/chat/completions", key, chat(text="c cheats here"))
    assert cheated.status_code == 200  # unchecked: the caller gets c's answer ...

    def slashed() -> list[Slash]:
        with gw.rt.reads() as session:
            return list(session.scalars(select(Slash).where(Slash.node == c.address)))

    (slash,) = wait_until(slashed, what="c's honeypot slash")  # ... and c is caught
    assert slash.reason == "honeypot" and slash.evidence["model"] == "tiny-lm"
    assert slash.evidence["expected"] != slash.evidence["answered"]
    assert sorted(slash.evidence["agreed_by"]) == sorted([a.address, b.address])
    assert _stake(gw, c.address) == stake - slash.amount
    assert _node_row(gw, c.address).rep_validity < 0.5
    assert [e.data["minority"] for e in gw.events("inference.checked")][-1] == [c.address]
    assert known.pick("mini-embed", c.address) is None  # no known answer: nothing to send


# --- restart ----------------------------------------------------------------------------


@sqlite_only
def test_a_reservation_left_by_a_dead_process_is_refunded_at_start(gw: Gateway) -> None:
    from quackmesh.coordinator.inference.billing import refund_orphans, reserve

    client, _ = gw.caller()
    before = client.balance().available
    reserve(
        gw.rt,
        request_id="inf_orphan",
        address=client.address,
        key_id=None,
        model="tiny-lm",
        op="chat",
        amount=1_234,
    )
    assert client.balance().available == before - 1_234
    assert refund_orphans(gw.rt) == 1
    assert client.balance().available == before
    row = gw.row("inf_orphan")
    assert row is not None and row.state == "failed" and row.refunded == 1_234


def test_pending_requests_wait_for_a_node_that_fits() -> None:
    import asyncio

    async def scenario() -> None:
        from quackmesh.coordinator.inference.broker import Broker

        broker = Broker()
        pending = Pending(
            model="m",
            op="chat",
            input={},
            stream=False,
            deadline_s=1,
            payer=None,
            price_cap=1,
            excluded=frozenset(),
        )
        assert broker.submit(pending) is None
        dear = _serving("0xdear", 2)
        assert await broker.lease(dear, ["m"], wait_s=0) is None  # over the price cap
        cheap = _serving("0xcheap", 1)
        attempt = await broker.lease(cheap, ["m"], wait_s=0)
        assert attempt is not None and attempt.node.address == "0xcheap"
        assert await broker.wait(pending, 0.1) is attempt

    asyncio.run(scenario())
