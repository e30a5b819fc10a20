"""FedAvg: the example-weighted mean of client deltas.

McMahan, Moore, Ramage, Hampson and Agüera y Arcas, "Communication-Efficient Learning of
Deep Networks from Decentralized Data", AISTATS 2017 (Algorithm 1). The server applies
``params + server_lr * delta``; ``server_lr = 1`` is the paper's plain model averaging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from quackmesh.fl.strategies.base import (
    Aggregate,
    FloatArray,
    IntArray,
    Strategy,
    check_real,
)

__all__ = ["FedAvg", "mean_aggregate", "weighted_mean"]


def weighted_mean(updates: FloatArray, num_examples: IntArray) -> FloatArray:
    """``sum_i n_i * updates[i] / sum_i n_i`` — ``(n_clients, n_params)`` to ``(n_params,)``."""
    weights = num_examples.astype(np.float64) / float(np.sum(num_examples))  # (n_clients,)
    mean: FloatArray = weights @ updates  # (n_params,)
    return mean


def mean_aggregate(updates: FloatArray, num_examples: IntArray) -> Aggregate:
    """The example-weighted mean, every update accepted (FedAvg and the server optimisers)."""
    return Aggregate(
        delta=weighted_mean(updates, num_examples),
        accepted=np.ones(updates.shape[0], dtype=np.bool_),
    )


@dataclass(frozen=True)
class FedAvg(Strategy):
    """Example-weighted averaging of client deltas, with a server learning rate."""

    name: ClassVar[str] = "fedavg"
    mean_based: ClassVar[bool] = True

    server_lr: float = 1.0

    def __post_init__(self) -> None:
        check_real("server_lr", self.server_lr, low=0.0, low_open=True)

    def aggregate_updates(self, updates: FloatArray, num_examples: IntArray) -> Aggregate:
        return mean_aggregate(updates, num_examples)

    def server_step(
        self, params: FloatArray, delta: FloatArray, state: dict[str, FloatArray]
    ) -> tuple[FloatArray, dict[str, FloatArray]]:
        return params + self.server_lr * delta, {}
