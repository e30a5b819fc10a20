"""Fixtures for the contract tests: DuckToken and Vault on titanoboa's in-process EVM.

Each test runs inside ``boa.env.anchor()``, so the chain (balances, time) it changes is
rolled back afterwards. Keys are fixed (derived from a label), so failures reproduce.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boa
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from quackmesh.contracts import source

from .support import ESCAPE_PERIOD_S, ONE_DUCK


def key(label: str) -> LocalAccount:
    """A deterministic test account."""
    account: LocalAccount = Account.from_key(keccak(text=f"quackmesh-test:{label}"))
    return account


@pytest.fixture(autouse=True)
def _isolated_chain() -> Iterator[None]:
    with boa.env.anchor():
        yield


@pytest.fixture(scope="session")
def token_deployer() -> Any:
    return boa.loads_partial(source("DuckToken"), name="DuckToken")


@pytest.fixture(scope="session")
def vault_deployer() -> Any:
    return boa.loads_partial(source("Vault"), name="Vault")


@pytest.fixture
def minter() -> str:
    return str(key("minter").address)


@pytest.fixture
def operator() -> str:
    return str(key("operator").address)


@pytest.fixture
def signer() -> LocalAccount:
    return key("signer")


@pytest.fixture
def alice() -> LocalAccount:
    return key("alice")


@pytest.fixture
def bob() -> LocalAccount:
    return key("bob")


@pytest.fixture
def token(token_deployer: Any, minter: str) -> Any:
    with boa.env.prank(minter):
        return token_deployer.deploy()


@pytest.fixture
def vault(vault_deployer: Any, token: Any, operator: str, signer: LocalAccount, minter: str) -> Any:
    vault = vault_deployer.deploy(token.address, operator, signer.address, ESCAPE_PERIOD_S)
    with boa.env.prank(minter):
        for label in ("alice", "bob"):
            token.mint(key(label).address, 1_000 * ONE_DUCK)
    return vault
