"""quackmesh.core: money, signing, wallets, the error hierarchy, exported names."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quackmesh.core import errors
from quackmesh.core.money import UNIT, format_duck, parse_duck
from quackmesh.core.signing import NonceCache, sign_request, verify_request
from quackmesh.core.wallet import Wallet, WalletError


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("1", UNIT),
        ("1.5", 1_500_000),
        ("0.000001", 1),
        ("2 DUCK", 2 * UNIT),
        ("1_000", 1000 * UNIT),
    ],
)
def test_parse_duck(text: str, micro: int) -> None:
    assert parse_duck(text) == micro


@pytest.mark.parametrize("bad", ["-1", "0.0000001", "abc", "nan", "inf", ""])
def test_parse_duck_refuses_what_would_lose_money(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duck(bad)


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_format_then_parse_round_trips(micro: int) -> None:
    text = format_duck(micro, symbol=False)
    assert (parse_duck(text.lstrip("-")) * (-1 if micro < 0 else 1)) == micro


def _verify(
    headers: dict[str, str],
    *,
    body: bytes = b"{}",
    path: str = "/v1/x",
    nonces: NonceCache | None = None,
    now: float | None = None,
) -> str:
    return verify_request(
        headers,
        method="POST",
        path=path,
        body=body,
        window=60,
        nonces=nonces or NonceCache(120),
        now=now,
    )


def test_signed_request_verifies_to_its_address() -> None:
    wallet = Wallet.create()
    headers = sign_request(wallet.private_key, method="POST", path="/v1/x", body=b"{}").as_dict()
    assert _verify(headers) == wallet.address


def test_signature_over_streamed_hash_equals_signature_over_body() -> None:
    import hashlib

    wallet = Wallet.create()
    body = b"some file contents"
    headers = sign_request(
        wallet.private_key,
        method="POST",
        path="/v1/x",
        body_sha256=hashlib.sha256(body).hexdigest(),
    )
    assert _verify(headers.as_dict(), body=body) == wallet.address


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda h: h.pop("X-QuackMesh-Signature"), errors.MissingAuth),
        (lambda h: h.update({"X-QuackMesh-Signature": "0x" + "ab" * 65}), errors.BadSignature),
        (lambda h: h.update({"X-QuackMesh-Signature": "nonsense"}), errors.BadSignature),
        (lambda h: h.update({"X-QuackMesh-Address": Wallet.create().address}), errors.BadSignature),
        (lambda h: h.update({"X-QuackMesh-Address": "0x123"}), errors.BadSignature),
        (lambda h: h.update({"X-QuackMesh-Nonce": "short"}), errors.BadSignature),
        (lambda h: h.update({"X-QuackMesh-Timestamp": "soon"}), errors.BadSignature),
    ],
)
def test_bad_headers_are_rejected(mutate, error: type[Exception]) -> None:  # type: ignore[no-untyped-def]
    headers = sign_request(
        Wallet.create().private_key, method="POST", path="/v1/x", body=b"{}"
    ).as_dict()
    mutate(headers)
    with pytest.raises(error):
        _verify(headers)


def test_other_method_path_or_body_breaks_the_signature() -> None:
    headers = sign_request(
        Wallet.create().private_key, method="POST", path="/v1/x", body=b"{}"
    ).as_dict()
    with pytest.raises(errors.BadSignature):
        _verify(headers, body=b"{ }")
    with pytest.raises(errors.BadSignature):
        _verify(headers, path="/v1/y")


def test_clock_window_and_replay() -> None:
    wallet = Wallet.create()
    now = time.time()
    old = sign_request(
        wallet.private_key, method="POST", path="/v1/x", body=b"{}", timestamp=int(now) - 61
    ).as_dict()
    with pytest.raises(errors.StaleRequest):
        _verify(old, now=now)
    nonces = NonceCache(120)
    fresh = sign_request(wallet.private_key, method="POST", path="/v1/x", body=b"{}").as_dict()
    _verify(fresh, nonces=nonces)
    with pytest.raises(errors.ReplayedNonce):
        _verify(fresh, nonces=nonces)


def test_nonce_cache_forgets_after_ttl_and_is_bounded() -> None:
    cache = NonceCache(ttl=10, max_entries=3)
    assert cache.add("a", "n1", now=0)
    assert not cache.add("a", "n1", now=5)
    assert cache.add("a", "n1", now=20)  # expired, so it is new again (the clock check guards it)
    for i in range(10):
        cache.add("a", f"m{i}", now=21)
    assert len(cache._seen) <= 3


def test_wallet_keystore_round_trip_and_errors(tmp_path: Path) -> None:
    wallet = Wallet.create()
    path = wallet.save(tmp_path / "w.json", "pw", kdf="pbkdf2")
    assert path.stat().st_mode & 0o777 == 0o600
    keystore = json.loads(path.read_text())
    assert keystore["version"] == 3 and keystore["address"].lower() == wallet.address[2:].lower()
    assert Wallet.load(path, "pw").address == wallet.address
    with pytest.raises(WalletError, match="wrong password"):
        Wallet.load(path, "nope")
    with pytest.raises(WalletError, match="refusing to overwrite"):
        wallet.save(path, "pw")
    with pytest.raises(WalletError, match="no wallet"):
        Wallet.load(tmp_path / "missing.json", "pw")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(WalletError, match="not a keystore"):
        Wallet.load(tmp_path / "junk.json", "pw")
    for text in ("{}", "[]", '{"crypto": 5}'):  # JSON, but no keystore
        (tmp_path / "other.json").write_text(text)
        with pytest.raises(WalletError, match="not a keystore"):
            Wallet.load(tmp_path / "other.json", "pw")


def test_every_error_code_is_unique_and_maps_back() -> None:
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.QuackMeshError)
    ]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert errors.error_class_for_code(cls.code) is cls
        assert 400 <= cls.status < 600
    assert errors.error_class_for_code("no_such_code") is errors.QuackMeshError


def test_problem_body_carries_context() -> None:
    body = errors.JobNotFound("no job x", job_id="x").to_problem()
    assert body == {
        "type": "/problems/job_not_found",
        "title": "Job not found",
        "status": 404,
        "code": "job_not_found",
        "detail": "no job x",
        "job_id": "x",
    }


@pytest.mark.parametrize(
    "module",
    [
        "quackmesh.core.errors",
        "quackmesh.core.signing",
        "quackmesh.core.money",
        "quackmesh.core.schemas",
        "quackmesh.workloads",
        "quackmesh.ledger",
        "quackmesh.sdk",
        "quackmesh.coordinator",
    ],
)
def test_all_is_sorted_and_complete(module: str) -> None:
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical.
    key = lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n)  # noqa: E731
    assert names == sorted(names, key=key), f"{module}.__all__ is not sorted"
    for name in names:
        assert hasattr(mod, name), f"{module}.__all__ names missing {name}"


def test_coincurve_signatures_interoperate_with_eth_account() -> None:
    """Our EIP-191 personal_sign is what MetaMask and eth_account produce and accept."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    from quackmesh.core.signing import address_of, personal_sign, recover_address

    wallet = Wallet.create()
    text = "QUACKMESH-REQUEST-V1\nPOST\n/v1/jobs\nabc\n1\nnonce"
    ours = personal_sign(wallet.private_key, text)
    theirs = Account.sign_message(encode_defunct(text=text), wallet.private_key).signature
    assert ours == bytes(theirs)
    assert Account.recover_message(encode_defunct(text=text), signature=ours) == wallet.address
    assert recover_address(text, bytes(theirs)) == wallet.address
    assert address_of(wallet.private_key) == wallet.address
