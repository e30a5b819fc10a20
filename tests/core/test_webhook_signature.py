"""The webhook signature scheme (quackmesh.core.webhooks): sign, verify, headers."""

from __future__ import annotations

import hashlib
import hmac
import importlib

import pytest

from quackmesh.core.webhooks import (
    HEADER_DELIVERY,
    HEADER_EVENT,
    HEADER_EVENT_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    delivery_headers,
    sign,
    signed_payload,
    verify,
)

SECRET = "whsec_example"
TS = 1_767_225_600
BODY = b'{"id":1}'


def test_sign_matches_the_documented_test_vector() -> None:
    expected = "v1=e4112245f1fdd792dec55e622a06416583e2b877b7ed40b7200e35bea906dc7e"
    assert sign(SECRET, timestamp=TS, body=BODY) == expected
    # …which is plain HMAC-SHA256 over "<timestamp>." + body, as a receiver would compute it.
    digest = hmac.new(SECRET.encode(), f"{TS}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert expected == f"v1={digest}"
    assert signed_payload(timestamp=TS, body=BODY) == b"1767225600." + BODY


def test_verify_accepts_a_fresh_signature() -> None:
    header = sign(SECRET, timestamp=TS, body=BODY)
    assert verify(
        SECRET, timestamp_header=str(TS), signature_header=header, body=BODY, now=TS + 299
    )
    assert verify(SECRET, timestamp_header=str(TS), signature_header=header, body=BODY, now=TS)


@pytest.mark.parametrize(
    ("secret", "ts", "body", "now"),
    [
        ("whsec_other", TS, BODY, TS),  # wrong secret
        (SECRET, TS, b'{"id":2}', TS),  # body changed
        (SECRET, TS + 1, BODY, TS),  # timestamp changed (it is signed too)
        (SECRET, TS, BODY, TS + 301),  # stale: replayed later than the tolerance
        (SECRET, TS, BODY, TS - 301),  # from the future
    ],
)
def test_verify_rejects_tampering_and_stale_timestamps(
    secret: str, ts: int, body: bytes, now: int
) -> None:
    header = sign(SECRET, timestamp=TS, body=BODY)
    assert not verify(secret, timestamp_header=str(ts), signature_header=header, body=body, now=now)


def test_verify_tolerance_is_configurable() -> None:
    header = sign(SECRET, timestamp=TS, body=BODY)
    kwargs = {"timestamp_header": str(TS), "signature_header": header, "body": BODY}
    assert not verify(SECRET, **kwargs, now=TS + 61, tolerance_s=60)
    assert verify(SECRET, **kwargs, now=TS + 3600, tolerance_s=3600)


def test_verify_accepts_any_of_several_v1_signatures_for_rotation() -> None:
    old = sign("whsec_old", timestamp=TS, body=BODY)
    new = sign("whsec_new", timestamp=TS, body=BODY)
    header = f"{old}, {new}"
    for secret in ("whsec_old", "whsec_new"):
        assert verify(secret, timestamp_header=str(TS), signature_header=header, body=BODY, now=TS)
    assert not verify(
        "whsec_gone", timestamp_header=str(TS), signature_header=header, body=BODY, now=TS
    )
    # Other schemes are ignored, so a future v2 can be sent next to v1.
    digest = new.removeprefix("v1=")
    v2_only = f"v2={digest}"
    assert not verify(
        "whsec_new", timestamp_header=str(TS), signature_header=v2_only, body=BODY, now=TS
    )
    assert verify(
        "whsec_new", timestamp_header=str(TS), signature_header=f"v2=xx,{new}", body=BODY, now=TS
    )


@pytest.mark.parametrize(
    ("timestamp_header", "signature_header"),
    [
        (None, "v1=00"),
        (str(TS), None),
        ("", "v1=00"),
        ("12.5", "SIG"),
        ("-1767225600", "SIG"),
        ("1767225600x", "SIG"),
        ("١٧٦٧٢٢٥٦٠٠", "SIG"),  # non-ASCII digits
        (str(TS), "v1"),
        (str(TS), "v1=é"),
        (str(TS), ""),
        (str(TS), "garbage"),
    ],
)
def test_verify_is_false_for_missing_or_malformed_headers(
    timestamp_header: str | None, signature_header: str | None
) -> None:
    if signature_header == "SIG":
        signature_header = sign(SECRET, timestamp=TS, body=BODY)
    assert not verify(
        SECRET,
        timestamp_header=timestamp_header,
        signature_header=signature_header,
        body=BODY,
        now=TS,
    )


def test_signature_is_hex_of_the_right_length_and_case_insensitive_on_verify() -> None:
    header = sign(SECRET, timestamp=TS, body=BODY)
    scheme, _, digest = header.partition("=")
    assert scheme == "v1" and len(digest) == 64 and digest == digest.lower()
    upper = f"v1={digest.upper()}"
    assert verify(SECRET, timestamp_header=str(TS), signature_header=upper, body=BODY, now=TS)


def test_delivery_headers_carry_event_ids_and_a_verifiable_signature() -> None:
    headers = delivery_headers(
        SECRET, body=BODY, event_type="job.succeeded", event_id=41, delivery_id=7, timestamp=TS
    )
    assert headers[HEADER_EVENT] == "job.succeeded"
    assert headers[HEADER_EVENT_ID] == "41"
    assert headers[HEADER_DELIVERY] == "7"
    assert headers[HEADER_TIMESTAMP] == str(TS)
    assert headers["Content-Type"] == "application/json"
    assert verify(
        SECRET,
        timestamp_header=headers[HEADER_TIMESTAMP],
        signature_header=headers[HEADER_SIGNATURE],
        body=BODY,
        now=TS,
    )
    # Signed now when no timestamp is given: verifiable against the real clock.
    fresh = delivery_headers(SECRET, body=BODY, event_type="x", event_id=1, delivery_id=1)
    assert verify(
        SECRET,
        timestamp_header=fresh[HEADER_TIMESTAMP],
        signature_header=fresh[HEADER_SIGNATURE],
        body=BODY,
    )


@pytest.mark.parametrize("module", ["quackmesh.core.webhooks", "quackmesh.core.webhook_schemas"])
def test_all_is_sorted_and_complete(module: str) -> None:
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    key = lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n)  # noqa: E731
    assert names == sorted(names, key=key), f"{module}.__all__ is not sorted"
    for name in names:
        assert hasattr(mod, name), f"{module}.__all__ names missing {name}"
