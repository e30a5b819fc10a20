"""``ml.linear_regression``: ordinary least squares on one tabular input.

Follows scikit-learn's :class:`~sklearn.linear_model.LinearRegression` (OLS solved with
``scipy.linalg.lstsq``, minimum-norm solution when the design is rank-deficient); ``r2``
and ``mse`` are measured on the training data (coefficient of determination as in
:func:`~sklearn.metrics.r2_score`).

Cost, in compute units (least squares is O(n·p²))::

    units = max(1, ceil(rows * cols / 100_000) * ceil(cols / 64))

where ``cols`` counts the features plus the target.

``agree()``: same target, feature names and sample count; coefficients, intercept, r2
and mse equal within ``compare.RTOL``/``compare.ATOL`` (scaled, see
:mod:`quackmesh.workloads.compare`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import LinearRegression as _SkLinearRegression
from sklearn.metrics import mean_squared_error

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads.base import InputSummary, Workload, ceil_div
from quackmesh.workloads.compare import array_of, close, get_all, same_strings, scalar_of
from quackmesh.workloads.data import DataFormat, load_table, select_features
from quackmesh.workloads.registry import register
from quackmesh.workloads.results import finite_float, float_list

__all__ = ["LinearRegression", "LinearRegressionSpec"]

_NUMERIC_KEYS = ("coefficients", "intercept", "r2", "mse")


class LinearRegressionSpec(BaseModel):
    """Params of ``ml.linear_regression``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    target: str = Field(min_length=1, description="column to predict")
    features: list[str] | None = Field(
        default=None, min_length=1, description="feature columns; default: all but the target"
    )
    fit_intercept: bool = True


_Prepared = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], tuple[str, ...], DataFormat]


def _prepare(spec: LinearRegressionSpec, path: Path) -> _Prepared:
    """Load the data; ``X`` is ``(n_samples, n_features)``, ``y`` is ``(n_samples,)``."""
    table = load_table(path)
    if spec.target not in table.columns:
        raise ValidationFailed(
            f"column {spec.target!r} not found in data",
            field="params.target",
            available=list(table.columns),
        )
    x, names = select_features(table, spec.features, exclude=spec.target)
    if table.rows < 2:
        raise ValidationFailed(
            f"linear regression needs at least 2 rows, the data has {table.rows}",
            field="inputs.data",
        )
    y = np.array(table.values[:, table.columns.index(spec.target)])
    return x, y, names, table.format


@register
class LinearRegression(Workload[LinearRegressionSpec]):
    kind: ClassVar[str] = "ml.linear_regression"
    spec_model: ClassVar[type[BaseModel]] = LinearRegressionSpec
    description: ClassVar[str] = "Ordinary least squares: coefficients, intercept, r2, mse"

    def check_inputs(self, spec: LinearRegressionSpec, inputs: Mapping[str, Path]) -> InputSummary:
        self.check_input_names(inputs)
        x, _, names, fmt = _prepare(spec, inputs["data"])
        return InputSummary(
            rows=int(x.shape[0]), columns=len(names) + 1, feature_names=names, format=fmt
        )

    def cost(self, spec: LinearRegressionSpec, summary: InputSummary) -> int:
        cells = summary.rows * summary.columns
        return max(1, ceil_div(cells, 100_000) * ceil_div(summary.columns, 64))

    def run(self, spec: LinearRegressionSpec, inputs: Mapping[str, Path]) -> dict[str, Any]:
        self.check_input_names(inputs)
        x, y, names, _ = _prepare(spec, inputs["data"])
        model = _SkLinearRegression(fit_intercept=spec.fit_intercept).fit(x, y)
        predicted = model.predict(x)
        return {
            "coefficients": float_list(model.coef_, what="coefficients"),
            "intercept": finite_float(model.intercept_, what="intercept"),
            "r2": finite_float(model.score(x, y), what="r2"),
            "mse": finite_float(mean_squared_error(y, predicted), what="mse"),
            "n_samples": int(x.shape[0]),
            "feature_names": list(names),
            "target": spec.target,
        }

    def agree(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        keys = (*_NUMERIC_KEYS, "n_samples", "feature_names", "target")
        ra, rb = get_all(a, keys), get_all(b, keys)
        if ra is None or rb is None:
            return False
        if not (
            same_strings(ra["feature_names"], rb["feature_names"])
            and type(ra["target"]) is str
            and ra["target"] == rb["target"]
            and type(ra["n_samples"]) is int
            and ra["n_samples"] == rb["n_samples"]
        ):
            return False
        ca, cb = array_of(ra["coefficients"], 1), array_of(rb["coefficients"], 1)
        if ca is None or cb is None or ca.shape[0] != len(ra["feature_names"]):
            return False
        for key in ("intercept", "r2", "mse"):
            sa, sb = scalar_of(ra[key]), scalar_of(rb[key])
            if sa is None or sb is None or not close(sa, sb):
                return False
        return close(ca, cb)
