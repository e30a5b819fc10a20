"""Coordinate-wise trimmed mean aggregation.

Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", ICML 2018 (the trimmed-mean algorithm). For each coordinate
the ``k = floor(beta * n)`` largest and ``k`` smallest values are dropped and the rest are
averaged without weights (as in the paper; weights would let a client buy influence).
``beta`` lies in ``[0, 0.5)``, which guarantees ``n > 2k`` for every ``n``.

Like the median, trimming rejects no whole update; ``accepted`` flags updates far from the
aggregate with the same ``outlier_factor`` rule
(:func:`quackmesh.fl.strategies.base.distance_outliers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from quackmesh.fl.strategies.base import (
    Aggregate,
    FloatArray,
    IntArray,
    Strategy,
    StrategyError,
    check_real,
    distance_outliers,
)

__all__ = ["TrimmedMean", "trimmed_mean"]


def trimmed_mean(updates: FloatArray, *, beta: float) -> FloatArray:
    """Per-coordinate mean after trimming ``floor(beta * n)`` values from each end."""
    n = updates.shape[0]
    k = math.floor(beta * n)
    if n <= 2 * k:
        raise StrategyError(f"trimming {k} from each end of {n} updates leaves none")
    ordered = np.sort(updates, axis=0)  # (n_clients, n_params), each column sorted
    mean: FloatArray = np.mean(ordered[k : n - k], axis=0)  # (n_params,)
    return mean


@dataclass(frozen=True)
class TrimmedMean(Strategy):
    """Unweighted coordinate-wise ``beta``-trimmed mean of the updates."""

    name: ClassVar[str] = "trimmed_mean"
    mean_based: ClassVar[bool] = False

    beta: float = 0.1
    outlier_factor: float = 3.0

    def __post_init__(self) -> None:
        check_real("beta", self.beta, low=0.0, high=0.5, high_open=True)
        check_real("outlier_factor", self.outlier_factor, low=0.0, low_open=True)

    def aggregate_updates(self, updates: FloatArray, num_examples: IntArray) -> Aggregate:
        delta = trimmed_mean(updates, beta=self.beta)
        accepted = distance_outliers(updates, delta, outlier_factor=self.outlier_factor)
        return Aggregate(delta=delta, accepted=accepted)
