"""``ml.pca``: a hand-computed decomposition, scikit-learn parity, refusals, agree()."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA as SkPCA

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads import InputSummary, get_workload

WriteData = Callable[..., Path]
WL = get_workload("ml.pca")


def run(params: dict[str, Any], path: Path) -> dict[str, Any]:
    return WL.execute(params, {"data": path})


def test_points_on_a_diagonal_hand_computed(write_data: WriteData) -> None:
    # Points on y = x: one direction (1, 1)/sqrt(2) carries all the variance.
    # Centred points are (-1,-1), (0,0), (1,1): singular value = sqrt(2 + 2) = 2,
    # explained variance = 4 / (3 - 1) = 2.
    path = write_data(pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}))
    result = run({"n_components": 2}, path)
    first = np.abs(result["components"][0])
    np.testing.assert_allclose(first, [1 / math.sqrt(2)] * 2, rtol=1e-12)
    assert result["explained_variance_ratio"] == pytest.approx([1.0, 0.0], abs=1e-12)
    assert result["singular_values"] == pytest.approx([2.0, 0.0], abs=1e-12)
    assert result["explained_variance"][0] == pytest.approx(2.0)
    assert result["mean"] == pytest.approx([2.0, 2.0])
    assert result["feature_names"] == ["a", "b"]
    assert result["whiten"] is False


@pytest.mark.parametrize("fmt", ["csv", "npz", "parquet"])
def test_wine_matches_scikit_learn(fmt: str, wine: pd.DataFrame, write_data: WriteData) -> None:
    data = wine.drop(columns="target")
    result = run({"n_components": 4, "whiten": True}, write_data(data, fmt))
    reference = SkPCA(n_components=4, whiten=True, svd_solver="full").fit(data.to_numpy())
    for key in ("explained_variance_ratio", "singular_values", "mean", "explained_variance"):
        np.testing.assert_allclose(result[key], getattr(reference, f"{key}_"), rtol=1e-9)
    got = np.asarray(result["components"])
    signs = np.sign(np.sum(got * reference.components_, axis=1))
    np.testing.assert_allclose(got * signs[:, None], reference.components_, atol=1e-9)
    assert result["whiten"] is True


def test_components_are_orthonormal_and_ratios_sum_below_one(
    wine: pd.DataFrame, write_data: WriteData
) -> None:
    result = run({"n_components": 13, "features": list(wine.columns[:13])}, write_data(wine))
    comps = np.asarray(result["components"])
    np.testing.assert_allclose(comps @ comps.T, np.eye(13), atol=1e-10)
    assert sum(result["explained_variance_ratio"]) == pytest.approx(1.0)


def test_check_inputs_and_cost(wine: pd.DataFrame, write_data: WriteData) -> None:
    spec = WL.parse_spec({"n_components": 2, "features": ["alcohol", "hue"]})
    summary = WL.check_inputs(spec, {"data": write_data(wine)})
    assert summary == InputSummary(
        rows=178, columns=2, feature_names=("alcohol", "hue"), format="csv"
    )
    assert WL.cost(spec, summary) == 1
    big = InputSummary(rows=100_000, columns=500, feature_names=(), format="npz")
    assert WL.cost(spec, big) == 500 * 8


def test_refuses_more_components_than_features(wine: pd.DataFrame, write_data: WriteData) -> None:
    with pytest.raises(ValidationFailed, match=r"n_components \(3\) is more than") as info:
        run({"n_components": 3, "features": ["alcohol", "hue"]}, write_data(wine))
    assert info.value.context["field"] == "params.n_components"
    assert info.value.context["max"] == 2


def test_refuses_more_components_than_rows(write_data: WriteData) -> None:
    path = write_data(pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, 5.0], "c": [3.0, 1.0]}))
    with pytest.raises(ValidationFailed, match=r"min\(rows, features\) \(2\)"):
        run({"n_components": 3}, path)


def test_refuses_constant_data(write_data: WriteData) -> None:
    path = write_data(pd.DataFrame({"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}))
    with pytest.raises(ValidationFailed, match="every row is the same"):
        run({"n_components": 1}, path)


def test_refuses_zero_components() -> None:
    with pytest.raises(ValidationFailed, match=r"params\.n_components: Input should be greater"):
        WL.parse_spec({"n_components": 0})


# --- agree() -----------------------------------------------------------------------------


@pytest.fixture
def result(wine: pd.DataFrame, write_data: WriteData) -> dict[str, Any]:
    return run({"n_components": 3}, write_data(wine.drop(columns="target")))


def test_same_run_agrees(result: dict[str, Any]) -> None:
    assert WL.agree(result, copy.deepcopy(result))


def test_flipped_component_signs_agree(result: dict[str, Any]) -> None:
    flipped = copy.deepcopy(result)
    flipped["components"][0] = [-v for v in flipped["components"][0]]
    flipped["components"][2] = [-v for v in flipped["components"][2]]
    assert WL.agree(result, flipped)
    assert WL.agree(flipped, result)


def test_rounding_noise_agrees(result: dict[str, Any]) -> None:
    noisy = copy.deepcopy(result)
    noisy["components"] = [[v * (1 + 1e-12) for v in row] for row in noisy["components"]]
    noisy["explained_variance_ratio"] = [v + 1e-14 for v in noisy["explained_variance_ratio"]]
    assert WL.agree(result, noisy)


def test_partially_flipped_component_disagrees(result: dict[str, Any]) -> None:
    bad = copy.deepcopy(result)
    bad["components"][1][0] = -bad["components"][1][0]
    assert not WL.agree(result, bad)


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("components", lambda v: [[x * 1.01 for x in v[0]], *v[1:]]),
        ("components", lambda v: v[:2]),
        ("components", lambda v: [v[1], v[0], v[2]]),
        ("explained_variance_ratio", lambda v: [v[0] * 1.001, *v[1:]]),
        ("explained_variance_ratio", lambda v: v[:2]),
        ("singular_values", lambda v: [x + 0.1 for x in v]),
        ("mean", lambda v: [v[0] + 0.01, *v[1:]]),
        ("mean", lambda v: "oops"),
        ("feature_names", lambda v: v[1:] + v[:1]),
        ("whiten", lambda v: not v),
        ("whiten", lambda v: 0),
    ],
)
def test_perturbed_or_malformed_results_disagree(
    result: dict[str, Any], key: str, change: Callable[[Any], Any]
) -> None:
    bad = copy.deepcopy(result)
    bad[key] = change(bad[key])
    assert not WL.agree(result, bad)
    assert not WL.agree(bad, result)


def test_missing_keys_disagree(result: dict[str, Any]) -> None:
    assert not WL.agree(result, {k: v for k, v in result.items() if k != "singular_values"})
