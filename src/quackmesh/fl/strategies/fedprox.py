"""FedProx: FedAvg aggregation with a proximal term in each client's local objective.

Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated Optimization in Heterogeneous
Networks", MLSys 2020. Clients minimise ``F_k(w) + (mu / 2) * ||w - w_global||^2``; the
server side is unchanged from FedAvg, so this strategy only differs by sending
``proximal_mu`` to the clients through :meth:`client_config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from quackmesh.fl.strategies.base import check_real
from quackmesh.fl.strategies.fedavg import FedAvg

__all__ = ["FedProx"]


@dataclass(frozen=True)
class FedProx(FedAvg):
    """FedAvg plus the proximal coefficient ``mu`` (>= 0; 0 is plain FedAvg)."""

    name: ClassVar[str] = "fedprox"

    proximal_mu: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check_real("proximal_mu", self.proximal_mu, low=0.0)

    def client_config(self) -> dict[str, float]:
        return {"proximal_mu": float(self.proximal_mu)}
