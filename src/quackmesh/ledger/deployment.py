"""Where DuckToken and the Vault live, and deploying them (``quackmesh chain deploy``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quackmesh.contracts import compile_contract
from quackmesh.core.errors import ChainError
from quackmesh.core.ids import normalize_address
from quackmesh.ledger.chain import ChainClient

__all__ = ["DEFAULT_ESCAPE_PERIOD_S", "Deployment", "deploy_contracts"]

DEFAULT_ESCAPE_PERIOD_S = 7 * 86_400


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live: what ``quackmesh chain deploy`` writes to ``chain.json``."""

    chain_id: int
    token: str
    vault: str
    block: int  # the Vault's deployment block: events before it cannot exist

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> Deployment:
        try:
            data = json.loads(path.read_text())
            return cls(
                chain_id=int(data["chain_id"]),
                token=normalize_address(data["token"]),
                vault=normalize_address(data["vault"]),
                block=int(data["block"]),
            )
        except FileNotFoundError:
            raise ChainError(
                f"no deployment record at {path}: run `quackmesh chain deploy` first"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ChainError(f"{path} is not a deployment record: {exc}") from exc


def deploy_contracts(
    client: ChainClient, *, signer: str | None = None, escape_period_s: int
) -> tuple[Any, Any, Deployment]:
    """Deploy DuckToken (the client's key is its minter) and a Vault it operates."""
    token = client.deploy(compile_contract("DuckToken"))
    vault = client.deploy(
        compile_contract("Vault"),
        token.address,
        client.address,
        normalize_address(signer) if signer else client.address,
        escape_period_s,
    )
    block = int(client.w3.eth.block_number)
    deployment = Deployment(
        chain_id=client.chain_id,
        token=str(token.address),
        vault=str(vault.address),
        block=block,
    )
    return token, vault, deployment
