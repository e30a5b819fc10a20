"""``ml.pca``: principal component analysis by exact SVD of the centred data.

Follows scikit-learn's :class:`~sklearn.decomposition.PCA` with ``svd_solver="full"``
(Pearson 1901; Hotelling 1933; computed as in Halko et al. 2011's exact branch, i.e. a
LAPACK SVD). The solver is fixed: ``"auto"`` may pick the randomized solver, whose result
depends on a random state. ``whiten`` does not change the components; the result carries
``explained_variance`` and ``whiten`` so that the (whitened) transform can be rebuilt:
``(X - mean) @ components.T / sqrt(explained_variance)`` when whitened.

Cost, in compute units (a thin SVD is O(n·p·min(n, p)))::

    units = max(1, ceil(rows * cols / 100_000) * ceil(min(rows, cols) / 64))

``agree()``: same feature names and ``whiten``; each component equal up to its sign (an
SVD fixes a singular vector only up to sign); explained variance (ratio), singular values
and mean within ``compare.RTOL``/``compare.ATOL``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from sklearn.decomposition import PCA as _SkPCA

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads.base import InputSummary, Workload, ceil_div
from quackmesh.workloads.compare import array_of, close, get_all, same_strings
from quackmesh.workloads.data import DataFormat, load_table, select_features
from quackmesh.workloads.registry import register
from quackmesh.workloads.results import float_list, float_matrix

__all__ = ["PCA", "PCASpec"]

_VECTORS = ("explained_variance", "explained_variance_ratio", "singular_values")


class PCASpec(BaseModel):
    """Params of ``ml.pca``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    n_components: int = Field(ge=1, description="at most min(rows, features)")
    features: list[str] | None = Field(default=None, min_length=1)
    whiten: bool = False


def _prepare(
    spec: PCASpec, path: Path
) -> tuple[npt.NDArray[np.float64], tuple[str, ...], DataFormat]:
    """Load the data; ``X`` is ``(n_samples, n_features)``."""
    table = load_table(path)
    x, names = select_features(table, spec.features)
    limit = min(x.shape)
    if spec.n_components > limit:
        raise ValidationFailed(
            f"n_components ({spec.n_components}) is more than min(rows, features) ({limit})",
            field="params.n_components",
            max=int(limit),
        )
    # Zero total variance makes every explained-variance ratio 0/0.
    if x.shape[0] < 2 or bool(np.all(x == x[0])):
        raise ValidationFailed(
            "PCA needs data that varies: every row is the same", field="inputs.data"
        )
    return x, names, table.format


@register
class PCA(Workload[PCASpec]):
    kind: ClassVar[str] = "ml.pca"
    spec_model: ClassVar[type[BaseModel]] = PCASpec
    description: ClassVar[str] = "Principal component analysis: components, variance ratios"

    def check_inputs(self, spec: PCASpec, inputs: Mapping[str, Path]) -> InputSummary:
        self.check_input_names(inputs)
        x, names, fmt = _prepare(spec, inputs["data"])
        return InputSummary(
            rows=int(x.shape[0]), columns=len(names), feature_names=names, format=fmt
        )

    def cost(self, spec: PCASpec, summary: InputSummary) -> int:
        per_pass = ceil_div(summary.rows * summary.columns, 100_000)
        return max(1, per_pass * ceil_div(min(summary.rows, summary.columns), 64))

    def run(self, spec: PCASpec, inputs: Mapping[str, Path]) -> dict[str, Any]:
        self.check_input_names(inputs)
        x, names, _ = _prepare(spec, inputs["data"])
        model = _SkPCA(n_components=spec.n_components, whiten=spec.whiten, svd_solver="full")
        model.fit(x)
        return {
            "components": float_matrix(model.components_, what="components"),
            "explained_variance": float_list(model.explained_variance_, what="variance"),
            "explained_variance_ratio": float_list(
                model.explained_variance_ratio_, what="explained_variance_ratio"
            ),
            "singular_values": float_list(model.singular_values_, what="singular_values"),
            "mean": float_list(model.mean_, what="mean"),
            "feature_names": list(names),
            "whiten": spec.whiten,
        }

    def agree(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        keys = ("components", "mean", "feature_names", "whiten", *_VECTORS)
        ra, rb = get_all(a, keys), get_all(b, keys)
        if (
            ra is None
            or rb is None
            or not same_strings(ra["feature_names"], rb["feature_names"])
            or type(ra["whiten"]) is not bool
            or ra["whiten"] is not rb["whiten"]
        ):
            return False
        n_features = len(ra["feature_names"])
        ca, cb = array_of(ra["components"], 2), array_of(rb["components"], 2)
        ma, mb = array_of(ra["mean"], 1), array_of(rb["mean"], 1)
        if ca is None or cb is None or ma is None or mb is None:
            return False
        if ca.shape != cb.shape or ca.shape[1] != n_features or not close(ma, mb):
            return False
        for key in _VECTORS:
            va, vb = array_of(ra[key], 1), array_of(rb[key], 1)
            if va is None or vb is None or va.shape[0] != ca.shape[0] or not close(va, vb):
                return False
        return close(ca, _align_signs(ca, cb))


def _align_signs(
    ref: npt.NDArray[np.float64], other: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``other`` with each row (component) negated where it points away from ``ref``'s."""
    signs = np.where(np.einsum("ij,ij->i", ref, other) < 0, -1.0, 1.0)  # (n_components,)
    return other * signs[:, None]
