"""Wallets: secp256k1 keys in standard encrypted Ethereum keystore (v3) files."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from eth_account import Account

from quackmesh.core.signing import SignedHeaders, sign_request

__all__ = ["Wallet", "WalletError"]


class WalletError(Exception):
    """A keystore that cannot be read, decrypted or written (message is user-facing)."""


@dataclass(frozen=True)
class Wallet:
    private_key: bytes = field(repr=False)
    address: str

    @classmethod
    def create(cls) -> Wallet:
        acct = Account.create()
        return cls(private_key=bytes(acct.key), address=str(acct.address))

    @classmethod
    def from_key(cls, private_key: bytes | str) -> Wallet:
        acct = Account.from_key(private_key)
        return cls(private_key=bytes(acct.key), address=str(acct.address))

    @classmethod
    def load(cls, path: Path, password: str) -> Wallet:
        try:
            keystore = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise WalletError(f"no wallet file at {path}") from None
        except (OSError, ValueError) as exc:
            raise WalletError(f"{path} is not a keystore file: {exc}") from exc
        try:
            key = Account.decrypt(keystore, password)
        except ValueError:
            raise WalletError(f"wrong password for {path}") from None
        except (KeyError, TypeError, AttributeError) as exc:  # JSON, but not a keystore
            raise WalletError(f"{path} is not a keystore file (missing {exc})") from None
        return cls.from_key(bytes(key))

    def save(
        self, path: Path, password: str, *, kdf: Literal["scrypt", "pbkdf2"] = "scrypt"
    ) -> Path:
        """Write an encrypted keystore (mode 0600); refuses to overwrite an existing file."""
        path = Path(path)
        if path.exists():
            raise WalletError(f"{path} already exists; refusing to overwrite a wallet")
        if not password:
            raise WalletError("a wallet password must not be empty")
        # pbkdf2 with fewer rounds is only for tests and demos where speed matters.
        iterations = 2**10 if kdf == "pbkdf2" else None
        keystore = Account.encrypt(self.private_key, password, kdf=kdf, iterations=iterations)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(keystore, fh)
        return path

    def sign_request(
        self, *, method: str, path: str, body: bytes = b"", body_sha256: str | None = None
    ) -> SignedHeaders:
        return sign_request(
            self.private_key,
            method=method,
            path=path,
            body=body,
            body_sha256=body_sha256,
            address=self.address,
        )
