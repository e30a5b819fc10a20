"""Local training and evaluation of zoo models (torch, CPU), as one FL client does it.

:func:`local_train` runs minibatch SGD or Adam (Kingma & Ba 2015) from the global weights
and returns the update ``delta = new - old``, as in FedAvg (McMahan et al. 2017). With
``proximal_mu > 0`` it adds FedProx's proximal term ``mu/2 * ||w - w_global||²`` to the
loss (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"). With
``clip_norm`` the whole delta is scaled to global L2 norm ``<= clip_norm``, the client-side
clipping that DP-FedAvg needs (McMahan et al. 2018, "Learning Differentially Private
Recurrent Language Models").

Training is deterministic for a given seed and thread count: shuffling uses a local
``torch.Generator`` and the global RNG is never touched. Nothing here changes thread
counts; the caller may use :func:`set_threads`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from quackmesh.fl.zoo import ModelSpec, Weights, build, check_weights, init_weights

__all__ = [
    "TrainConfig",
    "TrainResult",
    "centralised_train",
    "delta_norm",
    "evaluate",
    "local_train",
    "set_threads",
]

# Scaling float32 values rounds each by at most 2**-24 (relative); this margin keeps the
# clipped norm at or below clip_norm despite that rounding.
_CLIP_MARGIN = 1.0 - 1e-6
_interop_threads_set = False


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of local training; ``ValueError`` on a value out of range.

    ``momentum`` applies to SGD only; ``clip_norm=None`` means no clipping.
    """

    epochs: int = 1
    batch_size: int = 32
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.0
    proximal_mu: float = 0.0
    clip_norm: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.epochs <= 1000, "epochs must be in [1, 1000]"),
            (1 <= self.batch_size <= 65536, "batch_size must be in [1, 65536]"),
            (self.optimizer in ("sgd", "adam"), "optimizer must be 'sgd' or 'adam'"),
            (math.isfinite(self.lr) and 0 < self.lr <= 10, "lr must be in (0, 10]"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (0 <= self.proximal_mu <= 1e6, "proximal_mu must be in [0, 1e6]"),
            (
                self.clip_norm is None or (math.isfinite(self.clip_norm) and self.clip_norm > 0),
                "clip_norm must be > 0 or None",
            ),
            (0 <= self.seed < 2**63, "seed must be in [0, 2**63)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass(frozen=True, eq=False)
class TrainResult:
    """``delta``: float32 ``new - old`` per tensor (clipped if asked); ``loss``: mean
    cross-entropy of the last epoch (without the proximal term); ``accuracy``: of
    ``old + delta`` on the local data."""

    delta: Weights
    n_examples: int
    loss: float
    accuracy: float


def set_threads(n: int) -> None:
    """Set torch's intra-op threads to ``n`` and, the first time only, inter-op threads.

    ``torch.set_num_interop_threads`` may be called once, before any parallel work;
    later calls (or a refusal from torch) leave the inter-op pool as it is.
    """
    global _interop_threads_set
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    if not _interop_threads_set:
        _interop_threads_set = True
        # Torch refuses once parallel work has started; the pool then stays as it is.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(n)


def delta_norm(delta: Mapping[str, npt.NDArray[np.float32]]) -> float:
    """Global L2 norm over every tensor, computed in float64."""
    return math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in delta.values()))


def _tensors(
    spec: ModelSpec, X: npt.ArrayLike, y: npt.ArrayLike
) -> tuple[torch.Tensor, torch.Tensor]:
    # A fresh, writable copy: torch cannot wrap read-only arrays (Dataset's are read-only).
    x_arr = np.array(X, dtype=np.float32, order="C", copy=True)
    y_arr = np.asarray(y)
    if x_arr.ndim != 2 or x_arr.shape[1] != spec.n_features or x_arr.shape[0] == 0:
        raise ValueError(f"X must be (n >= 1, {spec.n_features}), got {x_arr.shape}")
    if y_arr.shape != (x_arr.shape[0],) or y_arr.dtype.kind not in "iu":
        raise ValueError(f"y must be integer ({x_arr.shape[0]},), got {y_arr.dtype} {y_arr.shape}")
    if y_arr.min() < 0 or y_arr.max() >= spec.n_classes:
        raise ValueError(f"labels must lie in [0, {spec.n_classes})")
    return torch.from_numpy(x_arr), torch.from_numpy(y_arr.astype(np.int64))


def _model(spec: ModelSpec, weights: Mapping[str, npt.ArrayLike]) -> tuple[nn.Module, Weights]:
    """The module holding ``weights`` (cast to float32 and checked), and those weights."""
    state = check_weights({k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}, spec)
    model = build(spec)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model, state


class _Optimizer:
    """Plain SGD (with momentum) and Adam (Kingma & Ba 2015), written out by hand.

    ``torch.optim``'s constructors import ``torch._dynamo`` (about 3 s of CPU), which every
    sandboxed training task would pay; these few lines do the same update rules
    (PyTorch's SGD momentum convention; Adam with bias correction, eps 1e-8).
    """

    def __init__(self, params: Sequence[torch.Tensor], config: TrainConfig) -> None:
        self.params = params
        self.config = config
        self.t = 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params] if config.optimizer == "adam" else []

    @torch.no_grad()
    def step(self) -> None:
        cfg = self.config
        self.t += 1
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if cfg.optimizer == "adam":
                beta1, beta2 = 0.9, 0.999
                self.m[i].mul_(beta1).add_(g, alpha=1 - beta1)
                self.v[i].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = self.m[i] / (1 - beta1**self.t)
                v_hat = self.v[i] / (1 - beta2**self.t)
                p.sub_(cfg.lr * m_hat / (v_hat.sqrt() + 1e-8))
            elif cfg.momentum > 0:
                buf = self.m[i]
                if self.t == 1:
                    buf.copy_(g)
                else:
                    buf.mul_(cfg.momentum).add_(g)
                p.sub_(cfg.lr * buf)
            else:
                p.sub_(cfg.lr * g)
            p.grad = None


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> float:
    """Train ``model`` in place; return the mean cross-entropy of the last epoch."""
    params = list(model.parameters())
    anchor = [p.detach().clone() for p in params]  # w_global, for the proximal term
    opt = _Optimizer(params, config)
    gen = torch.Generator().manual_seed(config.seed)
    n = int(x.shape[0])
    last = math.nan
    model.train()
    with torch.enable_grad():
        for _ in range(config.epochs):
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                ce = F.cross_entropy(model(x[idx]), y[idx])  # logits (b, n_classes)
                loss = ce
                if config.proximal_mu > 0:
                    prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                    loss = ce + (config.proximal_mu / 2) * prox
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                total += float(ce.detach()) * int(idx.shape[0])
            last = total / n
    return last


def _state_of(model: nn.Module) -> Weights:
    return {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}


def _scores(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, int(x.shape[0]), batch_size):
            logits = model(x[start : start + batch_size])  # (b, n_classes)
            target = y[start : start + batch_size]
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(dim=1) == target).sum())
    n = int(x.shape[0])
    return loss_sum / n, correct / n


def evaluate(
    spec: ModelSpec,
    weights: Mapping[str, npt.ArrayLike],
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    batch_size: int = 512,
) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` of ``weights`` on ``(X, y)``, without gradients."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x_t, y_t = _tensors(spec, X, y)
    model, _ = _model(spec, weights)
    return _scores(model, x_t, y_t, batch_size)


def local_train(
    spec: ModelSpec,
    weights: Mapping[str, npt.ArrayLike],
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    config: TrainConfig,
) -> TrainResult:
    """Train from ``weights`` on ``X`` ``(n, n_features)``, ``y`` ``(n,)``; return the delta.

    ``weights`` must be exactly the spec's tensors (cast to float32); ``ModelError`` or
    ``ValueError`` otherwise. The caller's arrays are not modified.
    """
    x_t, y_t = _tensors(spec, X, y)
    model, old = _model(spec, weights)
    loss = _fit(model, x_t, y_t, config)
    new = _state_of(model)
    delta = {k: (new[k] - old[k]).astype(np.float32) for k in old}
    if config.clip_norm is not None:
        norm = delta_norm(delta)
        if norm > config.clip_norm:
            factor = np.float32(config.clip_norm / norm * _CLIP_MARGIN)
            delta = {k: v * factor for k, v in delta.items()}
            model.load_state_dict({k: torch.from_numpy(old[k] + delta[k]) for k in old})
    _, accuracy = _scores(model, x_t, y_t, 512)
    return TrainResult(delta=delta, n_examples=int(x_t.shape[0]), loss=loss, accuracy=accuracy)


def centralised_train(
    spec: ModelSpec,
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    epochs: int,
    config: TrainConfig = TrainConfig(),
    seed: int = 0,
) -> Weights:
    """Plain training on pooled data from ``init_weights(spec, seed=seed)``: the ceiling
    federated runs are compared with. ``epochs`` replaces ``config.epochs``; proximal term
    and clipping do not apply."""
    start = init_weights(spec, seed=seed)
    run = replace(config, epochs=epochs, proximal_mu=0.0, clip_norm=None)
    result = local_train(spec, start, X, y, run)
    return {k: (start[k] + result.delta[k]).astype(np.float32) for k in start}
