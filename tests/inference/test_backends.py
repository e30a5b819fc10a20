"""quackmesh.inference: the tiny model, the backends on it and on MiniLM, --serve specs,
streaming detokenization and the OpenAI-compatible backend against a fake server."""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from quackmesh.core.inference_schemas import InferenceChunk
from quackmesh.inference import (
    EmbeddingBackend,
    OpenAIServerBackend,
    ServeSpec,
    TransformersBackend,
    make_tiny_model,
    parse_serve,
    parse_serves,
)
from quackmesh.inference.backends import Backend, BackendError
from quackmesh.inference.base import render_plain_chat
from quackmesh.inference.detokenize import IncrementalDecoder
from quackmesh.inference.tiny import tiny_vocab

PROMPT = {"prompt": "The duck swims across the", "max_tokens": 40}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        "a": make_tiny_model(root / "a", seed=0),
        "a_again": make_tiny_model(root / "a_again", seed=0),
        "b": make_tiny_model(root / "b", seed=1),
        "chat": make_tiny_model(root / "chat", seed=0, chat_template=True),
        "llama": make_tiny_model(root / "llama", seed=3, arch="llama", context_len=32),
    }


@pytest.fixture(scope="module")
def tiny(models: dict[str, Path]) -> TransformersBackend:
    return TransformersBackend(models["a"], threads=1)


@pytest.fixture(scope="module")
def minilm() -> EmbeddingBackend:
    return EmbeddingBackend()


def _run(
    backend: TransformersBackend | EmbeddingBackend, op: str, data: dict[str, Any]
) -> list[InferenceChunk]:
    return list(backend.answer(op, data))


def _ids(chunks: list[InferenceChunk]) -> list[int]:
    return [i for c in chunks if c.type == "delta" for i in c.token_ids]


def _text(chunks: list[InferenceChunk]) -> str:
    return "".join(c.text for c in chunks if c.type == "delta")


# --- the tiny model --------------------------------------------------------------------
def test_same_seed_writes_identical_files_and_another_seed_other_weights(
    models: dict[str, Path],
) -> None:
    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    names = sorted(p.name for p in models["a"].iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(names)
    for name in names:
        assert digest(models["a"] / name) == digest(models["a_again"] / name), name
    assert digest(models["a"] / "model.safetensors") != digest(models["b"] / "model.safetensors")
    assert not list(models["a"].glob("*.bin"))  # safetensors only: nothing to unpickle


def test_tiny_tokenizer_covers_its_text() -> None:
    vocab = tiny_vocab()
    assert vocab["<pad>"] == 0 and vocab["<eos>"] == 1 and vocab["<unk>"] == 2
    assert {"duck", "pond", ".", "?"} <= set(vocab)


# --- TransformersBackend ---------------------------------------------------------------
def test_greedy_decoding_is_deterministic_and_depends_on_the_weights(
    models: dict[str, Path], tiny: TransformersBackend
) -> None:
    first = _run(tiny, "complete", PROMPT)
    again = _run(TransformersBackend(models["a_again"]), "complete", PROMPT)
    other = _run(TransformersBackend(models["b"]), "complete", PROMPT)
    assert first[-1].type == "done" and _ids(first)
    assert _ids(again) == _ids(first) and _text(again) == _text(first)
    assert _ids(other) != _ids(first)


def test_deltas_concatenate_to_the_full_text_and_usage_counts_tokens(
    tiny: TransformersBackend,
) -> None:
    chunks = _run(tiny, "complete", PROMPT)
    done = chunks[-1]
    ids = _ids(chunks)
    prompt_ids, _ = tiny.prompt_ids("complete", PROMPT)
    assert all(c.type == "delta" for c in chunks[:-1]) and len(chunks) > 2
    assert _text(chunks) == tiny.tokenizer.decode(ids, skip_special_tokens=True)
    assert done.usage is not None
    assert done.usage.prompt_tokens == len(prompt_ids) == 5
    assert done.usage.completion_tokens == len(ids)
    assert done.finish_reason in ("stop", "length")


def test_max_tokens_is_respected(tiny: TransformersBackend) -> None:
    full = _ids(_run(tiny, "complete", PROMPT))
    assert len(full) > 3  # this prompt runs past three tokens on seed 0
    chunks = _run(tiny, "complete", {**PROMPT, "max_tokens": 3})
    assert _ids(chunks) == full[:3]
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_the_context_length_caps_prompt_and_completion(models: dict[str, Path]) -> None:
    small = TransformersBackend(models["llama"])  # context_len 32
    assert small.info.context_len == 32 and small.info.task == "generate"
    chunks = _run(small, "complete", {"prompt": "the duck " * 10, "max_tokens": 500})
    assert chunks[-1].type == "done"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens <= 32
    too_long = _run(small, "complete", {"prompt": "the duck " * 20, "max_tokens": 1})
    assert too_long[-1].type == "error" and "context is 32" in too_long[-1].message


def test_chat_uses_the_tokenizer_template_or_the_plain_one(models: dict[str, Path]) -> None:
    messages = [
        {"role": "system", "content": "You are a duck."},
        {"role": "user", "content": "Hello"},
    ]
    request = {"messages": messages, "max_tokens": 5}
    plain = TransformersBackend(models["a"])
    templated = TransformersBackend(models["chat"])
    plain_ids, _ = plain.prompt_ids("chat", request)
    templated_ids, _ = templated.prompt_ids("chat", request)
    expected_plain = "system: You are a duck.\nuser: Hello\nassistant:"
    assert plain.tokenizer(expected_plain)["input_ids"] == plain_ids
    said = templated.tokenizer("system says: You are a duck.\nuser says: Hello\nassistant says:")
    assert said["input_ids"] == templated_ids
    chunks = _run(templated, "chat", request)
    assert chunks[-1].type == "done" and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == len(templated_ids)


@pytest.mark.parametrize(
    ("op", "data", "message"),
    [
        ("complete", {"max_tokens": 3}, "complete input: prompt: Field required"),
        ("complete", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("chat", {"messages": []}, "chat input: messages"),
        ("chat", {"messages": [{"role": "robot", "content": "hi"}]}, "role"),
        ("embed", {"texts": ["x"]}, "does not embed"),
        ("translate", {}, "unknown op 'translate'"),
    ],
)
def test_bad_input_is_answered_with_one_error_chunk(
    tiny: TransformersBackend, op: str, data: dict[str, Any], message: str
) -> None:
    chunks = _run(tiny, op, data)
    assert len(chunks) == 1 and chunks[0].type == "error"
    assert message in chunks[0].message


def test_a_stop_request_interrupts_generation(tiny: TransformersBackend) -> None:
    chunks = list(tiny.answer("complete", PROMPT, stop=lambda: "cancelled"))
    assert chunks[-1].type == "error" and chunks[-1].message == "cancelled"
    assert len(_ids(chunks)) <= 1


# --- streaming detokenization ----------------------------------------------------------
def test_incremental_decoder_holds_back_split_utf8_characters() -> None:
    text = "héllo 🦆 wörld"
    data = list(text.encode())
    decoder = IncrementalDecoder(lambda ids: bytes(ids).decode("utf-8", errors="replace"))
    pieces = [decoder.push(b) for b in data]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert decoder.take_ids() == data


def test_incremental_decoder_keeps_spaces_between_words() -> None:
    words = ["the", "duck", "<pad>", "swims"]
    decoder = IncrementalDecoder(lambda ids: " ".join(words[i] for i in ids if words[i] != "<pad>"))
    pieces = [decoder.push(i) for i in range(4)]
    assert pieces == ["the", " duck", "", " swims"]


# --- MiniLM ----------------------------------------------------------------------------
def test_minilm_embeds_unit_vectors_in_order(minilm: EmbeddingBackend) -> None:
    texts = [
        "A duck swims on the pond.",
        "A duck is swimming in a lake.",
        "Quarterly tax filings are due in April.",
    ]
    (chunk,) = _run(minilm, "embed", {"texts": texts})
    assert chunk.type == "done" and chunk.embeddings is not None
    vectors = chunk.embeddings
    assert minilm.info.dims == 384 and minilm.info.task == "embed"
    assert [len(v) for v in vectors] == [384, 384, 384]
    for v in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.3
    alone, tokens = minilm.embed([texts[2]])
    assert max(abs(x - y) for x, y in zip(alone[0], vectors[2], strict=True)) < 1e-4
    assert chunk.usage is not None and chunk.usage.prompt_tokens > tokens > 2
    served = minilm.served_model(name="minilm", price=5)
    assert (served.task, served.dims, served.context_len, served.price) == ("embed", 384, 256, 5)


def test_minilm_refuses_generation(minilm: EmbeddingBackend) -> None:
    (chunk,) = _run(minilm, "chat", {"messages": [{"role": "user", "content": "hi"}]})
    assert chunk.type == "error" and "does not generate" in chunk.message


# --- serve specs -----------------------------------------------------------------------
def test_parse_serve_reads_every_backend(models: dict[str, Path]) -> None:
    assert parse_serve("minilm=minilm") == ServeSpec(model="minilm", kind="minilm")
    spec = parse_serve(f"tiny=hf:{models['a']}@0.002")
    assert (spec.kind, spec.target, spec.price, spec.task) == (
        "hf",
        str(models["a"]),
        2000,
        "generate",
    )
    assert spec.backend == f"hf:{models['a']}"
    spec = parse_serve("llama3:8b=openai:http://127.0.0.1:8080/v1#llama-3-8b@1")
    assert (spec.model, spec.kind, spec.target, spec.remote_model, spec.price) == (
        "llama3:8b",
        "openai",
        "http://127.0.0.1:8080/v1",
        "llama-3-8b",
        1_000_000,
    )
    spec = parse_serve("e5=openai-embed:http://user:pw@127.0.0.1:9000/v1")
    assert (spec.target, spec.remote_model, spec.price, spec.task) == (
        "http://user:pw@127.0.0.1:9000/v1",
        "e5",
        0,
        "embed",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("minilm", "MODEL=BACKEND[@PRICE]"),
        ("=minilm", "MODEL=BACKEND[@PRICE]"),
        ("bad name=minilm", "model name 'bad name'"),
        ("m=gpt4", "unknown backend 'gpt4'"),
        ("m=hf:/no/such/dir", "is not a directory"),
        ("m=openai:ftp://host", "needs an http(s) URL"),
        ("m=minilm@0.0000001", "at most 6 decimals"),
    ],
)
def test_parse_serve_explains_mistakes(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_serve(text)
    assert message in str(info.value)


def test_parse_serve_wants_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"holds no config\.json"):
        parse_serve(f"m=hf:{tmp_path}")
    with pytest.raises(ValueError, match="names model 'm' twice"):
        parse_serves(["m=minilm", "m=minilm@1"])


def test_inference_all_is_sorted_and_complete() -> None:
    for module in (
        "quackmesh.inference",
        "quackmesh.inference.backends",
        "quackmesh.inference.base",
    ):
        mod = importlib.import_module(module)
        names = list(mod.__all__)
        key = lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n)  # noqa: E731
        assert names == sorted(names, key=key), module
        assert all(hasattr(mod, n) for n in names), module


# --- OpenAIServerBackend ---------------------------------------------------------------
class FakeOpenAI:
    """A tiny OpenAI-compatible server on 127.0.0.1: SSE for completions, JSON embeddings."""

    def __init__(self, *, usage: bool = True, fail: int | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the SSE body ends when the connection closes

            def do_GET(self) -> None:
                body = {"data": [{"id": "remote-llm", "object": "model", "max_model_len": 4096}]}
                self._json(200, body)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.bodies.append({"path": self.path, **body})
                if fail is not None:
                    self._json(fail, {"error": {"message": "model overloaded"}})
                    return
                if self.path.endswith("/embeddings"):
                    data = [
                        {"index": i, "embedding": [3.0, 4.0 + i]} for i in range(len(body["input"]))
                    ]
                    self._json(200, {"data": data[::-1], "usage": {"prompt_tokens": 7}})
                    return
                chat = self.path.endswith("/chat/completions")
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                pieces = ["Quack", ",", " quack", "!"][: body["max_tokens"]]
                for piece in pieces:
                    choice = {"index": 0, "delta": {"content": piece}} if chat else {"text": piece}
                    self._event({"choices": [choice]})
                final = {"index": 0, "finish_reason": "length" if len(pieces) < 4 else "stop"}
                final |= {"delta": {}} if chat else {"text": ""}
                self._event({"choices": [final]})
                if usage:
                    self._event(
                        {
                            "choices": [],
                            "usage": {"prompt_tokens": 11, "completion_tokens": len(pieces)},
                        }
                    )
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, payload: dict[str, Any]) -> None:
                self.wfile.write(b": keep-alive\n\ndata: " + json.dumps(payload).encode() + b"\n\n")
                self.wfile.flush()

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


def test_openai_backend_streams_chat_and_completions(fake_openai: FakeOpenAI) -> None:
    backend = OpenAIServerBackend(fake_openai.url, model="remote-llm")
    try:
        assert backend.info.context_len == 4096 and backend.info.task == "generate"
        chunks = list(
            backend.answer(
                "chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}
            )
        )
        assert [c.text for c in chunks[:-1]] == ["Quack", ",", " quack", "!"]
        assert all(c.token_ids == [] for c in chunks)
        done = chunks[-1]
        assert done.type == "done" and done.finish_reason == "stop"
        assert done.usage is not None and (
            done.usage.prompt_tokens,
            done.usage.completion_tokens,
        ) == (11, 4)
        sent = fake_openai.bodies[-1]
        assert sent["path"] == "/v1/chat/completions" and sent["model"] == "remote-llm"
        assert sent["temperature"] == 0 and sent["stream"] is True and sent["max_tokens"] == 9

        chunks = list(backend.answer("complete", {"prompt": "Ducks say", "max_tokens": 2}))
        assert _text(chunks) == "Quack," and chunks[-1].finish_reason == "length"
        assert fake_openai.bodies[-1]["path"] == "/v1/completions"
    finally:
        backend.close()


def test_openai_backend_estimates_usage_when_the_server_sends_none() -> None:
    server = FakeOpenAI(usage=False)
    backend = OpenAIServerBackend(server.url, model="remote-llm")
    try:
        chunks = list(backend.answer("complete", {"prompt": "12345678", "max_tokens": 9}))
        assert chunks[-1].usage is not None
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 4)
    finally:
        backend.close()
        server.close()


def test_openai_embed_backend_normalises_and_orders_vectors(fake_openai: FakeOpenAI) -> None:
    backend = OpenAIServerBackend(fake_openai.url, model="e", task="embed")
    try:
        assert backend.info.dims == 2  # probed at load
        (chunk,) = backend.answer("embed", {"texts": ["a", "b"]})
        assert chunk.embeddings == [[0.6, 0.8], [3 / math.sqrt(34), 5 / math.sqrt(34)]]
        assert chunk.usage is not None and chunk.usage.prompt_tokens == 7
    finally:
        backend.close()


def test_openai_backend_errors_become_error_chunks() -> None:
    server = FakeOpenAI(fail=503)
    backend = OpenAIServerBackend(server.url, model="remote-llm")
    try:
        (chunk,) = backend.answer("complete", {"prompt": "x"})
        assert chunk.type == "error" and "HTTP 503" in chunk.message
    finally:
        backend.close()
        server.close()
    with pytest.raises(BackendError, match="cannot reach"):
        OpenAIServerBackend("http://127.0.0.1:9/v1", model="x")


def test_render_plain_chat_documents_the_format() -> None:
    from quackmesh.core.inference_schemas import ChatMessage

    text = render_plain_chat([ChatMessage(role="user", content="Hi")])
    assert text == "user: Hi\nassistant:"


def test_pickled_checkpoints_are_refused(models: dict[str, Path], tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(models["a"], pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        TransformersBackend(pickled)


# --- the contract every generate backend keeps ----------------------------------------
class GenerateBackendContract:
    """What a generate backend promises, whatever runs the model; subclasses provide the
    ``backend`` fixture."""

    def test_answer_streams_deltas_then_one_done_with_usage(self, backend: Backend) -> None:
        chunks = list(backend.answer("complete", {"prompt": "The duck", "max_tokens": 3}))
        *deltas, done = chunks
        assert all(c.type == "delta" and c.text for c in deltas)
        assert done.type == "done" and done.finish_reason in ("stop", "length")
        assert done.usage is not None and done.usage.prompt_tokens > 0
        assert 0 < done.usage.completion_tokens <= 3

    def test_chat_is_answered(self, backend: Backend) -> None:
        request = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}
        assert list(backend.answer("chat", request))[-1].type == "done"

    def test_bad_input_and_the_embed_op_are_one_error_chunk(self, backend: Backend) -> None:
        for op, data in [("complete", {}), ("embed", {"texts": ["x"]}), ("chat", {"messages": 1})]:
            (chunk,) = backend.answer(op, data)
            assert chunk.type == "error" and chunk.message

    def test_served_model_reports_the_task(self, backend: Backend) -> None:
        served = backend.served_model(name="m", price=1)
        assert served.task == "generate" and served.dims is None and served.context_len > 0


class TestTransformersBackendContract(GenerateBackendContract):
    @pytest.fixture
    def backend(self, tiny: TransformersBackend) -> Backend:
        return tiny


class TestOpenAIServerBackendContract(GenerateBackendContract):
    @pytest.fixture
    def backend(self, fake_openai: FakeOpenAI) -> Iterator[Backend]:
        backend = OpenAIServerBackend(fake_openai.url, model="remote-llm")
        yield backend
        backend.close()
