"""Flattening named weights to one vector and back."""

from __future__ import annotations

import numpy as np
import pytest

from quackmesh.fl.params import flatten, shapes_of, unflatten


def _weights() -> dict[str, np.ndarray]:
    return {
        "conv.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "conv.bias": np.array([7.5, -1.0], dtype=np.float32),
        "scale": np.array(3.0, dtype=np.float32),
    }


def test_flatten_concatenates_in_mapping_order_as_float64() -> None:
    vector = flatten(_weights())
    assert vector.dtype == np.float64
    assert vector.tolist() == [0, 1, 2, 3, 4, 5, 7.5, -1.0, 3.0]


def test_shapes_of_lists_each_shape_in_order() -> None:
    assert shapes_of(_weights()) == {"conv.weight": (2, 3), "conv.bias": (2,), "scale": ()}


def test_unflatten_round_trips_to_float32_arrays() -> None:
    weights = _weights()
    restored = unflatten(flatten(weights), shapes_of(weights))
    assert list(restored) == list(weights)
    for name, array in weights.items():
        assert restored[name].dtype == np.float32
        assert restored[name].shape == array.shape
        np.testing.assert_array_equal(restored[name], array)


def test_unflatten_does_not_alias_the_vector() -> None:
    vector = np.arange(4, dtype=np.float32)
    restored = unflatten(vector, {"w": (2, 2)})
    restored["w"][0, 0] = 99.0
    assert vector[0] == 0.0


def test_flatten_does_not_alias_the_weights() -> None:
    weights = {"w": np.zeros(3)}
    vector = flatten(weights)
    vector[0] = 5.0
    assert weights["w"][0] == 0.0


def test_flatten_of_nothing_is_empty() -> None:
    assert flatten({}).shape == (0,)
    assert unflatten(np.zeros(0), {}) == {}


@pytest.mark.parametrize("length", [8, 10])
def test_unflatten_rejects_a_length_mismatch(length: int) -> None:
    with pytest.raises(ValueError, match="shapes need 9"):
        unflatten(np.zeros(length), shapes_of(_weights()))


def test_unflatten_rejects_a_matrix() -> None:
    with pytest.raises(ValueError, match="1-D"):
        unflatten(np.zeros((3, 3)), {"w": (9,)})
