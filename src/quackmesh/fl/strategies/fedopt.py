"""FedOpt: server-side adaptive optimisers over the FedAvg pseudo-gradient.

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar and McMahan, "Adaptive Federated
Optimization", ICLR 2021 (Algorithm 2). With ``delta`` the example-weighted mean of the
client deltas, the server keeps a first moment ``m`` and a second moment ``v``::

    m_t = beta_1 * m_{t-1} + (1 - beta_1) * delta
    v_t = <rule of the subclass: FedAdam, FedYogi>
    x_t = x_{t-1} + eta * m_t / (sqrt(v_t) + tau)

As in the paper's Algorithm 2 there is **no bias correction** of ``m`` or ``v``; ``tau``
bounds the adaptivity instead. The moments are the round's ``state`` (keys ``"m"`` and
``"v"``), returned as new arrays each round for the coordinator to persist.
"""

from __future__ import annotations

from abc import abstractmethod
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
)
from quackmesh.fl.strategies.fedavg import mean_aggregate

__all__ = ["FedOpt", "fedopt_step"]


def fedopt_step(
    params: FloatArray,
    *,
    delta: FloatArray,
    m: FloatArray,
    v: FloatArray,
    eta: float,
    beta_1: float,
    tau: float,
) -> tuple[FloatArray, FloatArray]:
    """Update the first moment and the parameters given the new second moment ``v``.

    Returns ``(new_params, new_m)``; all arrays are ``(n_params,)``.
    """
    new_m = beta_1 * m + (1.0 - beta_1) * delta
    new_params = params + eta * new_m / (np.sqrt(v) + tau)
    return new_params, new_m


@dataclass(frozen=True)
class FedOpt(Strategy):
    """Shared base of FedAdam and FedYogi; subclasses define the second-moment rule."""

    mean_based: ClassVar[bool] = True

    eta: float = 0.01
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        check_real("eta", self.eta, low=0.0, low_open=True)
        check_real("beta_1", self.beta_1, low=0.0, high=1.0, high_open=True)
        check_real("beta_2", self.beta_2, low=0.0, high=1.0, high_open=True)
        check_real("tau", self.tau, low=0.0, low_open=True)

    @abstractmethod
    def second_moment(self, v: FloatArray, delta: FloatArray) -> FloatArray:
        """``v_t`` from ``v_{t-1}`` and the round's delta, both ``(n_params,)``."""

    def initial_v(self, n_params: int) -> FloatArray:
        """``v_{-1}`` before the first round: zeros unless the subclass says otherwise."""
        return np.zeros(n_params, dtype=np.float64)

    def aggregate_updates(self, updates: FloatArray, num_examples: IntArray) -> Aggregate:
        return mean_aggregate(updates, num_examples)

    def server_step(
        self, params: FloatArray, delta: FloatArray, state: dict[str, FloatArray]
    ) -> tuple[FloatArray, dict[str, FloatArray]]:
        n_params = params.shape[0]
        m = _state_vector(state, "m", n_params=n_params)
        v = _state_vector(state, "v", n_params=n_params)
        if m is None:
            m = np.zeros(n_params, dtype=np.float64)
        if v is None:
            v = self.initial_v(n_params)
        new_v = self.second_moment(v, delta)
        new_params, new_m = fedopt_step(
            params, delta=delta, m=m, v=new_v, eta=self.eta, beta_1=self.beta_1, tau=self.tau
        )
        return new_params, {"m": new_m, "v": new_v}


def _state_vector(state: dict[str, FloatArray], key: str, *, n_params: int) -> FloatArray | None:
    if key not in state:
        return None
    array = np.array(state[key], dtype=np.float64)  # copy: the caller's state stays as is
    if array.shape != (n_params,):
        raise StrategyError(f"state[{key!r}] has shape {array.shape}, expected ({n_params},)")
    if not np.all(np.isfinite(array)):
        raise StrategyError(f"state[{key!r}] contains NaN or infinite values")
    return array
