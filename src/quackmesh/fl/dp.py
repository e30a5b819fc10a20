"""Client-level differential privacy for federated averaging (DP-FedAvg) and its accountant.

McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent Language
Models", ICLR 2018. Each round samples clients with probability ``q``; each client's delta
is clipped to L2 norm at most ``C`` (:func:`clip_update`); the server averages the clipped
deltas with **equal weights** and adds Gaussian noise of standard deviation ``z * C / n``
(:func:`gaussian_noise`). Equal weights are what bound one client's influence: adding or
removing a client changes the sum by at most ``C``, hence the mean by ``C / n`` (the
paper's fixed-denominator estimator, with ``n`` the expected number of clients). Example
weighting would let a client with more data move the mean further and break the bound.

The privacy cost of ``T`` such rounds is a ``T``-fold composition of the Poisson
subsampled Gaussian mechanism, tracked here with Rényi DP (Mironov 2017, "Rényi
Differential Privacy"; Mironov, Talwar and Zhang 2019 for the subsampled Gaussian) through
Google's ``dp_accounting`` library, which also applies the improved RDP-to-(ε, δ)
conversion of Balle et al. 2020 ("Hypothesis Testing Interpretations and Rényi
Differential Privacy").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import dp_accounting
import numpy as np
from dp_accounting.rdp import RdpAccountant
from numpy.typing import NDArray

__all__ = [
    "DpConfig",
    "PrivacyAccountant",
    "clip_update",
    "epsilon_after",
    "gaussian_noise",
    "private_mean",
]

FloatArray = NDArray[np.float64]


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def clip_update(update: FloatArray, clip_norm: float) -> tuple[FloatArray, float]:
    """Scale ``update`` ``(n_params,)`` to L2 norm at most ``clip_norm``.

    Returns ``(clipped copy, original L2 norm)``; an update already within the bound is
    returned unscaled (still a copy).
    """
    _check_positive("clip_norm", clip_norm)
    vector = np.array(update, dtype=np.float64)  # copy: the caller's array stays as is
    if vector.ndim != 1:
        raise ValueError(f"update must be 1-D, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise ValueError("update contains NaN or infinite values")
    norm = float(np.linalg.norm(vector))
    if norm > clip_norm:
        vector *= clip_norm / norm
    return vector, norm


def gaussian_noise(
    shape: int | tuple[int, ...],
    *,
    noise_multiplier: float,
    clip_norm: float,
    n_clients: int,
    rng: np.random.Generator,
) -> FloatArray:
    """Noise ``N(0, (z * C / n)^2)`` to add to the unweighted mean of ``n`` clipped updates.

    The mean's sensitivity to one client is ``C / n`` (see the module docstring), so this
    is the Gaussian mechanism with noise multiplier ``z`` on that sensitivity.
    """
    if (
        isinstance(noise_multiplier, bool)
        or not isinstance(noise_multiplier, int | float)
        or not 0 <= noise_multiplier < math.inf
    ):
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    _check_positive("clip_norm", clip_norm)
    if isinstance(n_clients, bool) or not isinstance(n_clients, int) or n_clients < 1:
        raise ValueError(f"n_clients must be a positive integer, got {n_clients!r}")
    std = noise_multiplier * clip_norm / n_clients
    noise: FloatArray = rng.normal(0.0, std, size=shape).astype(np.float64)
    return noise


def private_mean(
    updates: FloatArray, *, noise_multiplier: float, clip_norm: float, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """One DP-FedAvg aggregation: clip each row, average with equal weights, add noise.

    ``updates`` is ``(n_clients, n_params)``; returns ``(noisy mean (n_params,), original
    norms (n_clients,))``. The norms are for monitoring only and are not private.
    """
    rows = np.asarray(updates, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"updates must be 2-D with at least one row, got shape {rows.shape}")
    clipped = np.empty_like(rows)  # (n_clients, n_params)
    norms = np.empty(rows.shape[0], dtype=np.float64)  # (n_clients,)
    for i, row in enumerate(rows):
        clipped[i], norms[i] = clip_update(row, clip_norm)
    noise = gaussian_noise(
        rows.shape[1],
        noise_multiplier=noise_multiplier,
        clip_norm=clip_norm,
        n_clients=rows.shape[0],
        rng=rng,
    )
    mean: FloatArray = clipped.mean(axis=0) + noise
    return mean, norms


@dataclass(frozen=True)
class DpConfig:
    """A job's DP settings: noise multiplier ``z``, clip norm ``C``, target ``δ``, ε budget.

    ``epsilon_budget=None`` means the job is accounted but never stopped for privacy.
    """

    noise_multiplier: float
    clip_norm: float
    delta: float = 1e-5
    epsilon_budget: float | None = None

    def __post_init__(self) -> None:
        _check_positive("noise_multiplier", self.noise_multiplier)
        _check_positive("clip_norm", self.clip_norm)
        _check_delta(self.delta)
        if self.epsilon_budget is not None:
            _check_positive("epsilon_budget", self.epsilon_budget)


def _check_mechanism(*, sampling_rate: float, noise_multiplier: float, delta: float) -> None:
    if (
        isinstance(sampling_rate, bool)
        or not isinstance(sampling_rate, int | float)
        or not 0 < sampling_rate <= 1
    ):
        raise ValueError(f"sampling_rate must lie in (0, 1], got {sampling_rate!r}")
    _check_positive("noise_multiplier", noise_multiplier)
    _check_delta(delta)


class PrivacyAccountant:
    """(ε, δ) of repeated DP-FedAvg rounds via ``dp_accounting``'s RDP accountant.

    ``orders`` are the Rényi orders to optimise over (the library's defaults if None).
    Each round is ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``; ``T`` rounds compose it
    ``T`` times (RDP adds up linearly, so ε never decreases with more rounds).
    """

    def __init__(self, orders: Sequence[float] | None = None) -> None:
        self._orders = None if orders is None else [float(a) for a in orders]

    def epsilon(
        self, *, rounds: int, sampling_rate: float, noise_multiplier: float, delta: float
    ) -> float:
        """ε spent after ``rounds`` rounds at sampling rate ``q`` and noise multiplier ``z``."""
        _check_count("rounds", rounds)
        _check_mechanism(
            sampling_rate=sampling_rate, noise_multiplier=noise_multiplier, delta=delta
        )
        if rounds == 0:
            return 0.0
        event = dp_accounting.PoissonSampledDpEvent(
            sampling_probability=sampling_rate,
            event=dp_accounting.GaussianDpEvent(noise_multiplier),
        )
        accountant = RdpAccountant(orders=self._orders)
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
        return float(accountant.get_epsilon(delta))

    def max_rounds(
        self,
        *,
        epsilon_budget: float,
        sampling_rate: float,
        noise_multiplier: float,
        delta: float,
        limit: int,
    ) -> int:
        """The most rounds (at most ``limit``) whose ε stays within ``epsilon_budget``.

        0 when even one round would exceed the budget. Binary search over the rounds,
        valid because ε is non-decreasing in the number of rounds.
        """
        _check_positive("epsilon_budget", epsilon_budget)
        _check_count("limit", limit)

        def fits(rounds: int) -> bool:
            spent = self.epsilon(
                rounds=rounds,
                sampling_rate=sampling_rate,
                noise_multiplier=noise_multiplier,
                delta=delta,
            )
            return spent <= epsilon_budget

        low, high = 0, limit  # invariant: fits(low); the answer lies in [low, high]
        if fits(high):
            return high
        while low < high - 1:
            middle = (low + high) // 2
            if fits(middle):
                low = middle
            else:
                high = middle
        return low


def epsilon_after(
    *, rounds: int, sampling_rate: float, noise_multiplier: float, delta: float
) -> float:
    """:meth:`PrivacyAccountant.epsilon` with the library's default Rényi orders."""
    return PrivacyAccountant().epsilon(
        rounds=rounds, sampling_rate=sampling_rate, noise_multiplier=noise_multiplier, delta=delta
    )
