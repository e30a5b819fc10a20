"""Fixtures for workload tests: real scikit-learn data sets written as CSV, NPZ or Parquet."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_iris, load_wine

WriteData = Callable[..., Path]


def write_frame(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    """Write ``frame`` as ``fmt``; the file name has no extension (format is sniffed)."""
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "npz":
        with open(path, "wb") as fh:  # a handle, so numpy does not append ".npz"
            np.savez(
                fh,
                X=frame.to_numpy(dtype=np.float64),
                columns=np.array([str(c) for c in frame.columns]),
            )
    else:
        raise ValueError(fmt)
    return path


@pytest.fixture
def write_data(tmp_path: Path) -> WriteData:
    """``write_data(frame, fmt="csv", name="data")`` -> path of a fresh file in tmp_path."""
    counter = iter(range(1_000_000))

    def write(frame: pd.DataFrame, fmt: str = "csv", name: str = "data") -> Path:
        return write_frame(frame, tmp_path / f"{name}-{next(counter)}", fmt)

    return write


@pytest.fixture(scope="session")
def iris() -> pd.DataFrame:
    frame: pd.DataFrame = load_iris(as_frame=True).frame
    return frame


@pytest.fixture(scope="session")
def diabetes() -> pd.DataFrame:
    frame: pd.DataFrame = load_diabetes(as_frame=True).frame
    return frame


@pytest.fixture(scope="session")
def wine() -> pd.DataFrame:
    frame: pd.DataFrame = load_wine(as_frame=True).frame
    return frame
