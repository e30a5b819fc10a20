"""Turning numpy outputs into plain, finite JSON, and checking that a result is such JSON.

Results are hashed as canonical JSON (``quackmesh.core.canon``) and compared across
machines, so they hold only ``dict`` (str keys), ``list``, ``str``, ``int``, ``float``,
``bool`` and ``None`` — exact built-in types, never numpy scalars (``np.float64`` passes
``json.dumps`` but is still refused here, so a result means the same on every node) — and
no NaN or infinity (not JSON).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from quackmesh.core.canon import canonical_json
from quackmesh.core.errors import ValidationFailed

__all__ = ["check_result", "finite_float", "float_list", "float_matrix", "int_list"]

_SCALARS = (str, int, float, bool, type(None))


def _not_finite(what: str) -> ValidationFailed:
    # Finite data can still overflow (squares of 1e200); the data, not the node, is at fault.
    return ValidationFailed(
        f"result {what} is not finite: the data overflows float64", field="inputs.data"
    )


def finite_float(value: float | np.floating[Any], *, what: str) -> float:
    """A built-in ``float``; ``ValidationFailed`` if NaN or infinite."""
    out = float(value)
    if not math.isfinite(out):
        raise _not_finite(what)
    return out


def float_list(values: npt.ArrayLike, *, what: str) -> list[float]:
    """A 1-D array as a list of built-in floats (finite)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise _not_finite(what)
    return [float(v) for v in arr.tolist()]


def float_matrix(values: npt.ArrayLike, *, what: str) -> list[list[float]]:
    """A 2-D array as a list of rows of built-in floats (finite)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise _not_finite(what)
    return [[float(v) for v in row] for row in arr.tolist()]


def int_list(values: npt.ArrayLike) -> list[int]:
    """A 1-D integer array as a list of built-in ints."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"expected a 1-D integer array, got {arr.dtype} {arr.shape}")
    return [int(v) for v in arr.tolist()]


def _check_plain(value: Any, path: str) -> None:
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError(f"{path}: key {key!r} is not a str")
            _check_plain(item, f"{path}.{key}")
    elif kind is list:
        for i, item in enumerate(value):
            _check_plain(item, f"{path}[{i}]")
    elif kind not in _SCALARS:
        raise ValueError(f"{path}: {kind.__name__} is not a plain JSON type")
    elif kind is float and not math.isfinite(value):
        raise ValueError(f"{path}: {value!r} is not finite")


def check_result(result: Any, *, kind: str) -> bytes:
    """Check ``result`` is a plain, finite JSON object; return its canonical JSON bytes.

    Raises ``ValueError`` otherwise (a workload bug, not a user error).
    """
    if type(result) is not dict:
        raise ValueError(f"workload {kind!r} returned {type(result).__name__}, not a dict")
    try:
        _check_plain(result, "result")
        return canonical_json(result)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"workload {kind!r} returned a result that is not plain JSON: {exc}"
        ) from exc
