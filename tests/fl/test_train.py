"""Local training: it learns, FedProx and clipping bound the update, and it is reproducible."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from quackmesh.fl.data import Dataset, load_builtin, partition_iid, train_holdout_split
from quackmesh.fl.train import (
    TrainConfig,
    centralised_train,
    delta_norm,
    evaluate,
    local_train,
    set_threads,
)
from quackmesh.fl.zoo import ModelError, ModelSpec, Weights, init_weights

LOGREG = ModelSpec(arch="logreg", n_features=64, n_classes=10)
MLP = ModelSpec(arch="mlp", n_features=64, n_classes=10, hidden=(32,))


@pytest.fixture(scope="module")
def split() -> tuple[Dataset, Dataset]:
    return train_holdout_split(load_builtin("digits"), holdout=300, seed=0)


def test_local_train_reduces_loss_on_digits(split: tuple[Dataset, Dataset]) -> None:
    train, _ = split
    w0 = init_weights(MLP, seed=0)
    before, acc_before = evaluate(MLP, w0, train.X, train.y)
    result = local_train(MLP, w0, train.X, train.y, TrainConfig(epochs=2, lr=0.1))
    after_w = {k: w0[k] + result.delta[k] for k in w0}
    after, acc_after = evaluate(MLP, after_w, train.X, train.y)
    assert after < before * 0.7 and acc_after > acc_before
    assert result.n_examples == train.rows
    assert result.accuracy == pytest.approx(acc_after)
    assert 0 < result.loss < before
    assert all(v.dtype == np.float32 for v in result.delta.values())


def test_adam_with_momentum_free_config_also_learns(split: tuple[Dataset, Dataset]) -> None:
    train, _ = split
    w0 = init_weights(LOGREG, seed=0)
    result = local_train(LOGREG, w0, train.X, train.y, TrainConfig(optimizer="adam", lr=0.01))
    assert result.accuracy > 0.8


def test_proximal_term_keeps_the_delta_smaller(split: tuple[Dataset, Dataset]) -> None:
    train, _ = split
    w0 = init_weights(LOGREG, seed=0)
    config = TrainConfig(epochs=2, lr=0.1)
    plain = local_train(LOGREG, w0, train.X, train.y, config)
    prox = local_train(LOGREG, w0, train.X, train.y, replace(config, proximal_mu=1.0))
    assert delta_norm(prox.delta) < 0.9 * delta_norm(plain.delta)


def test_clip_norm_bounds_the_delta_norm(split: tuple[Dataset, Dataset]) -> None:
    train, _ = split
    w0 = init_weights(LOGREG, seed=0)
    unclipped = local_train(LOGREG, w0, train.X, train.y, TrainConfig(lr=0.1))
    assert delta_norm(unclipped.delta) > 0.5
    clipped = local_train(LOGREG, w0, train.X, train.y, TrainConfig(lr=0.1, clip_norm=0.5))
    assert delta_norm(clipped.delta) <= 0.5
    assert delta_norm(clipped.delta) == pytest.approx(0.5, rel=1e-4)
    # Clipping scales the whole update: its direction is unchanged.
    a, b = unclipped.delta["out.weight"].ravel(), clipped.delta["out.weight"].ravel()
    assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) == pytest.approx(1.0, abs=1e-5)
    loose = local_train(LOGREG, w0, train.X, train.y, TrainConfig(lr=0.1, clip_norm=1e6))
    for k in w0:
        np.testing.assert_array_equal(loose.delta[k], unclipped.delta[k])


def test_same_seed_same_delta_and_other_seed_differs(split: tuple[Dataset, Dataset]) -> None:
    train, _ = split
    w0 = init_weights(MLP, seed=3)
    x_before = train.X.copy()
    w_before = {k: v.copy() for k, v in w0.items()}
    config = TrainConfig(lr=0.05, momentum=0.9, seed=11)
    a = local_train(MLP, w0, train.X, train.y, config)
    b = local_train(MLP, w0, train.X, train.y, config)
    c = local_train(MLP, w0, train.X, train.y, replace(config, seed=12))
    for k in w0:
        np.testing.assert_array_equal(a.delta[k], b.delta[k])
        np.testing.assert_array_equal(w0[k], w_before[k])  # the caller's weights are untouched
    assert a.loss == b.loss
    assert not np.array_equal(a.delta["fc1.weight"], c.delta["fc1.weight"])
    np.testing.assert_array_equal(train.X, x_before)


def test_federated_averaging_in_process_reaches_85_percent(
    split: tuple[Dataset, Dataset],
) -> None:
    train, hold = split
    w: Weights = init_weights(LOGREG, seed=0)
    parts = partition_iid(train.rows, 3, seed=0)
    for rnd in range(5):
        config = TrainConfig(epochs=1, lr=0.3, seed=rnd)
        results = [local_train(LOGREG, w, train.X[p], train.y[p], config) for p in parts]
        # FedAvg (McMahan et al. 2017): example-weighted mean of the deltas.
        total = sum(r.n_examples for r in results)
        w = {k: w[k] + sum(r.delta[k] * (r.n_examples / total) for r in results) for k in w}
    _, accuracy = evaluate(LOGREG, w, hold.X, hold.y)
    assert accuracy > 0.85


def test_centralised_train_is_a_strong_baseline(split: tuple[Dataset, Dataset]) -> None:
    train, hold = split
    weights = centralised_train(LOGREG, train.X, train.y, epochs=3, config=TrainConfig(lr=0.3))
    _, accuracy = evaluate(LOGREG, weights, hold.X, hold.y)
    assert accuracy > 0.9


def test_inputs_are_checked(split: tuple[Dataset, Dataset]) -> None:
    train, _ = split
    w0 = init_weights(LOGREG, seed=0)
    config = TrainConfig()
    with pytest.raises(ValueError, match="X must be"):
        local_train(LOGREG, w0, train.X[:, :10], train.y, config)
    with pytest.raises(ValueError, match="labels"):
        local_train(LOGREG, w0, train.X, train.y + 5, config)
    with pytest.raises(ModelError):
        local_train(LOGREG, {"out.weight": w0["out.weight"]}, train.X, train.y, config)
    # float64 weights (say, from an aggregator) are cast, not refused.
    as_f64 = {k: v.astype(np.float64) for k, v in w0.items()}
    assert evaluate(LOGREG, as_f64, train.X, train.y) == evaluate(LOGREG, w0, train.X, train.y)


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"optimizer": "lbfgs"},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"momentum": 1.0},
        {"proximal_mu": -1.0},
        {"clip_norm": 0.0},
        {"seed": -1},
    ],
)
def test_train_config_refuses_out_of_range_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**bad)  # type: ignore[arg-type]


def test_set_threads_may_be_called_twice() -> None:
    current = torch.get_num_threads()
    set_threads(current)
    set_threads(current)  # set_num_interop_threads would raise the second time
    assert torch.get_num_threads() == current
    with pytest.raises(ValueError):
        set_threads(0)
