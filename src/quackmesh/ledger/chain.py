"""The EVM chain client: deploys and transactions from one key, with checked receipts.

``ChainClient.local()`` is the embedded default (``--chain local``): an in-process EVM,
web3's ``EthereumTesterProvider`` over py-evm, with the client's key funded from the
tester's pre-funded account. ``ChainClient.connect(url, key)`` talks to any JSON-RPC
node (anvil in the tests; a real network in production), the key coming from a
keystore file (``quackmesh.core.wallet``).

What every transaction gets:

* **Nonces** are handed out under a lock from a local counter that starts at the node's
  pending count, so concurrent callers in one process never collide; a "nonce too low"
  from the node (another process used the key) re-reads the count and retries once.
* **Receipts are checked**: ``status`` 0 is a :class:`ChainReverted`, never a silent
  success. Reverts surface in two styles — eth-tester raises ``TransactionFailed`` and
  web3 raises ``ContractLogicError`` while estimating gas — and both become a
  ``ChainReverted`` whose ``reason`` is the contract's message (``"vault: voucher
  expired"``).
* **Confirmations**: after the receipt, wait (bounded) until ``confirmations`` blocks
  sit on top of it; event readers only look at blocks that deep (:meth:`safe_head`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from quackmesh.core.errors import ChainError, ChainReverted

__all__ = [
    "Artifact",
    "ChainClient",
    "ChainError",
    "ChainReverted",
    "Compiled",
    "redact_url",
    "revert_reason",
]

LOCAL_FUNDING_WEI = 1_000 * 10**18
GAS_HEADROOM_PCT = 125
GAS_HEADROOM_FLAT = 10_000
REVERT_PREFIXES = (
    "execution reverted: ",
    "execution reverted",
    "VM Exception while processing transaction: revert ",
)


class Artifact(Protocol):
    """A contract's ABI and creation bytecode (``quackmesh.contracts.CompiledContract``)."""

    @property
    def abi(self) -> list[dict[str, Any]]: ...

    @property
    def bytecode(self) -> str: ...


@dataclass(frozen=True)
class Compiled:
    """A plain :class:`Artifact`."""

    abi: list[dict[str, Any]]
    bytecode: str


def redact_url(url: str) -> str:
    """``scheme://host:port`` only: hosted RPC URLs carry API keys in the path or query."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def revert_reason(exc: BaseException) -> str:
    """The contract's message from either revert style, without the node's prefixes."""
    message: Any = getattr(exc, "message", None) or (exc.args[0] if exc.args else "")
    if isinstance(message, bytes):
        message = _decode_error_bytes(message)
    text = str(message).strip()
    for prefix in REVERT_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :].strip()
    return text or "reverted without a reason"


def _decode_error_bytes(data: bytes) -> str:
    # Error(string): selector 0x08c379a0, then an ABI-encoded string.
    if data[:4] == bytes.fromhex("08c379a0") and len(data) >= 68:
        length = int.from_bytes(data[36:68], "big")
        return data[68 : 68 + length].decode("utf-8", "replace")
    return data.decode("utf-8", "replace") if data.isascii() else "0x" + data.hex()


def _revert_errors() -> tuple[type[BaseException], ...]:
    from web3.exceptions import ContractLogicError

    errors: list[type[BaseException]] = [ContractLogicError]
    try:
        from eth_tester.exceptions import TransactionFailed
    except ImportError:  # a JSON-RPC-only install
        pass
    else:
        errors.append(TransactionFailed)
    return tuple(errors)


class ChainClient:
    """Transactions from one key on one chain (thread-safe)."""

    def __init__(
        self, w3: Any, key: bytes, *, confirmations: int = 0, timeout_s: float = 120.0
    ) -> None:
        from eth_account import Account

        self.w3 = w3
        self._account = Account.from_key(key)
        self.confirmations = confirmations
        self.timeout_s = timeout_s
        self.chain_id: int = int(w3.eth.chain_id)
        self._lock = threading.Lock()
        self._nonce: int | None = None

    # --- construction -------------------------------------------------------------------
    @classmethod
    def local(cls, key: bytes | None = None) -> ChainClient:
        """An in-process EVM (py-evm); ``key`` (or a fresh one) is funded with test ETH."""
        from eth_account import Account
        from web3 import EthereumTesterProvider, Web3
        from web3.types import Wei

        w3 = Web3(EthereumTesterProvider())
        key = key or bytes(Account.create().key)
        address = Account.from_key(key).address
        tx = w3.eth.send_transaction(
            {"from": w3.eth.accounts[0], "to": address, "value": Wei(LOCAL_FUNDING_WEI)}
        )
        w3.eth.wait_for_transaction_receipt(tx)
        return cls(w3, key)

    @classmethod
    def connect(
        cls, url: str, key: bytes, *, confirmations: int = 0, timeout_s: float = 120.0
    ) -> ChainClient:
        """A JSON-RPC node at ``url`` (http/https)."""
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
        try:
            w3.eth.chain_id  # noqa: B018 (reach the node now, not at the first transaction)
        except Exception as exc:
            raise ChainError(f"cannot reach the chain at {redact_url(url)}") from exc
        return cls(w3, key, confirmations=confirmations, timeout_s=timeout_s)

    @property
    def address(self) -> str:
        return str(self._account.address)

    # --- contracts ----------------------------------------------------------------------
    def deploy(self, compiled: Artifact, *args: Any) -> Any:
        """Deploy and return the web3 contract at its new address."""
        factory = self.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        receipt = self.transact(factory.constructor(*args))
        address = receipt["contractAddress"]
        if not address:
            raise ChainError("deployment receipt has no contract address")
        return self.w3.eth.contract(address=address, abi=compiled.abi)

    def at(self, compiled: Artifact, address: str) -> Any:
        return self.w3.eth.contract(address=self.w3.to_checksum_address(address), abi=compiled.abi)

    def call(self, fn: Any) -> Any:
        """A read-only call; a revert is a :class:`ChainReverted`."""
        try:
            return fn.call({"from": self.address})
        except _revert_errors() as exc:
            raise ChainReverted(revert_reason(exc), reason=revert_reason(exc)) from exc

    # --- transactions -------------------------------------------------------------------
    def transact(
        self, fn: Any, *, value: int = 0, gas: int | None = None, confirm: bool = True
    ) -> Any:
        """Sign, send and wait for ``fn`` (a contract function or constructor call).

        Returns the receipt once it has ``confirmations`` blocks on top (``confirm=False``:
        as soon as it is mined and succeeded); raises
        :class:`ChainReverted` for a revert (at estimation or in the receipt) and
        :class:`ChainError` when the node refuses or times out. ``gas`` skips the
        estimate (which is where most reverts are caught).
        """
        with self._lock:
            for attempt in (1, 2):
                nonce = self._next_nonce()
                try:
                    tx = self._build(fn, nonce=nonce, value=value, gas=gas)
                    signed = self._account.sign_transaction(tx)
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except ChainReverted:
                    raise
                except _revert_errors() as exc:
                    raise ChainReverted(revert_reason(exc), reason=revert_reason(exc)) from exc
                except Exception as exc:  # RPC errors are ValueError; eth-tester's are its own
                    if "nonce" in str(exc).lower() and attempt == 1:
                        self._nonce = None  # someone else used the key: re-read and retry
                        continue
                    raise ChainError(f"the node refused the transaction: {exc}") from exc
                self._nonce = nonce + 1
                break
        receipt = self._receipt(tx_hash)
        if receipt["status"] != 1:
            reason = self._replay_reason(tx, receipt)
            raise ChainReverted(reason, reason=reason, tx_hash=tx_hash.hex())
        if confirm:
            self.wait_confirmations(receipt)
        return receipt

    def send_value(self, to: str, wei: int, *, confirm: bool = True) -> Any:
        """A plain transfer of ``wei`` to ``to``; returns the checked receipt."""
        with self._lock:
            for attempt in (1, 2):
                nonce = self._next_nonce()
                tx = {
                    "to": self.w3.to_checksum_address(to),
                    "value": wei,
                    "nonce": nonce,
                    "chainId": self.chain_id,
                    "gas": 21_000,
                    "gasPrice": int(self.w3.eth.gas_price),
                }
                try:
                    signed = self._account.sign_transaction(tx)
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except Exception as exc:
                    if "nonce" in str(exc).lower() and attempt == 1:
                        self._nonce = None
                        continue
                    raise ChainError(f"the node refused the transfer: {exc}") from exc
                self._nonce = nonce + 1
                break
        receipt = self._receipt(tx_hash)
        if receipt["status"] != 1:
            raise ChainError(f"transfer {tx_hash.hex()} failed (status 0)")
        if confirm:
            self.wait_confirmations(receipt)
        return receipt

    def _build(self, fn: Any, *, nonce: int, value: int, gas: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "from": self.address,
            "nonce": nonce,
            "chainId": self.chain_id,
            "value": value,
        }
        if gas is not None:
            params["gas"] = gas  # no estimate: a revert is only seen in the receipt
        try:
            tx: dict[str, Any] = fn.build_transaction(params)  # estimates gas: reverts here
        except _revert_errors() as exc:
            raise ChainReverted(revert_reason(exc), reason=revert_reason(exc)) from exc
        if gas is None:
            # Headroom over the estimate: anvil was seen to under-estimate the Vault's
            # post_root by ~10 % (out of gas at the estimate). Unused gas is not charged.
            tx["gas"] = int(tx["gas"]) * GAS_HEADROOM_PCT // 100 + GAS_HEADROOM_FLAT
        return tx

    def _next_nonce(self) -> int:
        if self._nonce is None:
            self._nonce = int(self.w3.eth.get_transaction_count(self.address, "pending"))
        return self._nonce

    def _receipt(self, tx_hash: Any) -> Any:
        try:
            return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout_s)
        except Exception as exc:
            raise ChainError(f"no receipt for {tx_hash.hex()} within {self.timeout_s:g}s") from exc

    def _replay_reason(self, tx: dict[str, Any], receipt: Any) -> str:
        """Why a mined transaction failed: replay it as a call at its block."""
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            self.w3.eth.call(call, receipt["blockNumber"] - 1)
        except _revert_errors() as exc:
            return revert_reason(exc)
        except Exception:
            pass
        gas_used, gas = int(receipt.get("gasUsed", 0)), int(tx.get("gas", 0))
        if gas and gas_used >= gas:
            return f"transaction {receipt['transactionHash'].hex()} ran out of gas ({gas})"
        return f"transaction {receipt['transactionHash'].hex()} reverted (status 0)"

    # --- blocks and events --------------------------------------------------------------
    def wait_confirmations(self, receipt: Any) -> None:
        if self.confirmations <= 0:
            return
        target = int(receipt["blockNumber"]) + self.confirmations
        deadline = time.monotonic() + self.timeout_s
        while int(self.w3.eth.block_number) < target:
            if time.monotonic() > deadline:
                raise ChainError(
                    f"{self.confirmations} confirmations did not arrive within {self.timeout_s:g}s"
                )
            time.sleep(0.2)

    def safe_head(self) -> int:
        """The newest block with ``confirmations`` blocks on top (what readers may trust)."""
        return max(int(self.w3.eth.block_number) - self.confirmations, -1)

    def logs(self, event: Any, *, from_block: int, to_block: int) -> list[Any]:
        """Decoded logs of ``event`` (e.g. ``vault.events.Deposit``) in a block range."""
        if to_block < from_block:
            return []
        return list(event.get_logs(from_block=from_block, to_block=to_block))
