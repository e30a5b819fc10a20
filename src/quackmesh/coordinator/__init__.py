"""Layer 4: the coordinator service (FastAPI), one sub-package per domain."""

from quackmesh.coordinator.app import create_app
from quackmesh.coordinator.settings import Settings

__all__ = ["Settings", "create_app"]
