"""``ml.linear_regression``: hand-computed fits, scikit-learn parity, refusals, agree()."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression as SkLinearRegression

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads import get_workload

WriteData = Callable[..., Path]
WL = get_workload("ml.linear_regression")


def run(params: dict[str, Any], path: Path) -> dict[str, Any]:
    return WL.execute(params, {"data": path})


def test_exact_line_gives_slope_two_intercept_one(write_data: WriteData) -> None:
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0], "y": [1.0, 3.0, 5.0, 7.0, 9.0]})
    result = run({"target": "y"}, write_data(frame))
    assert result["coefficients"] == pytest.approx([2.0], abs=1e-12)
    assert result["intercept"] == pytest.approx(1.0, abs=1e-12)
    assert result["r2"] == pytest.approx(1.0, abs=1e-12)
    assert result["mse"] == pytest.approx(0.0, abs=1e-20)
    assert result["n_samples"] == 5
    assert result["feature_names"] == ["x"]
    assert result["target"] == "y"


def test_hand_computed_fit_with_noise(write_data: WriteData) -> None:
    # x = 0, 1, 2; y = 0, 2, 1. Slope = cov/var = 0.5, intercept = 1 - 0.5 = 0.5,
    # residuals (-0.5, 1, -0.5): mse = 1.5 / 3 = 0.5, r2 = 1 - 1.5 / 2 = 0.25.
    frame = pd.DataFrame({"x": [0, 1, 2], "y": [0, 2, 1]})
    result = run({"target": "y"}, write_data(frame))
    assert result["coefficients"] == pytest.approx([0.5])
    assert result["intercept"] == pytest.approx(0.5)
    assert result["mse"] == pytest.approx(0.5)
    assert result["r2"] == pytest.approx(0.25)


def test_without_intercept_fits_through_origin(write_data: WriteData) -> None:
    # Through the origin: slope = sum(xy) / sum(x^2) = (2 + 2) / (1 + 4) = 0.8.
    frame = pd.DataFrame({"x": [0, 1, 2], "y": [0, 2, 1]})
    result = run({"target": "y", "fit_intercept": False}, write_data(frame))
    assert result["coefficients"] == pytest.approx([0.8])
    assert result["intercept"] == 0.0


@pytest.mark.parametrize("fmt", ["csv", "npz", "parquet"])
def test_diabetes_matches_scikit_learn(
    fmt: str, diabetes: pd.DataFrame, write_data: WriteData
) -> None:
    result = run({"target": "target"}, write_data(diabetes, fmt))
    x, y = diabetes.drop(columns="target").to_numpy(), diabetes["target"].to_numpy()
    reference = SkLinearRegression().fit(x, y)
    np.testing.assert_allclose(result["coefficients"], reference.coef_, rtol=1e-9)
    assert result["intercept"] == pytest.approx(reference.intercept_, rel=1e-9)
    assert result["r2"] == pytest.approx(reference.score(x, y), rel=1e-9)
    residual = y - reference.predict(x)
    assert result["mse"] == pytest.approx(float(np.mean(residual**2)), rel=1e-9)
    assert result["feature_names"] == list(diabetes.columns[:-1])
    assert result["n_samples"] == 442


def test_feature_subset_is_used_in_order(diabetes: pd.DataFrame, write_data: WriteData) -> None:
    result = run({"target": "target", "features": ["bmi", "age"]}, write_data(diabetes))
    reference = SkLinearRegression().fit(diabetes[["bmi", "age"]].to_numpy(), diabetes["target"])
    assert result["feature_names"] == ["bmi", "age"]
    np.testing.assert_allclose(result["coefficients"], reference.coef_, rtol=1e-9)


def test_check_inputs_summarises_and_cost_follows_formula(
    diabetes: pd.DataFrame, write_data: WriteData
) -> None:
    spec = WL.parse_spec({"target": "target"})
    summary = WL.check_inputs(spec, {"data": write_data(diabetes, "parquet")})
    assert (summary.rows, summary.columns, summary.format) == (442, 11, "parquet")
    assert summary.feature_names == tuple(diabetes.columns[:-1])
    assert WL.cost(spec, summary) == 1
    big = type(summary)(rows=1_000_000, columns=100, feature_names=(), format="csv")
    assert WL.cost(spec, big) == 1000 * 2


def test_refuses_missing_target_column(diabetes: pd.DataFrame, write_data: WriteData) -> None:
    spec = WL.parse_spec({"target": "price"})
    with pytest.raises(ValidationFailed, match="column 'price' not found in data") as info:
        WL.check_inputs(spec, {"data": write_data(diabetes)})
    assert info.value.context["field"] == "params.target"
    assert "bmi" in info.value.context["available"]


def test_refuses_a_single_row(write_data: WriteData) -> None:
    path = write_data(pd.DataFrame({"x": [1.0], "y": [2.0]}))
    with pytest.raises(ValidationFailed, match="at least 2 rows"):
        run({"target": "y"}, path)


def test_refuses_data_with_only_the_target(write_data: WriteData) -> None:
    path = write_data(pd.DataFrame({"y": [1.0, 2.0]}))
    with pytest.raises(ValidationFailed, match="no feature columns"):
        run({"target": "y"}, path)


def test_refuses_target_listed_as_feature(diabetes: pd.DataFrame, write_data: WriteData) -> None:
    with pytest.raises(ValidationFailed, match="cannot also be a feature") as info:
        run({"target": "target", "features": ["bmi", "target"]}, write_data(diabetes))
    assert info.value.context["field"] == "params.features[1]"


def test_refuses_empty_feature_list() -> None:
    with pytest.raises(ValidationFailed) as info:
        WL.parse_spec({"target": "y", "features": []})
    assert info.value.context["field"] == "params.features"


def test_data_that_would_overflow_is_refused(write_data: WriteData) -> None:
    frame = pd.DataFrame({"x": [1.0, -1.0, 3.0], "y": [1e300, 2e300, -1e300]})
    with pytest.raises(ValidationFailed, match="column 'y' has values beyond") as info:
        run({"target": "y"}, write_data(frame))
    assert info.value.context["column"] == "y"


# --- agree() -----------------------------------------------------------------------------


@pytest.fixture
def result(diabetes: pd.DataFrame, write_data: WriteData) -> dict[str, Any]:
    return run({"target": "target"}, write_data(diabetes))


def test_same_run_agrees_and_reruns_agree(
    result: dict[str, Any], diabetes: pd.DataFrame, write_data: WriteData
) -> None:
    again = run({"target": "target"}, write_data(diabetes, "npz"))
    assert WL.agree(result, result)
    assert WL.agree(result, again)
    assert WL.agree(again, result)


def test_rounding_noise_agrees(result: dict[str, Any]) -> None:
    noisy = copy.deepcopy(result)
    noisy["coefficients"] = [c * (1 + 1e-12) for c in noisy["coefficients"]]
    noisy["r2"] += 1e-13
    assert WL.agree(result, noisy)


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("coefficients", lambda v: [v[0] * 1.001, *v[1:]]),
        ("coefficients", lambda v: v[:-1]),
        ("intercept", lambda v: v + 0.01),
        ("r2", lambda v: v - 0.001),
        ("mse", lambda v: v * 1.0001),
        ("n_samples", lambda v: v - 1),
        ("feature_names", lambda v: list(reversed(v))),
        ("target", lambda v: "other"),
        ("coefficients", lambda v: ["1.0"] * len(v)),
        ("intercept", lambda v: None),
        ("r2", lambda v: True),
    ],
)
def test_perturbed_or_malformed_results_disagree(
    result: dict[str, Any], key: str, change: Callable[[Any], Any]
) -> None:
    bad = copy.deepcopy(result)
    bad[key] = change(bad[key])
    assert not WL.agree(result, bad)
    assert not WL.agree(bad, result)


def test_missing_keys_or_garbage_disagree_without_raising(result: dict[str, Any]) -> None:
    partial = {k: v for k, v in result.items() if k != "mse"}
    assert not WL.agree(result, partial)
    assert not WL.agree(result, {})
    assert not WL.agree(result, "nonsense")  # type: ignore[arg-type]
    assert not WL.agree(result, {**result, "coefficients": [[1.0], [2.0, 3.0]]})
