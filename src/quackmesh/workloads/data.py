"""Loading tabular input data (CSV, NPZ, Parquet) into one numeric table.

The format is sniffed from the bytes, never from a file name (inputs are content-addressed
blobs): Parquet files start with the magic ``PAR1`` (Apache Parquet format spec), NPZ
files are ZIP archives (local file header ``PK\\x03\\x04``, PKWARE APPNOTE 4.3.7) of ``.npy``
members (NEP 1), and anything else is read as UTF-8 CSV with a header row.

NPZ input (``X``, optional ``y`` and ``columns``) is read by :mod:`quackmesh.workloads.npz`,
which never unpickles.

Values must be finite and within ``±MAX_ABS``, so no algorithm here can overflow.
Every problem is a ``ValidationFailed`` naming the input (``field="inputs.data"``) and,
where it applies, the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads.npz import read_npz, too_many_cells

__all__ = ["DEFAULT_MAX_CELLS", "MAX_ABS", "DataFormat", "Table", "load_table", "select_features"]

DataFormat = Literal["csv", "npz", "parquet"]
DEFAULT_MAX_CELLS = 50_000_000
"""Cells (rows x columns) a table may hold: 400 MB of float64."""

MAX_ABS = 1e150
"""Largest magnitude accepted: a sum of squares over ``DEFAULT_MAX_CELLS`` such values
(5e7 x 1e300 = 5e307) stays below the float64 maximum (1.8e308), so the algorithms here
cannot overflow on valid input."""

_PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Table:
    """Numeric data: ``values`` is float64 ``(n_rows, n_cols)``, read-only, all finite."""

    columns: tuple[str, ...]
    values: npt.NDArray[np.float64]
    format: DataFormat

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])


def load_table(path: Path, *, max_cells: int = DEFAULT_MAX_CELLS, name: str = "data") -> Table:
    """Read ``path`` as Parquet, NPZ or CSV (sniffed) into a :class:`Table`.

    ``name`` is the input name used in error fields (``inputs.<name>``).
    """
    field = f"inputs.{name}"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ValidationFailed(f"cannot read data file: {exc}", field=field) from exc
    if not head:
        raise ValidationFailed("data file is empty", field=field)
    fmt: DataFormat
    if head == _PARQUET_MAGIC:
        fmt, (columns, values) = "parquet", _read_parquet(path, max_cells, field)
    elif head == _ZIP_MAGIC:
        fmt, (columns, values) = "npz", read_npz(path, max_cells=max_cells, field=field)
    else:
        fmt, (columns, values) = "csv", _read_csv(path, max_cells, field)
    return _finish(columns, values, fmt, field)


def select_features(
    table: Table, features: Sequence[str] | None, exclude: str | None = None
) -> tuple[npt.NDArray[np.float64], tuple[str, ...]]:
    """The feature matrix ``(n_rows, n_features)`` (a fresh copy) and its column names.

    ``features=None`` means every column except ``exclude`` (the target, if any).
    """
    available = list(table.columns)
    if features is None:
        names = tuple(c for c in table.columns if c != exclude)
    else:
        names = tuple(features)
        for i, col in enumerate(names):
            if col not in table.columns:
                raise ValidationFailed(
                    f"feature column {col!r} not found in data",
                    field=f"params.features[{i}]",
                    available=available,
                )
            if col == exclude:
                raise ValidationFailed(
                    f"column {col!r} is the target and cannot also be a feature",
                    field=f"params.features[{i}]",
                )
        dupes = sorted({c for c in names if names.count(c) > 1})
        if dupes:
            raise ValidationFailed(
                f"feature column {dupes[0]!r} listed twice", field="params.features"
            )
    if not names:
        raise ValidationFailed(
            "no feature columns: the data has no column besides the target",
            field="params.features",
            available=available,
        )
    index = [table.columns.index(c) for c in names]
    return np.ascontiguousarray(table.values[:, index]), names


# --- readers: each returns (column names, 2-D numeric array) --------------------------


_Raw = tuple[list[str], npt.NDArray[Any]]


def _not_numeric(col: str, field: str, example: Any = None) -> ValidationFailed:
    hint = f" (e.g. {example!r})" if example is not None else ""
    return ValidationFailed(f"column {col!r} is not numeric{hint}", field=field, column=col)


def _read_parquet(path: Path, max_cells: int, field: str) -> _Raw:
    try:
        meta = pq.ParquetFile(path).metadata
        if meta.num_rows * meta.num_columns > max_cells:
            raise too_many_cells(meta.num_rows * meta.num_columns, max_cells, field)
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ValidationFailed(f"data file does not parse as Parquet: {exc}", field=field) from exc
    if table.num_rows == 0:
        raise ValidationFailed("data has no rows", field=field)
    names = [str(n) for n in table.column_names]
    cols: list[npt.NDArray[np.float64]] = []
    for col_name, column in zip(names, table.columns, strict=True):
        kind = column.type
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_decimal(kind)
        ):
            raise _not_numeric(col_name, field)
        if column.null_count:
            raise ValidationFailed(
                f"column {col_name!r} has missing values", field=field, column=col_name
            )
        cols.append(np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64))
    values = np.column_stack(cols) if cols else np.empty((table.num_rows, 0))
    return names, values


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _read_csv(path: Path, max_cells: int, field: str) -> _Raw:
    try:
        names = [str(c) for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]
        # Data rows are read without the header, so pandas cannot quietly turn extra fields
        # into an index; at most one row past the cap is read, so a huge file never loads.
        max_rows = max_cells // max(1, len(names))
        frame = pd.read_csv(path, header=None, skiprows=1, nrows=max_rows + 1, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as exc:
        raise ValidationFailed("data has no rows", field=field) from exc
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise ValidationFailed(f"data file does not parse as CSV: {exc}", field=field) from exc
    if len(frame.columns) != len(names):
        raise ValidationFailed(
            f"data file does not parse as CSV: the header has {len(names)} fields, "
            f"data rows have {len(frame.columns)}",
            field=field,
        )
    if len(frame) > max_rows:
        raise too_many_cells((max_rows + 1) * len(names), max_cells, field)
    cols: list[npt.NDArray[np.float64]] = []
    for col_name, (_, series) in zip(names, frame.items(), strict=True):
        if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
            example = next((v for v in series if not _is_number(v)), None)
            raise _not_numeric(col_name, field, example)
        cols.append(series.to_numpy(dtype=np.float64, na_value=np.nan))
    values = np.column_stack(cols) if cols else np.empty((len(frame), 0))
    return names, values


def _finish(columns: list[str], values: npt.NDArray[Any], fmt: DataFormat, field: str) -> Table:
    if values.shape[1] == 0:
        raise ValidationFailed("data has no columns", field=field)
    if values.shape[0] == 0:
        raise ValidationFailed("data has no rows", field=field)
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise ValidationFailed(f"column {dupes[0]!r} appears twice", field=field, column=dupes[0])
    values = np.ascontiguousarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        col = columns[int(np.flatnonzero(bad.any(axis=0))[0])]
        raise ValidationFailed(
            f"column {col!r} contains NaN, infinite or missing values", field=field, column=col
        )
    huge = np.abs(values) > MAX_ABS
    if huge.any():
        col = columns[int(np.flatnonzero(huge.any(axis=0))[0])]
        raise ValidationFailed(
            f"column {col!r} has values beyond ±{MAX_ABS:g}, whose squares would overflow",
            field=field,
            column=col,
        )
    values.flags.writeable = False
    return Table(columns=tuple(columns), values=values, format=fmt)
