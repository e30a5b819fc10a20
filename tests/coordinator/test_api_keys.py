"""Gateway API keys: made by a signed wallet, shown once, stored hashed, revocable; the CLI."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from quackmesh.cli.exit_codes import ExitCode
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.cli.main import app
from quackmesh.coordinator.db.models import ApiKey
from quackmesh.core.errors import Conflict, NotFound
from quackmesh.core.schemas import Hardware, NodeRegister, ServedModel
from tests.coordinator.conftest import Net
from tests.e2e.conftest import e2e_settings

MODEL = ServedModel(name="tiny-lm", task="generate", price=1_000, context_len=128)


def _chat(net: Net, key: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    body = {"model": MODEL.name, "messages": [{"role": "user", "content": "hi"}]}
    response = net.tc.post("/v1/chat/completions", json=body, headers=headers)
    return response.status_code, response.json()


def _serving_node(net: Net) -> None:
    """A staked node serving MODEL that never polls: requests wait, then give up (503)."""
    node = net.client()
    node.register_node(
        NodeRegister(
            name="idle",
            hardware=Hardware(cpu_cores=1, ram_bytes=2**30),
            price_per_unit=1,
            slots=1,
            workloads=["ml.kmeans"],
            models=[MODEL],
        )
    )
    node.faucet(net.rt.settings.min_stake)
    node.stake(net.rt.settings.min_stake)


@pytest.fixture
def keynet(net_factory: Callable[..., Net]) -> Net:
    return net_factory(inference_queue_s=0.2, inference_max_keys=3)


def test_a_key_is_shown_once_and_stored_as_its_sha256_only(keynet: Net) -> None:
    client = keynet.client()
    created = client.api_key_create("laptop")
    assert created.key.startswith("sk-qm-")
    assert len(created.key) - len("sk-qm-") >= 32
    assert created.key.startswith(created.prefix) and len(created.prefix) < 16
    assert (created.name, created.address, created.revoked) == ("laptop", client.address, False)
    with keynet.rt.reads() as session:
        row = session.get(ApiKey, created.id)
        assert row is not None
        assert row.key_sha256 == hashlib.sha256(created.key.encode()).hexdigest()
        stored = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
    assert all(created.key not in value for value in stored)
    (listed,) = client.api_key_list()
    assert listed.id == created.id and not hasattr(listed, "key")
    assert "key" not in listed.model_dump()


def test_a_key_pays_from_its_wallet_and_records_its_last_use(keynet: Net) -> None:
    _serving_node(keynet)
    client = keynet.funded()
    key = client.api_key_create().key
    status, body = _chat(keynet, key)
    assert status == 503 and body["error"]["code"] == "no_node_available"  # type: ignore[index]
    (listed,) = client.api_key_list()
    assert listed.last_used_at is not None
    deadline = time.monotonic() + 20
    while client.balance().available != 10_000_000:  # the reservation comes back (async)
        assert time.monotonic() < deadline, "the reservation was not refunded"
        time.sleep(0.02)


def test_revoked_and_unknown_keys_are_refused(keynet: Net) -> None:
    _serving_node(keynet)
    owner, other = keynet.funded(), keynet.client()
    key = owner.api_key_create("ci")
    assert _chat(keynet, key.key)[0] == 503  # accepted (then no node free)
    with pytest.raises(NotFound):
        other.api_key_revoke(key.id)  # someone else's key is not found, not forbidden
    revoked = owner.api_key_revoke(key.id)
    assert revoked.revoked and revoked.id == key.id
    status, body = _chat(keynet, key.key)
    assert status == 401
    assert body["error"] == {  # type: ignore[comparison-overlap]
        "message": body["error"]["message"],  # type: ignore[index]
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert "revoked" in body["error"]["message"]  # type: ignore[index]
    assert _chat(keynet, "sk-qm-" + "x" * 43)[0] == 401
    assert _chat(keynet, "not-even-a-key")[0] == 401
    assert _chat(keynet, None)[1]["error"]["code"] == "missing_api_key"  # type: ignore[index]
    assert [k.revoked for k in owner.api_key_list()] == [True]


def test_key_endpoints_need_a_signature_and_validate(keynet: Net) -> None:
    unsigned = keynet.tc.post("/v1/keys", json={"name": "x"})
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "missing_auth"
    client = keynet.client()
    too_long = client._http.post("/v1/keys", json={"name": "n" * 65})  # signed, not checked
    assert too_long.status_code == 422 and too_long.json()["code"] == "validation_failed"
    for _ in range(3):
        client.api_key_create()
    with pytest.raises(Conflict, match="active API keys"):
        client.api_key_create()
    first = client.api_key_list()[-1]
    client.api_key_revoke(first.id)
    client.api_key_create()  # room again after a revocation
    unsigned_revoke = keynet.tc.delete(f"/v1/keys/{first.id}")
    assert unsigned_revoke.status_code == 401


# --- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("QUACKMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUACKMESH_WALLET_PASSWORD", "correct horse")
    monkeypatch.delenv("QUACKMESH_WALLET", raising=False)
    return CliRunner()


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[LocalNetwork]:
    net = LocalNetwork(e2e_settings(tmp_path / "coordinator"))
    net.start_coordinator_thread()
    try:
        yield net
    finally:
        net.stop()


def test_keys_cli_creates_lists_and_revokes(cli: CliRunner, coordinator: LocalNetwork) -> None:
    url = ["--coordinator", coordinator.url]
    assert cli.invoke(app, ["wallet", "new"]).exit_code == 0

    made = cli.invoke(app, ["keys", "create", "--name", "ci", "--json", *url])
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    assert created["key"].startswith("sk-qm-") and created["name"] == "ci"

    shown = cli.invoke(app, ["keys", "create", *url])
    assert shown.exit_code == 0
    assert "sk-qm-" in shown.stdout and "will not be shown again" in shown.output

    listed = cli.invoke(app, ["keys", "list", *url])
    assert listed.exit_code == 0
    assert created["id"] in listed.stdout and created["key"] not in listed.stdout
    assert listed.stdout.count("active") == 2

    gone = cli.invoke(app, ["keys", "revoke", created["id"], *url])
    assert gone.exit_code == 0 and f"revoked {created['id']}" in gone.stdout
    rows = json.loads(cli.invoke(app, ["keys", "list", "--json", *url]).stdout)
    assert {r["id"]: r["revoked"] for r in rows}[created["id"]] is True

    missing = cli.invoke(app, ["keys", "revoke", "key_nope", *url])
    assert missing.exit_code == ExitCode.REJECTED
    assert "no API key" in missing.output and "Traceback" not in missing.output


def test_db_holds_keys_per_wallet(keynet: Net) -> None:
    a, b = keynet.client(), keynet.client()
    a.api_key_create("a1")
    b.api_key_create("b1")
    with keynet.rt.reads() as session:
        owners = sorted(session.scalars(select(ApiKey.address)))
    assert owners == sorted([a.address, b.address])
    assert [k.name for k in a.api_key_list()] == ["a1"]
