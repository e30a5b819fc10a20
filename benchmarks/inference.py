"""Inference benchmark: what the gateway adds over the node's backend, and how it scales.

Three figures (issue 6), every one measured in this run against its own baseline:

1. **Gateway overhead.** A one-token completion on the tiny model, sent through the
   coordinator's OpenAI-compatible gateway (HTTP in, the node's long-poll lease, the node's
   answer stream back, HTTP out), against the same request answered by the same kind of
   serving process the node runs (:class:`quackmesh.node.model_process.ModelProcess`)
   called directly. p50 and p99 of each, and the difference: the latency the network path
   adds (coordinator *and* the node's pull hop; nodes have no inbound port to call).
2. **Embedding throughput** with 1, 2 and 3 serving nodes (MiniLM, batches of 16 short
   sentences, two client threads per node), sentences/s and scaling efficiency
   ``rate(n) / (n · rate(1))``.
3. **Streamed generation**: tokens/s of a 200-token greedy completion streamed through
   the gateway against the same completion from the serving process directly.

The coordinator runs in its own process (``benchmarks/_common.py serve``), the nodes as
real ``quackmesh node start --serve`` subprocesses; everything is bounded in time.

    .venv/bin/python benchmarks/inference.py            # ~3-5 min on 2 cores
    .venv/bin/python benchmarks/inference.py --quick    # ~1-2 min
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from _common import ServerProcess, coordinator_spec, fmt, percentile  # noqa: E402
from quackmesh.cli.localnet import LocalNetwork  # noqa: E402
from quackmesh.coordinator.settings import Settings  # noqa: E402
from quackmesh.core.inference_schemas import InferenceWork  # noqa: E402
from quackmesh.core.money import UNIT  # noqa: E402
from quackmesh.core.wallet import Wallet  # noqa: E402
from quackmesh.inference.backends import parse_serve  # noqa: E402
from quackmesh.inference.tiny import make_tiny_model  # noqa: E402
from quackmesh.node.model_process import ModelProcess  # noqa: E402
from quackmesh.sdk import Client  # noqa: E402

SENTENCES = [
    "a duck swims across the pond",
    "the network pays providers in DUCK",
    "federated learning keeps data on the nodes",
    "greedy decoding is deterministic",
    "the coordinator verifies results",
    "a provider turns an idle machine into income",
    "clients train models on data they never see",
    "the ledger is hash-chained and audited",
] * 2  # 16 per request
PROMPT = "the duck"


def _work(op: str, data: dict[str, Any], n: int) -> InferenceWork:
    return InferenceWork(
        id=f"bench-{n}", token="-", model="m", op=op, input=data, stream=True, deadline_s=60
    )  # type: ignore[arg-type]


def direct_latency(proc: ModelProcess, reps: int) -> list[float]:
    """One-token completions answered by the serving process itself (no HTTP)."""
    out = []
    for i in range(reps):
        t0 = time.perf_counter()
        chunks = list(proc.run(_work("complete", {"prompt": PROMPT, "max_tokens": 1}, i)))
        out.append(time.perf_counter() - t0)
        assert chunks[-1].type == "done", chunks[-1]
    return out


def direct_stream(proc: ModelProcess, tokens: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    done = list(proc.run(_work("complete", {"prompt": PROMPT, "max_tokens": tokens}, 0)))[-1]
    elapsed = time.perf_counter() - t0
    assert done.type == "done" and done.usage is not None, done
    return done.usage.completion_tokens, elapsed


def gateway_latency(http: httpx.Client, reps: int) -> list[float]:
    out = []
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 1, "temperature": 0}
    for _ in range(reps):
        t0 = time.perf_counter()
        r = http.post("/v1/completions", json=body)
        out.append(time.perf_counter() - t0)
        r.raise_for_status()
    return out


def gateway_stream(http: httpx.Client, tokens: int) -> tuple[int, float]:
    body = {
        "model": "tiny",
        "prompt": PROMPT,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    completion = 0
    with http.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                completion = int(chunk["usage"]["completion_tokens"])
    return completion, time.perf_counter() - t0


def embed_throughput(url: str, key: str, *, threads: int, seconds: float) -> float:
    """Sentences per second with ``threads`` clients sending batches of 16 for ``seconds``."""
    done = [0] * threads
    errors: list[str] = []
    stop_at = time.monotonic() + seconds

    def run(i: int) -> None:
        with httpx.Client(base_url=url, headers=_auth(key), timeout=60) as http:
            while time.monotonic() < stop_at:
                r = http.post("/v1/embeddings", json={"model": "minilm", "input": SENTENCES})
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    return
                done[i] += len(SENTENCES)

    started = time.monotonic()
    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + 120)
    if errors:
        raise RuntimeError(f"embedding requests failed: {errors[0]}")
    return sum(done) / (time.monotonic() - started)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_models(http: httpx.Client, names: set[str], *, count: int, timeout: float) -> None:
    """Until ``count`` nodes serve each of ``names`` (per /v1/market/nodes?model=)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = True
        for name in names:
            r = http.get("/v1/market/nodes", params={"model": name})
            if r.status_code != 200 or len(r.json().get("nodes", [])) < count:
                ok = False
        if ok:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{count} nodes serving {sorted(names)} did not appear in {timeout}s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer requests, shorter windows")
    p.add_argument("--reps", type=int, default=None, help="latency samples (300; quick 60)")
    p.add_argument("--seconds", type=float, default=None, help="embedding window (15; quick 6)")
    p.add_argument("--tokens", type=int, default=200, help="streamed completion length")
    p.add_argument("--nodes", default="1,2,3", help="embedding node counts")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    reps = args.reps or (60 if args.quick else 300)
    seconds = args.seconds or (6.0 if args.quick else 15.0)
    counts = [int(n) for n in args.nodes.split(",")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report: dict[str, Any] = {"cpus": os.cpu_count()}

    with tempfile.TemporaryDirectory(prefix="qm-infer-bench-") as tmp:
        home = Path(tmp)
        tiny = make_tiny_model(home / "tiny", seed=0)
        log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))

        # 1a/3a: the serving process alone
        log("loading the tiny model in a serving process (direct baseline)…")
        proc = ModelProcess(
            parse_serve(f"tiny=hf:{tiny}"), workdir=home / "direct", memory_mb=8192, threads=1
        )
        proc.start(timeout_s=300)
        try:
            direct_latency(proc, 5)  # warm-up
            d_lat = direct_latency(proc, reps)
            d_tokens, d_elapsed = direct_stream(proc, args.tokens)
        finally:
            proc.kill()

        spec = coordinator_spec(home / "coord", None, inference_check_rate=0.0)
        with ServerProcess(spec) as server:
            net = LocalNetwork(Settings(home=home / "coord", dev_mode=True))
            net.url = server.url
            user = Wallet.create()
            with Client(server.url, user) as client:
                client.faucet(1_000 * UNIT)
                key = client.api_key_create("bench").key
            http = httpx.Client(base_url=server.url, headers=_auth(key), timeout=120)
            try:
                log(f"starting 1 node serving tiny + minilm on {server.url}…")
                net.start_nodes(
                    1,
                    price=UNIT // 100,
                    extra_args=["--serve", f"tiny=hf:{tiny}", "--serve", "minilm=minilm"],
                )
                wait_models(http, {"tiny", "minilm"}, count=1, timeout=300)
                gateway_latency(http, 5)
                g_lat = gateway_latency(http, reps)
                g_tokens, g_elapsed = gateway_stream(http, args.tokens)

                rates: dict[int, float] = {}
                for n in counts:
                    have = len(net.nodes)
                    if n > have:
                        log(f"starting {n - have} more node(s) serving minilm…")
                        net.start_nodes(
                            n - have, price=UNIT // 100, extra_args=["--serve", "minilm=minilm"]
                        )
                    wait_models(http, {"minilm"}, count=n, timeout=300)
                    embed_throughput(server.url, key, threads=2 * n, seconds=2.0)  # warm-up
                    rates[n] = embed_throughput(server.url, key, threads=2 * n, seconds=seconds)
                    log(f"  {n} node(s): {rates[n]:.1f} sentences/s")
            finally:
                http.close()
                net.stop_nodes()

    def stats(xs: list[float]) -> dict[str, float]:
        return {
            "p50_ms": percentile(xs, 50) * 1000,
            "p99_ms": percentile(xs, 99) * 1000,
            "mean_ms": statistics.fmean(xs) * 1000,
        }

    direct, gateway = stats(d_lat), stats(g_lat)
    added = {k: gateway[k] - direct[k] for k in ("p50_ms", "p99_ms")}
    base = rates.get(1) or next(iter(rates.values()))
    report.update(
        {
            "latency": {"direct": direct, "gateway": gateway, "added": added, "reps": reps},
            "aim_added_p50_ms": 5.0,
            "aim_met": added["p50_ms"] <= 5.0,
            "embeddings": {
                str(n): {"sentences_per_s": r, "efficiency": r / (n * base)}
                for n, r in rates.items()
            },
            "stream": {
                "direct_tokens_per_s": d_tokens / d_elapsed,
                "gateway_tokens_per_s": g_tokens / g_elapsed,
                "tokens": g_tokens,
            },
        }
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"Inference gateway ({reps} one-token completions of the tiny model; {os.cpu_count()} CPUs)"
    )
    print("path      p50 ms   p99 ms")
    print(f"direct   {fmt(direct['p50_ms'], 2):>7}  {fmt(direct['p99_ms'], 2):>7}")
    print(f"gateway  {fmt(gateway['p50_ms'], 2):>7}  {fmt(gateway['p99_ms'], 2):>7}")
    print(
        f"added    {fmt(added['p50_ms'], 2):>7}  {fmt(added['p99_ms'], 2):>7}"
        f"   aim ≤ 5 ms p50: {'met' if report['aim_met'] else 'missed'}"
    )
    print("\nEmbeddings (MiniLM, 16 sentences per request, 2 client threads per node)")
    for n, row in report["embeddings"].items():
        print(
            f"  {n} node(s): {row['sentences_per_s']:8.1f} sentences/s  efficiency {row['efficiency']:.2f}"
        )
    s = report["stream"]
    print(
        f"\nStreamed generation ({s['tokens']} tokens): direct {s['direct_tokens_per_s']:.0f} tokens/s,"
        f" through the gateway {s['gateway_tokens_per_s']:.0f} tokens/s"
        f" ({s['gateway_tokens_per_s'] / s['direct_tokens_per_s']:.2f}×)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
