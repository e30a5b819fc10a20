"""``ml.kmeans``: k-means clustering (Lloyd's algorithm, k-means++ seeding).

Follows scikit-learn's :class:`~sklearn.cluster.KMeans` with ``algorithm="lloyd"``:
Lloyd, "Least squares quantization in PCM" (1982), seeded with k-means++ (Arthur &
Vassilvitskii, 2007), best of ``n_init`` seeded runs. Deterministic for a ``seed``.

``tol`` is fixed at 0, so a run stops only when the labels no longer change (or at
``max_iter``): a centre-shift threshold would let two machines stop one iteration apart
on rounding noise, and their centres would then differ by far more than rounding.

Cost, in compute units::

    units = max(1, ceil(rows * cols / 100_000) * n_init * ceil(n_clusters / 8)
                   * ceil(max_iter / 300))

``agree()``: same feature names; inertia within ``compare.RTOL``; centres equal (within
tolerance) up to a permutation of the clusters, and labels consistent with that same
permutation. ``n_iter`` is informative only and not compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from sklearn.cluster import KMeans as _SkKMeans

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads.base import InputSummary, Workload, ceil_div
from quackmesh.workloads.compare import (
    array_of,
    close,
    get_all,
    match_rows,
    same_strings,
    scalar_of,
)
from quackmesh.workloads.data import DataFormat, load_table, select_features
from quackmesh.workloads.registry import register
from quackmesh.workloads.results import finite_float, float_matrix, int_list

__all__ = ["KMeans", "KMeansSpec"]


class KMeansSpec(BaseModel):
    """Params of ``ml.kmeans``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    n_clusters: int = Field(ge=1, le=1024)
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="k-means++ seeding")
    n_init: int = Field(default=10, ge=1, le=100, description="seeded runs; best is kept")
    max_iter: int = Field(default=300, ge=1, le=10_000)
    features: list[str] | None = Field(default=None, min_length=1)


def _prepare(
    spec: KMeansSpec, path: Path
) -> tuple[npt.NDArray[np.float64], tuple[str, ...], DataFormat]:
    """Load the data; ``X`` is ``(n_samples, n_features)``."""
    table = load_table(path)
    x, names = select_features(table, spec.features)
    if x.shape[0] < spec.n_clusters:
        raise ValidationFailed(
            f"n_clusters ({spec.n_clusters}) is more than the rows in the data ({x.shape[0]})",
            field="params.n_clusters",
            rows=int(x.shape[0]),
        )
    distinct = _count_distinct_rows(x)
    if distinct < spec.n_clusters:
        raise ValidationFailed(
            f"n_clusters ({spec.n_clusters}) is more than the distinct points in the data "
            f"({distinct})",
            field="params.n_clusters",
            distinct_rows=distinct,
        )
    return x, names, table.format


def _count_distinct_rows(x: npt.NDArray[np.float64]) -> int:
    """Distinct rows of ``x``: each row viewed as one opaque byte string, which sorts ~3x
    faster than ``np.unique(axis=0)``; ``+ 0.0`` turns -0.0 into 0.0 so bytes match values.
    """
    rows = np.ascontiguousarray(x + 0.0)
    return int(np.unique(rows.view(np.dtype((np.void, rows.itemsize * rows.shape[1])))).size)


@register
class KMeans(Workload[KMeansSpec]):
    kind: ClassVar[str] = "ml.kmeans"
    spec_model: ClassVar[type[BaseModel]] = KMeansSpec
    description: ClassVar[str] = "k-means clustering: centres, labels, inertia"

    def check_inputs(self, spec: KMeansSpec, inputs: Mapping[str, Path]) -> InputSummary:
        self.check_input_names(inputs)
        x, names, fmt = _prepare(spec, inputs["data"])
        return InputSummary(
            rows=int(x.shape[0]), columns=len(names), feature_names=names, format=fmt
        )

    def cost(self, spec: KMeansSpec, summary: InputSummary) -> int:
        per_pass = ceil_div(summary.rows * summary.columns, 100_000)
        units = per_pass * spec.n_init * ceil_div(spec.n_clusters, 8) * ceil_div(spec.max_iter, 300)
        return max(1, units)

    def run(self, spec: KMeansSpec, inputs: Mapping[str, Path]) -> dict[str, Any]:
        self.check_input_names(inputs)
        x, names, _ = _prepare(spec, inputs["data"])
        model = _SkKMeans(
            n_clusters=spec.n_clusters,
            init="k-means++",
            n_init=spec.n_init,
            max_iter=spec.max_iter,
            tol=0.0,
            random_state=spec.seed,
            algorithm="lloyd",
        ).fit(x)
        return {
            "centers": float_matrix(model.cluster_centers_, what="centers"),
            "labels": int_list(model.labels_),
            "inertia": finite_float(model.inertia_, what="inertia"),
            "n_iter": int(model.n_iter_),
            "feature_names": list(names),
        }

    def agree(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        keys = ("centers", "labels", "inertia", "feature_names")
        ra, rb = get_all(a, keys), get_all(b, keys)
        if ra is None or rb is None or not same_strings(ra["feature_names"], rb["feature_names"]):
            return False
        ia, ib = scalar_of(ra["inertia"]), scalar_of(rb["inertia"])
        if ia is None or ib is None or not close(ia, ib):
            return False
        ca, cb = array_of(ra["centers"], 2), array_of(rb["centers"], 2)
        if ca is None or cb is None or ca.shape[1] != len(ra["feature_names"]):
            return False
        perm = match_rows(ca, cb)
        if perm is None:
            return False
        return _labels_match(ra["labels"], rb["labels"], perm)


def _labels_match(a: Any, b: Any, perm: list[int]) -> bool:
    """``b[i] == perm[a[i]]`` for every point (both lists of valid cluster ids)."""
    la, lb = array_of(a, 1), array_of(b, 1)
    if la is None or lb is None or la.shape != lb.shape:
        return False
    k = len(perm)
    if not all(type(v) is int and 0 <= v < k for v in (*a, *b)):
        return False
    mapping = np.asarray(perm, dtype=np.int64)
    return bool(
        np.array_equal(mapping[np.asarray(a, dtype=np.int64)], np.asarray(b, dtype=np.int64))
    )
