"""Coordinate-wise median aggregation.

Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", ICML 2018 (the median-based algorithm). Each coordinate of the
aggregate is the unweighted median of that coordinate across clients; example counts are
ignored, since weighting would let a client inflate its influence by claiming more data.

The median rejects no whole update, but for contribution scoring an update whose L2
distance to the aggregate exceeds ``outlier_factor`` times the median of all clients'
distances is reported as not accepted (see
:func:`quackmesh.fl.strategies.base.distance_outliers`).
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
    distance_outliers,
)

__all__ = ["Median", "coordinate_median"]


def coordinate_median(updates: FloatArray) -> FloatArray:
    """Per-coordinate median, ``(n_clients, n_params)`` to ``(n_params,)``."""
    median: FloatArray = np.median(updates, axis=0)
    return median


@dataclass(frozen=True)
class Median(Strategy):
    """Unweighted coordinate-wise median of the updates."""

    name: ClassVar[str] = "median"
    mean_based: ClassVar[bool] = False

    outlier_factor: float = 3.0

    def __post_init__(self) -> None:
        check_real("outlier_factor", self.outlier_factor, low=0.0, low_open=True)

    def aggregate_updates(self, updates: FloatArray, num_examples: IntArray) -> Aggregate:
        delta = coordinate_median(updates)
        accepted = distance_outliers(updates, delta, outlier_factor=self.outlier_factor)
        return Aggregate(delta=delta, accepted=accepted)
