"""Contribution scores and the integer reward split."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quackmesh.fl.contribution import agreement_scores, loo_scores, split_reward

# --- agreement ----------------------------------------------------------------------------


def test_agreement_is_the_clipped_cosine_with_the_aggregate() -> None:
    updates = np.array([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    accepted = np.array([True, True, True, True, False])
    # cos with (1, 1): 1/sqrt2, 1/sqrt2, -1/sqrt2 -> 0, zero update -> 0, rejected -> 0
    scores = agreement_scores(updates, np.array([1.0, 1.0]), accepted)
    np.testing.assert_allclose(scores, [1 / math.sqrt(2), 1 / math.sqrt(2), 0, 0, 0])


def test_agreement_is_zero_for_a_zero_aggregate() -> None:
    scores = agreement_scores(np.ones((2, 2)), np.zeros(2), np.array([True, True]))
    np.testing.assert_array_equal(scores, [0.0, 0.0])


def test_agreement_ignores_magnitude() -> None:
    updates = np.array([[1.0, 1.0], [100.0, 100.0]])
    scores = agreement_scores(updates, np.array([1.0, 1.0]), np.array([True, True]))
    np.testing.assert_allclose(scores, [1.0, 1.0])


@pytest.mark.parametrize(
    ("updates", "aggregate", "accepted", "message"),
    [
        (np.ones(2), np.ones(2), np.array([True]), "2-D"),
        (np.ones((2, 2)), np.ones(3), np.array([True, True]), "aggregate_delta"),
        (np.ones((2, 2)), np.ones(2), np.array([1, 1]), "bool"),
        (np.array([[1.0, math.nan]]), np.ones(2), np.array([True]), "NaN"),
    ],
)
def test_agreement_rejects_malformed_input(
    updates: np.ndarray, aggregate: np.ndarray, accepted: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        agreement_scores(updates, aggregate, accepted)


# --- leave-one-out ------------------------------------------------------------------------

TARGET = np.array([1.0, 0.0])
UPDATES = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])


def _squared_distance(params: np.ndarray) -> float:
    return float(np.sum((params - TARGET) ** 2))


def test_loo_is_the_loss_increase_without_each_accepted_client() -> None:
    calls: list[np.ndarray] = []

    def evaluate(params: np.ndarray) -> float:
        calls.append(params.copy())
        return _squared_distance(params)

    scores = loo_scores(
        evaluate=evaluate,
        params=np.zeros(2),
        updates=UPDATES,
        num_examples=np.array([3, 1, 2]),
        accepted=np.array([True, True, False]),
    )
    # all accepted: (3*(1,0) + 1*(0,1)) / 4 = (0.75, 0.25) -> loss 0.0625 + 0.0625 = 0.125
    # without 0: (0, 1) -> loss 2 -> gain 1.875; without 1: (1, 0) -> loss 0 -> gain 0
    np.testing.assert_allclose(scores, [1.875, 0.0, 0.0])
    assert len(calls) == 3


def test_loo_of_a_lone_client_compares_with_the_unchanged_model() -> None:
    scores = loo_scores(
        evaluate=_squared_distance,
        params=np.zeros(2),
        updates=UPDATES,
        num_examples=np.array([1, 1, 1]),
        accepted=np.array([True, False, False]),
    )
    # with client 0: (1, 0) -> loss 0; without: (0, 0) -> loss 1
    np.testing.assert_allclose(scores, [1.0, 0.0, 0.0])


def test_loo_with_nothing_accepted_never_evaluates() -> None:
    def evaluate(params: np.ndarray) -> float:
        raise AssertionError("evaluate must not be called")

    scores = loo_scores(
        evaluate=evaluate,
        params=np.zeros(2),
        updates=UPDATES,
        num_examples=np.array([1, 1, 1]),
        accepted=np.zeros(3, dtype=bool),
    )
    np.testing.assert_array_equal(scores, [0.0, 0.0, 0.0])


def test_loo_does_not_mutate_its_inputs() -> None:
    params, updates, counts = np.zeros(2), UPDATES.copy(), np.array([1, 2, 3])

    def evaluate(candidate: np.ndarray) -> float:
        candidate += 100.0  # a careless callback must not reach the caller's arrays
        return 0.0

    loo_scores(
        evaluate=evaluate,
        params=params,
        updates=updates,
        num_examples=counts,
        accepted=np.ones(3, dtype=bool),
    )
    np.testing.assert_array_equal(params, [0.0, 0.0])
    np.testing.assert_array_equal(updates, UPDATES)
    np.testing.assert_array_equal(counts, [1, 2, 3])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"evaluate": lambda p: math.nan}, "non-finite"),
        ({"params": np.zeros(3)}, "params"),
        ({"num_examples": np.array([1, 0, 1])}, "num_examples"),
        ({"num_examples": np.array([1.0, 1.0, 1.0])}, "num_examples"),
    ],
)
def test_loo_rejects_bad_input(overrides: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "evaluate": _squared_distance,
        "params": np.zeros(2),
        "updates": UPDATES,
        "num_examples": np.array([1, 1, 1]),
        "accepted": np.ones(3, dtype=bool),
    }
    with pytest.raises(ValueError, match=message):
        loo_scores(**(arguments | overrides))


# --- reward split -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "scores", "expected"),
    [
        # quotas 3.33 each: floors 3, 3, 3 and the one leftover unit goes to index 0
        (10, [1.0, 1.0, 1.0], [4, 3, 3]),
        (100, [0.5, 0.25, 0.25], [50, 25, 25]),
        # quotas 0, 4.67, 2.33: floors 0, 4, 2; remainder 0.67 wins the leftover unit
        (7, [0.0, 2.0, 1.0], [0, 5, 2]),
        (0, [1.0, 2.0], [0, 0]),
        (5, [0.0, 0.0], [0, 0]),
        (5, [], []),
    ],
)
def test_split_reward_by_hand(budget: int, scores: list[float], expected: list[int]) -> None:
    assert split_reward(budget, scores) == expected


def test_split_reward_accepts_numpy_scores() -> None:
    assert split_reward(3, np.array([0.0, 1.0])) == [0, 3]


@pytest.mark.parametrize(
    ("budget", "scores", "message"),
    [
        (-1, [1.0], "budget"),
        (1.5, [1.0], "budget"),
        (True, [1.0], "budget"),
        (10, [1.0, -0.1], "scores"),
        (10, [math.nan], "scores"),
        (10, [math.inf], "scores"),
        (10, [[1.0]], "1-D"),
    ],
)
def test_split_reward_rejects_bad_input(budget: Any, scores: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_reward(budget, scores)


BUDGETS = st.integers(min_value=0, max_value=10**15)
SCORES = st.lists(
    st.one_of(
        st.just(0.0),
        st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False),
    ),
    max_size=30,
)


@given(budget=BUDGETS, scores=SCORES)
def test_split_reward_sums_exactly_to_the_budget_when_any_score_is_positive(
    budget: int, scores: list[float]
) -> None:
    shares = split_reward(budget, scores)
    assert len(shares) == len(scores)
    assert all(share >= 0 for share in shares)
    assert sum(shares) == (budget if any(s > 0 for s in scores) else 0)


@given(budget=BUDGETS, scores=SCORES)
def test_split_reward_pays_nothing_for_a_zero_score(budget: int, scores: list[float]) -> None:
    shares = split_reward(budget, scores)
    assert all(share == 0 for share, score in zip(shares, scores, strict=True) if score == 0)


@given(budget=BUDGETS, scores=SCORES)
def test_split_reward_never_pays_a_higher_score_less(budget: int, scores: list[float]) -> None:
    shares = split_reward(budget, scores)
    for i, (share_i, score_i) in enumerate(zip(shares, scores, strict=True)):
        for share_j, score_j in zip(shares[i + 1 :], scores[i + 1 :], strict=True):
            if score_i > score_j:
                assert share_i >= share_j
            elif score_j > score_i:
                assert share_j >= share_i


@given(budget=BUDGETS, scores=SCORES)
def test_split_reward_stays_within_one_unit_of_the_exact_quota(
    budget: int, scores: list[float]
) -> None:
    total = sum((Fraction(s) for s in scores), Fraction(0))
    if total == 0:
        return
    for share, score in zip(split_reward(budget, scores), scores, strict=True):
        assert abs(share - budget * Fraction(score) / total) < 1
