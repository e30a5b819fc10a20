"""The strategy contract: a small ABC plus one concrete driver, ``Strategy.run_round``.

A federated round ends with ``n_clients`` client *deltas* (new local weights minus the
global weights), flattened with :mod:`quackmesh.fl.params`. A strategy turns them into
one aggregated delta (``aggregate_updates``) and applies it to the global parameters
(``server_step``, where server optimisers such as FedAdam keep their state). The layout
follows Flower's ``Strategy`` (Beutel et al. 2020, "Flower: A Friendly Federated Learning
Framework"): subclasses override hooks; ``run_round`` validates, aggregates and steps.

Shared parameters, documented once here:

* ``params`` — ``(n_params,)`` float64, the current global parameters.
* ``updates`` — ``(n_clients, n_params)`` float64, one client delta per row.
* ``num_examples`` — ``(n_clients,)`` int, each client's training-set size (> 0); used as
  weights by the mean-based strategies and ignored by the robust ones that say so.
* ``state`` — server-optimiser state (``{"m": ..., "v": ...}`` for FedAdam/FedYogi; ``{}``
  before the first round and for stateless strategies). Returned fresh, never mutated.

Errors::

    ValueError
    └── StrategyError   bad hyper-parameter, malformed or too few updates, unknown strategy
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Aggregate",
    "BoolArray",
    "FloatArray",
    "IntArray",
    "RoundOutput",
    "Strategy",
    "StrategyError",
    "check_int",
    "check_real",
    "distance_outliers",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


class StrategyError(ValueError):
    """A strategy was misconfigured or handed updates it cannot aggregate."""


@dataclass(frozen=True)
class Aggregate:
    """What a strategy made of one round's updates."""

    delta: FloatArray  # (n_params,) aggregated delta to apply to the global model
    # (n_clients,) False for updates the strategy rejected or ignored; empty when the
    # strategy only saw the sum of the updates (secure aggregation).
    accepted: BoolArray


@dataclass(frozen=True)
class RoundOutput:
    """The result of one round: new global parameters and the state to persist."""

    params: FloatArray  # (n_params,)
    state: dict[str, FloatArray]
    aggregate: Aggregate


def check_real(
    name: str,
    value: object,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ``StrategyError`` naming ``name`` unless ``value`` is a real number in range.

    ``low_open``/``high_open`` exclude the bound itself. Booleans are not numbers here.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise StrategyError(f"{name} must be a real number, got {value!r}")
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise StrategyError(f"{name} must lie in {lo}{low}, {high}{hi}, got {value!r}")


def check_int(name: str, value: object, *, low: int) -> None:
    """Raise ``StrategyError`` naming ``name`` unless ``value`` is an int ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StrategyError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise StrategyError(f"{name} must be >= {low}, got {value!r}")


def distance_outliers(
    updates: FloatArray, aggregate: FloatArray, *, outlier_factor: float
) -> BoolArray:
    """``accepted`` mask for robust aggregates that reject no whole update themselves.

    An update is flagged (False) when its L2 distance to the aggregate exceeds
    ``outlier_factor`` times the median distance of all updates (so when most updates sit
    exactly on the aggregate, any update off it is flagged). The mask feeds contribution
    scoring only; it never changes the aggregate.
    """
    distances = np.linalg.norm(updates - aggregate[None, :], axis=1)  # (n_clients,)
    threshold = outlier_factor * float(np.median(distances))
    accepted: BoolArray = distances <= threshold
    return accepted


def _as_float_vector(name: str, value: object, *, n_params: int | None) -> FloatArray:
    array = np.array(value, dtype=np.float64)  # copy: never alias the caller's array
    if array.ndim != 1:
        raise StrategyError(f"{name} must be 1-D, got shape {array.shape}")
    if n_params is not None and array.shape[0] != n_params:
        raise StrategyError(f"{name} has {array.shape[0]} entries, expected {n_params}")
    if not np.all(np.isfinite(array)):
        raise StrategyError(f"{name} contains NaN or infinite values")
    return array


class Strategy(ABC):
    """Base class of every aggregation strategy (see the module docstring)."""

    name: ClassVar[str]
    #: True when the aggregate is an example-weighted mean of the updates, which composes
    #: with secure aggregation (it reveals only the sum); False for robust strategies.
    mean_based: ClassVar[bool]

    @abstractmethod
    def aggregate_updates(self, updates: FloatArray, num_examples: IntArray) -> Aggregate:
        """Combine validated updates into one delta. Must not mutate its inputs."""

    def min_clients(self) -> int:
        """The fewest clients this strategy can aggregate (1 unless it needs more)."""
        return 1

    def server_step(
        self, params: FloatArray, delta: FloatArray, state: dict[str, FloatArray]
    ) -> tuple[FloatArray, dict[str, FloatArray]]:
        """Apply ``delta`` to ``params``; stateless by default (``params + delta``)."""
        return params + delta, {}

    def client_config(self) -> dict[str, float]:
        """Extra local-training settings sent to clients (none by default)."""
        return {}

    def run_round(
        self,
        params: FloatArray,
        updates: FloatArray,
        num_examples: IntArray,
        state: dict[str, FloatArray],
    ) -> RoundOutput:
        """Validate the round's inputs, aggregate them and step the global model.

        Raises ``StrategyError`` if ``updates`` is not 2-D, its width differs from
        ``params``, any value is NaN/infinite, ``num_examples`` is not a positive integer
        per client, or there are fewer clients than :meth:`min_clients`.
        """
        flat = _as_float_vector("params", params, n_params=None)
        rows = np.array(updates, dtype=np.float64)  # (n_clients, n_params), a copy
        if rows.ndim != 2:
            raise StrategyError(f"updates must be 2-D (n_clients, n_params), got {rows.shape}")
        n_clients, n_params = rows.shape
        if n_params != flat.shape[0]:
            raise StrategyError(f"updates have {n_params} params, the model has {flat.shape[0]}")
        if not np.all(np.isfinite(rows)):
            bad = sorted({int(i) for i in np.nonzero(~np.isfinite(rows))[0]})
            raise StrategyError(f"updates from clients {bad} contain NaN or infinite values")
        counts = np.array(num_examples)
        if counts.ndim != 1 or counts.shape[0] != n_clients:
            raise StrategyError(f"num_examples must have shape ({n_clients},), got {counts.shape}")
        if counts.dtype.kind not in "iu":
            raise StrategyError(f"num_examples must be integers, got dtype {counts.dtype}")
        if np.any(counts <= 0):
            raise StrategyError("num_examples must be > 0 for every client")
        needed = max(1, self.min_clients())
        if n_clients < needed:
            raise StrategyError(f"{self.name} needs at least {needed} clients, got {n_clients}")
        aggregate = self.aggregate_updates(rows, counts.astype(np.int64))
        new_params, new_state = self.server_step(flat, aggregate.delta, dict(state))
        return RoundOutput(params=new_params, state=new_state, aggregate=aggregate)

    def _require_mean_based(self) -> None:
        if not self.mean_based:
            raise StrategyError(
                f"{self.name} needs each client's update and cannot run on a secure-aggregation sum"
            )

    def aggregate_sum(self, total: FloatArray, total_examples: int) -> Aggregate:
        """The aggregate from the sum of example-weighted updates: ``total / total_examples``.

        Under secure aggregation the coordinator learns only ``sum_i n_i * delta_i`` and
        ``sum_i n_i``, which is exactly enough for a weighted mean. Robust strategies
        (Krum, median, trimmed mean) must compare individual updates, which the sum hides,
        so they raise ``StrategyError``.
        """
        self._require_mean_based()
        if isinstance(total_examples, bool) or not isinstance(total_examples, int | np.integer):
            raise StrategyError(f"total_examples must be an integer, got {total_examples!r}")
        if total_examples <= 0:
            raise StrategyError(f"total_examples must be > 0, got {total_examples}")
        weighted = _as_float_vector("weighted_sum", total, n_params=None)
        return Aggregate(delta=weighted / float(total_examples), accepted=np.zeros(0, np.bool_))

    def run_round_from_sum(
        self,
        params: FloatArray,
        weighted_sum: FloatArray,
        total_examples: int,
        state: dict[str, FloatArray],
    ) -> RoundOutput:
        """``run_round`` for secure aggregation: ``weighted_sum`` is ``(n_params,)``.

        Raises ``StrategyError`` for robust (non-``mean_based``) strategies, which need
        every individual update, or for malformed inputs. ``aggregate.accepted`` is empty
        because no single update was seen.
        """
        self._require_mean_based()
        flat = _as_float_vector("params", params, n_params=None)
        total = _as_float_vector("weighted_sum", weighted_sum, n_params=flat.shape[0])
        aggregate = self.aggregate_sum(total, total_examples)
        new_params, new_state = self.server_step(flat, aggregate.delta, dict(state))
        return RoundOutput(params=new_params, state=new_state, aggregate=aggregate)
