"""The SQL ledger: double-entry DUCK journal on SQLite or PostgreSQL.

Every method runs inside the caller's session and never commits (see ``base.Ledger``).
``post`` checks everything — shape, conservation, resulting balances — before it writes a
row, so a refused transaction leaves nothing behind even if the caller commits anyway.

Appending locks the single ``ledger_head`` row first (``SELECT … FOR UPDATE``): concurrent
appenders on PostgreSQL queue on that lock and each reads the balances and the chain head
left by the previous one, so balances cannot be double-spent and the hash chain
(hashchain.py) cannot fork. This relies on READ COMMITTED, PostgreSQL's default; SQLite
serialises writers with ``BEGIN IMMEDIATE`` (``coordinator.db.engine``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Row, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from quackmesh.core.errors import InsufficientBalance, LedgerInvariantBroken, ValidationFailed
from quackmesh.core.ids import new_id
from quackmesh.core.money import format_duck
from quackmesh.ledger.accounts import NEGATIVE_ALLOWED, validate_account
from quackmesh.ledger.base import HistoryEntry, Ledger, LedgerCheck, PostedTx, Posting
from quackmesh.ledger.hashchain import GENESIS_HASH, MAX_PROBLEMS, ChainAudit, tx_hash
from quackmesh.ledger.tables import LedgerBalance, LedgerEntry, LedgerHead, LedgerTransaction

__all__ = ["SqlLedger"]

INT64_MAX = 2**63 - 1  # BIGINT on both backends
_KIND_RE = re.compile(r"^[a-z][a-z0-9_.\-]{0,31}$")
_BATCH = 1000  # rows per fetch while streaming the journal

_T, _E, _B, _H = LedgerTransaction, LedgerEntry, LedgerBalance, LedgerHead
_JOURNAL_COLUMNS = (
    _T.seq,
    _T.tx_id,
    _T.kind,
    _T.memo,
    _T.ref,
    _T.created_at,
    _T.prev_hash,
    _T.hash,
    _E.account,
    _E.amount,
)


def _validate_postings(postings: Sequence[Posting]) -> dict[str, int]:
    """Net change per account; ``ValidationFailed`` for anything that is not a valid set."""
    if not postings:
        raise ValidationFailed("a transaction needs at least one posting")
    deltas: dict[str, int] = {}
    for i, posting in enumerate(postings):
        if not isinstance(posting, Posting):
            raise ValidationFailed(f"posting {i} is not a Posting", index=i)
        account, amount = posting.account, posting.amount
        validate_account(account)
        if type(amount) is not int or amount == 0 or abs(amount) > INT64_MAX:
            raise ValidationFailed(
                f"posting {i} amount must be a non-zero int of micro-DUCK that fits 64 bits",
                index=i,
                account=account,
            )
        deltas[account] = deltas.get(account, 0) + amount
    total = sum(deltas.values())
    if total != 0:
        raise ValidationFailed(f"postings sum to {total}, not 0", total=total)
    return deltas


def _validate_header(kind: str, memo: str, ref: str | None) -> None:
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise ValidationFailed(f"bad transaction kind {kind!r}", field="kind")
    if not isinstance(memo, str) or len(memo) > 256:
        raise ValidationFailed("memo must be a string of at most 256 characters", field="memo")
    if ref is not None and (not isinstance(ref, str) or not 1 <= len(ref) <= 128):
        raise ValidationFailed("ref must be a string of 1 to 128 characters", field="ref")


def _group(rows: Iterable[Row[Any]]) -> Iterator[PostedTx]:
    """Fold journal rows (one per entry, ordered by seq) into transactions."""
    current: Row[Any] | None = None
    entries: list[Posting] = []
    for row in rows:
        if current is not None and row.seq != current.seq:
            yield _posted(current, entries)
            entries = []
        current = row
        if row.account is not None:  # outer join: a transaction stripped of its entries
            entries.append(Posting(row.account, int(row.amount)))
    if current is not None:
        yield _posted(current, entries)


def _posted(row: Row[Any], entries: list[Posting]) -> PostedTx:
    return PostedTx(
        seq=int(row.seq),
        tx_id=row.tx_id,
        kind=row.kind,
        memo=row.memo,
        ref=row.ref,
        created_at=float(row.created_at),
        entries=tuple(entries),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class SqlLedger(Ledger):
    """The SQL backend; stateless apart from its clock, so one instance serves a process."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    # -- writing ------------------------------------------------------------------------

    def post(
        self,
        session: Session,
        *,
        kind: str,
        memo: str,
        postings: Sequence[Posting],
        ref: str | None = None,
    ) -> PostedTx:
        _validate_header(kind, memo, ref)
        deltas = _validate_postings(postings)
        head_seq, head_hash = self._lock_head(session)
        current = self._read_balances(session, deltas)
        new_balances: dict[str, int] = {}
        for account in sorted(deltas):
            available = current.get(account, 0)
            after = available + deltas[account]
            if after < 0 and account not in NEGATIVE_ALLOWED:
                raise InsufficientBalance(
                    f"{account} holds {format_duck(available)}, "
                    f"needs {format_duck(-deltas[account])}",
                    account=account,
                    available=available,
                    required=-deltas[account],
                )
            if abs(after) > INT64_MAX:
                raise ValidationFailed(f"balance of {account} would overflow 64 bits")
            new_balances[account] = after

        header: dict[str, Any] = {
            "seq": head_seq + 1,
            "tx_id": new_id("tx"),
            "kind": kind,
            "memo": memo,
            "ref": ref,
            "created_at": round(self._clock() * 1_000_000) / 1_000_000,
            "entries": tuple(Posting(p.account, p.amount) for p in postings),  # a copy
            "prev_hash": head_hash,
        }
        tx = PostedTx(**header, hash=tx_hash(**header))
        self._write(session, tx, new_balances, existing=current.keys())
        return tx

    def _before_escrow_read(self, session: Session) -> None:
        # Read what an escrow holds under the chain lock, so a concurrent settle or
        # refund of the same escrow cannot pay it out twice.
        self._lock_head(session)

    def head(self, session: Session, *, lock: bool = False) -> tuple[int, str]:
        """``(seq, hash)`` of the newest transaction (``(0, GENESIS_HASH)`` before any).
        ``lock`` takes the chain lock, so nothing is appended until the session ends."""
        if lock:
            return self._lock_head(session)
        row = session.execute(select(_H.seq, _H.hash).where(_H.id == 1)).one_or_none()
        return (0, GENESIS_HASH) if row is None else (int(row.seq), str(row.hash))

    def _lock_head(self, session: Session) -> tuple[int, str]:
        stmt = select(_H.seq, _H.hash).where(_H.id == 1).with_for_update()
        row = session.execute(stmt).one_or_none()
        if row is None:
            # First transaction ever: create the head row, tolerating a concurrent creator.
            session.execute(_insert_head_if_missing(session))
            row = session.execute(stmt).one_or_none()
            if row is None:
                raise LedgerInvariantBroken(
                    "ledger head row is not visible; the SQL ledger needs READ COMMITTED"
                )
        return int(row.seq), str(row.hash)

    @staticmethod
    def _read_balances(session: Session, accounts: Iterable[str]) -> dict[str, int]:
        stmt = select(_B.account, _B.balance).where(_B.account.in_(list(accounts)))
        return {account: int(balance) for account, balance in session.execute(stmt)}

    @staticmethod
    def _write(
        session: Session, tx: PostedTx, balances: dict[str, int], *, existing: Iterable[str]
    ) -> None:
        session.execute(
            insert(_T).values(
                seq=tx.seq,
                tx_id=tx.tx_id,
                kind=tx.kind,
                memo=tx.memo,
                ref=tx.ref,
                created_at=tx.created_at,
                prev_hash=tx.prev_hash,
                hash=tx.hash,
            )
        )
        rows = [{"seq": tx.seq, "account": e.account, "amount": e.amount} for e in tx.entries]
        session.execute(insert(_E), rows)
        known = set(existing)
        updates = [{"account": a, "balance": b} for a, b in balances.items() if a in known]
        inserts = [{"account": a, "balance": b} for a, b in balances.items() if a not in known]
        if updates:
            session.execute(update(_B), updates)  # bulk UPDATE by primary key
        if inserts:
            session.execute(insert(_B), inserts)
        session.execute(update(_H).where(_H.id == 1).values(seq=tx.seq, hash=tx.hash))

    # -- reading ------------------------------------------------------------------------

    def balance(self, session: Session, account: str) -> int:
        validate_account(account)
        value = session.execute(select(_B.balance).where(_B.account == account)).scalar()
        return 0 if value is None else int(value)

    def balances(self, session: Session, *, prefix: str | None = None) -> dict[str, int]:
        stmt = select(_B.account, _B.balance).order_by(_B.account)
        if prefix:
            stmt = stmt.where(_B.account.startswith(prefix, autoescape=True))
        return {account: int(balance) for account, balance in session.execute(stmt)}

    def history(
        self,
        session: Session,
        *,
        accounts: Sequence[str],
        limit: int,
        before_seq: int | None = None,
        kinds: Sequence[str] | None = None,
        since: float | None = None,
    ) -> list[HistoryEntry]:
        for account in accounts:
            validate_account(account)
        if type(limit) is not int or limit < 1:
            raise ValidationFailed("limit must be a positive int", field="limit")
        stmt = (
            select(_T.seq, _T.created_at, _T.kind, _T.memo, _T.ref, _E.account, _E.amount)
            .join(_E, _E.seq == _T.seq)
            .where(_E.account.in_(list(accounts)))
        )
        if before_seq is not None:
            stmt = stmt.where(_T.seq < before_seq)
        if kinds is not None:
            stmt = stmt.where(_T.kind.in_(list(kinds)))
        if since is not None:
            stmt = stmt.where(_T.created_at >= since)
        stmt = stmt.order_by(_T.seq.desc(), _E.id.desc()).limit(limit)
        return [
            HistoryEntry(
                seq=int(r.seq),
                at=float(r.created_at),
                kind=r.kind,
                memo=r.memo,
                ref=r.ref,
                account=r.account,
                amount=int(r.amount),
            )
            for r in session.execute(stmt)
        ]

    def iter_journal(
        self, session: Session, *, after_seq: int = 0, limit: int | None = None
    ) -> Iterator[PostedTx]:
        if type(after_seq) is not int or after_seq < 0:
            raise ValidationFailed("after_seq must be a non-negative int", field="after_seq")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValidationFailed("limit must be a non-negative int", field="limit")
        if limit == 0:
            return iter(())
        stmt = select(*_JOURNAL_COLUMNS).outerjoin(_E, _E.seq == _T.seq)
        stmt = stmt.where(_T.seq > after_seq)
        if limit is not None:
            # The last seq in the window; the join returns one row per entry, not per tx.
            nth = select(_T.seq).where(_T.seq > after_seq).order_by(_T.seq)
            upper = session.execute(nth.offset(limit - 1).limit(1)).scalar()
            if upper is not None:
                stmt = stmt.where(_T.seq <= upper)
        stmt = stmt.order_by(_T.seq, _E.id).execution_options(yield_per=_BATCH)
        return _group(session.execute(stmt))

    def verify(self, session: Session) -> LedgerCheck:
        audit = ChainAudit()
        for tx in self.iter_journal(session):
            audit.add(tx)

        head = session.execute(select(_H.seq, _H.hash).where(_H.id == 1)).one_or_none()
        head_seq, head_hash = (0, GENESIS_HASH) if head is None else (int(head[0]), head[1])
        if (head_seq, head_hash) != (audit.head_seq, audit.head_hash):
            audit.problem(
                f"head row points at seq {head_seq} ({head_hash[:12]}…) but the journal ends "
                f"at seq {audit.head_seq} ({audit.head_hash[:12]}…)",
                seq=min(head_seq, audit.head_seq) + 1,
            )

        orphan = ~exists().where(_T.seq == _E.seq)
        count, orphan_sum = session.execute(
            select(func.count(), func.coalesce(func.sum(_E.amount), 0)).where(orphan)
        ).one()
        if count:
            audit.problem(f"{count} entries belong to no transaction (sum {int(orphan_sum)})")
            audit.total += int(orphan_sum)

        for account, cached, summed in _balance_mismatches(session):
            audit.problem(f"cached balance of {account} is {cached}, its entries sum to {summed}")
        negative = select(_B.account, _B.balance).where(
            _B.balance < 0, _B.account.not_in(sorted(NEGATIVE_ALLOWED))
        )
        for account, value in session.execute(negative.limit(MAX_PROBLEMS)):
            audit.problem(f"balance of {account} is negative: {int(value)}")
        return audit.result()


def _balance_mismatches(session: Session) -> Iterator[tuple[str, int, int]]:
    """(account, cached balance, sum of entries) wherever the cache disagrees."""
    sums = select(_E.account, func.sum(_E.amount).label("total")).group_by(_E.account)
    sums_q = sums.subquery()
    cached_wrong = (
        select(_B.account, _B.balance, sums_q.c.total)
        .outerjoin(sums_q, sums_q.c.account == _B.account)
        .where(
            or_(
                sums_q.c.total.is_(None) & (_B.balance != 0),
                sums_q.c.total != _B.balance,
            )
        )
        .order_by(_B.account)
        .limit(MAX_PROBLEMS)
    )
    for account, cached, summed in session.execute(cached_wrong):
        yield account, int(cached), int(summed or 0)
    uncached = (
        select(sums_q.c.account, sums_q.c.total)
        .outerjoin(_B, _B.account == sums_q.c.account)
        .where(_B.account.is_(None), sums_q.c.total != 0)
        .order_by(sums_q.c.account)
        .limit(MAX_PROBLEMS)
    )
    for account, summed in session.execute(uncached):
        yield account, 0, int(summed)


def _insert_head_if_missing(session: Session) -> Any:
    values = {"id": 1, "seq": 0, "hash": GENESIS_HASH}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(_H).values(**values).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(_H).values(**values).on_conflict_do_nothing()
    return insert(_H).values(**values)  # other databases: first writers must not race
