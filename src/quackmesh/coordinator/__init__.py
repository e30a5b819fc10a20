"""Layer 4: the coordinator service (FastAPI), one sub-package per domain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Settings", "create_app"]

if TYPE_CHECKING:
    from quackmesh.coordinator.app import create_app
    from quackmesh.coordinator.settings import Settings


def __getattr__(name: str) -> Any:
    # Lazy: CLI commands that only need settings should not pay for building the app.
    if name == "create_app":
        from quackmesh.coordinator.app import create_app

        return create_app
    if name == "Settings":
        from quackmesh.coordinator.settings import Settings

        return Settings
    raise AttributeError(name)
