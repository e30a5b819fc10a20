"""Webhook signatures: how the coordinator signs a delivery and how a receiver checks it.

Every delivery is an HTTP ``POST`` whose body is the event as canonical JSON (keys sorted,
no whitespace: ``json.dumps(event, separators=(",", ":"), sort_keys=True)``), with these
headers::

    Content-Type:         application/json
    QuackMesh-Event:      job.succeeded            the event type
    QuackMesh-Event-Id:   1234                     the event's id in the event log
    QuackMesh-Delivery:   87                       this delivery's id (same on every retry)
    QuackMesh-Timestamp:  1767225600               unix seconds when this attempt was signed
    QuackMesh-Signature:  v1=<64 lower-case hex digits>

The signature is the lower-case hex HMAC-SHA256, keyed with the webhook's secret (the
whole string as UTF-8, ``whsec_`` prefix included), of the timestamp, a dot and the raw
body bytes::

    v1 = hex(HMAC_SHA256(key=secret, msg=f"{timestamp}.".encode() + body))

Test vector: secret ``whsec_example``, timestamp ``1767225600`` and body ``{"id":1}`` sign
as ``v1=e4112245f1fdd792dec55e622a06416583e2b877b7ed40b7200e35bea906dc7e``.

The header may carry several comma-separated ``v1=`` values (so a secret can be rotated
while both the old and the new one are in use); a receiver accepts the delivery when any
of them matches. Schemes other than ``v1`` are ignored, which leaves room for a future
version. To check a delivery, a receiver must

1. take the body exactly as received (before any JSON parsing or re-encoding),
2. recompute the HMAC and compare in constant time (``hmac.compare_digest``),
3. refuse timestamps more than a few minutes (300 s by default) from its own clock, so a
   captured delivery cannot be replayed later, and
4. treat ``QuackMesh-Event-Id`` as the idempotency key: delivery is at-least-once, and a
   retry after a lost response repeats the same event.

This is the scheme of Stripe's ``Stripe-Signature`` (``t=…,v1=…``) with the timestamp in
its own header, as Standard Webhooks does; :func:`verify` below is the reference check.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "HEADER_DELIVERY",
    "HEADER_EVENT",
    "HEADER_EVENT_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "SCHEME",
    "delivery_headers",
    "sign",
    "signed_payload",
    "verify",
]

HEADER_TIMESTAMP = "QuackMesh-Timestamp"
HEADER_SIGNATURE = "QuackMesh-Signature"
HEADER_EVENT = "QuackMesh-Event"
HEADER_EVENT_ID = "QuackMesh-Event-Id"
HEADER_DELIVERY = "QuackMesh-Delivery"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
MAX_SIGNATURES = 8  # a rotation needs two; more is a malformed (or hostile) header


def signed_payload(*, timestamp: int, body: bytes) -> bytes:
    """The bytes the HMAC covers: ``b"<timestamp>." + body``."""
    return f"{timestamp}.".encode() + body


def _digest(secret: str, *, timestamp: int, body: bytes) -> str:
    payload = signed_payload(timestamp=timestamp, body=body)
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def sign(secret: str, *, timestamp: int, body: bytes) -> str:
    """The ``QuackMesh-Signature`` header value for ``body`` sent at ``timestamp``:
    ``"v1=<hex>"``."""
    return f"{SCHEME}={_digest(secret, timestamp=timestamp, body=body)}"


def delivery_headers(
    secret: str,
    *,
    body: bytes,
    event_type: str,
    event_id: int,
    delivery_id: int,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Every QuackMesh header of one delivery attempt (signed now unless ``timestamp``)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        HEADER_EVENT: event_type,
        HEADER_EVENT_ID: str(event_id),
        HEADER_DELIVERY: str(delivery_id),
        HEADER_TIMESTAMP: str(ts),
        HEADER_SIGNATURE: sign(secret, timestamp=ts, body=body),
    }


def _candidates(signature_header: str) -> list[str]:
    out = []
    for item in signature_header.split(",")[:MAX_SIGNATURES]:
        scheme, sep, value = item.strip().partition("=")
        if sep and scheme.strip() == SCHEME:
            out.append(value.strip().lower())
    return out


def verify(
    secret: str,
    *,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when ``signature_header`` holds a ``v1`` signature of ``body`` by ``secret``
    and ``timestamp_header`` is within ``tolerance_s`` seconds of ``now`` (default: the
    clock). Missing or malformed headers are simply False, never an exception."""
    if not timestamp_header or not signature_header:
        return False
    text = timestamp_header.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return False
    timestamp = int(text)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _digest(secret, timestamp=timestamp, body=body)
    # Compare every candidate, without stopping at the first match: the time taken must
    # not depend on which (or how much) of a forged signature was right.
    ok = False
    for candidate in _candidates(signature_header):
        ok |= hmac.compare_digest(expected.encode(), candidate.encode("ascii", "replace"))
    return ok
