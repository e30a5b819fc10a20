"""In-process federated simulation for ``fl.py``: accuracy, robustness, secure aggregation.

Only :mod:`quackmesh.fl` is used (no network): every client trains with
:func:`quackmesh.fl.train.local_train`, the server aggregates with the strategy's own
``run_round`` and evaluates with :func:`quackmesh.fl.train.evaluate` — the same calls the
coordinator and the nodes make. Client ``i`` (1-based) of round ``r`` trains with the seed
the coordinator hands it, ``(seed * 1_000_003 + r * 1009 + i) % 2**31``.

Attacks (Byzantine clients, a fixed random 30 % by default): ``sign_flip`` sends
``-10 × delta`` (Fang et al., "Local Model Poisoning Attacks to Byzantine-Robust Federated
Learning", USENIX Security 2020, use scaled sign flips), ``gaussian`` sends
``N(0, sigma²)`` per coordinate (Blanchard et al. 2017's "Gaussian Byzantine" workers),
each with its true example count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from quackmesh.fl.data import Dataset
from quackmesh.fl.params import flatten, unflatten
from quackmesh.fl.strategies import make_strategy
from quackmesh.fl.train import TrainConfig, centralised_train, evaluate, local_train
from quackmesh.fl.zoo import ModelSpec, init_weights, param_shapes

__all__ = [
    "Attack",
    "FedConfig",
    "SimResult",
    "centralised",
    "client_seed",
    "robust_params",
    "run_federated",
    "secagg_cost",
]

Attack = Literal["none", "sign_flip", "gaussian"]
SIGN_FLIP_SCALE = -10.0
GAUSSIAN_SIGMA = 1.0  # per coordinate; honest deltas here are ~1e-3 per coordinate


def client_seed(seed: int, round_no: int, client_id: int) -> int:
    """The seed the coordinator sends client ``client_id`` (1-based) in ``round_no``."""
    return (seed * 1_000_003 + round_no * 1009 + client_id) % 2**31


@dataclass(frozen=True)
class FedConfig:
    """One federated run: model, local training and rounds (all clients every round)."""

    spec: ModelSpec
    rounds: int
    epochs: int
    batch_size: int = 32
    lr: float = 0.05
    seed: int = 0


@dataclass
class SimResult:
    accuracy: float  # on the holdout after the last round
    loss: float
    curve: list[float] = field(default_factory=list)  # holdout accuracy after each round
    seconds: float = 0.0
    rejected: int = 0  # updates the strategy flagged, summed over rounds
    diverged_round: int | None = None  # the round whose model was no longer finite


def robust_params(name: str, *, n_malicious: int, n_clients: int) -> dict[str, Any]:
    """Each strategy told the true number of Byzantine clients (the operator's threat)."""
    if name in ("krum", "multikrum"):
        return {"num_malicious": n_malicious}
    if name == "trimmed_mean":
        # Trim at least n_malicious from each end: beta * n rounded down must reach it.
        return {"beta": min(0.49, (n_malicious + 0.5) / n_clients)}
    return {}


def _poison(
    delta: npt.NDArray[np.float64], attack: Attack, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    if attack == "sign_flip":
        return SIGN_FLIP_SCALE * delta
    if attack == "gaussian":
        return rng.normal(0.0, GAUSSIAN_SIGMA, size=delta.shape)
    return delta


def run_federated(
    cfg: FedConfig,
    train: Dataset,
    holdout: Dataset,
    parts: Sequence[npt.NDArray[np.int64]],
    *,
    strategy: str = "fedavg",
    strategy_params: Mapping[str, Any] | None = None,
    attack: Attack = "none",
    malicious: Sequence[int] = (),
) -> SimResult:
    """FedAvg (or ``strategy``) over ``parts`` for ``cfg.rounds`` rounds; clients in
    ``malicious`` (0-based) send poisoned updates when ``attack`` is not ``none``."""
    started = time.perf_counter()
    agg = make_strategy(strategy, dict(strategy_params or {}))
    shapes = param_shapes(cfg.spec)
    params = flatten(init_weights(cfg.spec, seed=cfg.seed))  # (n_params,)
    state: dict[str, Any] = {}
    bad = set(malicious) if attack != "none" else set()
    rng = np.random.default_rng([cfg.seed, 0xBAD])
    counts = np.array([len(p) for p in parts], dtype=np.int64)  # (n_clients,)
    curve: list[float] = []
    rejected = 0
    loss = acc = math.nan
    for r in range(1, cfg.rounds + 1):
        weights = unflatten(params, shapes)
        rows = []
        for i, idx in enumerate(parts):
            config = TrainConfig(
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                seed=client_seed(cfg.seed, r, i + 1),
            )
            if i in bad and attack == "gaussian":  # no need to train: the update is noise
                rows.append(_poison(np.zeros_like(params), attack, rng))
                continue
            result = local_train(cfg.spec, weights, train.X[idx], train.y[idx], config)
            delta = flatten(result.delta)
            rows.append(_poison(delta, attack, rng) if i in bad else delta)
        try:
            out = agg.run_round(params, np.stack(rows), counts, state)  # (n_clients, n_params)
        except ValueError:  # a client's training blew up: NaN or infinite delta
            return SimResult(math.nan, math.nan, curve, time.perf_counter() - started, rejected, r)
        params, state = out.params, out.state
        rejected += int(np.sum(~out.aggregate.accepted))
        if not np.all(np.isfinite(params)) or np.max(np.abs(params)) > 1e30:
            return SimResult(math.nan, math.nan, curve, time.perf_counter() - started, rejected, r)
        loss, acc = evaluate(cfg.spec, unflatten(params, shapes), holdout.X, holdout.y)
        curve.append(acc)
    return SimResult(acc, loss, curve, time.perf_counter() - started, rejected)


def centralised(cfg: FedConfig, train: Dataset, holdout: Dataset) -> SimResult:
    """The ceiling: the same model from the same initial weights, trained on the pooled
    rows for ``rounds × epochs`` epochs (the same passes over each example)."""
    started = time.perf_counter()
    config = TrainConfig(batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
    epochs = cfg.rounds * cfg.epochs
    weights = centralised_train(
        cfg.spec, train.X, train.y, epochs=epochs, config=config, seed=cfg.seed
    )
    loss, acc = evaluate(cfg.spec, weights, holdout.X, holdout.y)
    return SimResult(acc, loss, [], time.perf_counter() - started)


def _best_of(fn: Any, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def secagg_cost(
    *, n_clients: int, n_params: int, seed: int = 0, repeats: int = 1
) -> dict[str, float]:
    """One secure-aggregation round (every client and the server, in this process) against
    the plain example-weighted sum of the same updates; seconds and their ratio."""
    from quackmesh.coordinator.fl.protocol import SECAGG_CLIP, WEIGHT_CAP
    from quackmesh.fl.secagg import QuantConfig, simulate_round

    rng = np.random.default_rng(seed)
    updates = rng.normal(0.0, 1e-3, size=(n_clients, n_params))  # (n_clients, n_params)
    counts = rng.integers(300, 500, size=n_clients)  # (n_clients,)
    weighted = updates * counts[:, None]
    # The coordinator's quantiser: a per-coordinate clip on the update times its weight cap.
    quant = QuantConfig.fit(clip=SECAGG_CLIP * WEIGHT_CAP, n_max=n_clients)
    total: list[Any] = []

    def secure() -> None:
        total.append(simulate_round(weighted, counts, quant=quant, seed=seed))

    def plain() -> None:
        total.append(counts @ updates / counts.sum())

    secure_s = _best_of(secure, repeats)
    plain_s = _best_of(plain, max(repeats, 20))
    got, weight = total[0]
    error = float(np.max(np.abs(got[:n_params] - weighted.sum(axis=0)))) if weight else math.nan
    return {
        "clients": n_clients,
        "params": n_params,
        "secure_ms": secure_s * 1000.0,
        "secure_ms_per_client": secure_s * 1000.0 / n_clients,
        "plain_ms": plain_s * 1000.0,
        "ratio": secure_s / plain_s,
        "max_abs_error": error,
    }
