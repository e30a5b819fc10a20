"""The params of an ``fl.train`` job: what a client asks the network to train.

Validated at submission (a bad value is a 422 naming ``params.<field>``); the coordinator
stores the validated dump with the job and drives the rounds from it. Which data:

* ``dataset`` names a node-local dataset: every node that advertises it may be selected;
  its rows never leave it (the federated case).
* an input named ``data`` (a client upload, with ``label`` column) is split into
  ``clients_per_round`` shards, one per selected trainer, fixed for the whole run (the
  rented-trainer case; add ``rental_id`` to train on rented nodes only).

An input named ``eval`` (CSV/NPZ/Parquet with the ``label`` column) is the client's
holdout: every round's new model is evaluated on it centrally, and ``loo`` contribution
scores need it. An input named ``init`` (safetensors) starts from given weights instead
of the seeded initialisation.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from quackmesh.fl.zoo import ModelSpec

__all__ = ["DpSpec", "FlTrainSpec", "StrategySpec"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class StrategySpec(BaseModel):
    model_config = _STRICT

    name: Literal[
        "fedavg", "fedprox", "fedadam", "fedyogi", "krum", "multikrum", "median", "trimmed_mean"
    ] = "fedavg"
    params: dict[str, float | int] = Field(
        default_factory=dict, description="the strategy's hyper-parameters (README: Strategies)"
    )


class DpSpec(BaseModel):
    """Client-level DP-FedAvg: each update clipped to ``clip_norm``, Gaussian noise of
    ``noise_multiplier × clip_norm / n`` on the mean; ε reported at ``delta``."""

    model_config = _STRICT

    noise_multiplier: float = Field(gt=0, le=100)
    clip_norm: float = Field(gt=0, le=1e6)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    epsilon_budget: float | None = Field(
        default=None, gt=0, description="stop before a round would spend more"
    )


class FlTrainSpec(BaseModel):
    model_config = _STRICT

    model: ModelSpec
    dataset: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="a node-local dataset name; omit it to shard the uploaded `data` input",
    )
    label: str = Field(default="label", min_length=1, max_length=64)
    rounds: int = Field(default=10, ge=1, le=1000)
    clients_per_round: int = Field(default=3, ge=1, le=200)
    min_clients: int = Field(default=2, ge=1, le=200)
    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=32, ge=1, le=4096)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(default=0.05, gt=0, le=10)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    secure_aggregation: bool = False
    dp: DpSpec | None = None
    reward_budget: int = Field(
        default=0, ge=0, description="micro-DUCK split among contributors, evenly per round"
    )
    contribution: Literal["auto", "loo", "agreement"] = Field(
        default="auto", description="auto: leave-one-out with an `eval` input, else agreement"
    )
    federated_eval: bool = Field(
        default=True, description="nodes also report the global model's loss on their data"
    )
    min_reputation: float = Field(default=0.0, ge=0, le=1)
    round_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    max_rows: int | None = Field(default=None, ge=1, description="rows per node per round")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _consistent(self) -> FlTrainSpec:
        if self.min_clients > self.clients_per_round:
            raise ValueError("min_clients cannot exceed clients_per_round")
        if self.secure_aggregation and self.strategy.name not in _MEAN_BASED:
            raise ValueError(
                f"secure aggregation reveals only the sum of updates, so it composes with "
                f"mean-based strategies ({', '.join(sorted(_MEAN_BASED))}), not "
                f"{self.strategy.name!r}, which needs each update"
            )
        if self.secure_aggregation and self.clients_per_round < 3:
            raise ValueError("secure aggregation needs clients_per_round >= 3")
        if self.dp is not None and self.strategy.name not in _MEAN_BASED:
            raise ValueError("DP-FedAvg noise is calibrated to a mean: use a mean-based strategy")
        return self

    def train_params(self) -> dict[str, Any]:
        """The ``fl.local_train`` task params (without the per-node label and secagg)."""
        return {
            "model": self.model.model_dump(mode="json"),
            "label": self.label,
            "epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "momentum": self.momentum,
            "clip_norm": self.dp.clip_norm if self.dp is not None else None,
            "max_rows": self.max_rows,
        }


_MEAN_BASED = {"fedavg", "fedprox", "fedadam", "fedyogi"}
