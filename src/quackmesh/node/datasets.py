"""A provider's own datasets: a small JSON registry on the node's disk.

``quackmesh node datasets add NAME PATH --label COLUMN`` checks the file (CSV, NPZ or
Parquet, sniffed from its bytes), records its absolute path, and describes it: format,
row count, feature names and the label histogram (optionally coarsened). The node
advertises only that description when it registers; federated tasks name a dataset and
the node reads the rows from its own disk inside the task sandbox. The rows never leave.

The registry is a JSON object ``{name: entry}`` written atomically (temporary file and
rename). Its default place is ``$QUACKMESH_HOME/datasets.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quackmesh.core.errors import ValidationFailed
from quackmesh.core.schemas import DatasetInfo

__all__ = [
    "DatasetEntry",
    "add_dataset",
    "default_registry",
    "describe_file",
    "load_registry",
    "remove_dataset",
]

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_.-")


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset: where it lives and what the node may say about it."""

    path: Path
    info: DatasetInfo

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "info": self.info.model_dump(mode="json")}


def default_registry() -> Path:
    from quackmesh.coordinator.settings import default_home

    return Path(os.environ.get("QUACKMESH_DATASETS") or default_home() / "datasets.json")


def _check_name(name: str) -> None:
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS or not name[0].isalnum():
        raise ValidationFailed(
            "dataset names are 1-64 characters of a-z, 0-9, '_', '.', '-' starting with a "
            f"letter or digit; got {name!r}",
            field="name",
        )


def describe_file(
    name: str, path: Path, *, label: str, coarsen: int | None = None, fmt: str | None = None
) -> DatasetInfo:
    """Read ``path`` and describe it; ``ValidationFailed`` when it does not load or the
    label column is missing or not a class index."""
    from quackmesh.fl.data import describe, read_local

    _check_name(name)
    if coarsen is not None and coarsen < 1:
        raise ValidationFailed("--coarsen must be at least 1", field="coarsen")
    dataset, sniffed = read_local(path, label=label)
    if fmt is not None and fmt != sniffed:
        raise ValidationFailed(
            f"{path.name} looks like {sniffed}, not {fmt} (the format is read from the bytes)",
            field="format",
        )
    summary = describe(dataset, coarsen=coarsen)
    histogram = {str(k): int(v) for k, v in dict(summary["label_counts"]).items()}
    return DatasetInfo(
        name=name,
        format=sniffed,
        rows=int(summary["rows"]),
        features=int(summary["n_features"]),
        feature_names=[str(n) for n in list(summary["feature_names"])[:20]],
        label=label,
        label_histogram=histogram,
        coarsen=coarsen,
    )


def load_registry(path: Path) -> dict[str, DatasetEntry]:
    """The registry at ``path`` (empty when the file does not exist)."""
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationFailed(f"cannot read dataset registry {path}: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ValidationFailed(f"dataset registry {path} is not a JSON object")
    out: dict[str, DatasetEntry] = {}
    for name, entry in raw.items():
        try:
            info = DatasetInfo.model_validate(entry["info"])
            out[str(name)] = DatasetEntry(path=Path(entry["path"]), info=info)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationFailed(f"dataset registry {path}: bad entry {name!r}") from exc
    return out


def _write(path: Path, entries: Mapping[str, DatasetEntry]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    body = {name: entries[name].to_json() for name in sorted(entries)}
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def add_dataset(
    registry: Path,
    *,
    name: str,
    path: Path,
    label: str,
    coarsen: int | None = None,
    fmt: str | None = None,
    replace: bool = False,
) -> DatasetEntry:
    """Describe ``path`` and record it under ``name`` (``replace`` to overwrite)."""
    entries = load_registry(registry)
    if name in entries and not replace:
        raise ValidationFailed(
            f"dataset {name!r} is already registered (use --replace)", field="name"
        )
    resolved = path.expanduser().resolve()
    if not resolved.is_file():
        raise ValidationFailed(f"no such file: {path}", field="path")
    info = describe_file(name, resolved, label=label, coarsen=coarsen, fmt=fmt)
    entry = DatasetEntry(path=resolved, info=info)
    _write(registry, {**entries, name: entry})
    return entry


def remove_dataset(registry: Path, name: str) -> None:
    entries = load_registry(registry)
    if name not in entries:
        raise ValidationFailed(f"no dataset {name!r} in {registry}", field="name")
    _write(registry, {k: v for k, v in entries.items() if k != name})
