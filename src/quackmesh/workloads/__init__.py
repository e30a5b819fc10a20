"""Layer 2: workloads — job kinds as pure compute plus result comparison.

A workload (:class:`~quackmesh.workloads.base.Workload`) is registered under a dotted
kind and brings a params model, input checks, a cost in compute units, ``run()`` and
``agree()``. Importing this package registers the built-in kinds::

    ml.kmeans              k-means clustering                     (kmeans.py)
    ml.linear_regression   ordinary least squares                 (linear_regression.py)
    ml.pca                 principal component analysis           (pca.py)
    infer.embed            MiniLM sentence embeddings             (infer_embed.py)
    infer.model            batch prediction: zoo model or ONNX    (infer_model.py)
    infer.generate         greedy generation on a served model    (infer_generate.py)

Data arrives as CSV, NPZ or Parquet (:mod:`~quackmesh.workloads.data`); nothing is ever
unpickled. This layer imports only ``quackmesh.core`` and the numeric libraries.

The built-in kinds' modules (scikit-learn, torch) are imported on first use — by
:func:`get_workload` or by touching a name such as ``quackmesh.workloads.KMeans`` — so
that a sandboxed task or a CLI command pays only for what it runs.
"""

from __future__ import annotations

import importlib
from typing import Any

from quackmesh.workloads.base import InputSummary, Workload
from quackmesh.workloads.data import (
    DEFAULT_MAX_CELLS,
    MAX_ABS,
    DataFormat,
    Table,
    load_table,
    select_features,
)
from quackmesh.workloads.registry import (
    MODULES_ENV,
    get_workload,
    list_kinds,
    load_extra_modules,
    register,
    unregister,
)

_LAZY_NAMES = {
    "KMeans": "quackmesh.workloads.kmeans",
    "KMeansSpec": "quackmesh.workloads.kmeans",
    "LinearRegression": "quackmesh.workloads.linear_regression",
    "LinearRegressionSpec": "quackmesh.workloads.linear_regression",
    "PCA": "quackmesh.workloads.pca",
    "PCASpec": "quackmesh.workloads.pca",
}


def __getattr__(name: str) -> Any:
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'quackmesh.workloads' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEFAULT_MAX_CELLS",
    "MAX_ABS",
    "MODULES_ENV",
    "PCA",
    "DataFormat",
    "InputSummary",
    "KMeans",
    "KMeansSpec",
    "LinearRegression",
    "LinearRegressionSpec",
    "PCASpec",
    "Table",
    "Workload",
    "get_workload",
    "list_kinds",
    "load_extra_modules",
    "load_table",
    "register",
    "select_features",
    "unregister",
]
