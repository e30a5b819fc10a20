"""Layer 2: workloads — job kinds as pure compute plus result comparison.

A workload (:class:`~quackmesh.workloads.base.Workload`) is registered under a dotted
kind and brings a params model, input checks, a cost in compute units, ``run()`` and
``agree()``. Importing this package registers the built-in kinds::

    ml.kmeans              k-means clustering                     (kmeans.py)
    ml.linear_regression   ordinary least squares                 (linear_regression.py)
    ml.pca                 principal component analysis           (pca.py)

Data arrives as CSV, NPZ or Parquet (:mod:`~quackmesh.workloads.data`); nothing is ever
unpickled. This layer imports only ``quackmesh.core`` and the numeric libraries.
"""

from __future__ import annotations

from quackmesh.workloads.base import InputSummary, Workload
from quackmesh.workloads.data import (
    DEFAULT_MAX_CELLS,
    MAX_ABS,
    DataFormat,
    Table,
    load_table,
    select_features,
)
from quackmesh.workloads.kmeans import KMeans, KMeansSpec
from quackmesh.workloads.linear_regression import LinearRegression, LinearRegressionSpec
from quackmesh.workloads.pca import PCA, PCASpec
from quackmesh.workloads.registry import (
    MODULES_ENV,
    get_workload,
    list_kinds,
    load_extra_modules,
    register,
    unregister,
)

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
