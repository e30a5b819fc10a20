"""Aggregation strategies for federated rounds, and a factory from a name and settings.

One algorithm per module, each citing its paper; :mod:`.base` holds the contract and
documents the shared parameters. ``make_strategy("fedadam", {"eta": 0.1})`` builds a
strategy from a job spec, raising :class:`StrategyError` with a message that names the
offending strategy or parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from quackmesh.fl.strategies.base import (
    Aggregate,
    RoundOutput,
    Strategy,
    StrategyError,
)
from quackmesh.fl.strategies.fedadam import FedAdam
from quackmesh.fl.strategies.fedavg import FedAvg
from quackmesh.fl.strategies.fedopt import FedOpt
from quackmesh.fl.strategies.fedprox import FedProx
from quackmesh.fl.strategies.fedyogi import FedYogi
from quackmesh.fl.strategies.krum import Krum, MultiKrum
from quackmesh.fl.strategies.median import Median
from quackmesh.fl.strategies.trimmed_mean import TrimmedMean

__all__ = [
    "STRATEGIES",
    "Aggregate",
    "FedAdam",
    "FedAvg",
    "FedOpt",
    "FedProx",
    "FedYogi",
    "Krum",
    "Median",
    "MultiKrum",
    "RoundOutput",
    "Strategy",
    "StrategyError",
    "TrimmedMean",
    "make_strategy",
]

#: Every concrete strategy by its ``name``.
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (FedAvg, FedProx, FedAdam, FedYogi, Krum, MultiKrum, Median, TrimmedMean)
}


def make_strategy(name: str, params: Mapping[str, Any]) -> Strategy:
    """Build the strategy called ``name`` with hyper-parameters ``params``.

    Raises ``StrategyError`` for an unknown name (listing the known ones), an unknown
    parameter (listing the accepted ones) or a bad value (naming the parameter).
    """
    cls = STRATEGIES.get(name)
    if cls is None:
        known = ", ".join(sorted(STRATEGIES))
        raise StrategyError(f"unknown strategy {name!r}; known strategies: {known}")
    # Every concrete strategy is a dataclass; its fields are its hyper-parameters.
    allowed = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise StrategyError(
            f"unknown parameter(s) {', '.join(unknown)} for strategy {name!r}; accepted: {accepted}"
        )
    return cls(**dict(params))
