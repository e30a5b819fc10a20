"""The Flower side of ``fl.py``'s overhead comparison, run by an interpreter that has flwr.

    PYTHON benchmarks/_fl_flower.py CONFIG_JSON

Flower's own simulation engine (``flwr.simulation.run_simulation``, Ray backend) with the
Message API of flwr 1.2x+: a ``ServerApp`` running Flower's ``FedAvg`` and a ``ClientApp``
whose ``train`` calls :func:`quackmesh.fl.train.local_train` — so model (built by
:mod:`quackmesh.fl.zoo`), data, partitions, initial weights and per-client seeds are the
ones the QuackMesh run used, and only the framework around them differs. The global model
is evaluated centrally on the holdout after every round (``evaluate_fn``), as the
coordinator does; federated evaluation is off (``fraction_evaluate=0``), as it is in the
QuackMesh job.

CONFIG_JSON names an NPZ (``X_i``/``y_i`` per client, ``X_hold``/``y_hold``) and where to
write the result: one JSON object with the holdout accuracy after each round and the
wall-clock time at each central evaluation (``perf_counter``; round ``r`` lasted
``t[r] - t[r - 1]``). This file imports only numpy, flwr and ``quackmesh.fl``: the
interpreter running it may be a separate virtual environment (``.venv-bench``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def main(config_path: str) -> int:
    from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from quackmesh.fl.train import TrainConfig, evaluate, local_train, set_threads
    from quackmesh.fl.zoo import ModelSpec, init_weights

    cfg = json.loads(Path(config_path).read_text())
    spec = ModelSpec(**cfg["model"])
    n_clients = len(cfg["client_ids"])
    data_path, threads = cfg["data"], int(cfg["threads"])
    client_ids = [int(c) for c in cfg["client_ids"]]  # partition i -> coordinator client id
    seed, epochs, batch, lr = cfg["seed"], cfg["epochs"], cfg["batch_size"], cfg["lr"]

    def to_arrays(weights: dict[str, Any]) -> ArrayRecord:
        return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in weights.items()})

    def from_arrays(record: ArrayRecord) -> dict[str, Any]:
        return {k: np.asarray(v.numpy(), dtype=np.float32) for k, v in record.items()}

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        set_threads(threads)
        pid = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])
        with np.load(data_path) as npz:
            X, y = npz[f"X_{pid}"], npz[f"y_{pid}"]
        weights = from_arrays(msg.content["arrays"])
        # The seed the coordinator gives this partition's node in this round.
        round_seed = (seed * 1_000_003 + server_round * 1009 + client_ids[pid]) % 2**31
        config = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, seed=round_seed)
        result = local_train(spec, weights, X, y, config)
        new = {k: weights[k] + result.delta[k] for k in weights}
        metrics = MetricRecord({"num-examples": result.n_examples, "train_loss": result.loss})
        content = RecordDict({"arrays": to_arrays(new), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    with np.load(data_path) as npz:
        X_hold, y_hold = npz["X_hold"], npz["y_hold"]
    report: dict[str, Any] = {"accuracy": [], "loss": [], "eval_at": []}

    def central_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        loss, acc = evaluate(spec, from_arrays(arrays), X_hold, y_hold)
        report["eval_at"].append(time.perf_counter())
        if server_round > 0:
            report["accuracy"].append(acc)
            report["loss"].append(loss)
        return MetricRecord({"accuracy": acc, "loss": loss})

    server = ServerApp()

    @server.main()
    def server_main(grid: Grid, context: Context) -> None:
        set_threads(threads)
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=n_clients,
            min_available_nodes=n_clients,
        )
        strategy.start(
            grid=grid,
            initial_arrays=to_arrays(init_weights(spec, seed=seed)),
            num_rounds=cfg["rounds"],
            evaluate_fn=central_eval,
        )
        Path(cfg["result"]).write_text(json.dumps(report))

    backend = {
        "client_resources": {"num_cpus": cfg["cpus_per_client"], "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cfg["cpus"],
            "logging_level": logging.ERROR,
            "log_to_driver": False,
        },
    }
    report["started_at"] = time.perf_counter()
    run_simulation(
        server_app=server, client_app=client, num_supernodes=n_clients, backend_config=backend
    )
    if not Path(cfg["result"]).exists():
        print("the Flower ServerApp finished without a result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: _fl_flower.py CONFIG_JSON")
    sys.exit(main(sys.argv[1]))
