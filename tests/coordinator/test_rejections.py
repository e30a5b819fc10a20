"""Every bad input is a clear 4xx problem+json, and nothing is charged or written."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import numpy as np
import pytest

from quackmesh.core.errors import (
    BlobNotFound,
    DevModeOnly,
    Forbidden,
    InsufficientBalance,
    PayloadTooLarge,
    RateLimited,
    ValidationFailed,
)
from quackmesh.core.signing import sign_request
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

from .conftest import BASE, Net

CSV = "x,y\n1,3\n2,5\n3,7\n4,9\n"


def assert_nothing_written(net: Net, client_balance: int, client, journal_before: int) -> None:  # type: ignore[no-untyped-def]
    assert client.balance().available == client_balance
    assert client.list_jobs() == []
    assert net.journal_count() == journal_before


@pytest.mark.parametrize(
    ("kind", "params", "data", "field"),
    [
        ("ml.nope", {}, CSV, "kind"),
        ("ml.kmeans", {"n_clusters": 0}, CSV, "n_clusters"),
        ("ml.kmeans", {"n_clusters": 2, "colour": "blue"}, CSV, "colour"),
        ("ml.kmeans", {"n_clusters": 9}, CSV, None),  # more clusters than rows
        ("ml.linear_regression", {"target": "price"}, CSV, None),  # no such column
        ("ml.linear_regression", {"target": "y"}, "x,y\n1,a\n2,b\n", None),  # not numeric
        ("ml.pca", {"n_components": 5}, CSV, None),  # more components than features
        ("ml.linear_regression", {"target": "y"}, "\x00\x01garbage\xff", None),
    ],
)
def test_submit_rejects_bad_spec_or_data_without_charging(
    net: Net, kind: str, params: dict[str, object], data: str, field: str | None
) -> None:
    client = net.funded(1_000_000)
    before = net.journal_count()
    path = net.tmp / "data.csv"
    path.write_bytes(data.encode("latin-1"))
    with pytest.raises(ValidationFailed) as err:
        client.submit(kind, data=path, params=params, max_price=1_000)
    assert err.value.detail
    if field:
        assert field in json.dumps(err.value.to_problem())
    assert_nothing_written(net, 1_000_000, client, before)


def test_npz_with_object_arrays_is_refused_without_unpickling(net: Net) -> None:
    client = net.funded(1_000_000)
    before = net.journal_count()
    path = net.tmp / "evil.npz"
    np.savez(path, X=np.array([{"a": 1}, {"b": 2}], dtype=object))
    with pytest.raises(ValidationFailed):
        client.submit("ml.pca", data=path, params={"n_components": 1}, max_price=1_000)
    assert_nothing_written(net, 1_000_000, client, before)


def test_submit_with_someone_elses_blob_is_404(net: Net) -> None:
    other = net.client()
    sha = other.upload(CSV.encode()).sha256
    client = net.funded(1_000_000)
    with pytest.raises(BlobNotFound):
        client.submit(
            "ml.linear_regression", inputs={"data": sha}, params={"target": "y"}, max_price=1_000
        )


def test_insufficient_balance_is_402_and_writes_nothing(net: Net) -> None:
    client = net.funded(999)
    before = net.journal_count()
    with pytest.raises(InsufficientBalance):
        client.submit(
            "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
        )
    assert_nothing_written(net, 999, client, before)


def test_wrong_input_names_are_422(net: Net) -> None:
    client = net.funded()
    sha = client.upload(CSV.encode()).sha256
    with pytest.raises(ValidationFailed, match=r"missing input 'data'"):
        client.submit(
            "ml.linear_regression",
            inputs={"training": sha},
            params={"target": "y"},
            max_price=1_000,
        )


def test_malformed_body_is_422_problem_json(net: Net) -> None:
    wallet = Wallet.create()
    body = b'{"kind": "ml.kmeans", "inputs": {}, "max_price": -5}'
    headers = sign_request(wallet.private_key, method="POST", path="/v1/jobs", body=body).as_dict()
    response = net.tc.post(
        "/v1/jobs", content=body, headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_failed" and "max_price" in problem["detail"]


# --- authentication -----------------------------------------------------------------------


def _signed(wallet: Wallet, method: str, path: str, body: bytes = b"", **kw: int) -> dict[str, str]:
    return sign_request(wallet.private_key, method=method, path=path, body=body, **kw).as_dict()


def test_unsigned_request_is_401_missing_auth(net: Net) -> None:
    response = net.tc.get("/v1/balance")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "missing_auth"


def test_forged_signature_is_401(net: Net) -> None:
    victim, attacker = Wallet.create(), Wallet.create()
    headers = _signed(attacker, "GET", "/v1/balance")
    headers["X-QuackMesh-Address"] = victim.address
    response = net.tc.get("/v1/balance", headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"


def test_tampered_body_or_path_is_401(net: Net) -> None:
    wallet = Wallet.create()
    body = json.dumps({"amount": 5}).encode()
    headers = _signed(wallet, "POST", "/v1/faucet", body)
    tampered = json.dumps({"amount": 5_000_000}).encode()
    response = net.tc.post("/v1/faucet", content=tampered, headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"
    headers = _signed(wallet, "GET", "/v1/jobs?limit=1")
    response = net.tc.get("/v1/jobs?limit=2", headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"


# +75, not +61: the timestamp is truncated to a whole second and a loaded machine may take
# a while between signing and checking, so +61 can land inside the 60 s window.
@pytest.mark.parametrize("skew", [-61, 75, -3600])
def test_stale_or_future_timestamp_is_401(net: Net, skew: int) -> None:
    wallet = Wallet.create()
    headers = _signed(wallet, "GET", "/v1/balance", timestamp=int(time.time()) + skew)
    response = net.tc.get("/v1/balance", headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "stale_request"


def test_replayed_request_is_401(net: Net) -> None:
    wallet = Wallet.create()
    headers = _signed(wallet, "GET", "/v1/balance")
    assert net.tc.get("/v1/balance", headers=headers).status_code == 200
    replay = net.tc.get("/v1/balance", headers=headers)
    assert replay.status_code == 401 and replay.json()["code"] == "replayed_nonce"


# --- limits, capabilities, dev mode ------------------------------------------------------------


def test_read_rate_limit_answers_429_with_retry_after(net_factory: Callable[..., Net]) -> None:
    net = net_factory(rate_read_per_s=0.1, rate_read_burst=3)
    client = net.client()
    for _ in range(3):
        client.balance()
    wallet = client.wallet
    response = net.tc.get("/v1/balance", headers=_signed(wallet, "GET", "/v1/balance"))
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["code"] == "rate_limited"


def test_submit_rate_limit_is_per_address(net_factory: Callable[..., Net]) -> None:
    net = net_factory(rate_submit_per_s=0.01, rate_submit_burst=2)
    first, second = net.client(), net.client()
    first.faucet(10)
    first.faucet(10)
    impatient = Client(BASE, first.wallet, transport=net.tc._transport, max_retries=0)
    with pytest.raises(RateLimited) as err:
        impatient.faucet(10)
    assert err.value.retry_after >= 1
    second.faucet(10)  # another address has its own bucket


def test_faucet_refused_outside_development_mode(net_factory: Callable[..., Net]) -> None:
    net = net_factory(dev_mode=False)
    with pytest.raises(DevModeOnly):
        net.client().faucet(1_000)


def test_upload_over_limit_is_413(net_factory: Callable[..., Net]) -> None:
    net = net_factory(max_upload_bytes=64)
    with pytest.raises(PayloadTooLarge):
        net.client().upload(b"x" * 65)


def test_capability_url_is_scoped_to_its_reader_and_expires(net: Net) -> None:
    client = net.funded()
    client.submit("ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000)
    holder, other = net.node(), net.node()
    lease = holder.lease(max_tasks=1, wait_s=0).tasks[0]
    ref = lease.inputs[0]
    got = holder.download(ref.url, net.tmp / "in.csv", sha256=ref.sha256)
    assert hashlib.sha256(got.read_bytes()).hexdigest() == ref.sha256
    with pytest.raises(Forbidden):
        other.download(ref.url, net.tmp / "stolen.csv", sha256=ref.sha256)
    expired = ref.url.replace("exp=", "exp=1")  # a different expiry breaks the MAC
    with pytest.raises(Forbidden):
        holder.download(expired, net.tmp / "x.csv", sha256=ref.sha256)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        holder.download(ref.url, net.tmp / "y.csv", sha256="0" * 64)


def test_unsigned_upload_is_refused_before_anything_is_stored(net: Net) -> None:
    response = net.tc.post(
        "/v1/blobs", content=b"x" * 1000, headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 401 and response.json()["code"] == "missing_auth"
    leftovers = [p for p in net.rt.blobs.root.rglob("*") if p.is_file()]
    assert leftovers == []


def test_upload_signed_by_one_key_for_another_address_is_401(net: Net) -> None:
    victim, attacker = Wallet.create(), Wallet.create()
    body = b"payload"
    headers = sign_request(
        attacker.private_key, method="POST", path="/v1/blobs", body=body
    ).as_dict()
    headers["X-QuackMesh-Address"] = victim.address
    response = net.tc.post("/v1/blobs", content=body, headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"
    assert [p for p in net.rt.blobs.root.rglob("*") if p.is_file()] == []


def test_resubmitting_the_same_data_reuses_validation_but_not_ownership(net: Net) -> None:
    owner = net.funded()
    sha = owner.upload(CSV.encode()).sha256
    first = owner.submit(
        "ml.linear_regression", inputs={"data": sha}, params={"target": "y"}, max_price=1_000
    )
    second = owner.submit(
        "ml.linear_regression", inputs={"data": sha}, params={"target": "y"}, max_price=1_000
    )
    assert first.units == second.units == 1
    with pytest.raises(BlobNotFound):  # the cache never lets a stranger use someone's blob
        net.funded().submit(
            "ml.linear_regression", inputs={"data": sha}, params={"target": "y"}, max_price=1_000
        )
    with pytest.raises(ValidationFailed):  # other params are validated afresh
        owner.submit(
            "ml.linear_regression", inputs={"data": sha}, params={"target": "z"}, max_price=1_000
        )
