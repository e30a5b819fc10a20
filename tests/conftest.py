"""Shared fixtures: real SQLite files and a fresh database on the real PostgreSQL server."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Starlette's TestClient is built on httpx2 whenever httpx2 can be imported, and the SDK
# (which the tests hand the TestClient's transport) is built on httpx: the two transports
# do not mix. Nothing we depend on needs httpx2 (huggingface_hub is pinned to 1.x for
# that), but an environment may still carry it: keep the TestClient on httpx regardless.
if "starlette.testclient" not in sys.modules:
    sys.modules.setdefault("httpx2", None)  # type: ignore[arg-type]

PG_ADMIN_URL = os.environ.get(
    "QUACKMESH_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = bool(os.environ.get("CI"))
# Rich consoles read the width once, when created; pin it for every test (and every
# pytest-xdist worker) so CLI tables are never cut, whatever the order tests run in.
os.environ["COLUMNS"] = "200"


def _pg_unavailable(reason: str) -> None:
    # In CI the PostgreSQL backend must be tested: a missing server is a failure there.
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI but unavailable: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of the real PostgreSQL server on this machine."""
    try:
        import psycopg
    except ImportError as exc:
        _pg_unavailable(f"psycopg not installed: {exc}")
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        _pg_unavailable(str(exc))
    return PG_ADMIN_URL


def create_pg_database(admin_url: str) -> str:
    """Create a fresh, uniquely named database and return its SQLAlchemy URL."""
    import psycopg

    name = f"qm_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(admin_url: str, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    url = create_pg_database(pg_server)
    try:
        yield url
    finally:
        drop_pg_database(pg_server, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'quackmesh.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Parametrises a test over both database backends (the contract-test pattern)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'quackmesh.db'}"
        return
    admin = request.getfixturevalue("pg_server")
    url = create_pg_database(admin)
    try:
        yield url
    finally:
        drop_pg_database(admin, url)
