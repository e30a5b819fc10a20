"""The QuackMesh error hierarchy, shared by every layer.

Each error carries a stable machine-readable ``code`` and the HTTP ``status`` the
coordinator answers with (one exception handler maps them to RFC 9457 problem+json); the
SDK turns a problem response back into the same class, so callers catch one hierarchy on
both sides of the wire::

    QuackMeshError
    ├── BadRequest                 400 bad_request
    │   └── ValidationFailed       422 validation_failed   (bad spec, data that does not fit)
    ├── AuthError                  401
    │   ├── MissingAuth            401 missing_auth
    │   ├── BadSignature           401 bad_signature
    │   ├── StaleRequest           401 stale_request       (timestamp outside the window)
    │   └── ReplayedNonce          401 replayed_nonce
    ├── InsufficientBalance        402 insufficient_balance
    ├── Forbidden                  403 forbidden
    │   ├── DevModeOnly            403 dev_mode_only       (faucet outside development mode)
    │   └── CsrfFailed             403 csrf_failed         (session request without its CSRF token)
    ├── NotFound                   404 not_found
    │   ├── JobNotFound            404 job_not_found
    │   ├── TaskNotFound           404 task_not_found
    │   ├── NodeNotFound           404 node_not_found
    │   ├── BlobNotFound           404 blob_not_found
    │   └── ChainDisabled          404 chain_disabled      (the coordinator has no chain)
    ├── Conflict                   409 conflict
    │   ├── InvalidState           409 invalid_state
    │   └── LeaseLost              409 lease_lost          (lease expired or moved on)
    ├── PayloadTooLarge            413 payload_too_large
    ├── RateLimited                429 rate_limited        (carries retry_after seconds)
    ├── LedgerInvariantBroken      500 ledger_invariant_broken
    ├── ChainError                 502 chain_error         (chain unreachable, no receipt)
    │   └── ChainReverted          409 chain_reverted      (a contract refused; carries reason)
    └── Unavailable                503 unavailable

Context goes in keyword arguments (``JobNotFound("no such job", job_id=...)``) and is
returned to the caller as extra members of the problem body.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AuthError",
    "BadRequest",
    "BadSignature",
    "BlobNotFound",
    "ChainDisabled",
    "ChainError",
    "ChainReverted",
    "Conflict",
    "CsrfFailed",
    "DevModeOnly",
    "Forbidden",
    "InsufficientBalance",
    "InvalidState",
    "JobNotFound",
    "LeaseLost",
    "LedgerInvariantBroken",
    "MissingAuth",
    "NodeNotFound",
    "NotFound",
    "PayloadTooLarge",
    "QuackMeshError",
    "RateLimited",
    "ReplayedNonce",
    "StaleRequest",
    "TaskNotFound",
    "Unavailable",
    "ValidationFailed",
    "error_class_for_code",
]


class QuackMeshError(Exception):
    """Root of every QuackMesh error."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context

    def to_problem(self) -> dict[str, Any]:
        """The RFC 9457 body for this error (``type`` is a stable relative URI)."""
        body: dict[str, Any] = {
            "type": f"/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        for key, value in self.context.items():
            body.setdefault(key, value)
        return body


class BadRequest(QuackMeshError):
    status, code, title = 400, "bad_request", "Bad request"


class ValidationFailed(BadRequest):
    status, code, title = 422, "validation_failed", "Validation failed"


class AuthError(QuackMeshError):
    status, code, title = 401, "unauthorized", "Unauthorized"


class MissingAuth(AuthError):
    code, title = "missing_auth", "Missing signature headers"


class BadSignature(AuthError):
    code, title = "bad_signature", "Bad signature"


class StaleRequest(AuthError):
    code, title = "stale_request", "Request timestamp outside the allowed window"


class ReplayedNonce(AuthError):
    code, title = "replayed_nonce", "Nonce already used"


class InsufficientBalance(QuackMeshError):
    status, code, title = 402, "insufficient_balance", "Insufficient balance"


class Forbidden(QuackMeshError):
    status, code, title = 403, "forbidden", "Forbidden"


class DevModeOnly(Forbidden):
    code, title = "dev_mode_only", "Only available in development mode"


class CsrfFailed(Forbidden):
    code, title = "csrf_failed", "CSRF token missing or wrong"


class NotFound(QuackMeshError):
    status, code, title = 404, "not_found", "Not found"


class JobNotFound(NotFound):
    code, title = "job_not_found", "Job not found"


class TaskNotFound(NotFound):
    code, title = "task_not_found", "Task not found"


class NodeNotFound(NotFound):
    code, title = "node_not_found", "Node not found"


class BlobNotFound(NotFound):
    code, title = "blob_not_found", "Blob not found"


class Conflict(QuackMeshError):
    status, code, title = 409, "conflict", "Conflict"


class InvalidState(Conflict):
    code, title = "invalid_state", "Invalid state for this operation"


class LeaseLost(Conflict):
    code, title = "lease_lost", "Lease expired or no longer held"


class PayloadTooLarge(QuackMeshError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class RateLimited(QuackMeshError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **context: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **context)
        self.retry_after = retry_after


class LedgerInvariantBroken(QuackMeshError):
    status, code, title = 500, "ledger_invariant_broken", "Ledger invariant broken"


class ChainError(QuackMeshError):
    status, code, title = 502, "chain_error", "Chain error"


class ChainReverted(ChainError):
    status, code, title = 409, "chain_reverted", "Chain call reverted"


class ChainDisabled(NotFound):
    code, title = "chain_disabled", "This coordinator does not settle on a chain"


class Unavailable(QuackMeshError):
    status, code, title = 503, "unavailable", "Service unavailable"


def _all_subclasses(cls: type[QuackMeshError]) -> list[type[QuackMeshError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def error_class_for_code(code: str) -> type[QuackMeshError]:
    """Map a problem ``code`` back to its class (``QuackMeshError`` when unknown)."""
    for cls in _all_subclasses(QuackMeshError):
        if cls.code == code:
            return cls
    return QuackMeshError
