"""QuackMesh: a decentralized AI compute network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AsyncClient", "Client", "__version__"]

if TYPE_CHECKING:
    from quackmesh.sdk import AsyncClient, Client


def __getattr__(name: str) -> Any:
    # Lazy so that `import quackmesh.core` in a sandboxed task does not pull in httpx.
    if name in ("Client", "AsyncClient"):
        from quackmesh import sdk

        return getattr(sdk, name)
    raise AttributeError(name)
