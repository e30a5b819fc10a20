"""The coordinator's connection to its chain: the operator key, DuckToken and the Vault.

``open_link(settings)`` builds it at start:

* ``chain = "local"`` — an in-process EVM (py-evm). DuckToken and the Vault are deployed
  at start with the operator as minter, operator and voucher signer. The chain lives in
  this process: it is gone when the coordinator stops, so a database that settled
  against an earlier local chain is refused (see :func:`bind_state`).
* ``chain = <JSON-RPC URL>`` — the deployment recorded by ``quackmesh chain deploy``
  (``chain_deployment``, default ``home/chain.json``) and the operator key from an
  encrypted keystore (``chain_key_file`` + ``chain_key_password[_file]``).

The operator key posts roots, signs vouchers and (for the development faucet and the
gasless relays) pays gas; it must be the Vault's ``operator`` and ``signer``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from quackmesh.contracts import compile_contract
from quackmesh.coordinator.db.models import ChainState
from quackmesh.coordinator.settings import Settings
from quackmesh.core.errors import ChainError, QuackMeshError
from quackmesh.core.ids import normalize_address
from quackmesh.core.wallet import Wallet, WalletError
from quackmesh.ledger.chain import ChainClient, redact_url
from quackmesh.ledger.deployment import DEFAULT_ESCAPE_PERIOD_S, Deployment, deploy_contracts

__all__ = [
    "ChainLink",
    "approve_vault",
    "bind_state",
    "open_link",
]

MAX_UINT256 = 2**256 - 1


@dataclass
class ChainLink:
    """One chain, one operator key, the two contracts; thread-safe (one lock for the
    in-process EVM, which py-evm does not make safe to share between threads)."""

    client: ChainClient
    token: Any  # web3 contract objects
    vault: Any
    deployment: Deployment
    local: bool
    key: bytes = field(repr=False)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def operator(self) -> str:
        return self.client.address

    @property
    def vault_address(self) -> str:
        return self.deployment.vault

    def head(self) -> int:
        with self.lock:
            return int(self.client.w3.eth.block_number)

    def safe_head(self) -> int:
        with self.lock:
            return self.client.safe_head()

    def block_time(self, number: int) -> int:
        with self.lock:
            return int(self.client.w3.eth.get_block(number)["timestamp"])

    def transact(self, fn: Any) -> Any:
        """The operator's transaction, mined and checked. Not waiting for confirmations:
        the coordinator acts on events only from the safe head, so its own transactions
        need not block a request until they are deep."""
        with self.lock:
            return self.client.transact(fn, confirm=False)

    def call(self, fn: Any) -> Any:
        with self.lock:
            return self.client.call(fn)

    def logs(self, event: Any, *, from_block: int, to_block: int) -> list[Any]:
        with self.lock:
            return self.client.logs(event, from_block=from_block, to_block=to_block)

    def vault_balance(self) -> int:
        return int(self.call(self.token.functions.balanceOf(self.vault_address)))

    def mine(self) -> None:
        """Local chain only: seal an empty block, so time-based checks (voucher expiry)
        see the clock move even when nobody transacts."""
        if self.local:
            with self.lock:
                self.client.w3.provider.ethereum_tester.mine_blocks(1)


def _operator_key(settings: Settings) -> bytes:
    if settings.chain_key_file is None:
        raise ChainError("chain mode with a JSON-RPC URL needs QUACKMESH_CHAIN_KEY_FILE")
    password = settings.chain_key_password
    if password is None and settings.chain_key_password_file is not None:
        try:
            password = settings.chain_key_password_file.read_text().strip()
        except OSError as exc:
            raise ChainError(f"cannot read the keystore password file: {exc}") from exc
    if password is None:
        raise ChainError(
            "the operator keystore needs QUACKMESH_CHAIN_KEY_PASSWORD "
            "or QUACKMESH_CHAIN_KEY_PASSWORD_FILE"
        )
    try:
        return Wallet.load(settings.chain_key_file, password).private_key
    except WalletError as exc:
        raise ChainError(str(exc)) from exc


def open_link(settings: Settings) -> ChainLink | None:
    """The chain the settings name (None when ``chain`` is ``off``); deploys on ``local``."""
    if not settings.chain_enabled:
        return None
    import importlib.util

    missing = [m for m in ("web3", "vyper", "eth_tester") if importlib.util.find_spec(m) is None]
    if missing:
        raise ChainError(
            f"chain mode needs the chain extra ({', '.join(missing)} missing): "
            "pip install 'quackmesh[chain]' (or -e '.[chain]' in a checkout)"
        )
    token_artifact, vault_artifact = compile_contract("DuckToken"), compile_contract("Vault")
    if settings.chain_is_local:
        key = Wallet.create().private_key
        client = ChainClient.local(key)
        token, vault, deployment = deploy_contracts(client, escape_period_s=DEFAULT_ESCAPE_PERIOD_S)
        local = True
    else:
        url = settings.chain.strip()
        if not url.startswith(("http://", "https://")):
            raise ChainError(f"chain must be off, local or an http(s) JSON-RPC URL, not {url!r}")
        key = _operator_key(settings)
        client = ChainClient.connect(url, key, confirmations=settings.chain_confirmations)
        deployment = Deployment.read(settings.resolved_chain_deployment())
        if deployment.chain_id != client.chain_id:
            raise ChainError(
                f"the deployment record is for chain {deployment.chain_id}, "
                f"the node at {redact_url(url)} is chain {client.chain_id}"
            )
        token = client.at(token_artifact, deployment.token)
        vault = client.at(vault_artifact, deployment.vault)
        local = False
    link = ChainLink(
        client=client, token=token, vault=vault, deployment=deployment, local=local, key=key
    )
    _check_roles(link)
    return link


def _check_roles(link: ChainLink) -> None:
    vault = link.vault.functions
    try:
        operator = normalize_address(link.call(vault.operator()))
        signer = normalize_address(link.call(vault.signer()))
        token = normalize_address(link.call(vault.token()))
    except QuackMeshError:
        raise
    except Exception as exc:
        raise ChainError(f"no Vault at {link.vault_address}: {exc}") from exc
    me = normalize_address(link.operator)
    if me not in (operator, signer) or token != normalize_address(link.deployment.token):
        raise ChainError(
            f"the key {me} is neither the Vault's operator ({operator}) nor its signer "
            f"({signer}), or the Vault's token is not {link.deployment.token}"
        )
    if operator != me or signer != me:
        raise ChainError(
            f"this coordinator needs the Vault's operator and signer to be its key {me} "
            f"(operator {operator}, signer {signer})"
        )


def bind_state(session: Session, link: ChainLink, *, now: float | None = None) -> ChainState:
    """Record (or check) that this database settles against ``link``'s Vault.

    A database already bound to another Vault is refused: its balances are backed by
    deposits into that Vault. With a local chain that means a fresh home per run.
    """
    dep = link.deployment
    rows = list(session.query(ChainState))
    for row in rows:
        if row.vault != dep.vault or row.chain_id != dep.chain_id:
            hint = (
                " (a local chain lives only as long as its coordinator; use a fresh QUACKMESH_HOME)"
                if link.local
                else ""
            )
            raise ChainError(
                f"this database settles against Vault {row.vault} on chain {row.chain_id}, "
                f"not {dep.vault} on chain {dep.chain_id}{hint}"
            )
    if rows:
        return rows[0]
    row = ChainState(
        vault=dep.vault,
        chain_id=dep.chain_id,
        token=dep.token,
        deployed_block=dep.block,
        scanned_block=dep.block - 1,
        created_at=time.time() if now is None else now,
    )
    session.add(row)
    return row


def approve_vault(link: ChainLink) -> None:
    """Let the Vault pull the operator's DUCK (the faucet's ``deposit_for``), once."""
    allowance = int(link.call(link.token.functions.allowance(link.operator, link.vault_address)))
    if allowance < MAX_UINT256 // 2:
        link.transact(link.token.functions.approve(link.vault_address, MAX_UINT256))
