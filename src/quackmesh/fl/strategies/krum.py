"""Krum and Multi-Krum: Byzantine-robust selection of the most central updates.

Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent", NeurIPS 2017. With ``n`` updates of which at most
``f`` are Byzantine, the score of update ``i`` is the sum of its squared L2 distances to
its ``n - f - 2`` nearest other updates. Krum keeps the single lowest-scoring update (ties
go to the lowest index); Multi-Krum keeps the ``m`` lowest and averages them, weighted by
example counts here as in Flower's ``Krum``.

We require ``n >= f + 3`` so every score sums at least one distance. The paper's
convergence guarantee needs the stronger ``n > 2f + 2``; choosing ``f`` is the operator's
statement about the threat, not something this module can check.
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
    StrategyError,
    check_int,
)
from quackmesh.fl.strategies.fedavg import weighted_mean

__all__ = ["Krum", "MultiKrum", "krum_scores", "krum_select"]


def krum_scores(updates: FloatArray, *, num_malicious: int) -> FloatArray:
    """Krum score of each update, ``(n_clients, n_params)`` to ``(n_clients,)``.

    Raises ``StrategyError`` unless ``n_clients >= num_malicious + 3``.
    """
    n = updates.shape[0]
    if n < num_malicious + 3:
        raise StrategyError(
            f"Krum with num_malicious={num_malicious} needs at least {num_malicious + 3} "
            f"clients, got {n}"
        )
    neighbours = n - num_malicious - 2
    scores = np.empty(n, dtype=np.float64)  # (n_clients,)
    for i in range(n):
        # One row at a time keeps memory at O(n * n_params) instead of a (n, n, d) cube.
        squared = np.sum((updates - updates[i]) ** 2, axis=1)  # (n_clients,)
        others = np.delete(squared, i)  # (n_clients - 1,)
        scores[i] = float(np.sum(np.sort(others)[:neighbours]))
    return scores


def krum_select(updates: FloatArray, *, num_malicious: int, num_selected: int) -> IntArray:
    """Indices of the ``num_selected`` lowest-scoring updates, best first, ties by index."""
    scores = krum_scores(updates, num_malicious=num_malicious)
    if not 1 <= num_selected <= updates.shape[0]:
        raise StrategyError(f"num_selected must lie in [1, {updates.shape[0]}], got {num_selected}")
    order: IntArray = np.argsort(scores, kind="stable")[:num_selected].astype(np.int64)
    return order


def _selection(updates: FloatArray, num_examples: IntArray, *, chosen: IntArray) -> Aggregate:
    accepted = np.zeros(updates.shape[0], dtype=np.bool_)
    accepted[chosen] = True
    return Aggregate(delta=weighted_mean(updates[chosen], num_examples[chosen]), accepted=accepted)


@dataclass(frozen=True)
class Krum(Strategy):
    """Keep the single most central update; ``num_malicious`` is ``f``."""

    name: ClassVar[str] = "krum"
    mean_based: ClassVar[bool] = False

    num_malicious: int = 0

    def __post_init__(self) -> None:
        check_int("num_malicious", self.num_malicious, low=0)

    def min_clients(self) -> int:
        return self.num_malicious + 3

    def aggregate_updates(self, updates: FloatArray, num_examples: IntArray) -> Aggregate:
        chosen = krum_select(updates, num_malicious=self.num_malicious, num_selected=1)
        return _selection(updates, num_examples, chosen=chosen)


@dataclass(frozen=True)
class MultiKrum(Strategy):
    """Average the ``num_selected`` (``m``) most central updates.

    ``num_selected=None`` keeps ``n - f`` updates, the choice of El Mhamdi et al. 2018
    ("The Hidden Vulnerability of Distributed Learning in Byzantium"). An explicit ``m``
    needs ``n >= m + f`` clients, so no more updates are kept than honest clients exist.
    """

    name: ClassVar[str] = "multikrum"
    mean_based: ClassVar[bool] = False

    num_malicious: int = 0
    num_selected: int | None = None

    def __post_init__(self) -> None:
        check_int("num_malicious", self.num_malicious, low=0)
        if self.num_selected is not None:
            check_int("num_selected", self.num_selected, low=1)

    def min_clients(self) -> int:
        extra = 0 if self.num_selected is None else self.num_selected
        return max(self.num_malicious + 3, self.num_malicious + extra)

    def aggregate_updates(self, updates: FloatArray, num_examples: IntArray) -> Aggregate:
        n = updates.shape[0]
        m = n - self.num_malicious if self.num_selected is None else self.num_selected
        chosen = krum_select(updates, num_malicious=self.num_malicious, num_selected=m)
        return _selection(updates, num_examples, chosen=chosen)
