"""``fl.local_train``: one federated-learning client step, run by a node in its sandbox.

Inputs: ``model``, a safetensors file of the global weights (checked against
``params.model``, see :mod:`quackmesh.fl.zoo`), and ``data``, the node's local table
(CSV/NPZ/Parquet, label column ``params.label``). The node trains from the global weights
(:func:`quackmesh.fl.train.local_train`: FedAvg, FedProx with ``proximal_mu``, client-side
clipping with ``clip_norm``) and returns the update, or with ``evaluate_only`` just the
loss and accuracy of the global model on its data (federated evaluation).

Result (plain JSON)::

    {"delta": base64 of safetensors bytes of the float32 delta, "delta_sha256": hex,
     "delta_norm": float, "n_examples": int, "loss": float, "accuracy": float}

(``evaluate_only``: only ``n_examples``, ``loss`` and ``accuracy``; with ``federated_eval``
also ``fed_loss``/``fed_accuracy``: the received global model on the local data, measured
before training — the round's federated evaluation at no extra task).

Cost, in compute units (one unit ~ a million parameter-examples)::

    units = max(1, ceil(rows * n_params * epochs / 1_000_000))

where ``rows`` is capped by ``max_rows`` and ``evaluate_only`` counts as one epoch.

``agree()``: same ``n_examples`` and deltas equal within ``rtol=1e-3, atol=1e-5`` (torch
kernels differ across CPUs); for evaluation results, loss and accuracy within the same
tolerance.

Threads: the sandbox runs one task per process and passes its thread budget as
``OMP_NUM_THREADS``; ``run()`` hands that to :func:`quackmesh.fl.train.set_threads` so
torch's inter-op pool follows it too (torch reads the variable only for intra-op threads).

Importing this module imports torch, so ``quackmesh.workloads`` does not import it; the
integrator registers it lazily.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import safetensors.numpy
from pydantic import BaseModel, ConfigDict, Field

from quackmesh.core.errors import ValidationFailed
from quackmesh.fl.data import Dataset, read_local, subset
from quackmesh.fl.train import TrainConfig, delta_norm, evaluate, local_train, set_threads
from quackmesh.fl.zoo import (
    ModelSpec,
    Weights,
    count_params,
    max_model_bytes,
    weights_from_safetensors,
    weights_to_safetensors,
)
from quackmesh.workloads.base import InputSummary, Workload, ceil_div
from quackmesh.workloads.compare import scalar_of
from quackmesh.workloads.data import DataFormat
from quackmesh.workloads.registry import register
from quackmesh.workloads.results import finite_float

__all__ = ["FlLocalTrain", "FlLocalTrainSpec"]

_RTOL, _ATOL = 1e-3, 1e-5


class FlLocalTrainSpec(BaseModel):
    """Params of ``fl.local_train`` (see :class:`quackmesh.fl.train.TrainConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: ModelSpec
    label: str = Field(default="label", min_length=1)
    epochs: int = Field(default=1, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=65536)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(default=0.05, gt=0, le=10, allow_inf_nan=False)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    proximal_mu: float = Field(default=0.0, ge=0, le=1e6)
    clip_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0, lt=2**63)
    max_rows: int | None = Field(default=None, ge=1)
    evaluate_only: bool = False
    federated_eval: bool = False  # also report the global model's loss/accuracy on the data

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            lr=self.lr,
            momentum=self.momentum,
            proximal_mu=self.proximal_mu,
            clip_norm=self.clip_norm,
            seed=self.seed,
        )


def _load(
    spec: FlLocalTrainSpec, inputs: Mapping[str, Path]
) -> tuple[Weights, Dataset, DataFormat]:
    """The checked global weights, the local data (sampled to ``max_rows``), its format."""
    try:
        with open(inputs["model"], "rb") as fh:
            # At most one byte past the cap: enough for the zoo to refuse an oversized file.
            blob = fh.read(max_model_bytes(spec.model) + 1)
    except OSError as exc:
        raise ValidationFailed(f"cannot read model file: {exc}", field="inputs.model") from exc
    weights = weights_from_safetensors(blob, spec.model, field="inputs.model")
    ds, fmt = read_local(inputs["data"], label=spec.label)
    d = spec.model.n_features
    if ds.X.shape[1] != d:
        raise ValidationFailed(
            f"data has {ds.X.shape[1]} feature columns, the model takes {d}",
            field="inputs.data",
            expected=d,
            actual=int(ds.X.shape[1]),
        )
    top = int(ds.y.max())
    if top >= spec.model.n_classes:
        raise ValidationFailed(
            f"label {top} in column {spec.label!r} is out of range for "
            f"{spec.model.n_classes} classes",
            field="inputs.data",
            column=spec.label,
        )
    if spec.max_rows is not None and ds.rows > spec.max_rows:
        rng = np.random.default_rng(spec.seed)
        ds = subset(ds, np.sort(rng.choice(ds.rows, size=spec.max_rows, replace=False)))
    return weights, ds, fmt


def _threads_from_env() -> None:
    """Follow the thread count the sandbox sets (``OMP_NUM_THREADS``), if any."""
    raw = os.environ.get("OMP_NUM_THREADS", "")
    if raw.isdigit() and int(raw) >= 1:
        set_threads(int(raw))


def _decode(value: Any, digest: Any) -> dict[str, npt.NDArray[Any]] | None:
    """Decode a result's delta (base64 safetensors), checking its digest; None if bad."""
    if type(value) is not str or type(digest) is not str:
        return None
    try:
        blob = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if hashlib.sha256(blob).hexdigest() != digest:
        return None
    try:
        tensors = safetensors.numpy.load(blob)
    except Exception:  # untrusted bytes: any parse failure means "does not agree"
        return None
    return dict(tensors)


def _close(a: npt.ArrayLike, b: npt.ArrayLike) -> bool:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(
        x.shape == y.shape
        and np.all(np.isfinite(x))
        and np.all(np.isfinite(y))
        and np.allclose(x, y, rtol=_RTOL, atol=_ATOL)
    )


@register
class FlLocalTrain(Workload[FlLocalTrainSpec]):
    kind: ClassVar[str] = "fl.local_train"
    spec_model: ClassVar[type[BaseModel]] = FlLocalTrainSpec
    input_names: ClassVar[tuple[str, ...]] = ("model", "data")
    description: ClassVar[str] = "Federated learning: local training from global weights"

    def check_inputs(self, spec: FlLocalTrainSpec, inputs: Mapping[str, Path]) -> InputSummary:
        self.check_input_names(inputs)
        _, ds, fmt = _load(spec, inputs)
        return InputSummary(
            rows=ds.rows,
            columns=len(ds.feature_names) + 1,
            feature_names=ds.feature_names,
            format=fmt,
        )

    def cost(self, spec: FlLocalTrainSpec, summary: InputSummary) -> int:
        epochs = 1 if spec.evaluate_only else spec.epochs
        return max(1, ceil_div(summary.rows * count_params(spec.model) * epochs, 1_000_000))

    def run(self, spec: FlLocalTrainSpec, inputs: Mapping[str, Path]) -> dict[str, Any]:
        self.check_input_names(inputs)
        _threads_from_env()
        weights, ds, _ = _load(spec, inputs)
        if spec.evaluate_only:
            loss, accuracy = evaluate(spec.model, weights, ds.X, ds.y)
            return {
                "n_examples": ds.rows,
                "loss": finite_float(loss, what="loss"),
                "accuracy": float(accuracy),
            }
        fed: dict[str, float] = {}
        if spec.federated_eval:  # the received global model on this node's data, pre-training
            fed_loss, fed_accuracy = evaluate(spec.model, weights, ds.X, ds.y)
            fed = {
                "fed_loss": finite_float(fed_loss, what="loss"),
                "fed_accuracy": float(fed_accuracy),
            }
        result = local_train(spec.model, weights, ds.X, ds.y, spec.train_config())
        norm = delta_norm(result.delta)
        if not (np.isfinite(norm) and np.isfinite(result.loss)):
            raise ValidationFailed(
                "training diverged (non-finite loss or weights): lower params.lr",
                field="params.lr",
            )
        blob = weights_to_safetensors(result.delta)
        return {
            "delta": base64.b64encode(blob).decode("ascii"),
            "delta_sha256": hashlib.sha256(blob).hexdigest(),
            "delta_norm": float(norm),
            "n_examples": result.n_examples,
            "loss": float(result.loss),
            "accuracy": float(result.accuracy),
            **fed,
        }

    def agree(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            return False
        n_a, n_b = a.get("n_examples"), b.get("n_examples")
        if type(n_a) is not int or n_a != n_b or type(n_b) is not int:
            return False
        if "delta" not in a and "delta" not in b:  # evaluation results
            for key in ("loss", "accuracy"):
                sa, sb = scalar_of(a.get(key)), scalar_of(b.get(key))
                if sa is None or sb is None or not _close(sa, sb):
                    return False
            return True
        da = _decode(a.get("delta"), a.get("delta_sha256"))
        db = _decode(b.get("delta"), b.get("delta_sha256"))
        if da is None or db is None or sorted(da) != sorted(db):
            return False
        return all(
            da[k].dtype == np.float32 and db[k].dtype == np.float32 and _close(da[k], db[k])
            for k in da
        )
