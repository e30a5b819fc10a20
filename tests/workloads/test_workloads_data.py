"""Loading CSV / NPZ / Parquet input: sniffing, round trips and every refusal."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads.data import DEFAULT_MAX_CELLS, load_table, select_features

WriteData = Callable[..., Path]


@pytest.mark.parametrize("fmt", ["csv", "npz", "parquet"])
def test_load_table_round_trips_iris_in_each_format(
    fmt: str, iris: pd.DataFrame, write_data: WriteData
) -> None:
    table = load_table(write_data(iris, fmt))
    assert table.format == fmt
    assert table.columns == tuple(iris.columns)
    assert table.values.dtype == np.float64
    assert table.values.shape == iris.shape
    np.testing.assert_allclose(table.values, iris.to_numpy(dtype=np.float64), rtol=1e-15)
    assert table.rows == 150


def test_table_values_are_read_only(iris: pd.DataFrame, write_data: WriteData) -> None:
    table = load_table(write_data(iris))
    with pytest.raises(ValueError):
        table.values[0, 0] = 1.0


def test_npz_without_columns_names_x0_to_xn_and_y_becomes_a_column(tmp_path: Path) -> None:
    path = tmp_path / "data"
    x = np.arange(6, dtype=np.int32).reshape(3, 2)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, X=x, y=np.array([1.5, 2.5, 3.5]))
    table = load_table(path)
    assert table.format == "npz"
    assert table.columns == ("x0", "x1", "y")
    np.testing.assert_array_equal(table.values, [[0, 1, 1.5], [2, 3, 2.5], [4, 5, 3.5]])


def test_csv_bool_columns_become_zero_and_one(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_text("a,flag\n1,True\n2,False\n")
    table = load_table(path)
    np.testing.assert_array_equal(table.values, [[1, 1], [2, 0]])


def _expect(path: Path, match: str, *, max_cells: int = DEFAULT_MAX_CELLS) -> ValidationFailed:
    with pytest.raises(ValidationFailed, match=match) as info:
        load_table(path, max_cells=max_cells)
    assert info.value.context["field"] == "inputs.data"
    return info.value


def test_refuses_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"")
    _expect(path, "data file is empty")


def test_refuses_file_that_does_not_parse_as_csv(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"\xff\xfe\x00garbage\x80\x81\n\x00\x01")
    _expect(path, "data file does not parse as CSV")


@pytest.mark.parametrize("text", ["a,b\n1,2,3\n4,5,6\n", "a,b\n1,2\n4,5,6\n", "a\n1,2,3\n"])
def test_refuses_csv_rows_with_more_fields_than_the_header(tmp_path: Path, text: str) -> None:
    path = tmp_path / "data"
    path.write_text(text)
    _expect(path, "data file does not parse as CSV")


def test_refuses_csv_with_header_but_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_text("a,b\n")
    _expect(path, "data has no rows")


def test_refuses_non_numeric_column_and_names_it(iris: pd.DataFrame, write_data: WriteData) -> None:
    frame = iris.assign(species=["setosa"] * len(iris))
    err = _expect(write_data(frame), "column 'species' is not numeric")
    assert err.context["column"] == "species"
    assert "setosa" in err.detail


def test_refuses_non_numeric_parquet_column(iris: pd.DataFrame, write_data: WriteData) -> None:
    frame = iris.assign(species=["setosa"] * len(iris))
    _expect(write_data(frame, "parquet"), "column 'species' is not numeric")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_refuses_missing_value_and_names_the_column(
    fmt: str, iris: pd.DataFrame, write_data: WriteData
) -> None:
    frame = iris.copy()
    frame.loc[7, "petal width (cm)"] = np.nan
    err = _expect(write_data(frame, fmt), "petal width")
    assert err.context["column"] == "petal width (cm)"


def test_refuses_infinite_value_in_npz(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with open(path, "wb") as fh:
        np.savez(fh, X=np.array([[1.0, np.inf], [2.0, 3.0]]))
    err = _expect(path, "column 'x1' contains NaN, infinite")
    assert err.context["column"] == "x1"


class _Tripwire:
    """Unpickling this touches a file: proof that an object array was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


def test_npz_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    sentinel = tmp_path / "unpickled"
    payload = np.empty((1, 1), dtype=object)
    payload[0, 0] = _Tripwire(sentinel)
    path = tmp_path / "data"
    with open(path, "wb") as fh:
        np.savez(fh, X=payload)
    _expect(path, "object dtype")
    assert not sentinel.exists()


def test_npz_object_y_is_refused_without_unpickling(tmp_path: Path) -> None:
    sentinel = tmp_path / "unpickled"
    y = np.empty(2, dtype=object)
    y[:] = [_Tripwire(sentinel), 1]
    path = tmp_path / "data"
    with open(path, "wb") as fh:
        np.savez(fh, X=np.ones((2, 2)), y=y)
    _expect(path, "array 'y' has an object dtype")
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"y": np.ones(3)}, "npz has no array 'X'"),
        ({"X": np.ones(3)}, "'X' must be 2-D numeric"),
        ({"X": np.array([["a", "b"]])}, "'X' must be 2-D numeric"),
        ({"X": np.ones((3, 2)), "y": np.ones(2)}, "'y' must be 1-D numeric"),
        ({"X": np.ones((3, 2)), "columns": np.array(["a"])}, "'columns' must be 1-D str"),
        ({"X": np.ones((3, 2)), "columns": np.array([1, 2])}, "'columns' must be 1-D str"),
        ({"X": np.ones((3, 2)), "weights": np.ones(3)}, "unexpected member 'weights.npy'"),
        ({"X": np.ones((3, 2)), "columns": np.array(["a", "a"])}, "column 'a' appears twice"),
        ({"X": np.ones((0, 2))}, "data has no rows"),
        ({"X": np.ones((2, 0))}, "data has no columns"),
    ],
)
def test_refuses_malformed_npz(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    path = tmp_path / "data"
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    _expect(path, match)


def test_refuses_zip_that_is_not_npz(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    _expect(path, "unexpected member 'readme.txt'")


def test_refuses_npz_with_a_member_twice(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with open(path, "wb") as fh:
        np.savez(fh, X=np.ones((2, 2)))
    with zipfile.ZipFile(path, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("X.npy", b"")
    _expect(path, "npz has a member twice")


def test_refuses_truncated_zip(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with open(path, "wb") as fh:
        np.savez(fh, X=np.ones((10, 10)))
    path.write_bytes(path.read_bytes()[:60])
    _expect(path, "data file does not parse as NPZ")


def test_refuses_truncated_parquet(iris: pd.DataFrame, write_data: WriteData) -> None:
    path = write_data(iris, "parquet")
    path.write_bytes(path.read_bytes()[:100])
    _expect(path, "data file does not parse as Parquet")


@pytest.mark.parametrize("fmt", ["csv", "npz", "parquet"])
def test_refuses_more_cells_than_the_cap(
    fmt: str, iris: pd.DataFrame, write_data: WriteData
) -> None:
    path = write_data(iris, fmt)
    err = _expect(path, "more than the limit of 500", max_cells=500)
    assert err.context["max_cells"] == 500
    assert load_table(path, max_cells=iris.size).rows == 150


def test_npz_cap_is_checked_before_decompressing(tmp_path: Path) -> None:
    # 10^8 zeros compress to ~100 KB; the header alone must be enough to refuse them.
    path = tmp_path / "data"
    with open(path, "wb") as fh:
        np.savez_compressed(fh, X=np.zeros((10_000, 10_000), dtype=np.uint8))
    _expect(path, "100000000 cells")


def test_select_features_defaults_to_all_but_excluded(
    iris: pd.DataFrame, write_data: WriteData
) -> None:
    table = load_table(write_data(iris))
    x, names = select_features(table, None, exclude="target")
    assert names == tuple(iris.columns[:4])
    np.testing.assert_array_equal(x, iris.iloc[:, :4].to_numpy(dtype=np.float64))
    x[0, 0] = -1.0  # a fresh, writable copy
    assert table.values[0, 0] != -1.0


def test_select_features_keeps_requested_order(iris: pd.DataFrame, write_data: WriteData) -> None:
    table = load_table(write_data(iris))
    x, names = select_features(table, ["petal width (cm)", "sepal length (cm)"])
    assert names == ("petal width (cm)", "sepal length (cm)")
    np.testing.assert_array_equal(x[:, 0], iris["petal width (cm)"].to_numpy())


@pytest.mark.parametrize(
    ("features", "exclude", "match", "field"),
    [
        (["nope"], None, "feature column 'nope' not found", "params.features[0]"),
        (["target"], "target", "is the target", "params.features[0]"),
        (["target", "target"], None, "listed twice", "params.features"),
    ],
)
def test_select_features_refusals(
    iris: pd.DataFrame,
    write_data: WriteData,
    features: list[str],
    exclude: str | None,
    match: str,
    field: str,
) -> None:
    table = load_table(write_data(iris))
    with pytest.raises(ValidationFailed, match=match) as info:
        select_features(table, features, exclude=exclude)
    assert info.value.context["field"] == field


def test_select_features_refuses_when_only_the_target_is_left(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_text("y\n1\n2\n")
    with pytest.raises(ValidationFailed, match="no feature columns") as info:
        select_features(load_table(path), None, exclude="y")
    assert info.value.context["field"] == "params.features"
