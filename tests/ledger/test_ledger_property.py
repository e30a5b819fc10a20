"""Property test: random faucet/escrow/settle/refund/transfer sequences conserve money.

A hypothesis state machine drives the SQL ledger (SQLite) and a dictionary model side by
side. Operations may fail (overdrafts, bad amounts) but must fail exactly when the model
says so, and after every step: balances equal the model, they sum to zero, only ``mint``
is negative, and ``verify`` finds the journal intact.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy.orm import Session

from quackmesh.core.errors import InsufficientBalance, ValidationFailed
from quackmesh.ledger import (
    MINT,
    TREASURY,
    job_escrow_account,
    rental_escrow_account,
    stake_account,
    wallet_account,
)

from .ledger_support import ALICE, BOB, CAROL, DUCK, open_ledger_db

ADDRESSES = [ALICE, BOB, CAROL]
ESCROWS = [job_escrow_account("j1"), job_escrow_account("j2"), rental_escrow_account("r1")]
ACCOUNTS = [
    MINT,
    TREASURY,
    *ESCROWS,
    *(wallet_account(a) for a in ADDRESSES),
    *(stake_account(a) for a in ADDRESSES),
]


def amounts(top: int) -> st.SearchStrategy[int]:
    """Three draws in four are valid amounts of several sizes; the rest must be refused."""
    return st.one_of(
        st.integers(1, top),
        st.integers(1, top // 10),
        st.integers(1, top // 100),
        st.integers(-1, 0),
    )


Legs = list[tuple[str, int]] | None  # None: the operation must be refused as invalid


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="qm-ledger-"))
        self.db = open_ledger_db(f"sqlite:///{self.tmp / 'ledger.db'}")
        self.model: dict[str, int] = {}

    def teardown(self) -> None:
        self.db.engine.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _run(self, name: str, op: Callable[[Session], object], legs: Legs) -> None:
        net: dict[str, int] = {}
        for account, delta in legs or ():
            net[account] = net.get(account, 0) + delta
        overdraft = any(
            a != MINT and self.model.get(a, 0) + d < 0 for a, d in net.items() if d != 0
        )
        with self.db.sessions() as s:
            try:
                op(s)
            except ValidationFailed:
                event(f"{name}: invalid")
                assert legs is None
                return
            except InsufficientBalance:
                event(f"{name}: overdraft")
                assert legs is not None and overdraft
                return
            s.commit()
        event(f"{name}: posted")
        assert legs is not None and not overdraft
        for account, delta in net.items():
            self.model[account] = self.model.get(account, 0) + delta

    @rule(who=st.sampled_from(ADDRESSES), amount=amounts(10 * DUCK))
    def faucet(self, who: str, amount: int) -> None:
        legs = None if amount <= 0 else [(MINT, -amount), (wallet_account(who), amount)]
        self._run("faucet", lambda s: self.db.ledger.faucet(s, address=who, amount=amount), legs)

    @rule(who=st.sampled_from(ADDRESSES), escrow=st.sampled_from(ESCROWS), amount=amounts(2 * DUCK))
    def escrow(self, who: str, escrow: str, amount: int) -> None:
        legs = None if amount <= 0 else [(wallet_account(who), -amount), (escrow, amount)]
        self._run(
            "escrow",
            lambda s: self.db.ledger.escrow(s, owner=who, account=escrow, amount=amount, ref="r"),
            legs,
        )

    @rule(
        escrow=st.sampled_from(ESCROWS),
        provider=st.sampled_from(ADDRESSES),
        amount=amounts(2 * DUCK),
        fee=st.one_of(st.integers(0, DUCK // 10), st.integers(-1, DUCK)),
    )
    def settle(self, escrow: str, provider: str, amount: int, fee: int) -> None:
        legs: Legs = [
            (escrow, -amount),
            (wallet_account(provider), amount - fee),
            (TREASURY, fee),
        ]
        if amount < 0 or fee < 0 or fee > amount:
            legs = None
        self._run(
            "settle",
            lambda s: self.db.ledger.settle(
                s, escrow=escrow, provider=provider, amount=amount, fee=fee, ref="r"
            ),
            legs,
        )

    @rule(escrow=st.sampled_from(ESCROWS), owner=st.sampled_from(ADDRESSES))
    def refund(self, escrow: str, owner: str) -> None:
        remaining = self.model.get(escrow, 0)

        def op(s: Session) -> None:
            assert self.db.ledger.refund(s, escrow=escrow, owner=owner, ref="r") == remaining

        self._run("refund", op, [(escrow, -remaining), (wallet_account(owner), remaining)])

    @rule(src=st.sampled_from(ACCOUNTS), dst=st.sampled_from(ACCOUNTS), amount=amounts(2 * DUCK))
    def transfer(self, src: str, dst: str, amount: int) -> None:
        legs = None if amount <= 0 or src == dst else [(src, -amount), (dst, amount)]
        self._run(
            "transfer",
            lambda s: self.db.ledger.transfer(s, src=src, dst=dst, amount=amount, kind="move"),
            legs,
        )

    @invariant()
    def balances_match_the_model_and_conserve(self) -> None:
        balances = self.db.balances()
        assert {a: b for a, b in balances.items() if b} == {
            a: b for a, b in self.model.items() if b
        }
        assert sum(balances.values()) == 0
        assert all(b >= 0 for a, b in balances.items() if a != MINT)

    @invariant()
    def journal_verifies(self) -> None:
        check = self.db.verify()
        assert check.ok, check.problems
        assert check.total == 0


TestLedgerConservation = LedgerMachine.TestCase
TestLedgerConservation.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
