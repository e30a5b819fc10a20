"""Layer 5: the Python SDK — ``Client`` and ``AsyncClient`` over signed HTTP."""

from quackmesh.sdk.client import AsyncClient, Client, HttpError, SignedAuth

__all__ = ["AsyncClient", "Client", "HttpError", "SignedAuth"]
