"""quackmesh.node.serving end to end: real serving child processes, real HTTP on loopback.

:class:`FakeCoordinator` is a ThreadingHTTPServer that speaks the node's side of the
inference protocol (signed long-poll leases, NDJSON answer streams with a bearer token)
plus just enough of the node endpoints (register, heartbeat, task lease) for a whole
:class:`NodeAgent` to run against it. Every wait in here is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from quackmesh.cli.localnet import free_port
from quackmesh.core.inference_schemas import InferenceChunk, InferenceWork
from quackmesh.core.schemas import NodeRegister
from quackmesh.core.signing import NonceCache, verify_request
from quackmesh.core.wallet import Wallet
from quackmesh.inference import TransformersBackend, make_tiny_model, parse_serve
from quackmesh.inference.backends import BackendError
from quackmesh.node.agent import NodeAgent, NodeConfig
from quackmesh.node.serving import ServingPool

WAIT_S = 30.0  # the most any test waits for something to happen


@dataclass
class Answer:
    work_id: str
    status: int
    authorization: str
    content_type: str
    http_chunks: int  # transfer-encoding chunks the body came in
    lines: list[InferenceChunk] = field(default_factory=list)


class FakeCoordinator:
    """Hands out queued :class:`InferenceWork` and records the answers streamed back."""

    def __init__(self, *, port: int = 0, hold_s: float = 1.0) -> None:
        self.hold_s = hold_s  # longest a lease long-poll is held here
        self.works: list[InferenceWork] = []
        self.answers: list[Answer] = []
        self.leases: list[dict[str, Any]] = []  # {"address", "models", "wait_s"}
        self.registered: list[NodeRegister] = []
        self.stream_status = 200
        self.submitted = 0
        self.cond = threading.Condition()
        self.nonces = NonceCache(ttl=120)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if self.path.endswith("/stream"):
                    fake._stream(self)
                    return
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                address = verify_request(
                    dict(self.headers),
                    method="POST",
                    path=self.path,
                    body=body,
                    window=60,
                    nonces=fake.nonces,
                )
                data = json.loads(body)
                if self.path == "/v1/inference/lease":
                    self._json(fake._lease(address, data))
                elif self.path == "/v1/nodes/register":
                    self._json(fake._register(address, data))
                elif self.path == "/v1/nodes/heartbeat":
                    self._json({"server_time": time.time(), "status": "online", "cancel": []})
                elif self.path == "/v1/tasks/lease":
                    time.sleep(min(0.2, float(data.get("wait_s", 0))))
                    self._json({"tasks": []})
                else:
                    self._json({"code": "not_found", "detail": self.path}, status=404)

            def _json(self, value: Any, status: int = 200) -> None:
                data = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        with self.cond:
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def submit(self, **fields: Any) -> InferenceWork:
        self.submitted += 1
        number = self.submitted
        values: dict[str, Any] = {
            "id": f"inf-{number}",
            "token": f"tok-{number}",
            "stream": True,
            "deadline_s": 20.0,
            **fields,
        }
        work = InferenceWork.model_validate(values)
        with self.cond:
            self.works.append(work)
            self.cond.notify_all()
        return work

    def answer(self, work_id: str, *, timeout: float = WAIT_S) -> Answer:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for answer in self.answers:
                    if answer.work_id == work_id:
                        return answer
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no answer to {work_id} within {timeout}s")
                self.cond.wait(left)

    # --- handlers (run on the server's threads) -------------------------------------
    def _lease(self, address: str, data: dict[str, Any]) -> Any:
        deadline = time.monotonic() + min(self.hold_s, float(data["wait_s"]))
        with self.cond:
            self.leases.append({"address": address, **data})
            while True:
                for work in self.works:
                    if work.model in data["models"]:
                        self.works.remove(work)
                        return work.model_dump(mode="json")
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def _register(self, address: str, data: dict[str, Any]) -> dict[str, Any]:
        body = NodeRegister.model_validate(data)
        with self.cond:
            self.registered.append(body)
        now = time.time()
        return {
            "address": address,
            "name": body.name,
            "status": "online",
            "hardware": body.hardware.model_dump(mode="json"),
            "price_per_unit": body.price_per_unit,
            "slots": body.slots,
            "workloads": body.workloads,
            "registered_at": now,
            "last_seen_at": now,
            "tasks_completed": 0,
            "tasks_failed": 0,
            "models": [m.model_dump(mode="json") for m in body.models],
        }

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        work_id = handler.path.split("/")[-2]
        answer = Answer(
            work_id=work_id,
            status=self.stream_status,
            authorization=handler.headers.get("authorization", ""),
            content_type=handler.headers.get("content-type", ""),
            http_chunks=0,
        )
        buffer = b""
        for data in _chunked(handler):
            answer.http_chunks += 1
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                answer.lines.append(InferenceChunk.model_validate_json(line))
        handler.send_response(answer.status)
        handler.send_header("content-length", "2")
        handler.end_headers()
        handler.wfile.write(b"{}")
        with self.cond:
            self.answers.append(answer)
            self.cond.notify_all()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a node that stops drops its long-poll: a reset connection, not a failure


def _chunked(handler: BaseHTTPRequestHandler) -> Iterator[bytes]:
    """The pieces of a ``Transfer-Encoding: chunked`` request body (RFC 9112 §7.1)."""
    assert handler.headers.get("transfer-encoding", "").lower() == "chunked"
    while True:
        size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        data = handler.rfile.read(size)
        handler.rfile.readline()  # the CRLF after each chunk
        yield data


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "m", seed=0)


@pytest.fixture
def coordinator() -> Iterator[FakeCoordinator]:
    fake = FakeCoordinator()
    yield fake
    fake.close()


def _pool(
    url: str, specs: list[str], workdir: Path, events: list[str], **options: Any
) -> ServingPool:
    return ServingPool(
        [parse_serve(s) for s in specs],
        coordinator=url,
        wallet=Wallet.create(),
        emit=events.append,
        workdir=workdir / "serving",
        threads=1,
        **{"lease_wait_s": 5.0, "backoff_max_s": 0.5, "load_timeout_s": 120.0, **options},
    )


@dataclass
class Served:
    """One pool serving the tiny model and MiniLM, shared by the tests of this module that
    leave it serving (loading models takes seconds)."""

    coordinator: FakeCoordinator
    pool: ServingPool
    events: list[str]

    def counts(self) -> tuple[int, int]:
        return self.pool.answered, self.pool.failed


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Iterator[Served]:
    fake = FakeCoordinator()
    events: list[str] = []
    specs = [f"tiny=hf:{tiny_dir}@0.002", "minilm=minilm@0.0001"]
    pool = _pool(fake.url, specs, tmp_path_factory.mktemp("served"), events)
    try:
        pool.load()
        pool.start()
        yield Served(fake, pool, events)
    finally:
        pool.stop(grace_s=1.0)
        fake.close()


def _until(predicate: Any, *, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_pool_serves_generate_and_embed_models_end_to_end(served: Served, tiny_dir: Path) -> None:
    coordinator, pool = served.coordinator, served.pool
    models = {m.name: m for m in pool.models}
    assert models["tiny"].task == "generate" and models["tiny"].context_len == 256
    assert models["tiny"].price == 2000
    assert (models["minilm"].task, models["minilm"].dims, models["minilm"].price) == (
        "embed",
        384,
        100,
    )
    answered, failed = served.counts()
    request = {"prompt": "The duck swims across the", "max_tokens": 40}
    complete = coordinator.submit(model="tiny", op="complete", input=request)
    embed = coordinator.submit(model="minilm", op="embed", input={"texts": ["a duck", "a pond"]})
    chat = coordinator.submit(
        model="tiny", op="chat", input={"messages": [{"role": "user", "content": "Hello"}]}
    )

    answer = coordinator.answer(complete.id)
    assert answer.authorization == f"Bearer {complete.token}"
    assert answer.content_type == "application/x-ndjson"
    *deltas, done = answer.lines
    assert deltas and all(c.type == "delta" for c in deltas) and done.type == "done"
    assert answer.http_chunks > 1  # sent as produced, not in one piece
    # The same tokens as the backend gives in this process: the child is deterministic.
    local = list(TransformersBackend(tiny_dir).answer("complete", request))
    assert [i for c in deltas for i in c.token_ids] == [i for c in local for i in c.token_ids]
    assert "".join(c.text for c in deltas) == "".join(c.text for c in local)
    assert done.usage == local[-1].usage and done.finish_reason == local[-1].finish_reason

    (embedded,) = coordinator.answer(embed.id).lines
    assert embedded.type == "done" and embedded.embeddings is not None
    assert [len(v) for v in embedded.embeddings] == [384, 384]
    assert coordinator.answer(chat.id).lines[-1].type == "done"

    leases = list(coordinator.leases)
    assert {lease["address"] for lease in leases} == {pool.wallet.address}  # signed
    assert {tuple(lease["models"]) for lease in leases} == {("tiny",), ("minilm",)}
    _until(lambda: served.counts() == (answered + 3, failed))
    assert any(e.startswith(f"{complete.id}: complete on tiny: ") for e in served.events)


def test_backend_failures_and_deadlines_become_error_chunks(served: Served) -> None:
    coordinator = served.coordinator
    answered, failed = served.counts()
    bad = coordinator.submit(model="tiny", op="chat", input={"messages": []})
    (error,) = coordinator.answer(bad.id).lines
    assert error.type == "error" and "messages" in error.message

    late = coordinator.submit(
        model="tiny",
        op="complete",
        input={"prompt": "the duck", "max_tokens": 200},
        deadline_s=0.0,
    )
    lines = coordinator.answer(late.id).lines
    assert lines[-1].type == "error" and "deadline of 0 s exceeded" in lines[-1].message

    unserved = coordinator.submit(model="other", op="complete", input={"prompt": "x"})
    ok = coordinator.submit(
        model="tiny", op="complete", input={"prompt": "the duck", "max_tokens": 2}
    )
    assert coordinator.answer(ok.id).lines[-1].type == "done"  # still serving after errors
    assert unserved in coordinator.works  # only a node serving "other" leases it
    _until(lambda: served.counts() == (answered + 1, failed + 2))
    assert any(f"{bad.id}: chat on tiny failed: chat input: messages" in e for e in served.events)


def test_batch_requests_share_the_process_with_live_work(served: Served, tiny_dir: Path) -> None:
    """``ServingPool.complete`` (what an ``infer.generate`` task uses) gives the model's own
    greedy tokens, and live work leased meanwhile is still answered."""
    pool, coordinator = served.pool, served.coordinator
    request = {"prompt": "The duck swims across the", "max_tokens": 30}
    live = coordinator.submit(model="tiny", op="complete", input=request)
    answers = [
        pool.complete("tiny", "complete", request, request_id=f"batch-{i}", deadline_s=60)
        for i in range(3)
    ]
    local = list(TransformersBackend(tiny_dir).answer("complete", request))
    ids = tuple(i for c in local for i in c.token_ids)
    assert {a.token_ids for a in answers} == {ids}
    assert answers[0].text == "".join(c.text for c in local)
    assert answers[0].finish_reason == local[-1].finish_reason
    usage = local[-1].usage
    assert usage is not None and answers[0].completion_tokens == usage.completion_tokens
    assert coordinator.answer(live.id).lines[-1].type == "done"

    with pytest.raises(BackendError, match="does not serve model 'nope'"):
        pool.complete("nope", "complete", request, request_id="x", deadline_s=10)
    with pytest.raises(BackendError, match="does not generate"):
        pool.complete("minilm", "complete", request, request_id="x", deadline_s=10)
    with pytest.raises(BackendError, match="deadline"):
        pool.complete("tiny", "complete", request, request_id="late", deadline_s=0.0)
    stop = threading.Event()
    stop.set()
    with pytest.raises(BackendError, match="cancelled"):
        pool.complete("tiny", "complete", request, request_id="c", deadline_s=60, cancel=stop)
    assert pool.generation_models() == ["tiny"]
    again = pool.complete("tiny", "complete", request, request_id="after", deadline_s=60)
    assert again.token_ids == ids  # the process is fine after errors and a cancel


def test_a_refused_stream_is_logged_and_serving_goes_on(served: Served) -> None:
    coordinator = served.coordinator
    coordinator.stream_status = 410
    try:
        gone = coordinator.submit(
            model="tiny", op="complete", input={"prompt": "duck", "max_tokens": 2}
        )
        coordinator.answer(gone.id)
        refused = f"{gone.id}: coordinator refused the answer: HTTP 410"
        _until(lambda: any(refused in e for e in served.events))
    finally:
        coordinator.stream_status = 200
    ok = coordinator.submit(model="tiny", op="complete", input={"prompt": "duck", "max_tokens": 2})
    assert coordinator.answer(ok.id).lines[-1].type == "done"


def test_a_crashed_serving_process_is_restarted(served: Served) -> None:
    coordinator = served.coordinator
    process = served.pool._slots[0].process
    assert process.spec.model == "tiny" and process._proc is not None
    os.kill(process._proc.pid, signal.SIGKILL)  # as the kernel's OOM killer would
    first = coordinator.submit(model="tiny", op="complete", input={"prompt": "duck"})
    lines = coordinator.answer(first.id).lines
    # Leased before the worker noticed: answered with an error; after: by the new process.
    assert lines[-1].type == "done" or "serving process of tiny" in lines[-1].message
    _until(lambda: any("tiny: serving process is down; restarting it" in e for e in served.events))
    again = coordinator.submit(model="tiny", op="complete", input={"prompt": "duck"})
    assert coordinator.answer(again.id).lines[-1].type == "done"


def test_a_model_that_does_not_load_is_reported(tmp_path: Path, tiny_dir: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    pool = _pool("http://127.0.0.1:9", [f"bad=hf:{broken}"], tmp_path, [])
    with pytest.raises(BackendError, match="model bad: "):
        pool.load()
    # The address-space limit applies to the child: 300 MB cannot even import torch.
    starved = _pool("http://127.0.0.1:9", [f"tiny=hf:{tiny_dir}"], tmp_path, [], memory_mb=300)
    with pytest.raises(BackendError, match="model tiny: "):
        starved.load()
    assert starved.models == []


def test_an_unreachable_coordinator_is_retried_and_stop_is_prompt(
    tiny_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    events: list[str] = []
    pool = _pool(f"http://127.0.0.1:{port}", [f"tiny=hf:{tiny_dir}"], tmp_path, events)
    fake: FakeCoordinator | None = None
    try:
        pool.load()
        pool.start()
        _until(lambda: sum("inference lease for tiny failed" in e for e in events) >= 2)
        # It comes up and holds every long-poll for 20 s.
        fake = FakeCoordinator(port=port, hold_s=20.0)
        work = fake.submit(model="tiny", op="complete", input={"prompt": "duck", "max_tokens": 2})
        assert fake.answer(work.id).lines[-1].type == "done"
        leases = len(fake.leases)
        _until(lambda: len(fake.leases) > leases)  # now in a long-poll

        started = time.monotonic()
        pool.stop(grace_s=1.0)
        assert time.monotonic() - started < 10.0  # bounded by grace + 2 s, not the 20 s poll
        assert not pool._slots[0].process.alive
        # Work the stale long-poll still gets is refused at once, not left to time out.
        late = fake.submit(model="tiny", op="complete", input={"prompt": "duck"})
        (line,) = fake.answer(late.id).lines
        assert line.type == "error" and line.message == "the node is shutting down"
    finally:
        pool.stop(grace_s=0.0)
        if fake is not None:
            fake.close()


def test_node_agent_registers_its_models_and_serves_until_drained(
    coordinator: FakeCoordinator, tiny_dir: Path, tmp_path: Path
) -> None:
    config = NodeConfig(
        coordinator=coordinator.url,
        name="server",
        price_per_unit=1,
        heartbeat_s=0.2,
        lease_wait_s=1.0,
        workdir=tmp_path / "node",
        serve=[parse_serve(f"tiny=hf:{tiny_dir}@0.5")],
    )
    events: list[str] = []
    agent = NodeAgent(config, Wallet.create(), on_event=events.append)
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    try:
        _until(lambda: bool(coordinator.registered))
        (served,) = coordinator.registered[0].models
        assert (served.name, served.task, served.price) == ("tiny", "generate", 500_000)
        work = coordinator.submit(
            model="tiny", op="complete", input={"prompt": "duck", "max_tokens": 4}
        )
        assert coordinator.answer(work.id).lines[-1].type == "done"
        assert any("serving tiny (generate)" in e for e in events)
    finally:
        agent.request_drain()
        runner.join(timeout=WAIT_S)
    assert not runner.is_alive()
    assert agent.serving is not None and not agent.serving._slots[0].process.alive
