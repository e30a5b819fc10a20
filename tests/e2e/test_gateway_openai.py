"""The official ``openai`` client against a live coordinator with fake serving nodes.

The coordinator runs under uvicorn on loopback (``LocalNetwork``); the nodes are threads
that lease with the SDK and stream answers over HTTP (see
``tests/coordinator/test_inference_gateway.py``). Nothing here is QuackMesh-specific on
the caller's side: base URL and API key are all the client is told.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from quackmesh.cli.localnet import LocalNetwork
from quackmesh.core.schemas import ServedModel
from tests.coordinator.test_inference_gateway import (
    EMBED,
    TINY,
    Gateway,
    honest,
    vector,
)
from tests.e2e.conftest import e2e_settings

FAST = {
    "inference_pickup_s": 2.0,
    "inference_first_chunk_s": 5.0,
    "inference_stall_s": 2.0,
    "inference_queue_s": 2.0,
    "inference_check_rate": 0.0,
    "inference_check_adaptive": False,
}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Gateway]:
    net = LocalNetwork(e2e_settings(tmp_path / "home", **FAST))
    net.start_coordinator_thread()
    gw = Gateway(net)
    try:
        yield gw
    finally:
        gw.close()
        net.stop()


def _client(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0, timeout=30)


def test_openai_client_lists_models_embeds_and_chats(live: Gateway) -> None:
    live.node([TINY, EMBED], honest(), name="server")
    live.wait_ready(TINY.name)
    _, key = live.caller()
    with _client(live, key) as client:
        assert sorted(m.id for m in client.models.list()) == ["mini-embed", "tiny-lm"]
        assert client.models.retrieve("tiny-lm").owned_by == "quackmesh"

        # The SDK asks for base64 by default and decodes it back to floats.
        embedded = client.embeddings.create(model="mini-embed", input=["alpha beta", "gamma"])
        assert [d.index for d in embedded.data] == [0, 1]
        assert embedded.data[1].embedding == pytest.approx(vector("gamma"), abs=1e-6)
        assert embedded.usage.prompt_tokens == 3
        floats = client.embeddings.create(
            model="mini-embed", input="alpha beta", encoding_format="float"
        )
        assert floats.data[0].embedding == pytest.approx(vector("alpha beta"))

        raw = client.chat.completions.with_raw_response.create(
            model="tiny-lm", messages=[{"role": "user", "content": "hello gateway"}]
        )
        completion = raw.parse()
        assert completion.choices[0].message.content == "echo hello gateway"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.completion_tokens == 3
        price = int(raw.headers["x-quackmesh-price"])
        request_id = raw.headers["x-quackmesh-request-id"]
        assert completion.id == f"chatcmpl-{request_id}"

        stream = client.chat.completions.create(
            model="tiny-lm",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "stream this please"},
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "echo be brief stream this please"
        assert chunks[0].choices[0].delta.role == "assistant"
        finish = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finish[-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
        stamp = (chunks[-1].model_extra or {})["quackmesh"]
        assert stamp["price"] > 0

        legacy = client.completions.create(model="tiny-lm", prompt="one two", max_tokens=2)
        assert legacy.choices[0].text == "echo one"
        assert legacy.choices[0].finish_reason == "length"

    assert live.settled(request_id).charged == price
    assert live.settled(stamp["request_id"]).charged == stamp["price"]


def test_openai_client_sees_openai_errors(live: Gateway) -> None:
    live.node([TINY], honest(), name="server")
    live.wait_ready(TINY.name)
    _, key = live.caller()
    _, poor_key = live.caller(amount=0)
    messages = [{"role": "user", "content": "hi"}]
    with _client(live, key) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="gpt-9", messages=messages)  # type: ignore[arg-type]
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as hot:
            client.chat.completions.create(model="tiny-lm", messages=messages, temperature=0.9)  # type: ignore[arg-type]
        assert hot.value.param == "temperature"
        with pytest.raises(openai.BadRequestError) as long:
            client.chat.completions.create(
                model="tiny-lm",
                messages=[{"role": "user", "content": "w " * 400}],
            )
        assert long.value.code == "context_length_exceeded"
    with _client(live, "sk-qm-wrong") as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="tiny-lm", messages=messages)  # type: ignore[arg-type]
    with _client(live, poor_key) as client:
        with pytest.raises(openai.APIStatusError) as broke:
            client.chat.completions.create(model="tiny-lm", messages=messages)  # type: ignore[arg-type]
        assert broke.value.status_code == 402 and broke.value.code == "insufficient_quota"


def test_openai_stream_survives_a_node_dying_mid_answer(live: Gateway) -> None:
    cheap = ServedModel(name=TINY.name, task="generate", price=500, context_len=256)
    dying = live.node([cheap], honest(die_after=3), name="dying")
    live.node([TINY], honest(), name="steady")
    live.wait_ready(TINY.name, 2)
    _, key = live.caller()
    words = "the answer keeps coming even when a node dies"
    with _client(live, key) as client:
        stream = client.chat.completions.create(
            model="tiny-lm", messages=[{"role": "user", "content": words}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"echo {words}"
    assert dying.works and dying.outcomes == ["Died"]
