"""FedYogi: Yogi as the server optimiser over the FedAvg pseudo-gradient.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (Algorithm 2, FedYogi line):
``v_t = v_{t-1} - (1 - beta_2) * delta**2 * sign(v_{t-1} - delta**2)``, which moves ``v``
additively rather than multiplicatively (Zaheer et al. 2018, "Adaptive Methods for
Nonconvex Optimization"). ``v`` starts at ``tau**2``, the paper's ``v_{-1} >= tau**2`` and
Flower's choice. The shared update is in :mod:`quackmesh.fl.strategies.fedopt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from quackmesh.fl.strategies.base import FloatArray
from quackmesh.fl.strategies.fedopt import FedOpt

__all__ = ["FedYogi", "yogi_second_moment"]


def yogi_second_moment(v: FloatArray, delta: FloatArray, *, beta_2: float) -> FloatArray:
    """Yogi's sign-controlled second-moment update; all arrays ``(n_params,)``."""
    squared = delta**2
    out: FloatArray = v - (1.0 - beta_2) * squared * np.sign(v - squared)
    return out


@dataclass(frozen=True)
class FedYogi(FedOpt):
    """FedOpt with Yogi's second-moment rule."""

    name: ClassVar[str] = "fedyogi"

    def initial_v(self, n_params: int) -> FloatArray:
        return np.full(n_params, self.tau**2, dtype=np.float64)

    def second_moment(self, v: FloatArray, delta: FloatArray) -> FloatArray:
        return yogi_second_moment(v, delta, beta_2=self.beta_2)
