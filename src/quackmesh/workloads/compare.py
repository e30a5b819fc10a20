"""Tolerant comparison of results from different machines (the pure part of ``agree()``).

Two honest nodes seldom produce bit-identical floats: BLAS kernels, thread counts and
instruction sets change the order of additions. Verification therefore compares numbers
with a tolerance in the spirit of :func:`numpy.allclose`, but symmetric and scaled::

    |a - b| <= atol * scale + rtol * max(|a|, |b|)      (element-wise)
    scale    = max(1, max|a|, max|b|)                   (over the whole array)

The scale makes the absolute term follow the magnitude of the quantity, so a coefficient
that is ~0 next to coefficients of ~1e6 may carry the rounding noise of its neighbours.
Every helper here refuses malformed input by returning ``None``/``False``, never raising:
results arrive from untrusted nodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ATOL",
    "RTOL",
    "array_of",
    "close",
    "get_all",
    "match_rows",
    "same_strings",
    "scalar_of",
]

RTOL = 1e-6
ATOL = 1e-9

FloatArray = npt.NDArray[np.float64]


def array_of(value: Any, ndim: int) -> FloatArray | None:
    """``value`` as a finite float array of ``ndim`` dimensions, or ``None``."""
    if type(value) is not list:
        return None
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        return None  # ragged nesting
    if arr.ndim != ndim or arr.dtype.kind not in "iuf":
        return None  # strings, None, bools or objects inside
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        return None
    return out


def scalar_of(value: Any) -> float | None:
    """A finite int or float (not bool) as ``float``, or ``None``."""
    if type(value) not in (int, float):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def close(
    a: FloatArray | float, b: FloatArray | float, *, rtol: float = RTOL, atol: float = ATOL
) -> bool:
    """Same shape and equal within the scaled tolerance described in the module docs."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return False
    if x.size == 0:
        return True
    mag = np.maximum(np.abs(x), np.abs(y))
    scale = max(1.0, float(mag.max()))
    return bool(np.all(np.abs(x - y) <= atol * scale + rtol * mag))


def match_rows(
    a: FloatArray, b: FloatArray, *, rtol: float = RTOL, atol: float = ATOL
) -> list[int] | None:
    """A permutation ``perm`` with ``a[i] ≈ b[perm[i]]`` for every row, or ``None``.

    Greedy: each row of ``a`` takes the first unused close row of ``b``. Rows that are
    close to each other are interchangeable (for tolerances this small), so greedy finds
    a matching whenever one exists. ``a`` and ``b`` are 2-D, ``(n_rows, n_cols)``.
    """
    if a.shape != b.shape or a.ndim != 2:
        return None
    scale = max(1.0, float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    used = [False] * b.shape[0]
    perm: list[int] = []
    for row in a:
        mag = np.maximum(np.abs(row), np.abs(b))  # (n_rows, n_cols)
        ok = np.all(np.abs(row - b) <= atol * scale + rtol * mag, axis=1)
        j = next((int(j) for j in np.flatnonzero(ok) if not used[j]), None)
        if j is None:
            return None
        used[j] = True
        perm.append(j)
    return perm


def same_strings(a: Any, b: Any) -> bool:
    """Both are lists of str and equal."""
    return (
        type(a) is list
        and type(b) is list
        and all(type(s) is str for s in a)
        and list(a) == list(b)
    )


def get_all(result: Any, keys: Sequence[str]) -> dict[str, Any] | None:
    """``{key: result[key]}`` for ``keys``, or ``None`` if not a mapping or a key is missing."""
    if not isinstance(result, Mapping) or any(k not in result for k in keys):
        return None
    return {k: result[k] for k in keys}
