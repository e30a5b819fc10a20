"""Errors raised by secure aggregation (Bonawitz et al., CCS'17, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning").

Every error is a :class:`ValueError` (bad input, never a bug in the caller's runtime), with a
stable machine-readable ``code`` and its context as keyword arguments::

    SecAggError (ValueError)          secagg_error
    ├── BadEncoding                   secagg_bad_encoding       (base64/hex, lengths, ids)
    ├── DecryptionFailed              secagg_decryption_failed  (wrong key/round, tampered)
    ├── InconsistentShares            secagg_inconsistent_shares (secret fails its check)
    ├── ProtocolViolation             secagg_protocol_violation (e.g. reveal b and s_sk)
    └── TooFewParticipants            secagg_too_few            (below the threshold t)
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadEncoding",
    "DecryptionFailed",
    "InconsistentShares",
    "ProtocolViolation",
    "SecAggError",
    "TooFewParticipants",
]


class SecAggError(ValueError):
    """Root of every secure-aggregation error."""

    code: ClassVar[str] = "secagg_error"

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


class BadEncoding(SecAggError):
    """Malformed wire data: base64/hex, byte lengths, vector lengths, ids."""

    code = "secagg_bad_encoding"


class DecryptionFailed(SecAggError):
    """An AES-GCM ciphertext did not authenticate (wrong key, round, ids, or tampering)."""

    code = "secagg_decryption_failed"


class InconsistentShares(SecAggError):
    """Shamir shares that do not reconstruct the committed secret."""

    code = "secagg_inconsistent_shares"


class ProtocolViolation(SecAggError):
    """A request a client must refuse, or inputs that contradict the protocol."""

    code = "secagg_protocol_violation"


class TooFewParticipants(SecAggError):
    """Fewer survivors, reveals or shares than the threshold ``t``."""

    code = "secagg_too_few"
