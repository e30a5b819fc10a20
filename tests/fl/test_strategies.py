"""Aggregation strategies: hand-computed rounds, failure paths, robustness, exports."""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np
import pytest

from quackmesh.fl.strategies import (
    STRATEGIES,
    FedAdam,
    FedAvg,
    FedProx,
    FedYogi,
    Krum,
    Median,
    MultiKrum,
    Strategy,
    StrategyError,
    TrimmedMean,
    make_strategy,
)
from quackmesh.fl.strategies.fedyogi import yogi_second_moment
from quackmesh.fl.strategies.krum import krum_scores

EMPTY: dict[str, np.ndarray] = {}


def _f(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float64)


# --- mean-based strategies ----------------------------------------------------------------


def test_fedavg_is_the_example_weighted_mean_scaled_by_server_lr() -> None:
    # weights 1/4, 3/4: delta = (0.25*1 + 0.75*3, 0.25*2 + 0.75*6) = (2.5, 5.0);
    # params = (1, 1) + 0.5 * (2.5, 5.0) = (2.25, 3.5)
    out = FedAvg(server_lr=0.5).run_round(
        np.array([1.0, 1.0]), _f([1, 2], [3, 6]), np.array([1, 3]), EMPTY
    )
    np.testing.assert_allclose(out.aggregate.delta, [2.5, 5.0])
    np.testing.assert_allclose(out.params, [2.25, 3.5])
    assert out.aggregate.accepted.tolist() == [True, True]
    assert out.state == {}


def test_fedprox_aggregates_like_fedavg_and_sends_mu_to_clients() -> None:
    strategy = FedProx(proximal_mu=0.1)
    out = strategy.run_round(np.zeros(2), _f([1, 2], [3, 6]), np.array([1, 3]), EMPTY)
    np.testing.assert_allclose(out.params, [2.5, 5.0])
    assert strategy.client_config() == {"proximal_mu": 0.1}
    assert FedAvg().client_config() == {}


def test_fedadam_two_rounds_match_algorithm_2_without_bias_correction() -> None:
    strategy = FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)
    updates, counts = _f([0.2], [0.4]), np.array([1, 1])  # delta = 0.3 each round
    # round 1: m = 0.1*0.3 = 0.03; v = 0.01*0.09 = 0.0009; sqrt(v) = 0.03
    #          x = 1 + 0.1*0.03/(0.03 + 0.001) = 1 + 0.003/0.031
    first = strategy.run_round(np.array([1.0]), updates, counts, EMPTY)
    np.testing.assert_allclose(first.state["m"], [0.03])
    np.testing.assert_allclose(first.state["v"], [0.0009])
    np.testing.assert_allclose(first.params, [1 + 0.003 / 0.031])
    # round 2: m = 0.9*0.03 + 0.03 = 0.057; v = 0.99*0.0009 + 0.0009 = 0.001791
    second = strategy.run_round(first.params, updates, counts, first.state)
    np.testing.assert_allclose(second.state["m"], [0.057])
    np.testing.assert_allclose(second.state["v"], [0.001791])
    expected = 1 + 0.003 / 0.031 + 0.1 * 0.057 / (math.sqrt(0.001791) + 0.001)
    np.testing.assert_allclose(second.params, [expected])


def test_fedyogi_starts_v_at_tau_squared() -> None:
    strategy = FedYogi(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)
    # v0 = tau^2 = 1e-6; delta^2 = 0.09 > v0, so sign = -1 and
    # v = 1e-6 + 0.01*0.09 = 0.000901; m = 0.03; x = 1 + 0.1*0.03/(sqrt(0.000901) + 0.001)
    out = strategy.run_round(np.array([1.0]), _f([0.2], [0.4]), np.array([1, 1]), EMPTY)
    np.testing.assert_allclose(out.state["v"], [0.000901])
    np.testing.assert_allclose(out.state["m"], [0.03])
    np.testing.assert_allclose(out.params, [1 + 0.003 / (math.sqrt(0.000901) + 0.001)])


def test_yogi_second_moment_shrinks_additively_when_v_exceeds_delta_squared() -> None:
    # v = 1, delta^2 = 0.25: sign(+) -> 1 - 0.01*0.25 = 0.9975; v == delta^2: unchanged
    v = yogi_second_moment(np.array([1.0, 0.25]), np.array([0.5, 0.5]), beta_2=0.99)
    np.testing.assert_allclose(v, [0.9975, 0.25])


def test_fedadam_rejects_state_of_the_wrong_shape() -> None:
    with pytest.raises(StrategyError, match=r"state\['m'\]"):
        FedAdam().run_round(np.zeros(2), _f([1, 1]), np.array([1]), {"m": np.zeros(3)})


@pytest.mark.parametrize("strategy", [FedAvg(server_lr=0.5), FedProx(), FedAdam(), FedYogi()])
def test_round_from_sum_matches_round_from_updates(strategy: Strategy) -> None:
    updates, counts = _f([1, 2], [3, 6]), np.array([1, 3])
    params = np.array([0.5, -0.5])
    full = strategy.run_round(params, updates, counts, EMPTY)
    weighted_sum = counts @ updates  # 1*(1,2) + 3*(3,6) = (10, 20)
    from_sum = strategy.run_round_from_sum(params, weighted_sum, 4, EMPTY)
    np.testing.assert_allclose(from_sum.aggregate.delta, [2.5, 5.0])
    np.testing.assert_allclose(from_sum.params, full.params)
    assert from_sum.aggregate.accepted.shape == (0,)
    assert from_sum.state.keys() == full.state.keys()


@pytest.mark.parametrize("strategy", [Krum(), MultiKrum(), Median(), TrimmedMean()])
def test_robust_strategies_refuse_a_secure_aggregation_sum(strategy: Strategy) -> None:
    assert not strategy.mean_based
    with pytest.raises(StrategyError, match="each client's update"):
        strategy.run_round_from_sum(np.zeros(2), np.ones(2), 3, EMPTY)


@pytest.mark.parametrize("total_examples", [0, -3, 2.5])
def test_round_from_sum_rejects_bad_totals(total_examples: Any) -> None:
    with pytest.raises(StrategyError, match="total_examples"):
        FedAvg().run_round_from_sum(np.zeros(2), np.ones(2), total_examples, EMPTY)


def test_round_from_sum_rejects_a_sum_of_the_wrong_length() -> None:
    with pytest.raises(StrategyError, match="weighted_sum has 3"):
        FedAvg().run_round_from_sum(np.zeros(2), np.ones(3), 3, EMPTY)


# --- Krum ---------------------------------------------------------------------------------

# Four 1-D updates 0, 1, 2, 10. With f = 0 each score sums the n - f - 2 = 2 nearest
# squared distances: 0 -> 1 + 4 = 5; 1 -> 1 + 1 = 2; 2 -> 1 + 4 = 5; 10 -> 64 + 81 = 145.
KRUM_UPDATES = _f([0], [1], [2], [10])


def test_krum_scores_by_hand() -> None:
    np.testing.assert_allclose(krum_scores(KRUM_UPDATES, num_malicious=0), [5, 2, 5, 145])


def test_krum_picks_the_lowest_score() -> None:
    out = Krum().run_round(np.zeros(1), KRUM_UPDATES, np.ones(4, dtype=int), EMPTY)
    np.testing.assert_allclose(out.aggregate.delta, [1.0])
    assert out.aggregate.accepted.tolist() == [False, True, False, False]


def test_krum_breaks_ties_by_lowest_index() -> None:
    # f = 1: one neighbour each -> scores 1, 1, 1, 64; indices 0..2 tie, 0 wins.
    out = Krum(num_malicious=1).run_round(np.zeros(1), KRUM_UPDATES, np.ones(4, int), EMPTY)
    np.testing.assert_allclose(out.aggregate.delta, [0.0])
    assert out.aggregate.accepted.tolist() == [True, False, False, False]


def test_multikrum_averages_the_best_m_weighted_by_examples() -> None:
    # scores 5, 2, 5, 145: best two are 1 then 0 (tie with 2 goes to index 0);
    # weighted mean (3*0 + 1*1) / 4 = 0.25
    out = MultiKrum(num_selected=2).run_round(
        np.zeros(1), KRUM_UPDATES, np.array([3, 1, 1, 1]), EMPTY
    )
    np.testing.assert_allclose(out.aggregate.delta, [0.25])
    assert out.aggregate.accepted.tolist() == [True, True, False, False]


def test_multikrum_defaults_to_keeping_n_minus_f() -> None:
    # f = 1 -> keep 3: scores 1, 1, 1, 64 -> 0, 1, 2 -> mean 1.0
    out = MultiKrum(num_malicious=1).run_round(np.zeros(1), KRUM_UPDATES, np.ones(4, int), EMPTY)
    np.testing.assert_allclose(out.aggregate.delta, [1.0])
    assert out.aggregate.accepted.tolist() == [True, True, True, False]


@pytest.mark.parametrize(
    ("strategy", "needed"),
    [(Krum(num_malicious=2), 5), (MultiKrum(num_malicious=1, num_selected=4), 5)],
)
def test_krum_needs_enough_clients(strategy: Strategy, needed: int) -> None:
    with pytest.raises(StrategyError, match=f"at least {needed} clients, got 4"):
        strategy.run_round(np.zeros(1), KRUM_UPDATES, np.ones(4, int), EMPTY)


def test_krum_scores_refuse_too_few_updates_when_called_directly() -> None:
    with pytest.raises(StrategyError, match="at least 3"):
        krum_scores(_f([0], [1]), num_malicious=0)


# --- median and trimmed mean --------------------------------------------------------------


def test_median_by_hand_and_flags_the_far_update() -> None:
    updates = _f([1, 10], [2, 20], [3, -5], [100, 0])
    # column 0 sorted 1, 2, 3, 100 -> 2.5; column 1 sorted -5, 0, 10, 20 -> 5
    # distances to (2.5, 5): sqrt(27.25)=5.2, sqrt(225.25)=15.0, sqrt(100.25)=10.0,
    # sqrt(9531.25)=97.6; median 12.5, threshold 3*12.5 = 37.5 -> only client 3 flagged
    out = Median().run_round(np.zeros(2), updates, np.array([1, 50, 1, 1]), EMPTY)
    np.testing.assert_allclose(out.aggregate.delta, [2.5, 5.0])
    assert out.aggregate.accepted.tolist() == [True, True, True, False]


def test_median_accepts_every_update_when_none_is_far() -> None:
    out = Median().run_round(np.zeros(1), _f([1], [2], [3]), np.ones(3, int), EMPTY)
    np.testing.assert_allclose(out.aggregate.delta, [2.0])
    assert out.aggregate.accepted.all()


def test_trimmed_mean_by_hand() -> None:
    updates = _f([1, -50], [2, 0], [3, 1], [4, 2], [100, 3])
    # beta 0.2, n 5 -> k = 1: column 0 keeps 2, 3, 4 -> 3; column 1 keeps 0, 1, 2 -> 1
    # distances to (3, 1): 51.0, 1.41, 0, 1.41, 97.0; median 1.41 -> threshold 4.24
    out = TrimmedMean(beta=0.2).run_round(np.zeros(2), updates, np.ones(5, int), EMPTY)
    np.testing.assert_allclose(out.aggregate.delta, [3.0, 1.0])
    assert out.aggregate.accepted.tolist() == [False, True, True, True, False]


def test_trimmed_mean_with_nothing_to_trim_is_the_plain_mean() -> None:
    # beta 0.1, n 5 -> k = floor(0.5) = 0: unweighted mean (1+2+3+4+100)/5 = 22
    updates = _f([1], [2], [3], [4], [100])
    out = TrimmedMean(beta=0.1).run_round(np.zeros(1), updates, np.array([9, 1, 1, 1, 1]), EMPTY)
    np.testing.assert_allclose(out.aggregate.delta, [22.0])


# --- validation ---------------------------------------------------------------------------


ALL = [
    FedAvg(),
    FedProx(),
    FedAdam(),
    FedYogi(),
    Krum(),
    MultiKrum(),
    Median(),
    TrimmedMean(),
]


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.name)
def test_run_round_does_not_mutate_its_inputs(strategy: Strategy) -> None:
    rng = np.random.default_rng(0)
    params, updates = rng.normal(size=3), rng.normal(size=(5, 3))
    counts = np.array([1, 2, 3, 4, 5])
    state = {"m": np.full(3, 0.1), "v": np.full(3, 0.2)} if strategy.mean_based else {}
    copies = (params.copy(), updates.copy(), counts.copy(), {k: v.copy() for k, v in state.items()})
    out = strategy.run_round(params, updates, counts, state)
    np.testing.assert_array_equal(params, copies[0])
    np.testing.assert_array_equal(updates, copies[1])
    np.testing.assert_array_equal(counts, copies[2])
    assert state.keys() == copies[3].keys()
    for key, value in state.items():
        np.testing.assert_array_equal(value, copies[3][key])
    assert out.params.shape == (3,)
    assert out.aggregate.accepted.shape == (5,)


@pytest.mark.parametrize(
    ("params", "updates", "counts", "message"),
    [
        (np.zeros(2), np.zeros(2), np.array([1]), "2-D"),
        (np.zeros(3), np.zeros((2, 2)), np.array([1, 1]), "the model has 3"),
        (np.zeros(2), _f([1, math.nan], [1, 1]), np.array([1, 1]), r"clients \[0\]"),
        (np.zeros(2), _f([1, 1], [1, math.inf]), np.array([1, 1]), r"clients \[1\]"),
        (np.zeros(2), np.zeros((2, 2)), np.array([1]), r"shape \(2,\)"),
        (np.zeros(2), np.zeros((2, 2)), np.array([1, 0]), "> 0"),
        (np.zeros(2), np.zeros((2, 2)), np.array([1.0, 2.0]), "integers"),
        (np.zeros(2), np.zeros((0, 2)), np.zeros(0, dtype=int), "at least 1 clients"),
        (np.array([math.nan, 0]), np.zeros((1, 2)), np.array([1]), "params contains NaN"),
    ],
)
def test_run_round_rejects_malformed_inputs(
    params: np.ndarray, updates: np.ndarray, counts: np.ndarray, message: str
) -> None:
    with pytest.raises(StrategyError, match=message):
        FedAvg().run_round(params, updates, counts, EMPTY)


def test_strategy_error_is_a_value_error() -> None:
    assert issubclass(StrategyError, ValueError)


@pytest.mark.parametrize(
    ("name", "params", "parameter"),
    [
        ("fedavg", {"server_lr": 0.0}, "server_lr"),
        ("fedavg", {"server_lr": True}, "server_lr"),
        ("fedprox", {"proximal_mu": -1.0}, "proximal_mu"),
        ("fedprox", {"proximal_mu": "0.1"}, "proximal_mu"),
        ("fedadam", {"beta_1": 1.0}, "beta_1"),
        ("fedyogi", {"beta_2": -0.1}, "beta_2"),
        ("fedadam", {"tau": 0.0}, "tau"),
        ("fedyogi", {"eta": math.nan}, "eta"),
        ("krum", {"num_malicious": -1}, "num_malicious"),
        ("krum", {"num_malicious": 1.0}, "num_malicious"),
        ("multikrum", {"num_selected": 0}, "num_selected"),
        ("median", {"outlier_factor": 0.0}, "outlier_factor"),
        ("trimmed_mean", {"beta": 0.5}, "beta"),
        ("trimmed_mean", {"outlier_factor": -2.0}, "outlier_factor"),
    ],
)
def test_make_strategy_rejects_bad_values_naming_the_parameter(
    name: str, params: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(StrategyError, match=parameter):
        make_strategy(name, params)


def test_make_strategy_rejects_an_unknown_name_listing_the_known_ones() -> None:
    with pytest.raises(StrategyError, match="unknown strategy 'fedsgd'") as info:
        make_strategy("fedsgd", {})
    for name in STRATEGIES:
        assert name in str(info.value)


def test_make_strategy_rejects_unknown_parameters() -> None:
    with pytest.raises(StrategyError, match=r"unknown parameter\(s\) lr for strategy 'fedavg'"):
        make_strategy("fedavg", {"lr": 0.1})


def test_make_strategy_builds_each_strategy_with_its_settings() -> None:
    assert make_strategy("fedadam", {"eta": 0.1}) == FedAdam(eta=0.1)
    assert make_strategy("multikrum", {"num_malicious": 1, "num_selected": 2}) == MultiKrum(1, 2)
    for name, cls in STRATEGIES.items():
        strategy = make_strategy(name, {})
        assert isinstance(strategy, cls)
        assert strategy.name == name
        assert strategy.mean_based == (name in {"fedavg", "fedprox", "fedadam", "fedyogi"})


# --- robustness against attackers ---------------------------------------------------------


def _attacked(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """20 clients around the all-ones direction, 6 (30%) of them attackers."""
    rng = np.random.default_rng(7)
    honest = 1.0 + 0.5 * rng.normal(size=(14, 50))  # (14, 50)
    flipped = kind == "sign_flip"
    attackers = -10.0 * honest[:6] if flipped else 100.0 * rng.normal(size=(6, 50))
    return np.vstack([honest, attackers]), honest.mean(axis=0)


@pytest.mark.parametrize("kind", ["sign_flip", "huge_gaussian"])
def test_robust_strategies_tolerate_thirty_percent_attackers(kind: str) -> None:
    updates, clean = _attacked(kind)
    counts = np.ones(20, dtype=int)
    scale = float(np.linalg.norm(clean))

    def error(strategy: Strategy) -> float:
        out = strategy.run_round(np.zeros(50), updates, counts, EMPTY)
        return float(np.linalg.norm(out.aggregate.delta - clean)) / scale

    assert error(FedAvg()) > 2.0
    assert error(Median()) < 0.5
    assert error(TrimmedMean(beta=0.3)) < 0.5
    assert error(MultiKrum(num_malicious=6)) < 0.5
    # Krum keeps one honest update, whose own noise is about 0.5 of the signal here.
    assert error(Krum(num_malicious=6)) < 1.0
    chosen = Krum(num_malicious=6).run_round(np.zeros(50), updates, counts, EMPTY)
    assert not chosen.aggregate.accepted[14:].any()


def test_krum_rejects_every_huge_gaussian_attacker() -> None:
    updates, _ = _attacked("huge_gaussian")
    out = MultiKrum(num_malicious=6).run_round(np.zeros(50), updates, np.ones(20, int), EMPTY)
    assert out.aggregate.accepted.tolist() == [True] * 14 + [False] * 6


def test_median_flags_huge_gaussian_attackers_as_outliers() -> None:
    updates, _ = _attacked("huge_gaussian")
    out = Median().run_round(np.zeros(50), updates, np.ones(20, int), EMPTY)
    assert out.aggregate.accepted.tolist() == [True] * 14 + [False] * 6


# --- exports ------------------------------------------------------------------------------

MODULES = [
    "quackmesh.fl.params",
    "quackmesh.fl.dp",
    "quackmesh.fl.contribution",
    "quackmesh.fl.strategies",
    "quackmesh.fl.strategies.base",
    "quackmesh.fl.strategies.fedavg",
    "quackmesh.fl.strategies.fedprox",
    "quackmesh.fl.strategies.fedopt",
    "quackmesh.fl.strategies.fedadam",
    "quackmesh.fl.strategies.fedyogi",
    "quackmesh.fl.strategies.krum",
    "quackmesh.fl.strategies.median",
    "quackmesh.fl.strategies.trimmed_mean",
]


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then everything else.
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2), name


@pytest.mark.parametrize("module", MODULES)
def test_all_is_sorted_and_every_name_exists(module: str) -> None:
    mod = importlib.import_module(module)
    assert list(mod.__all__) == sorted(mod.__all__, key=_isort_key)
    assert len(set(mod.__all__)) == len(mod.__all__)
    assert all(hasattr(mod, name) for name in mod.__all__)
