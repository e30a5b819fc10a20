"""Merkle tree of wallet balances: what the operator posts on chain each epoch.

Each epoch the operator posts the root of this tree to the Vault contract; any holder can
then prove their off-chain balance against that on-chain root with a short proof, without
trusting the coordinator. The encoding is fixed here and in the Vault contract, which
verifies exactly this; changing it breaks every proof already handed out::

    leaf(account, balance) = keccak256(keccak256(abi.encode(address account, uint256 balance)))
    node(a, b)             = keccak256(min(a, b) ‖ max(a, b))     # bytes32 compared as bytes

* The leaf is hashed twice, as OpenZeppelin's ``StandardMerkleTree`` does, so a 64-byte
  leaf preimage can never be passed off as an internal node (second-preimage attack).
* Pairs are sorted before hashing (OpenZeppelin ``MerkleProof``'s "commutative" hash), so
  a proof is just the list of sibling hashes from the leaf up, with no left/right flags.
  Verification: ``h = leaf; for s in proof: h = node(h, s); return h == root``.
* Level 0 is the leaves sorted by leaf hash, so the root does not depend on the order the
  balances came in. Each level pairs neighbours (0,1), (2,3), …; an odd last node is
  promoted unchanged to the next level and contributes no step to its proofs.
* One leaf: the root is that leaf and its proof is empty. No leaves: the root is 32 zero
  bytes (:data:`EMPTY_ROOT`), which no proof can reach.

The proofs verify with OpenZeppelin's ``MerkleProof.verify`` (they only need the sorted
pair hash); the tree layout itself is this module's, not ``StandardMerkleTree``'s array
layout, so the root differs from what the OpenZeppelin JS library would compute.

What the tree commits to: every non-zero ``wallet:<address>`` balance
(:func:`balances_for_root`). Stakes, escrows, the treasury and the mint are not
withdrawable by a holder and are not in the tree, so ``total`` is the spendable DUCK the
Vault must be able to honour, not the ledger's grand total.

References: OpenZeppelin Contracts ``utils/cryptography/MerkleProof.sol`` and
``@openzeppelin/merkle-tree`` (``StandardMerkleTree``, leaf encoding
``keccak256(bytes.concat(keccak256(abi.encode(...))))``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from quackmesh.core.errors import LedgerInvariantBroken, NotFound, ValidationFailed
from quackmesh.core.ids import normalize_address

__all__ = [
    "EMPTY_ROOT",
    "UINT256_LIMIT",
    "BalanceProof",
    "BalanceTree",
    "Leaf",
    "balances_for_root",
    "build_tree",
    "leaf_hash",
    "node_hash",
    "verify_proof",
]

EMPTY_ROOT = bytes(32)
UINT256_LIMIT = 2**256  # balances must fit a uint256: 0 <= balance < UINT256_LIMIT

_WALLET_PREFIX = "wallet:"
_HEX32_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_PROOF_KEYS = frozenset({"epoch", "account", "balance", "proof", "root"})


def _checksum(account: object, *, field: str = "account") -> str:
    if not isinstance(account, str):
        raise ValidationFailed(f"not an Ethereum address: {account!r}", field=field)
    try:
        return normalize_address(account)
    except ValueError as exc:
        raise ValidationFailed(f"not an Ethereum address: {account!r}", field=field) from exc


def _check_balance(balance: object, *, field: str = "balance") -> int:
    # bool is an int subclass; True as a balance is a bug, not one micro-DUCK.
    if not isinstance(balance, int) or isinstance(balance, bool):
        raise ValidationFailed(f"balance must be an int, got {balance!r}", field=field)
    if not 0 <= balance < UINT256_LIMIT:
        raise ValidationFailed(f"balance must fit a uint256, got {balance}", field=field)
    return balance


def _check_hash(value: object, *, field: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValidationFailed(f"{field} must be 32 bytes, got {value!r}", field=field)
    return value


def leaf_hash(account: str, balance: int) -> bytes:
    """``keccak256(keccak256(abi.encode(address account, uint256 balance)))``.

    ``ValidationFailed`` (``field`` = ``account`` or ``balance``) for a malformed address
    or a balance outside ``[0, 2**256)``. The address may be in any case.
    """
    address = _checksum(account)
    amount = _check_balance(balance)
    return keccak(keccak(abi_encode(["address", "uint256"], [address, amount])))


def node_hash(a: bytes, b: bytes) -> bytes:
    """The parent of two nodes: ``keccak256(min(a, b) + max(a, b))``."""
    return keccak(min(a, b) + max(a, b))


def _levels(leaves: Sequence[bytes]) -> tuple[tuple[bytes, ...], ...]:
    """Level 0 is ``leaves`` (already sorted); the last level holds the root alone."""
    levels = [tuple(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            above.append(below[-1])  # odd node out: promoted unchanged
        levels.append(tuple(above))
    return tuple(levels)


def verify_proof(root: bytes, account: str, balance: int, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` links ``(account, balance)`` to ``root``, as the Vault checks it.

    ``False`` for a wrong balance, account, sibling or root; ``ValidationFailed`` for input
    that is malformed rather than wrong (a bad address, a negative balance, a hash that is
    not 32 bytes).
    """
    _check_hash(root, field="root")
    computed = leaf_hash(account, balance)
    for sibling in proof:
        computed = node_hash(computed, _check_hash(sibling, field="proof"))
    return computed == root


@dataclass(frozen=True)
class Leaf:
    """One committed balance: checksummed ``account``, ``balance`` and its leaf ``hash``."""

    account: str
    balance: int
    hash: bytes


@dataclass(frozen=True)
class BalanceTree:
    """The Merkle tree of one epoch's balances; make one with :func:`build_tree`.

    ``leaves`` are sorted by leaf hash; ``levels[0]`` is their hashes and ``levels[-1]``
    is ``(root,)`` (no levels at all for an empty tree).
    """

    root: bytes
    total: int
    leaves: tuple[Leaf, ...]
    levels: tuple[tuple[bytes, ...], ...]

    @cached_property
    def _positions(self) -> dict[str, int]:
        # cached_property writes the instance __dict__ directly, so it works when frozen.
        return {leaf.account: i for i, leaf in enumerate(self.leaves)}

    def __len__(self) -> int:
        return len(self.leaves)

    def __contains__(self, account: object) -> bool:
        try:
            return _checksum(account) in self._positions
        except ValidationFailed:
            return False

    def _position(self, account: str) -> int:
        address = _checksum(account)
        try:
            return self._positions[address]
        except KeyError:
            raise NotFound(f"no balance for {address} in this tree", account=address) from None

    def balance(self, account: str) -> int:
        """The committed balance of ``account``; ``NotFound`` if it is not in the tree."""
        return self.leaves[self._position(account)].balance

    def proof(self, account: str) -> list[bytes]:
        """Sibling hashes from ``account``'s leaf up to the root; ``NotFound`` if absent."""
        index = self._position(account)
        siblings: list[bytes] = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):  # else this node is the odd one out, promoted as is
                siblings.append(level[sibling])
            index //= 2
        return siblings

    def balance_proof(self, account: str, *, epoch: int | None = None) -> BalanceProof:
        """``account``'s proof in the JSON-friendly form the CLI prints."""
        leaf = self.leaves[self._position(account)]
        return BalanceProof(
            epoch=epoch,
            account=leaf.account,
            balance=leaf.balance,
            proof=[_hex(h) for h in self.proof(leaf.account)],
            root=_hex(self.root),
        )


def build_tree(balances: Mapping[str, int]) -> BalanceTree:
    """The tree over ``address -> balance`` (addresses in any case, normalised to EIP-55).

    ``ValidationFailed`` for a malformed address or balance, or for two keys that are the
    same address in different case. Zero balances are kept if given (see
    :func:`balances_for_root`, which drops them).
    """
    leaves: dict[str, Leaf] = {}
    for account, balance in balances.items():
        address = _checksum(account)
        if address in leaves:
            raise ValidationFailed(
                f"address {address} appears twice (keys differ only in case)",
                field="account",
                account=address,
            )
        leaves[address] = Leaf(address, balance, leaf_hash(address, balance))
    ordered = tuple(sorted(leaves.values(), key=lambda leaf: leaf.hash))
    levels = _levels([leaf.hash for leaf in ordered])
    root = levels[-1][0] if ordered else EMPTY_ROOT
    total = sum(leaf.balance for leaf in ordered)
    return BalanceTree(root=root, total=total, leaves=ordered, levels=levels if ordered else ())


def balances_for_root(balances: Mapping[str, int]) -> dict[str, int]:
    """``address -> balance`` for every non-zero ``wallet:`` account of a ledger balance map.

    Takes the mapping ``Ledger.balances()`` returns; stakes, escrows, ``treasury`` and
    ``mint`` are dropped (they are not withdrawable), as are zero wallets.
    ``LedgerInvariantBroken`` for a negative wallet: only ``mint`` may go negative.
    """
    out: dict[str, int] = {}
    for account, balance in balances.items():
        if not account.startswith(_WALLET_PREFIX):
            continue
        address = _checksum(account.removeprefix(_WALLET_PREFIX))
        if balance < 0:
            raise LedgerInvariantBroken(
                f"wallet {address} has a negative balance {balance}", account=account
            )
        if balance == 0:
            continue
        if address in out:
            raise ValidationFailed(
                f"address {address} appears twice (keys differ only in case)",
                field="account",
                account=address,
            )
        out[address] = balance
    return out


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _parse_hash(value: object, *, field: str) -> str:
    if not isinstance(value, str) or not _HEX32_RE.match(value):
        raise ValidationFailed(
            f"{field} must be 0x and 64 hex digits (32 bytes), got {value!r}", field=field
        )
    return value.lower()


@dataclass(frozen=True)
class BalanceProof:
    """One holder's balance with its proof, as JSON: hashes are ``0x`` + 64 hex digits.

    ``epoch`` is the Vault epoch whose root this is (``None`` for a root not yet posted).
    ``balance`` is an int of micro-DUCK (a JSON number; JavaScript readers should parse it
    as a BigInt).
    """

    epoch: int | None
    account: str
    balance: int
    proof: list[str]
    root: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "account": self.account,
            "balance": self.balance,
            "proof": list(self.proof),
            "root": self.root,
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: object) -> BalanceProof:
        """Strictly parse a proof object; ``ValidationFailed`` naming the bad field."""
        if not isinstance(data, Mapping):
            raise ValidationFailed("a balance proof must be a JSON object", field="proof")
        keys = set(data)
        if keys != _PROOF_KEYS:
            missing, extra = sorted(_PROOF_KEYS - keys), sorted(map(str, keys - _PROOF_KEYS))
            raise ValidationFailed(
                f"balance proof keys: missing {missing}, unexpected {extra}",
                field="proof",
                missing=missing,
                unexpected=extra,
            )
        epoch = data["epoch"]
        if epoch is not None and (
            not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0
        ):
            raise ValidationFailed(
                f"epoch must be null or an int >= 0, got {epoch!r}", field="epoch"
            )
        siblings = data["proof"]
        if not isinstance(siblings, list):
            raise ValidationFailed(f"proof must be a list, got {siblings!r}", field="proof")
        return cls(
            epoch=epoch,
            account=_checksum(data["account"]),
            balance=_check_balance(data["balance"]),
            proof=[_parse_hash(s, field="proof") for s in siblings],
            root=_parse_hash(data["root"], field="root"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> BalanceProof:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValidationFailed(f"balance proof is not valid JSON: {exc}", field="json") from exc
        return cls.from_dict(data)

    @property
    def root_bytes(self) -> bytes:
        return bytes.fromhex(_parse_hash(self.root, field="root")[2:])

    @property
    def proof_bytes(self) -> list[bytes]:
        return [bytes.fromhex(_parse_hash(s, field="proof")[2:]) for s in self.proof]

    def verify(self, root: bytes | None = None) -> bool:
        """Check the proof against ``root`` (the on-chain one), else its own ``root``.

        Only a check against the root read from the Vault says anything; the embedded
        root is whatever the coordinator claimed.
        """
        expected = self.root_bytes if root is None else root
        return verify_proof(expected, self.account, self.balance, self.proof_bytes)
