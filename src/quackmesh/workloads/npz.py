"""Reading NPZ input safely: headers first, never unpickling (DESIGN: security rules).

An NPZ file is a ZIP archive (PKWARE APPNOTE) of ``.npy`` members (NEP 1, the NumPy
``.npy`` format). Input holds ``X`` (2-D numeric, required), optionally ``y`` (1-D
numeric, one value per row; becomes the last column, named ``y``) and ``columns`` (1-D
str, names X's columns; default ``x0..xN``); any other member is refused.

Every member's ``.npy`` header is parsed before any array data is read: object dtypes
(which only pickle can load) are refused, and the declared shape must fit the cell cap, so
a small compressed file cannot expand past it. The arrays are then loaded with
``np.load(..., allow_pickle=False)``: nothing from the network is ever unpickled.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from quackmesh.core.errors import ValidationFailed

__all__ = ["read_npz", "too_many_cells"]

_NPZ_ARRAYS = ("X", "columns", "y")


def too_many_cells(cells: int, max_cells: int, field: str) -> ValidationFailed:
    """The error for data over the cell cap (shared by every reader)."""
    return ValidationFailed(
        f"data has {cells} cells, more than the limit of {max_cells}",
        field=field,
        max_cells=max_cells,
    )


def _npy_header(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype from a ``.npy`` member's header, without reading its data."""
    with zf.open(member) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _npz_headers(
    path: Path, max_cells: int, field: str
) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
            if len(set(members)) != len(members):
                raise ValidationFailed("npz has a member twice", field=field)
            for member in members:
                stem = member.removesuffix(".npy")
                if stem == member or stem not in _NPZ_ARRAYS:
                    raise ValidationFailed(
                        f"unexpected member {member!r} in npz (allowed arrays: X, y, columns)",
                        field=field,
                    )
            headers = {m.removesuffix(".npy"): _npy_header(zf, m) for m in members}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValidationFailed(f"data file does not parse as NPZ: {exc}", field=field) from exc
    if "X" not in headers:
        raise ValidationFailed("npz has no array 'X'", field=field)
    for stem, (shape, dtype) in headers.items():
        if dtype.hasobject:
            raise ValidationFailed(
                f"npz array {stem!r} has an object dtype, which is refused (never unpickled)",
                field=field,
            )
        cells = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if cells > max_cells:
            raise too_many_cells(cells, max_cells, field)
    return headers


def read_npz(
    path: Path, *, max_cells: int, field: str
) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Column names and the ``(n_rows, n_cols)`` values of an NPZ file (``y`` last)."""
    headers = _npz_headers(path, max_cells, field)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {stem: np.asarray(npz[stem]) for stem in headers}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValidationFailed(f"data file does not parse as NPZ: {exc}", field=field) from exc
    x = arrays["X"]
    if x.ndim != 2 or x.dtype.kind not in "biuf":
        raise ValidationFailed(
            f"npz array 'X' must be 2-D numeric, got {x.dtype} with shape {x.shape}", field=field
        )
    names = [f"x{i}" for i in range(x.shape[1])]
    if "columns" in arrays:
        cols = arrays["columns"]
        if cols.ndim != 1 or cols.dtype.kind != "U" or cols.shape[0] != x.shape[1]:
            raise ValidationFailed(
                f"npz array 'columns' must be 1-D str with one name per column of X "
                f"({x.shape[1]}), got {cols.dtype} with shape {cols.shape}",
                field=field,
            )
        names = [str(c) for c in cols.tolist()]
    values = x.astype(np.float64)
    if "y" in arrays:
        y = arrays["y"]
        if y.ndim != 1 or y.dtype.kind not in "biuf" or y.shape[0] != x.shape[0]:
            raise ValidationFailed(
                f"npz array 'y' must be 1-D numeric with one value per row of X "
                f"({x.shape[0]}), got {y.dtype} with shape {y.shape}",
                field=field,
            )
        names.append("y")
        values = np.column_stack([values, y.astype(np.float64)])
    return names, values
