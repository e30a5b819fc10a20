"""FL data: built-in sets, splits, partitioners, node-local files and what a node advertises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from quackmesh.core.errors import ValidationFailed
from quackmesh.fl.data import (
    Dataset,
    describe,
    load_builtin,
    load_local,
    partition_dirichlet,
    partition_iid,
    partition_shards,
    read_local,
    save_npz,
    subset,
    train_holdout_split,
    write_csv,
)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_builtin("digits")


def test_mnist_is_5000_real_digits_scaled_to_unit_range() -> None:
    ds = load_builtin("mnist")
    assert ds.X.shape == (5000, 784) and ds.X.dtype == np.float32
    assert ds.y.shape == (5000,) and ds.y.dtype == np.int64
    assert set(np.unique(ds.y).tolist()) == set(range(10))
    assert ds.X.min() >= 0.0 and ds.X.max() == 1.0
    assert ds.n_classes == 10 and len(ds.feature_names) == 784


def test_digits_and_read_only_arrays(digits: Dataset) -> None:
    assert digits.X.shape == (1797, 64) and digits.X.max() == 1.0
    assert digits.n_classes == 10
    with pytest.raises(ValueError):
        digits.X[0, 0] = 5.0
    with pytest.raises(ValueError, match="unknown"):
        load_builtin("cifar")  # type: ignore[arg-type]


def test_dataset_refuses_inconsistent_arrays() -> None:
    X = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError):
        Dataset(X=X, y=np.array([0, 1, 5]), n_classes=3, feature_names=("a", "b"))
    with pytest.raises(ValueError):
        Dataset(
            X=X.astype(np.float64), y=np.zeros(3, np.int64), n_classes=2, feature_names=("a", "b")
        )  # type: ignore[arg-type]
    mine = np.zeros(3, dtype=np.int64)
    Dataset(X=X, y=mine, n_classes=2, feature_names=("a", "b"))
    mine[0] = 1  # the caller's array stays writable


def test_train_holdout_split_is_stratified_and_disjoint(digits: Dataset) -> None:
    train, hold = train_holdout_split(digits, holdout=300, seed=0)
    assert (train.rows, hold.rows) == (1497, 300)
    counts = np.bincount(hold.y, minlength=10)
    assert counts.min() >= 28 and counts.max() <= 32
    again, _ = train_holdout_split(digits, holdout=300, seed=0)
    np.testing.assert_array_equal(train.X, again.X)
    with pytest.raises(ValueError):
        train_holdout_split(digits, holdout=0, seed=0)


def _check_partition(parts: list[npt.NDArray[np.int64]], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))  # disjoint and covering
    assert all(p.dtype == np.int64 for p in parts)


def _label_skew(parts: list[npt.NDArray[np.int64]], y: npt.NDArray[np.int64]) -> float:
    """Mean over clients of the share of the client's most common label."""
    return float(np.mean([np.bincount(y[p]).max() / len(p) for p in parts]))


def test_partitioners_are_disjoint_and_cover(digits: Dataset) -> None:
    y = digits.y
    iid = partition_iid(len(y), 7, seed=1)
    _check_partition(iid, len(y))
    assert max(len(p) for p in iid) - min(len(p) for p in iid) <= 1
    _check_partition(partition_dirichlet(y, 7, alpha=0.5, seed=1), len(y))
    shards = partition_shards(y, 10, shards_per_client=2, seed=1)
    _check_partition(shards, len(y))
    # Sorted shards: most clients see at most ~two labels (a shard may straddle a boundary).
    assert np.median([len(np.unique(y[p])) for p in shards]) <= 3


def test_small_dirichlet_alpha_skews_labels_more_than_iid(digits: Dataset) -> None:
    y = digits.y
    iid = _label_skew(partition_iid(len(y), 10, seed=0), y)
    skewed_parts = partition_dirichlet(y, 10, alpha=0.1, seed=0, min_size=10)
    assert min(len(p) for p in skewed_parts) >= 10
    skewed = _label_skew(skewed_parts, y)
    mild = _label_skew(partition_dirichlet(y, 10, alpha=100.0, seed=0), y)
    assert iid < 0.2 and mild < 0.2
    assert skewed > 0.4


def test_partitioners_refuse_impossible_requests(digits: Dataset) -> None:
    y = digits.y
    with pytest.raises(ValueError):
        partition_dirichlet(y, 10, alpha=0.1, seed=0, min_size=1000)
    with pytest.raises(ValueError, match="attempts"):
        partition_dirichlet(y[:100], 9, alpha=0.01, seed=0, min_size=11)
    with pytest.raises(ValueError):
        partition_dirichlet(y, 3, alpha=0.0, seed=0)
    with pytest.raises(ValueError):
        partition_iid(5, 6, seed=0)
    with pytest.raises(ValueError):
        partition_shards(y[:10], 6, shards_per_client=2, seed=0)


@pytest.mark.parametrize("writer", ["csv", "npz", "parquet"])
def test_local_files_round_trip(digits: Dataset, tmp_path: Path, writer: str) -> None:
    part = subset(digits, np.arange(50))
    path = tmp_path / "node-data"
    if writer == "csv":
        write_csv(part, path)
    elif writer == "npz":
        save_npz(part, path)
    else:
        frame = pd.DataFrame(part.X, columns=list(part.feature_names))
        frame["label"] = part.y
        frame.to_parquet(path, index=False)
    back, fmt = read_local(path, label="label")
    assert fmt == writer
    np.testing.assert_array_equal(back.X, part.X)
    np.testing.assert_array_equal(back.y, part.y)
    assert back.feature_names == part.feature_names
    assert back.n_classes == int(part.y.max()) + 1


def test_load_local_rejects_bad_labels(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    pd.DataFrame({"a": [1.0, 2.0], "target": [0.5, 1.0]}).to_csv(path, index=False)
    with pytest.raises(ValidationFailed) as info:
        load_local(path, label="target")
    assert info.value.context == {"field": "inputs.data", "column": "target"}
    pd.DataFrame({"a": [1.0, 2.0], "target": [-1, 1]}).to_csv(path, index=False)
    with pytest.raises(ValidationFailed, match="target"):
        load_local(path, label="target")
    with pytest.raises(ValidationFailed) as missing:
        load_local(path, label="label")
    assert missing.value.context["field"] == "params.label"
    pd.DataFrame({"label": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(ValidationFailed, match="feature"):
        load_local(path, label="label")


def test_describe_advertises_counts_never_rows(digits: Dataset) -> None:
    info = describe(digits, coarsen=None)
    text = json.dumps(info)
    assert info["rows"] == 1797 and info["n_features"] == 64
    assert len(info["feature_names"]) == 20 and info["n_feature_names_omitted"] == 44
    assert sum(info["label_counts"].values()) == 1797
    # No row is in there: no pixel value pattern of any example appears.
    assert "0.0625" not in text and "0.9375" not in text
    assert set(info) == {
        "n_features",
        "feature_names",
        "n_feature_names_omitted",
        "dtype",
        "n_classes",
        "rows",
        "label_counts",
        "coarsened_to",
    }
    rows = np.concatenate([np.flatnonzero(digits.y == 0)[:37], np.flatnonzero(digits.y == 1)[:1]])
    small = subset(digits, rows)
    coarse = describe(small, coarsen=10)
    assert coarse["rows"] == 40
    assert coarse["label_counts"] == {"0": 40}  # label 1 (one row) rounds to 0 and is hidden
    assert all(v % 10 == 0 for v in coarse["label_counts"].values())
    with pytest.raises(ValueError):
        describe(digits, coarsen=0)
