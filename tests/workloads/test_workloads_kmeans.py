"""``ml.kmeans``: a hand-computed clustering, scikit-learn parity, refusals, agree()."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans as SkKMeans

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads import InputSummary, get_workload

WriteData = Callable[..., Path]
WL = get_workload("ml.kmeans")


def run(params: dict[str, Any], path: Path) -> dict[str, Any]:
    return WL.execute(params, {"data": path})


def test_two_obvious_clusters_hand_computed(write_data: WriteData) -> None:
    # {0, 1} and {10, 11}: centres 0.5 and 10.5, inertia = 4 * 0.5^2 = 1.
    path = write_data(pd.DataFrame({"x": [0.0, 1.0, 10.0, 11.0]}))
    result = run({"n_clusters": 2, "seed": 3}, path)
    centers = sorted(c[0] for c in result["centers"])
    assert centers == pytest.approx([0.5, 10.5])
    assert result["inertia"] == pytest.approx(1.0)
    labels = result["labels"]
    assert labels[0] == labels[1] != labels[2] == labels[3]
    assert result["feature_names"] == ["x"]
    assert isinstance(result["n_iter"], int) and result["n_iter"] >= 1


@pytest.mark.parametrize("fmt", ["csv", "npz", "parquet"])
def test_iris_matches_scikit_learn(fmt: str, iris: pd.DataFrame, write_data: WriteData) -> None:
    features = list(iris.columns[:4])
    result = run({"n_clusters": 3, "seed": 7, "features": features}, write_data(iris, fmt))
    reference = SkKMeans(n_clusters=3, n_init=10, tol=0.0, random_state=7).fit(
        iris[features].to_numpy()
    )
    np.testing.assert_allclose(result["centers"], reference.cluster_centers_, rtol=1e-9)
    assert result["labels"] == reference.labels_.tolist()
    assert result["inertia"] == pytest.approx(reference.inertia_, rel=1e-9)
    assert result["feature_names"] == features
    # Iris with k=3 has a well-known optimum near inertia 78.85.
    assert result["inertia"] == pytest.approx(78.85, abs=0.01)


def test_same_seed_is_deterministic(wine: pd.DataFrame, write_data: WriteData) -> None:
    path = write_data(wine.drop(columns="target"))
    params = {"n_clusters": 5, "seed": 11, "n_init": 3}
    assert run(params, path) == run(params, path)


def test_check_inputs_and_cost(wine: pd.DataFrame, write_data: WriteData) -> None:
    spec = WL.parse_spec({"n_clusters": 17, "n_init": 4, "max_iter": 301})
    summary = WL.check_inputs(spec, {"data": write_data(wine, "npz")})
    assert (summary.rows, summary.columns, summary.format) == (178, 14, "npz")
    # ceil(178*14/1e5)=1, * n_init 4 * ceil(17/8)=3 * ceil(301/300)=2
    assert WL.cost(spec, summary) == 24
    big = InputSummary(rows=1_000_000, columns=10, feature_names=(), format="csv")
    assert WL.cost(WL.parse_spec({"n_clusters": 8}), big) == 100 * 10


def test_refuses_more_clusters_than_rows(write_data: WriteData) -> None:
    path = write_data(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))
    with pytest.raises(ValidationFailed, match=r"n_clusters \(4\) is more than the rows") as info:
        run({"n_clusters": 4}, path)
    assert info.value.context["field"] == "params.n_clusters"
    assert info.value.context["rows"] == 3


def test_refuses_more_clusters_than_distinct_points(write_data: WriteData) -> None:
    path = write_data(pd.DataFrame({"x": [1.0, 1.0, 2.0, 2.0], "z": [0.0, -0.0, 5, 5]}))
    with pytest.raises(ValidationFailed, match="distinct points") as info:
        run({"n_clusters": 3}, path)
    assert info.value.context["distinct_rows"] == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n_clusters": 0}, "params.n_clusters"),
        ({"n_clusters": 1025}, "params.n_clusters"),
        ({"n_clusters": "3"}, "params.n_clusters"),
        ({"n_clusters": 3, "n_init": 0}, "params.n_init"),
        ({"n_clusters": 3, "max_iter": 10_001}, "params.max_iter"),
        ({"n_clusters": 3, "seed": -1}, "params.seed"),
        ({"n_clusters": 3, "features": "x"}, "params.features"),
        ({"n_clusters": 3, "features": ["x", 1]}, "params.features[1]"),
        ({"n_clusters": 3, "tol": 0.1}, "params.tol"),
        ({}, "params.n_clusters"),
    ],
)
def test_bad_params_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        WL.parse_spec(params)
    assert info.value.context["field"] == field
    assert info.value.detail.startswith(f"{field}: ")


# --- agree() -----------------------------------------------------------------------------


@pytest.fixture
def result(iris: pd.DataFrame, write_data: WriteData) -> dict[str, Any]:
    return run({"n_clusters": 3, "features": list(iris.columns[:4])}, write_data(iris))


def permuted(result: dict[str, Any], perm: list[int]) -> dict[str, Any]:
    """The same clustering with cluster ``i`` renamed ``perm[i]``."""
    out = copy.deepcopy(result)
    centers = [None] * len(perm)
    for i, j in enumerate(perm):
        centers[j] = result["centers"][i]
    out["centers"] = centers
    out["labels"] = [perm[label] for label in result["labels"]]
    return out


def test_same_run_agrees(result: dict[str, Any]) -> None:
    assert WL.agree(result, copy.deepcopy(result))


def test_permuted_clusters_agree(result: dict[str, Any]) -> None:
    other = permuted(result, [2, 0, 1])
    assert other["centers"] != result["centers"]
    assert WL.agree(result, other)
    assert WL.agree(other, result)


def test_rounding_noise_and_different_n_iter_agree(result: dict[str, Any]) -> None:
    other = permuted(result, [1, 2, 0])
    other["centers"] = [[v * (1 + 1e-12) for v in row] for row in other["centers"]]
    other["inertia"] *= 1 + 1e-10
    other["n_iter"] += 1
    assert WL.agree(result, other)


def test_labels_inconsistent_with_the_permutation_disagree(result: dict[str, Any]) -> None:
    other = permuted(result, [2, 0, 1])
    other["labels"][0] = (other["labels"][0] + 1) % 3
    assert not WL.agree(result, other)


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("inertia", lambda v: v * 1.001),
        ("centers", lambda v: [[v[0][0] + 0.01, *v[0][1:]], *v[1:]]),
        ("centers", lambda v: v[:2]),
        ("centers", lambda v: [row[:3] for row in v]),
        ("centers", lambda v: [v[0], v[0], v[2]]),
        ("labels", lambda v: v[:-1]),
        ("labels", lambda v: [3, *v[1:]]),
        ("labels", lambda v: [float(x) for x in v]),
        ("feature_names", lambda v: v[::-1]),
        ("inertia", lambda v: "78.85"),
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
    assert not WL.agree(result, {k: v for k, v in result.items() if k != "labels"})
    assert not WL.agree({}, {})
