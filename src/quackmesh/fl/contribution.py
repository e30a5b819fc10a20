"""Contribution scores for a federated round, and the integer split of its reward.

This module is the public definition of how QuackMesh divides a round's reward among the
clients that trained in it. Two scores are offered; both are non-negative and both are
zero for an update the aggregation strategy did not accept (``Aggregate.accepted``:
Krum's non-selected updates, median/trimmed-mean outliers).

**Agreement score** (cheap, needs only the updates). For client ``i`` with delta ``u_i``
and the round's aggregated delta ``g``::

    agreement_i = accepted_i * clip(cos(u_i, g), 0, 1),   cos(u, g) = u·g / (|u| |g|)

An update pointing the way the federation moved scores up to 1; one orthogonal or opposed
to it scores 0, as does a zero update or a zero aggregate. The score ignores magnitude, so
scaling an update up buys nothing.

**Leave-one-out score** (needs a validation loss ``L``; Jia et al. 2019, "Towards
Efficient Data Valuation Based on the Shapley Value", describe it as the cheap baseline to
the Shapley value). With ``A`` the accepted clients, ``x`` the global parameters and
``mean_S`` the example-weighted mean of the deltas of the clients in ``S``::

    loo_i = accepted_i * max(0, L(x + mean_{A - {i}}) - L(x + mean_A))

i.e. how much worse the validation loss gets without client ``i``. When ``i`` is the only
accepted client, ``mean_{}`` is the zero delta (the model is left as it was).

**Reward split.** :func:`split_reward` divides an integer budget of micro-DUCK in
proportion to the scores with the largest-remainder (Hamilton) method, computed in exact
rational arithmetic: each client first gets ``floor(budget * s_i / sum(s))``, and the
units left over go one each to the largest fractional remainders, ties to the lower index.
The parts sum exactly to the budget whenever some score is positive; a client with score 0
gets 0 and a higher score never gets less. If every score is 0, nobody is paid and the
caller refunds the whole budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

__all__ = ["agreement_scores", "loo_scores", "split_reward"]

FloatArray = NDArray[np.float64]


def _matrix_and_mask(
    updates: FloatArray, accepted: NDArray[np.bool_]
) -> tuple[FloatArray, NDArray[np.bool_]]:
    rows = np.asarray(updates, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"updates must be 2-D (n_clients, n_params), got shape {rows.shape}")
    mask = np.asarray(accepted)
    if mask.shape != (rows.shape[0],) or mask.dtype != np.bool_:
        raise ValueError(f"accepted must be a bool array of shape ({rows.shape[0]},)")
    if not np.all(np.isfinite(rows)):
        raise ValueError("updates contain NaN or infinite values")
    return rows, mask


def agreement_scores(
    updates: FloatArray, aggregate_delta: FloatArray, accepted: NDArray[np.bool_]
) -> FloatArray:
    """Agreement score of each client (module docstring), ``(n_clients,)`` in ``[0, 1]``."""
    rows, mask = _matrix_and_mask(updates, accepted)  # (n_clients, n_params), (n_clients,)
    target = np.asarray(aggregate_delta, dtype=np.float64)  # (n_params,)
    if target.shape != (rows.shape[1],):
        raise ValueError(f"aggregate_delta must have shape ({rows.shape[1]},), got {target.shape}")
    norms = np.linalg.norm(rows, axis=1) * float(np.linalg.norm(target))  # (n_clients,)
    dots = rows @ target  # (n_clients,)
    cosines = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    scores: FloatArray = np.clip(cosines, 0.0, 1.0) * mask
    return scores


def loo_scores(
    *,
    evaluate: Callable[[FloatArray], float],
    params: FloatArray,
    updates: FloatArray,
    num_examples: NDArray[np.integer],
    accepted: NDArray[np.bool_],
) -> FloatArray:
    """Leave-one-out validation gain of each client (module docstring), ``(n_clients,)``.

    ``evaluate(params)`` returns the validation loss of a ``(n_params,)`` parameter vector
    (it receives a fresh array each call). It is called once per accepted client plus
    once for the full aggregate, and not at all when nothing was accepted.
    """
    rows, mask = _matrix_and_mask(updates, accepted)  # (n_clients, n_params), (n_clients,)
    base = np.asarray(params, dtype=np.float64)  # (n_params,)
    if base.shape != (rows.shape[1],):
        raise ValueError(f"params must have shape ({rows.shape[1]},), got {base.shape}")
    counts = np.asarray(num_examples)
    if counts.shape != (rows.shape[0],) or counts.dtype.kind not in "iu" or np.any(counts <= 0):
        raise ValueError(f"num_examples must be {rows.shape[0]} positive integers")
    scores = np.zeros(rows.shape[0], dtype=np.float64)
    members = [int(i) for i in np.flatnonzero(mask)]
    if not members:
        return scores

    def loss_with(clients: list[int]) -> float:
        if clients:
            weights = counts[clients].astype(np.float64)  # (len(clients),)
            candidate = base + weights @ rows[clients] / float(weights.sum())
        else:
            candidate = base.copy()
        loss = float(evaluate(candidate))
        if not math.isfinite(loss):
            raise ValueError(f"evaluate returned a non-finite loss {loss!r}")
        return loss

    full = loss_with(members)
    for i in members:
        without = loss_with([j for j in members if j != i])
        scores[i] = max(0.0, without - full)
    return scores


def split_reward(budget: int, scores: Sequence[float] | FloatArray) -> list[int]:
    """Split ``budget`` micro-DUCK in proportion to ``scores`` (largest remainder, exact).

    Returns one non-negative int per score. The parts sum to ``budget`` when any score is
    positive and are all 0 when every score is 0 (the caller refunds the budget). Raises
    ``ValueError`` for a negative or non-integer budget or a negative/non-finite score.
    """
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 0:
        raise ValueError(f"budget must be a non-negative integer, got {budget!r}")
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("scores must be finite and >= 0")
    # Exact rationals: floats convert to Fraction without rounding, so the split is exact
    # and monotone even for scores that differ in the last bit.
    exact = [Fraction(float(v)) for v in values]
    total = sum(exact, Fraction(0))
    if total == 0:
        return [0] * len(exact)
    quotas = [Fraction(int(budget)) * s / total for s in exact]
    shares = [math.floor(q) for q in quotas]
    leftover = int(budget) - sum(shares)
    # Largest remainder first; Python's sort is stable, so equal remainders keep index order.
    by_remainder = sorted(range(len(quotas)), key=lambda i: quotas[i] - shares[i], reverse=True)
    for i in by_remainder[:leftover]:
        shares[i] += 1
    return shares
