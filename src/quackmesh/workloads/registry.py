"""The workload registry: kind name -> workload class.

Built-in kinds register themselves (``@register``) when ``quackmesh.workloads`` is
imported. Extra workloads (a node operator's own, or deliberately misbehaving ones for
sandbox tests) are modules named in ``QUACKMESH_WORKLOAD_MODULES`` (comma-separated);
:func:`load_extra_modules` imports them, and :func:`get_workload` / :func:`list_kinds`
call it lazily, once per value of the variable.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any, TypeVar

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads.base import Workload

__all__ = [
    "LAZY_KINDS",
    "MODULES_ENV",
    "PROTOCOL_KINDS",
    "SERVED_KINDS",
    "get_workload",
    "list_kinds",
    "load_extra_modules",
    "register",
    "required_model",
    "unregister",
]

MODULES_ENV = "QUACKMESH_WORKLOAD_MODULES"
# The same rule as ``quackmesh.core.schemas.Kind``, so every registered kind can be submitted.
_KIND_RE = re.compile(r"^[a-z][a-z0-9_.]*$")

_registry: dict[str, type[Workload[Any]]] = {}

LAZY_KINDS: dict[str, str] = {
    "fl.local_train": "quackmesh.fl.workload",
    "infer.embed": "quackmesh.workloads.infer_embed",
    "infer.generate": "quackmesh.workloads.infer_generate",
    "infer.model": "quackmesh.workloads.infer_model",
    "ml.kmeans": "quackmesh.workloads.kmeans",
    "ml.linear_regression": "quackmesh.workloads.linear_regression",
    "ml.pca": "quackmesh.workloads.pca",
}
"""Built-in kinds, each imported on first use: scikit-learn and torch take seconds to
import, which every sandboxed task and CLI command would otherwise pay for all kinds."""

PROTOCOL_KINDS: tuple[str, ...] = ("fl.secagg",)
"""Task kinds a node agent runs itself, outside the sandbox (secure-aggregation key
agreement and shares: small cryptographic steps on the node's own secrets)."""

SERVED_KINDS: dict[str, str] = {"infer.generate": "generate"}
"""Task kinds answered by a model the node serves (``--serve``), not in the sandbox, and
the model task they need. Their ``params.model`` names the model: only a node serving it
may take the task."""


def required_model(kind: str, params: Any) -> str | None:
    """The served model a task of ``kind`` with ``params`` needs, or ``None``."""
    if kind not in SERVED_KINDS or not isinstance(params, dict):
        return None
    model = params.get("model")
    return model if isinstance(model, str) else None


_loaded_env: str | None = None

W = TypeVar("W", bound=type[Workload[Any]])


def register(cls: W) -> W:
    """Class decorator: register ``cls`` under ``cls.kind``; ``ValueError`` on a duplicate."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or len(kind) > 64 or not _KIND_RE.match(kind):
        raise ValueError(f"{cls.__qualname__}.kind must match {_KIND_RE.pattern}, got {kind!r}")
    if not hasattr(cls, "spec_model"):
        raise ValueError(f"{cls.__qualname__} has no spec_model")
    if kind in _registry:
        raise ValueError(f"workload kind {kind!r} is already registered by {_registry[kind]}")
    _registry[kind] = cls
    return cls


def unregister(kind: str) -> None:
    """Remove ``kind`` (for tests and plugin reloads); ``KeyError`` if it is not registered."""
    del _registry[kind]


def load_extra_modules() -> list[str]:
    """Import the modules named in ``QUACKMESH_WORKLOAD_MODULES``; return their names.

    Importing a module that is already imported does nothing, so this is idempotent. A
    module that cannot be imported is a configuration error and raises ``ImportError``.
    """
    global _loaded_env
    value = os.environ.get(MODULES_ENV, "")
    names = [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"{MODULES_ENV}: cannot import {name!r}: {exc}") from exc
    _loaded_env = value
    return names


def _ensure_loaded() -> None:
    if os.environ.get(MODULES_ENV, "") != _loaded_env:
        load_extra_modules()


def get_workload(kind: str) -> Workload[Any]:
    """A workload instance for ``kind``; ``ValidationFailed`` (field ``kind``) if unknown."""
    _ensure_loaded()
    cls = _registry.get(kind)
    if cls is None and kind in LAZY_KINDS:
        importlib.import_module(LAZY_KINDS[kind])
        cls = _registry.get(kind)
    if cls is None:
        raise ValidationFailed(f"unknown workload kind {kind!r}", field="kind", known=list_kinds())
    return cls()


def list_kinds() -> list[str]:
    """Every registered kind (the lazily imported built-ins included), sorted."""
    _ensure_loaded()
    return sorted(set(_registry) | set(LAZY_KINDS))
