"""FedAdam: Adam as the server optimiser over the FedAvg pseudo-gradient.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (Algorithm 2, FedAdam line):
``v_t = beta_2 * v_{t-1} + (1 - beta_2) * delta**2``, with ``v`` starting at zeros. The
shared update and the absence of bias correction are described in
:mod:`quackmesh.fl.strategies.fedopt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from quackmesh.fl.strategies.base import FloatArray
from quackmesh.fl.strategies.fedopt import FedOpt

__all__ = ["FedAdam", "adam_second_moment"]


def adam_second_moment(v: FloatArray, delta: FloatArray, *, beta_2: float) -> FloatArray:
    """Exponential moving average of ``delta**2``; all arrays ``(n_params,)``."""
    out: FloatArray = beta_2 * v + (1.0 - beta_2) * delta**2
    return out


@dataclass(frozen=True)
class FedAdam(FedOpt):
    """FedOpt with Adam's second-moment rule."""

    name: ClassVar[str] = "fedadam"

    def second_moment(self, v: FloatArray, delta: FloatArray) -> FloatArray:
        return adam_second_moment(v, delta, beta_2=self.beta_2)
