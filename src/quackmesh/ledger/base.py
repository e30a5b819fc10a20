"""The ledger interface shared by every backend, and the values it returns.

A backend implements five primitives (``post``, ``balance``, ``balances``, ``verify``,
``iter_journal``); the DUCK operations the coordinator uses (faucet, escrow, settle,
refund, transfer) are concrete methods built on them here, so the SQL ledger and a later
EVM ledger settle money the same way. A backend whose chain has native operations (an
escrow contract) may override them.

Shared parameters, documented once:

* ``session`` — the caller's SQLAlchemy session. Ledger methods never commit or roll
  back: the coordinator commits once per state change, so a job row and its escrow land
  or fail together. On an error nothing has been written by the ledger.
* ``amount``, ``fee`` — ``int`` micro-DUCK (see :mod:`quackmesh.core.money`); never floats.
* ``address`` / ``owner`` / ``provider`` — Ethereum addresses in any case; the wallet
  account uses the checksummed form.
* ``ref`` — what the transaction is about (a job or rental id), indexed for lookups.
* ``kind`` — a short lower-case tag (``faucet``, ``escrow``, ``settle``, ``stake`` …).
* ``memo`` — free text for people reading the journal (at most 256 characters).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from quackmesh.core.errors import InsufficientBalance, ValidationFailed
from quackmesh.ledger.accounts import MINT, TREASURY, is_escrow_account, wallet_account

__all__ = ["HistoryEntry", "Ledger", "LedgerCheck", "PostedTx", "Posting"]


@dataclass(frozen=True)
class Posting:
    """One side of a transaction: ``amount`` micro-DUCK into (+) or out of (-) ``account``."""

    account: str
    amount: int


@dataclass(frozen=True)
class PostedTx:
    """A journal transaction as written; ``hash`` chains it to ``prev_hash`` (see hashchain.py)."""

    seq: int
    tx_id: str
    kind: str
    memo: str
    ref: str | None
    created_at: float  # unix seconds, whole microseconds
    entries: tuple[Posting, ...]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class HistoryEntry:
    """One account's side of one transaction (what a wallet's history lists)."""

    seq: int
    at: float
    kind: str
    memo: str
    ref: str | None
    account: str
    amount: int  # + credit, - debit


@dataclass(frozen=True)
class LedgerCheck:
    """The outcome of :meth:`Ledger.verify`.

    ``total`` is the sum of every entry (0 when money is conserved), ``head`` the hash of
    the last transaction, ``first_broken_seq`` the first transaction whose link, hash or
    balance does not check out (``None`` when the chain itself is intact).
    """

    ok: bool
    transactions: int
    head: str
    total: int
    problems: tuple[str, ...]
    first_broken_seq: int | None = None


def _require_amount(name: str, value: object, *, positive: bool) -> int:
    if type(value) is not int:  # bool is an int subclass and floats lose micro-DUCK
        raise ValidationFailed(f"{name} must be an int of micro-DUCK", field=name)
    if value < 0 or (positive and value == 0):
        bound = "positive" if positive else "non-negative"
        raise ValidationFailed(f"{name} must be {bound}, got {value}", field=name)
    return value


def _require_escrow(account: str) -> str:
    if not is_escrow_account(account):
        raise ValidationFailed(f"not an escrow account: {account!r}", field="escrow")
    return account


class Ledger(ABC):
    """A double-entry DUCK ledger: balanced transactions over named accounts."""

    # -- primitives every backend implements -------------------------------------------

    @abstractmethod
    def post(
        self,
        session: Session,
        *,
        kind: str,
        memo: str,
        postings: Sequence[Posting],
        ref: str | None = None,
    ) -> PostedTx:
        """Append one balanced transaction.

        ``ValidationFailed`` unless the postings are non-empty non-zero ints over valid
        accounts that sum to zero; ``InsufficientBalance`` (with ``account``,
        ``available`` and ``required``) if any account but ``mint`` or ``vault`` would
        go negative.
        """

    @abstractmethod
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
        """Entries on ``accounts``, newest first (``before_seq`` pages back)."""

    @abstractmethod
    def balance(self, session: Session, account: str) -> int:
        """The balance of ``account`` in micro-DUCK (0 for an account never used)."""

    @abstractmethod
    def balances(self, session: Session, *, prefix: str | None = None) -> dict[str, int]:
        """Every known balance, sorted by account, optionally only names with ``prefix``."""

    @abstractmethod
    def verify(self, session: Session) -> LedgerCheck:
        """Re-check the whole journal: hash chain, conservation and cached balances."""

    @abstractmethod
    def iter_journal(
        self, session: Session, *, after_seq: int = 0, limit: int | None = None
    ) -> Iterator[PostedTx]:
        """Transactions with ``seq > after_seq`` in order, at most ``limit`` of them."""

    # -- DUCK operations built on the primitives --------------------------------------

    def faucet(
        self, session: Session, *, address: str, amount: int, memo: str = "development faucet"
    ) -> PostedTx:
        """Mint ``amount`` into a wallet (development mode only; the caller checks that)."""
        amount = _require_amount("amount", amount, positive=True)
        postings = [Posting(MINT, -amount), Posting(wallet_account(address), amount)]
        return self.post(session, kind="faucet", memo=memo, postings=postings)

    def escrow(
        self,
        session: Session,
        *,
        owner: str,
        account: str,
        amount: int,
        ref: str,
        memo: str = "escrow",
    ) -> PostedTx:
        """Move ``amount`` from the owner's wallet into the escrow ``account``."""
        amount = _require_amount("amount", amount, positive=True)
        postings = [
            Posting(wallet_account(owner), -amount),
            Posting(_require_escrow(account), amount),
        ]
        return self.post(session, kind="escrow", memo=memo, postings=postings, ref=ref)

    def settle(
        self,
        session: Session,
        *,
        escrow: str,
        provider: str,
        amount: int,
        fee: int,
        ref: str,
        memo: str = "settle",
    ) -> PostedTx | None:
        """Pay ``amount`` out of ``escrow``: ``amount - fee`` to the provider, ``fee`` to
        the treasury. Zero-amount legs are left out; ``None`` when there is nothing to pay.
        """
        amount = _require_amount("amount", amount, positive=False)
        fee = _require_amount("fee", fee, positive=False)
        if fee > amount:
            raise ValidationFailed(f"fee {fee} exceeds amount {amount}", field="fee")
        escrow, payee = _require_escrow(escrow), wallet_account(provider)
        if amount == 0:
            return None
        legs = [
            Posting(escrow, -amount),
            Posting(payee, amount - fee),
            Posting(TREASURY, fee),
        ]
        postings = [leg for leg in legs if leg.amount != 0]
        return self.post(session, kind="settle", memo=memo, postings=postings, ref=ref)

    def _before_escrow_read(self, session: Session) -> None:  # noqa: B027 (optional hook)
        """Hook: serialise before reading an escrow's remainder (backends that need it)."""

    def settle_and_refund(
        self,
        session: Session,
        *,
        escrow: str,
        provider: str,
        owner: str,
        amount: int,
        fee: int,
        ref: str,
        memo: str = "settle",
    ) -> int:
        """Close ``escrow`` in one transaction: ``amount - fee`` to the provider, ``fee`` to
        the treasury, whatever is left back to ``owner``. Returns the refund.

        One journal transaction instead of a settle plus a refund: half the chain appends
        on the hottest path (every accepted task).
        """
        refund, _ = self.settle_many(
            session,
            escrow=escrow,
            payouts=[(provider, amount, fee)],
            owner=owner,
            ref=ref,
            memo=memo,
        )
        return refund

    def settle_many(
        self,
        session: Session,
        *,
        escrow: str,
        payouts: Sequence[tuple[str, int, int]],
        owner: str | None,
        ref: str,
        memo: str = "settle",
        keep: int = 0,
    ) -> tuple[int, PostedTx | None]:
        """Pay several providers out of ``escrow`` in one transaction.

        ``payouts`` are ``(provider, amount, fee)``: ``amount - fee`` to the provider and
        ``fee`` to the treasury. With ``owner`` set, whatever is left beyond ``keep``
        goes back to the owner's wallet; with ``None`` the rest stays in escrow.
        Returns ``(refund, transaction)``; the transaction is ``None`` if nothing moved.
        """
        keep = _require_amount("keep", keep, positive=False)
        checked = []
        for provider, amount, fee in payouts:
            amount = _require_amount("amount", amount, positive=False)
            fee = _require_amount("fee", fee, positive=False)
            if fee > amount:
                raise ValidationFailed(f"fee {fee} exceeds amount {amount}", field="fee")
            checked.append((wallet_account(provider), amount, fee))
        escrow = _require_escrow(escrow)
        self._before_escrow_read(session)
        remaining = self.balance(session, escrow)
        total = sum(amount for _, amount, _ in checked)
        if total + keep > remaining:
            raise InsufficientBalance(
                f"escrow {escrow} holds {remaining}, cannot pay {total} and keep {keep}",
                account=escrow,
                available=remaining,
                required=total + keep,
            )
        refund = remaining - total - keep if owner is not None else 0
        merged: dict[str, int] = {escrow: -(total + refund)}
        for wallet, amount, fee in checked:
            merged[wallet] = merged.get(wallet, 0) + amount - fee
            merged[TREASURY] = merged.get(TREASURY, 0) + fee
        if owner is not None:
            back = wallet_account(owner)
            merged[back] = merged.get(back, 0) + refund
        postings = [Posting(a, v) for a, v in merged.items() if v != 0]
        if not postings:
            return refund, None
        return refund, self.post(session, kind="settle", memo=memo, postings=postings, ref=ref)

    def refund(
        self, session: Session, *, escrow: str, owner: str, ref: str, memo: str = "refund"
    ) -> int:
        """Return whatever is left in ``escrow`` to the owner's wallet; the amount moved."""
        escrow = _require_escrow(escrow)
        wallet = wallet_account(owner)
        self._before_escrow_read(session)
        remaining = self.balance(session, escrow)
        if remaining <= 0:
            return 0
        postings = [Posting(escrow, -remaining), Posting(wallet, remaining)]
        self.post(session, kind="refund", memo=memo, postings=postings, ref=ref)
        return remaining

    def transfer(
        self,
        session: Session,
        *,
        src: str,
        dst: str,
        amount: int,
        kind: str = "transfer",
        memo: str = "",
        ref: str | None = None,
    ) -> PostedTx:
        """Move ``amount`` between two accounts (stake, unstake, slash, payouts …)."""
        amount = _require_amount("amount", amount, positive=True)
        if src == dst:
            raise ValidationFailed("source and destination are the same account", account=src)
        postings = [Posting(src, -amount), Posting(dst, amount)]
        return self.post(session, kind=kind, memo=memo, postings=postings, ref=ref)
