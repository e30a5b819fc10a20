"""The inference part of ``quackmesh demo`` (issue 6): use the network's models.

* **Embeddings.** One honest provider node also serves all-MiniLM-L6-v2 (``node start
  --serve minilm=minilm@PRICE``; the node loads the model in a child process before it
  registers). The client creates an API key and embeds four sentences through the
  coordinator's OpenAI-compatible gateway (``POST /v1/embeddings``, as in the OpenAI API
  reference, with plain ``httpx``). Checked here: every vector has unit length, the two
  sentences about a duck are the closest pair by cosine similarity, and the price the
  gateway charged (``X-QuackMesh-Price``) is four texts at the node's price.
* **Prediction.** An ``infer.model`` job runs the model the federated run trained (zoo
  format: its safetensors weights and the architecture from its model card) on the
  client's holdout digits. Checked here: the node's class probabilities match a numpy
  forward pass of the same downloaded weights, and its accuracy is the holdout accuracy
  the federated run reported for its last round (the same rows right).

A serving node whose model does not load exits; :func:`wait_online` then starts an honest
node without the model in its place, so the rest of the tour still runs, and the
embeddings check fails with the node's own error line.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from quackmesh.core.errors import QuackMeshError
from quackmesh.core.money import UNIT, format_duck
from quackmesh.core.schemas import JobState
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

if TYPE_CHECKING:
    from quackmesh.cli.localnet import LocalNetwork

__all__ = [
    "EMBED_PRICE",
    "SENTENCES",
    "SERVE_MODEL",
    "ServingNode",
    "closest_pair",
    "cosine_matrix",
    "inference_tour",
    "mlp_logits",
    "start_serving_node",
    "wait_online",
]

SERVE_MODEL = "minilm"
EMBED_PRICE = UNIT // 10_000  # 0.0001 DUCK per text embedded
SENTENCES = (
    "A duck is swimming on the pond.",
    "A duck paddles across the lake.",
    "The ledger balances to zero.",
    "Federated learning keeps the data on each node.",
)
SIMILAR = (0, 1)  # the pair that must come out closest
NEAR_TIE = 1e-4  # logits closer than this may rank differently under other float rounding


@dataclass
class ServingNode:
    """The honest node that also serves :data:`SERVE_MODEL`; ``error`` once it failed."""

    process: subprocess.Popen[bytes]
    address: str
    log: Path
    error: str | None = None


def start_serving_node(
    net: LocalNetwork, *, price: int, dataset: Path, backend: str = "minilm"
) -> ServingNode:
    """Start one provider node that holds ``dataset`` and serves ``backend`` as
    :data:`SERVE_MODEL` at :data:`EMBED_PRICE` per text."""
    serve = f"{SERVE_MODEL}={backend}@{format_duck(EMBED_PRICE, symbol=False)}"
    (proc,) = net.start_nodes(1, price=price, datasets=[dataset], extra_args=["--serve", serve])
    log = net.settings.home / "logs" / f"node-{len(net.nodes) - 1}.log"
    return ServingNode(process=proc, address=net.node_wallets[-1].address, log=log)


def wait_online(
    net: LocalNetwork,
    count: int,
    serving: ServingNode,
    *,
    replace: Callable[[], object],
    timeout: float = 60.0,
) -> int:
    """Wait for ``count`` online nodes, as :meth:`LocalNetwork.wait_nodes_online` does, but
    if the serving node exits first (its model did not load), record why and ``replace``
    it with a node that serves nothing, so the rest of the tour goes on without it."""
    deadline = time.monotonic() + timeout
    online = 0
    while time.monotonic() < deadline:
        online = net.online_nodes()
        if online >= count:
            return online
        if serving.error is None and serving.process.poll() is not None:
            serving.error = (
                f"the node serving {SERVE_MODEL} exited before it came online"
                f" ({_last_message(serving.log)}); see {serving.log}"
            )
            replace()
        elif any(p.poll() is not None for p in net.nodes if p is not serving.process):
            raise RuntimeError(f"a node process exited early; see {net.settings.home / 'logs'}")
        time.sleep(0.2)
    return online


def _last_message(log: Path) -> str:
    """The node's last message: from its last ``error:`` line on (the console wraps long
    lines), else its last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [i for i, ln in enumerate(lines) if ln.lower().startswith("error")]
    start = errors[-1] if errors else len(lines) - 1
    return " ".join(lines[start:])[:400] if lines else "no output"


# --- pure helpers ------------------------------------------------------------------------


def cosine_matrix(vectors: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Cosine similarity of every pair of rows: ``(n, dim)`` -> ``(n, n)``."""
    v = np.asarray(vectors, dtype=np.float64)
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    out: npt.NDArray[np.float64] = unit @ unit.T
    return out


def closest_pair(similarity: npt.NDArray[np.float64]) -> tuple[int, int]:
    """The two distinct rows with the highest similarity, lower index first."""
    masked = np.where(np.eye(len(similarity), dtype=bool), -np.inf, similarity)
    i, j = np.unravel_index(int(np.argmax(masked)), masked.shape)
    return (int(min(i, j)), int(max(i, j)))


def mlp_logits(
    weights: Mapping[str, npt.NDArray[Any]], x: npt.ArrayLike
) -> npt.NDArray[np.float32]:
    """Logits of a zoo ``mlp`` (``fc1`` … ``fcN`` each with a ReLU, then ``out``), in
    numpy: ``(n, n_features)`` -> ``(n, n_classes)``. An independent check of torch."""
    h = np.asarray(x, dtype=np.float32)
    i = 1
    while f"fc{i}.weight" in weights:
        h = np.maximum(h @ weights[f"fc{i}.weight"].T + weights[f"fc{i}.bias"], 0)
        i += 1
    out: npt.NDArray[np.float32] = h @ weights["out.weight"].T + weights["out.bias"]
    return out


def _softmax(z: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


# --- the tour ----------------------------------------------------------------------------


def inference_tour(
    net: LocalNetwork,
    wallet: Wallet,
    *,
    serving: ServingNode,
    fl_job: str,
    fl_accuracy: float | None,
    holdout: Path,
    max_price: int,
    out: Console,
    timeout: float,
) -> dict[str, Any]:
    """Embeddings through the gateway and a prediction job with the federated model,
    both paid by ``wallet`` (the federated run's client). The prediction job runs while
    the embeddings are requested."""
    out.print("[bold]Inference[/] — the network's models at work")
    with Client(net.url, wallet) as client, tempfile.TemporaryDirectory() as tmp:
        submitted = _submit_prediction(client, fl_job, holdout, Path(tmp), max_price, out)
        embeddings = _embeddings(client, net.url, serving, out)
        if isinstance(submitted, str):
            prediction: dict[str, Any] = {"job": None, "ok": False, "error": submitted}
            out.print(f"• [red]prediction not run: {submitted}[/]")
        else:
            try:
                prediction = _prediction_report(
                    client, submitted, holdout, fl_accuracy=fl_accuracy, out=out, timeout=timeout
                )
            except (QuackMeshError, httpx.HTTPError) as exc:
                prediction = {"job": submitted.job, "ok": False, "error": f"{exc!r}"}
                out.print(f"• [red]prediction {submitted.job} could not be followed: {exc!r}[/]")
    return {
        "embeddings": embeddings,
        "prediction": prediction,
        "ok": bool(embeddings["ok"] and prediction["ok"]),
    }


def _embeddings(client: Client, url: str, serving: ServingNode, out: Console) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "model": SERVE_MODEL, "node": serving.address, "texts": list(SENTENCES),
        "price_per_text": EMBED_PRICE, "ok": False,
    }  # fmt: skip
    error = serving.error
    if error is None:
        try:
            error = _wait_serving(client, serving)
            if error is None:
                error = _embed(client, url, summary)
        except (QuackMeshError, httpx.HTTPError) as exc:
            error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        out.print(f"• [red]embeddings failed: {error}[/]")
        return {**summary, "error": error}
    _print_embeddings(summary, out)
    return summary


def _embed(client: Client, url: str, summary: dict[str, Any]) -> str | None:
    """One ``POST /v1/embeddings`` with a fresh API key; fills ``summary``, returns what
    failed, if anything."""
    key = client.api_key_create("demo").key
    started = time.monotonic()
    response = httpx.post(
        f"{url}/v1/embeddings",
        json={"model": SERVE_MODEL, "input": list(SENTENCES)},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60.0,
    )
    summary["latency_s"] = round(time.monotonic() - started, 3)
    return _check_embeddings(response, summary)


def _wait_serving(client: Client, serving: ServingNode, timeout: float = 30.0) -> str | None:
    """``None`` once the marketplace lists the serving node for the model, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serving.process.poll() is not None:
            return f"the node serving {SERVE_MODEL} exited ({_last_message(serving.log)}); see {serving.log}"
        nodes = client.market_nodes(model=SERVE_MODEL).nodes
        if any(n.address == serving.address for n in nodes):
            return None
        time.sleep(0.25)
    return f"no node serves {SERVE_MODEL} after {timeout:.0f}s; see {serving.log}"


def _check_embeddings(response: httpx.Response, summary: dict[str, Any]) -> str | None:
    """Fill ``summary`` from the gateway's answer; returns what failed, if anything."""
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        return f"POST /v1/embeddings answered {response.status_code}: {message}"
    try:
        body = response.json()
        rows = sorted(body["data"], key=lambda d: d["index"])
        vectors = np.asarray([d["embedding"] for d in rows], dtype=np.float64)  # (texts, dim)
    except (ValueError, KeyError, TypeError) as exc:
        return f"POST /v1/embeddings answered something malformed: {exc!r}"
    if vectors.ndim != 2 or len(rows) != len(SENTENCES):
        return f"POST /v1/embeddings answered {len(rows)} vectors for {len(SENTENCES)} texts"
    similarity = cosine_matrix(vectors)
    norms = np.linalg.norm(vectors, axis=1)
    price = int(response.headers.get("X-QuackMesh-Price", "-1"))
    pair = closest_pair(similarity)
    summary.update(
        dims=int(vectors.shape[1]),
        norms=[round(float(n), 6) for n in norms],
        cosine=np.round(similarity, 4).tolist(),
        closest=list(pair),
        expected_closest=list(SIMILAR),
        price=price,
        prompt_tokens=body.get("usage", {}).get("prompt_tokens"),
        request_id=response.headers.get("X-QuackMesh-Request-Id"),
        unit_norm=bool(np.allclose(norms, 1.0, atol=1e-4)),
    )
    summary["ok"] = bool(
        summary["unit_norm"] and pair == SIMILAR and price == len(SENTENCES) * EMBED_PRICE
    )
    return None


def _print_embeddings(summary: dict[str, Any], out: Console) -> None:
    pair_ok = summary["closest"] == summary["expected_closest"]
    price_ok = summary["price"] == len(SENTENCES) * EMBED_PRICE
    out.print(
        f"• embeddings: {len(SENTENCES)} sentences → {summary['dims']}-dim vectors from"
        f" {SERVE_MODEL} on node {summary['node'][:10]}…, through the OpenAI-compatible gateway"
        f" (POST /v1/embeddings with an API key) in {summary['latency_s']}s; paid"
        f" {format_duck(summary['price'])} (X-QuackMesh-Price) {'✓' if price_ok else '[red]✗[/]'}"
        f" {len(SENTENCES)} texts at {format_duck(EMBED_PRICE)};"
        f" unit length {'✓' if summary['unit_norm'] else '[red]✗[/]'}"
    )
    table = Table("", *(str(i + 1) for i in range(len(SENTENCES))), "sentence", box=None)
    for i, row in enumerate(summary["cosine"]):
        table.add_row(str(i + 1), *(f"{v:.2f}" for v in row), SENTENCES[i])
    out.print(table)
    a, b = summary["closest"]
    out.print(
        f"  closest pair: {a + 1} & {b + 1} (cosine {summary['cosine'][a][b]:.2f})"
        f" {'[green]✓ the two about a duck[/]' if pair_ok else '[red]✗ expected 1 & 2[/]'}"
    )


@dataclass(frozen=True)
class _Submitted:
    job: str
    weights: dict[str, npt.NDArray[Any]]


def _submit_prediction(
    client: Client, fl_job: str, holdout: Path, workdir: Path, max_price: int, out: Console
) -> _Submitted | str:
    """Submit ``infer.model`` with the federated run's final model; an error line if the
    model cannot be had."""
    import safetensors.numpy

    from quackmesh.cli.infer import resolve_model

    try:
        source = resolve_model(client, fl_job, card=None, workdir=workdir)
        job = client.submit(
            "infer.model",
            data=holdout,
            inputs={"model": client.upload(source.path).sha256},
            params={**source.params, "label": "label"},
            max_price=max_price,
        )
        weights = dict(safetensors.numpy.load_file(str(source.path)))
    except (QuackMeshError, httpx.HTTPError, ValueError) as exc:
        return f"the federated run's model could not be used: {exc}"
    out.print(
        f"• submitted {job.id} infer.model: the {source.label} (zoo format) on the client's"
        f" holdout digits; {job.units} units, escrow {format_duck(job.escrowed)}"
    )
    return _Submitted(job.id, weights)


def _prediction_report(
    client: Client,
    submitted: _Submitted,
    holdout: Path,
    *,
    fl_accuracy: float | None,
    out: Console,
    timeout: float,
) -> dict[str, Any]:
    import pandas as pd

    try:
        done = client.wait(submitted.job, timeout=timeout, poll=0.25)
    except TimeoutError:
        done = client.status(submitted.job)
    summary: dict[str, Any] = {
        "job": done.id, "state": done.state.value,
        "node": done.tasks[0].node if done.tasks else None, "units": done.units,
        "paid": done.paid + done.fee, "fl_accuracy": fl_accuracy, "ok": False,
    }  # fmt: skip
    if done.state != JobState.SUCCEEDED:
        failures = [f"{f.reason}: {f.detail}" for t in done.tasks for f in t.failures]
        error = done.error or (failures[-1] if failures else "no detail")
        out.print(f"• [red]prediction {done.id} {done.state.value}: {error}[/]")
        return {**summary, "error": error}
    result = client.result(done.id).result
    frame = pd.read_csv(holdout)
    y = frame.pop("label").to_numpy()
    mine, local = _compare_local(result, submitted.weights, frame.to_numpy())
    rows, accuracy = int(result.get("rows", 0)), result.get("accuracy")
    summary.update(rows=rows, accuracy=accuracy, local_accuracy=float((mine == y).mean()), **local)
    matches_local = bool(local["matches_local"])
    # Equal accuracy means the same number of rows right; float32 and float64 means of the
    # same hits may differ in the last bits.
    matches_fl = (
        accuracy is not None
        and fl_accuracy is not None
        and round(accuracy * rows) == round(fl_accuracy * rows)
    )
    summary["ok"] = bool(rows == len(y) and matches_local and matches_fl)
    fl_text = f"{fl_accuracy:.2%}" if fl_accuracy is not None else "none"
    acc_text = f"{accuracy:.2%}" if accuracy is not None else "none"
    out.print(
        f"• prediction {done.id} {done.state.value} on node {str(summary['node'])[:10]}…:"
        f" {rows} rows, accuracy {acc_text}"
        f" {'[green]✓ =' if matches_fl else '[red]✗ ≠'} the federated run's holdout accuracy"
        f" {fl_text}[/]; predictions {'[green]✓ match' if matches_local else '[red]✗ differ from'}"
        f" a numpy forward pass of the downloaded weights[/]; paid {format_duck(summary['paid'])}"
    )
    return summary


def _compare_local(
    result: dict[str, Any], weights: Mapping[str, npt.NDArray[Any]], x: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.intp], dict[str, Any]]:
    """The node's predictions against a numpy forward pass of the same weights here:
    probabilities within the workload's default ``atol`` (1e-4), and the same class on
    every row whose top two logits are further apart than float rounding could bridge.
    Returns the local classes and the figures."""
    from quackmesh.workloads.infer_model import unpack_tensors

    logits = mlp_logits(weights, x)  # (rows, n_classes)
    mine = np.argmax(logits, axis=1)
    top2 = np.sort(logits, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > NEAR_TIE
    theirs = np.asarray(result.get("classes", []))
    tensors = unpack_tensors(result.get("tensors"), result.get("tensors_sha256")) or {}
    probs = tensors.get("probabilities")
    if probs is None or probs.shape != logits.shape or theirs.shape != mine.shape:
        return mine, {"matches_local": False, "agree_local": 0,
                      "decided_rows": int(decided.sum()), "max_prob_diff": None}  # fmt: skip
    max_diff = float(np.abs(probs - _softmax(logits)).max())
    agree = int((theirs == mine)[decided].sum())
    return mine, {
        "matches_local": agree == int(decided.sum()) and max_diff <= 1e-4,
        "agree_local": agree,
        "decided_rows": int(decided.sum()),
        "max_prob_diff": max_diff,
    }
