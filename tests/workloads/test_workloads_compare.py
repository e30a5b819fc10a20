"""The tolerant comparison helpers, and agree() on arbitrary untrusted JSON (never raises)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quackmesh.workloads import get_workload
from quackmesh.workloads.compare import array_of, close, match_rows, scalar_of

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
result_keys = st.sampled_from(
    [
        "coefficients", "intercept", "r2", "mse", "n_samples", "feature_names", "target",
        "centers", "labels", "inertia", "components", "explained_variance",
        "explained_variance_ratio", "singular_values", "mean", "whiten",
    ]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    a=st.dictionaries(result_keys, json_values, max_size=16),
    b=st.dictionaries(result_keys, json_values, max_size=16),
    kind=st.sampled_from(["ml.kmeans", "ml.linear_regression", "ml.pca"]),
)
def test_agree_never_raises_on_arbitrary_json(
    a: dict[str, Any], b: dict[str, Any], kind: str
) -> None:
    workload = get_workload(kind)
    assert workload.agree(a, b) in (True, False)
    assert workload.agree(a, b) == workload.agree(b, a)


def test_close_scales_the_absolute_term_with_the_quantity() -> None:
    # 1e-4 next to 1e6: the small entry may carry rounding noise of the large ones.
    assert close(np.array([1e6, 1e-4]), np.array([1e6, 1.5e-4]))
    assert not close(np.array([1.0, 1e-4]), np.array([1.0, 1.5e-4]))
    assert close(0.0, 1e-10)
    assert not close(np.ones(2), np.ones(3))


def test_array_of_refuses_malformed_values() -> None:
    assert array_of([[1, 2], [3, 4]], 2) is not None
    for bad in ([[1, 2], [3]], [1, "2"], [True, False], [None], "12", [1.0, float("nan")], [[1]]):
        assert array_of(bad, 1) is None
    assert scalar_of(True) is None
    assert scalar_of(10**400) is None
    assert scalar_of(3) == 3.0


def test_match_rows_finds_the_permutation_with_duplicate_rows() -> None:
    a = np.array([[0.0, 1.0], [5.0, 5.0], [0.0, 1.0]])
    b = np.array([[5.0, 5.0], [0.0, 1.0], [0.0, 1.0 + 1e-12]])
    perm = match_rows(a, b)
    assert perm is not None
    assert sorted(perm) == [0, 1, 2]
    np.testing.assert_allclose(b[perm], a)
    assert match_rows(a, np.array([[5.0, 5.0], [5.0, 5.0], [0.0, 1.0]])) is None


@pytest.mark.parametrize("shape", [(2, 2), (3, 1)])
def test_match_rows_refuses_other_shapes(shape: tuple[int, int]) -> None:
    assert match_rows(np.zeros((3, 2)), np.zeros(shape)) is None
