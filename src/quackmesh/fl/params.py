"""Flattening model weights to one vector and back.

Strategies, secure aggregation and differential privacy all work on a flat float64
vector of parameters (``(n_params,)``); models and the wire format keep named arrays.
These three functions convert between the two. Order is the mapping's iteration order,
so the same ``shapes`` mapping must be used to flatten and to unflatten (a model's
``state_dict`` order is stable, which is what the callers rely on).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["flatten", "shapes_of", "unflatten"]


def shapes_of(weights: Mapping[str, NDArray[Any]]) -> dict[str, tuple[int, ...]]:
    """The shape of each named array, in the mapping's order."""
    return {name: tuple(int(s) for s in np.shape(array)) for name, array in weights.items()}


def flatten(weights: Mapping[str, NDArray[Any]]) -> NDArray[np.float64]:
    """Concatenate every array (C order) into one float64 vector ``(n_params,)``.

    The arrays are copied, never referenced: changing the result leaves ``weights`` alone.
    """
    parts = [np.asarray(array, dtype=np.float64).ravel() for array in weights.values()]
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(parts)


def unflatten(
    vector: NDArray[Any], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, NDArray[np.float32]]:
    """Split a flat vector back into named float32 arrays of the given shapes.

    Raises ``ValueError`` if ``vector`` is not 1-D or its length differs from the total
    number of elements in ``shapes``.
    """
    flat = np.asarray(vector)
    if flat.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {flat.shape}")
    sizes = [math.prod(shape) for shape in shapes.values()]
    expected = sum(sizes)
    if flat.shape[0] != expected:
        raise ValueError(f"vector has {flat.shape[0]} elements but the shapes need {expected}")
    out: dict[str, NDArray[np.float32]] = {}
    offset = 0
    for (name, shape), size in zip(shapes.items(), sizes, strict=True):
        # astype copies, so the caller's vector is never aliased by the result.
        out[name] = flat[offset : offset + size].astype(np.float32).reshape(shape)
        offset += size
    return out
