"""The journal hash chain: how each transaction commits to everything before it.

Transactions are numbered ``seq = 1, 2, 3, …`` without gaps. Each one stores the hash of
the one before it (``prev_hash``; ``"0" * 64`` for ``seq`` 1) and its own ``hash``::

    hash = sha256_hex(canonical_json({
        "prev": prev_hash,            # 64 lower-case hex characters
        "seq": seq,                   # int
        "tx_id": tx_id,               # str
        "kind": kind,                 # str
        "memo": memo,                 # str
        "ref": ref,                   # str or null
        "created_at_us": created_at_us,   # int: unix time in whole microseconds
        "entries": sorted([[account, amount], ...]),   # amount: int micro-DUCK
    }))

``canonical_json`` is UTF-8 JSON with sorted object keys, no insignificant whitespace,
``ensure_ascii=False`` (Python ``json.dumps(v, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``); ``sha256_hex`` is the lower-case hex SHA-256 of those bytes. The
entry list is sorted by account, then amount, so the order rows come back from a database
does not matter. ``created_at`` is stored as unix seconds (a double) and always holds a
whole number of microseconds; ``created_at_us = round(created_at * 1_000_000)``.

Changing, inserting or deleting any transaction or entry changes that transaction's hash
and breaks the ``prev_hash`` link of the next one, so an auditor holding only the last
hash (the head) can re-check an exported journal (``export.read_jsonl``) with
:func:`audit_chain`. The same construction as a git history or a Certificate
Transparency log, without the Merkle tree: the ledger is audited front to back.
"""

from __future__ import annotations

from collections.abc import Iterable

from quackmesh.core.canon import canonical_json, sha256_hex
from quackmesh.ledger.accounts import is_valid_account
from quackmesh.ledger.base import LedgerCheck, PostedTx, Posting

__all__ = ["GENESIS_HASH", "ChainAudit", "audit_chain", "created_at_micros", "tx_hash"]

GENESIS_HASH = "0" * 64
MAX_PROBLEMS = 100  # a badly damaged journal should not produce a gigabyte of report


def created_at_micros(created_at: float) -> int:
    """Unix seconds as stored -> the whole microseconds that go into the hash."""
    return round(created_at * 1_000_000)


def tx_hash(
    *,
    prev_hash: str,
    seq: int,
    tx_id: str,
    kind: str,
    memo: str,
    ref: str | None,
    created_at: float,
    entries: Iterable[Posting],
) -> str:
    """The hash of one transaction, exactly as described in the module docstring."""
    payload = {
        "prev": prev_hash,
        "seq": seq,
        "tx_id": tx_id,
        "kind": kind,
        "memo": memo,
        "ref": ref,
        "created_at_us": created_at_micros(created_at),
        "entries": sorted([e.account, e.amount] for e in entries),
    }
    return sha256_hex(canonical_json(payload))


def recompute_hash(tx: PostedTx) -> str:
    return tx_hash(
        prev_hash=tx.prev_hash,
        seq=tx.seq,
        tx_id=tx.tx_id,
        kind=tx.kind,
        memo=tx.memo,
        ref=tx.ref,
        created_at=tx.created_at,
        entries=tx.entries,
    )


class ChainAudit:
    """Checks transactions fed in ``seq`` order; keeps counts, not the transactions."""

    def __init__(self) -> None:
        self.transactions = 0
        self.total = 0
        self.head_seq = 0
        self.head_hash = GENESIS_HASH
        self.first_broken_seq: int | None = None
        self._problems: list[str] = []
        self._dropped = 0

    def problem(self, text: str, *, seq: int | None = None) -> None:
        """Record a problem (``seq`` marks the transaction it was found at)."""
        if seq is not None and (self.first_broken_seq is None or seq < self.first_broken_seq):
            self.first_broken_seq = seq
        if len(self._problems) < MAX_PROBLEMS:
            self._problems.append(text)
        else:
            self._dropped += 1

    @property
    def problems(self) -> tuple[str, ...]:
        more = (f"... and {self._dropped} more problems",) if self._dropped else ()
        return (*self._problems, *more)

    def add(self, tx: PostedTx) -> None:
        seq = tx.seq
        if seq != self.head_seq + 1:
            self.problem(f"seq {seq}: follows seq {self.head_seq} (gap or reorder)", seq=seq)
        if tx.prev_hash != self.head_hash:
            self.problem(f"seq {seq}: prev_hash does not match the previous hash", seq=seq)
        if recompute_hash(tx) != tx.hash:
            self.problem(f"seq {seq}: hash does not match its contents", seq=seq)
        if not tx.entries:
            self.problem(f"seq {seq}: transaction has no entries", seq=seq)
        tx_sum = 0
        for entry in tx.entries:
            if type(entry.amount) is not int or entry.amount == 0:
                self.problem(f"seq {seq}: bad entry amount {entry.amount!r}", seq=seq)
                continue
            if not is_valid_account(entry.account):
                self.problem(f"seq {seq}: bad account name {entry.account!r}", seq=seq)
            tx_sum += entry.amount
        if tx_sum != 0:
            self.problem(f"seq {seq}: entries sum to {tx_sum}, not 0", seq=seq)
        self.transactions += 1
        self.total += tx_sum
        # Continue from the stored hash so one edit is reported once, at its own seq.
        self.head_seq, self.head_hash = seq, tx.hash

    def result(self) -> LedgerCheck:
        problems = self.problems
        return LedgerCheck(
            ok=not problems and self.total == 0,
            transactions=self.transactions,
            head=self.head_hash,
            total=self.total,
            problems=problems,
            first_broken_seq=self.first_broken_seq,
        )


def audit_chain(txs: Iterable[PostedTx], *, expected_head: str | None = None) -> LedgerCheck:
    """Re-check an exported journal on its own: links, hashes and zero-sum transactions.

    ``expected_head`` is a head hash obtained elsewhere (the coordinator's ``verify``, an
    on-chain anchor); when given, the journal must end exactly there.
    """
    audit = ChainAudit()
    for tx in txs:
        audit.add(tx)
    if expected_head is not None and audit.head_hash != expected_head:
        audit.problem(f"journal ends at {audit.head_hash}, expected head {expected_head}")
    return audit.result()
