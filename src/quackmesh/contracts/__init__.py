"""The Vyper contracts that settle the DUCK ledger on an EVM chain, and their compiler.

The sources ship inside the package so the coordinator can compile and deploy them at
runtime with the ``vyper`` PyPI package (pinned to 0.4.3; no compiler is downloaded).
``vyper`` is imported lazily, on the first :func:`compile_contract` call.

``DuckToken.vy``
    ERC-20 "Duck" / "DUCK" with 6 decimals (amounts are integers of micro-DUCK) and
    EIP-2612 ``permit(owner, spender, value, deadline, v, r, s)``, ``nonces(owner)``,
    ``DOMAIN_SEPARATOR()`` over the EIP-712 domain (name "Duck", version "1", chainId,
    verifyingContract). The deployer is the ``minter``: ``mint(to, amount)``,
    ``set_minter(new)``.

``Vault.vy`` — ``Vault(token, operator, signer, escape_period)``
    * ``deposit(amount)`` / ``deposit_with_permit(amount, deadline, v, r, s)`` pull DUCK (a
      failed permit is ignored when the allowance is already there: front-run permits) and
      log ``Deposit(account indexed, amount, deposit_id)``; ``deposit_id`` starts at 1 and
      grows by one per deposit, so the coordinator credits each exactly once.
    * ``withdraw(amount, nonce, expiry, v, r, s)`` pays ``msg.sender`` against a voucher
      and logs ``Withdrawal(account indexed, amount, nonce)``.
    * ``post_root(epoch, root, journal_head, total)`` (operator; epochs strictly increase;
      ``total`` must not exceed the vault's DUCK balance) logs
      ``RootPosted(epoch indexed, root, journal_head, total)``.
    * ``record_jobs(epoch, posted, finalized)`` and ``record_slashes(epoch, providers,
      amounts)`` (operator; up to 256 elements each) log one ``JobPosted(epoch indexed,
      job_id)`` / ``JobFinalized(epoch indexed, job_id)`` / ``ProviderSlashed(epoch
      indexed, provider indexed, amount)`` per element: plain events, so indexers filter on
      topics and never decode arrays.
    * ``set_operator(new)`` / ``set_signer(new)`` (operator).
    * Escape hatch: once ``block.timestamp > last_root_at + escape_period`` (the clock
      starts at deployment), vouchers are void and ``escape_withdraw(balance, proof)``
      pays ``balance + deposited since the last root - withdrawn since the last root``
      (vouchers and earlier escapes both count as withdrawn) to a holder who proves
      ``balance`` against the last root. A new root ends escape mode; it must reflect the
      ``EscapeWithdrawal(account indexed, amount, epoch)`` payouts.

Voucher (EIP-712, signed by the vault's ``signer``)::

    domain  = EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
              name "QuackMesh Vault", version "1", the chain id, the vault's address
    message = Withdrawal(address account,uint256 amount,uint256 nonce,uint256 expiry)

Each ``(account, nonce)`` pays once (``used_nonce(account, nonce)``); ``expiry`` is a unix
time in seconds, inclusive. Signatures with a high ``s`` (EIP-2) are refused.

Merkle tree of balances (the same encoding as ``quackmesh.ledger.merkle``; OpenZeppelin
StandardMerkleTree style)::

    leaf = keccak256(keccak256(abi.encode(address account, uint256 balance)))
    node = keccak256(min(a, b) ++ max(a, b))     # sorted pair, compared as uint256

A proof is the list of sibling hashes from the leaf up to the root
(``verify_balance(account, balance, proof, root)``, at most 32 siblings).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

__all__ = ["CONTRACT_NAMES", "CompiledContract", "ContractName", "compile_contract", "source"]

ContractName = Literal["DuckToken", "Vault"]
CONTRACT_NAMES: tuple[ContractName, ...] = ("DuckToken", "Vault")


@dataclass(frozen=True, slots=True)
class CompiledContract:
    """A compiled contract: its ABI and its deployment bytecode (``0x``-prefixed hex)."""

    abi: list[dict[str, Any]]
    bytecode: str


def _check_name(name: str) -> None:
    if name not in CONTRACT_NAMES:
        raise ValueError(f"unknown contract {name!r}; expected one of {CONTRACT_NAMES}")


def source(name: str) -> str:
    """The Vyper source of the contract called ``name`` (``"DuckToken"`` or ``"Vault"``)."""
    _check_name(name)
    return resources.files(__name__).joinpath(f"{name}.vy").read_text(encoding="utf-8")


@functools.cache
def compile_contract(name: str) -> CompiledContract:
    """Compile the contract called ``name`` with the vyper package (cached per process)."""
    _check_name(name)
    import vyper  # lazy: the compiler is heavy and only the EVM backend needs it

    out = vyper.compile_code(source(name), output_formats=["abi", "bytecode"])
    return CompiledContract(abi=list(out["abi"]), bytecode=str(out["bytecode"]))
