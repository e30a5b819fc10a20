"""Client-level DP-FedAvg: clipping, noise scale, configuration and the RDP accountant."""

from __future__ import annotations

import itertools
import math
from typing import Any

import dp_accounting
import numpy as np
import pytest

from quackmesh.fl.dp import (
    DpConfig,
    PrivacyAccountant,
    clip_update,
    epsilon_after,
    gaussian_noise,
    private_mean,
)

DELTA = 1e-5


def test_clip_update_scales_a_long_update_to_the_clip_norm() -> None:
    update = np.array([3.0, 4.0])  # norm 5
    clipped, norm = clip_update(update, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped, [0.6, 0.8])
    np.testing.assert_array_equal(update, [3.0, 4.0])  # the input is untouched


def test_clip_update_leaves_a_short_update_alone_but_copies_it() -> None:
    update = np.array([0.3, 0.4])
    clipped, norm = clip_update(update, 1.0)
    assert norm == pytest.approx(0.5)
    np.testing.assert_array_equal(clipped, update)
    assert clipped is not update


@pytest.mark.parametrize(
    ("update", "clip_norm", "message"),
    [
        (np.ones(2), 0.0, "clip_norm"),
        (np.ones(2), math.inf, "clip_norm"),
        (np.ones((2, 2)), 1.0, "1-D"),
        (np.array([1.0, math.nan]), 1.0, "NaN"),
    ],
)
def test_clip_update_rejects_bad_input(update: np.ndarray, clip_norm: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clip_update(update, clip_norm)


def test_gaussian_noise_has_standard_deviation_z_c_over_n() -> None:
    rng = np.random.default_rng(0)
    noise = gaussian_noise(200_000, noise_multiplier=2.0, clip_norm=0.5, n_clients=10, rng=rng)
    # sigma = z * C / n = 2 * 0.5 / 10 = 0.1; the sample std of 2e5 draws is within 1%.
    assert noise.shape == (200_000,)
    assert float(noise.std()) == pytest.approx(0.1, rel=0.01)
    assert abs(float(noise.mean())) < 0.001


def test_gaussian_noise_is_reproducible_from_the_generator() -> None:
    kwargs: dict[str, Any] = {"noise_multiplier": 1.0, "clip_norm": 1.0, "n_clients": 3}
    first = gaussian_noise((2, 3), rng=np.random.default_rng(5), **kwargs)
    second = gaussian_noise((2, 3), rng=np.random.default_rng(5), **kwargs)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_multiplier": -1.0, "clip_norm": 1.0, "n_clients": 3}, "noise_multiplier"),
        ({"noise_multiplier": 1.0, "clip_norm": 0.0, "n_clients": 3}, "clip_norm"),
        ({"noise_multiplier": 1.0, "clip_norm": 1.0, "n_clients": 0}, "n_clients"),
    ],
)
def test_gaussian_noise_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gaussian_noise(3, rng=np.random.default_rng(0), **kwargs)


def test_private_mean_without_noise_is_the_mean_of_clipped_updates() -> None:
    updates = np.array([[3.0, 4.0], [0.0, 0.5]])  # norms 5 and 0.5
    mean, norms = private_mean(
        updates, noise_multiplier=0.0, clip_norm=1.0, rng=np.random.default_rng(0)
    )
    # clipped rows (0.6, 0.8) and (0, 0.5), equal weights -> (0.3, 0.65)
    np.testing.assert_allclose(mean, [0.3, 0.65])
    np.testing.assert_allclose(norms, [5.0, 0.5])


def test_dp_config_validates_each_field() -> None:
    assert DpConfig(noise_multiplier=1.1, clip_norm=1.0).delta == DELTA
    for kwargs, field in [
        ({"noise_multiplier": 0.0, "clip_norm": 1.0}, "noise_multiplier"),
        ({"noise_multiplier": 1.0, "clip_norm": -1.0}, "clip_norm"),
        ({"noise_multiplier": 1.0, "clip_norm": 1.0, "delta": 1.0}, "delta"),
        ({"noise_multiplier": 1.0, "clip_norm": 1.0, "epsilon_budget": 0.0}, "epsilon_budget"),
    ]:
        with pytest.raises(ValueError, match=field):
            DpConfig(**kwargs)


def test_epsilon_grows_with_rounds() -> None:
    values = [
        epsilon_after(rounds=r, sampling_rate=0.05, noise_multiplier=1.0, delta=DELTA)
        for r in (0, 1, 10, 100, 1000)
    ]
    assert values[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(values))


def test_epsilon_shrinks_with_more_noise() -> None:
    values = [
        epsilon_after(rounds=50, sampling_rate=0.05, noise_multiplier=z, delta=DELTA)
        for z in (0.8, 1.0, 2.0, 4.0)
    ]
    assert all(a > b for a, b in itertools.pairwise(values))


def test_one_full_gaussian_round_sits_between_the_exact_value_and_the_classic_rdp_bound() -> None:
    eps = epsilon_after(rounds=1, sampling_rate=1.0, noise_multiplier=1.0, delta=DELTA)
    # Classic RDP conversion for the Gaussian mechanism (Mironov 2017): order alpha has
    # RDP alpha / (2 z^2); eps = min_alpha alpha/2 + log(1/delta)/(alpha - 1) = 5.30 at z = 1.
    alphas = np.linspace(1.01, 100.0, 100_000)
    classic = float(np.min(alphas / 2 + math.log(1 / DELTA) / (alphas - 1)))
    assert classic == pytest.approx(5.30, abs=0.01)
    # The exact Gaussian-mechanism epsilon (Balle & Wang 2018) is a lower bound: ~4.38.
    exact = dp_accounting.get_epsilon_gaussian(1.0, DELTA)
    assert 0 < exact <= eps <= classic
    assert eps == pytest.approx(4.73, abs=0.05)


def test_max_rounds_is_the_last_round_within_budget() -> None:
    accountant = PrivacyAccountant()
    settings: dict[str, Any] = {"sampling_rate": 0.01, "noise_multiplier": 1.1, "delta": DELTA}
    rounds = accountant.max_rounds(epsilon_budget=2.0, limit=100_000, **settings)
    assert 0 < rounds < 100_000
    assert accountant.epsilon(rounds=rounds, **settings) <= 2.0
    assert accountant.epsilon(rounds=rounds + 1, **settings) > 2.0


def test_max_rounds_stops_at_the_limit_and_at_zero() -> None:
    accountant = PrivacyAccountant()
    settings: dict[str, Any] = {"sampling_rate": 0.01, "noise_multiplier": 1.1, "delta": DELTA}
    assert accountant.max_rounds(epsilon_budget=100.0, limit=7, **settings) == 7
    assert accountant.max_rounds(epsilon_budget=1e-3, limit=7, **settings) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rounds": -1}, "rounds"),
        ({"sampling_rate": 0.0}, "sampling_rate"),
        ({"sampling_rate": 1.5}, "sampling_rate"),
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"delta": 0.0}, "delta"),
    ],
)
def test_epsilon_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "rounds": 1,
        "sampling_rate": 0.1,
        "noise_multiplier": 1.0,
        "delta": DELTA,
    }
    with pytest.raises(ValueError, match=message):
        PrivacyAccountant().epsilon(**(arguments | kwargs))
