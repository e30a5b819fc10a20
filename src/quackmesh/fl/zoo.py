"""The model zoo: a few small architectures whose shapes are declared, never downloaded.

A federated job names its model by a :class:`ModelSpec` (``logreg``, ``mlp``, ``cnn28``,
``cnn1d``); every party builds the same ``torch.nn.Module`` from it, so no code ever
travels over the network. Only weights do, as `safetensors
<https://huggingface.co/docs/safetensors>`_ files: a JSON header plus raw little-endian
tensor bytes, parsed without executing anything. ``torch.load`` archives and
``torch.export`` programs are never used, because their loaders unpickle (and a pickle can
run arbitrary code). :func:`weights_from_safetensors` accepts exactly the tensor names,
shapes and dtype (float32) the spec declares, all finite, within a size cap; anything else
is a :class:`ModelError`.

Every architecture takes a float32 batch ``(N, n_features)`` and returns logits
``(N, n_classes)``; the CNNs reshape their input first (LeNet-style, LeCun et al. 1998).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import safetensors.numpy
import torch
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from torch import nn

from quackmesh.core.errors import ValidationFailed

__all__ = [
    "MAX_PARAMS",
    "Arch",
    "ModelError",
    "ModelSpec",
    "Weights",
    "build",
    "check_weights",
    "count_params",
    "init_weights",
    "max_model_bytes",
    "model_card",
    "param_shapes",
    "weights_from_safetensors",
    "weights_to_safetensors",
]

Arch = Literal["logreg", "mlp", "cnn28", "cnn1d"]
Weights = dict[str, npt.NDArray[np.float32]]

MAX_PARAMS = 25_000_000
"""Largest model accepted: 100 MB of float32 per copy of the weights."""
_HEADER_SLACK = 64 * 1024  # a safetensors JSON header for a few tensors is < 2 KiB

_Hidden = Annotated[int, Strict(), Field(ge=1, le=4096)]
_DEFAULT_HIDDEN = (128,)


class ModelError(ValidationFailed):
    """Weights that do not match the declared model (``field="model"`` unless given)."""

    def __init__(self, detail: str, **context: Any) -> None:
        context.setdefault("field", "model")
        super().__init__(detail, **context)


class ModelSpec(BaseModel):
    """Which architecture, for how many features and classes.

    ``hidden`` (layer widths) applies to ``mlp`` only; ``cnn28`` needs 28x28 images
    (``n_features == 784``); ``cnn1d`` needs at least 4 features.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    arch: Arch
    n_features: int = Field(ge=1, le=100_000)
    n_classes: int = Field(ge=2, le=1000)
    hidden: tuple[_Hidden, ...] = Field(
        default=_DEFAULT_HIDDEN, strict=False, min_length=1, max_length=4
    )

    @model_validator(mode="before")
    @classmethod
    def _hidden_only_for_mlp(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("arch") != "mlp":
            hidden = data.get("hidden", _DEFAULT_HIDDEN)
            if isinstance(hidden, list | tuple) and tuple(hidden) != _DEFAULT_HIDDEN:
                raise ValueError("hidden applies only to arch 'mlp'")
        return data

    @model_validator(mode="after")
    def _fits(self) -> ModelSpec:
        if self.arch == "cnn28" and self.n_features != 784:
            raise ValueError(f"cnn28 takes 28x28 images (784 features), not {self.n_features}")
        if self.arch == "cnn1d" and self.n_features < 4:
            raise ValueError("cnn1d needs at least 4 features")
        n = count_params(self)
        if n > MAX_PARAMS:
            raise ValueError(f"model has {n} parameters, more than the limit of {MAX_PARAMS}")
        return self


def _layers(spec: ModelSpec) -> list[tuple[str, nn.Module]]:
    d, c = spec.n_features, spec.n_classes
    if spec.arch == "logreg":
        return [("out", nn.Linear(d, c))]
    if spec.arch == "mlp":
        layers: list[tuple[str, nn.Module]] = []
        width = d
        for i, h in enumerate(spec.hidden, start=1):
            layers += [(f"fc{i}", nn.Linear(width, h)), (f"relu{i}", nn.ReLU())]
            width = h
        return [*layers, ("out", nn.Linear(width, c))]
    if spec.arch == "cnn28":
        return [
            ("unflatten", nn.Unflatten(1, (1, 28, 28))),  # (N, 784) -> (N, 1, 28, 28)
            ("conv1", nn.Conv2d(1, 8, kernel_size=5, padding=2)),  # (N, 8, 28, 28)
            ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),  # (N, 8, 14, 14)
            ("conv2", nn.Conv2d(8, 16, kernel_size=3, padding=1)),  # (N, 16, 14, 14)
            ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),  # (N, 16, 7, 7)
            ("flatten", nn.Flatten()),  # (N, 784)
            ("fc", nn.Linear(16 * 7 * 7, 32)),
            ("relu3", nn.ReLU()),
            ("out", nn.Linear(32, c)),
        ]
    return [  # cnn1d
        ("unflatten", nn.Unflatten(1, (1, d))),  # (N, d) -> (N, 1, d)
        ("conv1", nn.Conv1d(1, 8, kernel_size=5, padding=2)),  # (N, 8, d)
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool1d(2)),  # (N, 8, d // 2)
        ("conv2", nn.Conv1d(8, 16, kernel_size=3, padding=1)),  # (N, 16, d // 2)
        ("relu2", nn.ReLU()),
        ("pool2", nn.AdaptiveMaxPool1d(8)),  # (N, 16, 8) whatever d is
        ("flatten", nn.Flatten()),  # (N, 128)
        ("fc", nn.Linear(16 * 8, 32)),
        ("relu3", nn.ReLU()),
        ("out", nn.Linear(32, c)),
    ]


def build(spec: ModelSpec) -> nn.Module:
    """A fresh module for ``spec``: float32 ``(N, n_features)`` -> logits ``(N, n_classes)``."""
    return nn.Sequential(OrderedDict(_layers(spec)))


@lru_cache(maxsize=256)
def _shapes(spec: ModelSpec) -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):  # shapes only: no memory is allocated
        module = build(spec)
    return tuple((name, tuple(t.shape)) for name, t in module.state_dict().items())


def param_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, in ``state_dict`` order."""
    return dict(_shapes(spec))


def count_params(spec: ModelSpec) -> int:
    """Number of scalar parameters."""
    return sum(math.prod(shape) for _, shape in _shapes(spec))


def init_weights(spec: ModelSpec, *, seed: int) -> Weights:
    """PyTorch's default initialisation, reproducible from ``seed``.

    The global torch RNG is forked, so the caller's random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build(spec)
    return {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}


def check_weights(weights: Mapping[str, Any], spec: ModelSpec, *, field: str = "model") -> Weights:
    """``weights`` if they are exactly the spec's tensors (names, shapes, float32, finite).

    Returns fresh contiguous copies in ``state_dict`` order; raises :class:`ModelError`.
    """
    shapes = param_shapes(spec)
    missing = sorted(set(shapes) - set(weights))
    extra = sorted(set(weights) - set(shapes))
    if missing or extra:
        raise ModelError(
            f"weights do not match {spec.arch}: missing {missing}, unexpected {extra}",
            field=field,
            missing=missing,
            unexpected=extra,
        )
    out: Weights = {}
    for name, shape in shapes.items():
        arr = weights[name]
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
            kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
            raise ModelError(f"tensor {name!r} is {kind}, not float32", field=field, tensor=name)
        if arr.shape != shape:
            raise ModelError(
                f"tensor {name!r} has shape {arr.shape}, expected {shape}",
                field=field,
                tensor=name,
            )
        if not np.all(np.isfinite(arr)):
            raise ModelError(
                f"tensor {name!r} has NaN or infinite values", field=field, tensor=name
            )
        out[name] = np.array(arr, dtype=np.float32, order="C")
    return out


def weights_to_safetensors(weights: Mapping[str, npt.NDArray[Any]]) -> bytes:
    """Serialise ``weights`` (dtype kept) as safetensors bytes; deterministic for equal input."""
    data = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in weights.items()})
    return bytes(data)


def max_model_bytes(spec: ModelSpec) -> int:
    """Largest safetensors file accepted for ``spec``: its float32 data plus a header."""
    return 4 * count_params(spec) + _HEADER_SLACK


def weights_from_safetensors(data: bytes, spec: ModelSpec, *, field: str = "model") -> Weights:
    """Parse safetensors ``data`` and :func:`check_weights` it against ``spec``.

    Input larger than the spec's float32 weights plus a header allowance is refused before
    parsing; bytes that are not safetensors (a pickle, say) are a :class:`ModelError` and
    are never executed.
    """
    cap = max_model_bytes(spec)
    if len(data) > cap:
        raise ModelError(
            f"model file has {len(data)} bytes, more than the {cap} that {spec.arch} needs",
            field=field,
        )
    try:
        weights = safetensors.numpy.load(bytes(data))
    except (safetensors.SafetensorError, ValueError, TypeError) as exc:
        raise ModelError(f"model file is not valid safetensors: {exc}", field=field) from exc
    return check_weights(weights, spec, field=field)


def _input_description(spec: ModelSpec) -> str:
    d = spec.n_features
    if spec.arch == "cnn28":
        return "float32 (N, 784): 28x28 grey images, row-major, reshaped to (N, 1, 28, 28)"
    if spec.arch == "cnn1d":
        return f"float32 (N, {d}): one signal per row, reshaped to (N, 1, {d})"
    return f"float32 (N, {d})"


def model_card(spec: ModelSpec, *, extra: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON description of the model: architecture, tensor shapes, size, input, ``extra``."""
    return {
        "arch": spec.arch,
        "n_features": spec.n_features,
        "n_classes": spec.n_classes,
        "hidden": list(spec.hidden) if spec.arch == "mlp" else None,
        "input": _input_description(spec),
        "output": f"logits (N, {spec.n_classes})",
        "param_shapes": {k: list(v) for k, v in param_shapes(spec).items()},
        "n_params": count_params(spec),
        "weights_format": "safetensors, float32",
        "extra": dict(extra),
    }
