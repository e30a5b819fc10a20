"""Property test: money is conserved through slashing, disputes and rentals.

A hypothesis state machine builds one coordinator per run (the real app in-process behind
the SDK, a fresh SQLite database) and drives random sequences through it: faucets,
staking and unbonding, jobs under the ``none`` / ``redundant`` / ``adaptive`` policies run
by honest and cheating nodes, lease expiry, cancellation, disputes re-run by
high-reputation nodes, rentals, and time passing (sweeps at chosen ``now``).

A refusal (4xx) is legal where the model predicts it, and then nothing may have been
written to the journal; any other error fails. After every step: the journal verifies and
sums to zero, only ``mint`` is negative and it is exactly minus what the faucet minted,
every job's and rental's escrow matches its bookkeeping (and is empty once closed), what
a job paid is what its tasks were paid, and every slash that took stake has its ledger
transaction.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from quackmesh.coordinator import Settings, create_app
from quackmesh.coordinator.db.models import (
    Dispute,
    Job,
    Node,
    NodeTrust,
    Rental,
    RentalNode,
    Slash,
    Task,
    Unbonding,
)
from quackmesh.coordinator.nodes.liveness import Beat
from quackmesh.coordinator.rentals.service import rental_cost
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.scheduler.views import active_rentals, effective_stakes
from quackmesh.coordinator.sweeper import sweep_once
from quackmesh.core.errors import (
    InsufficientBalance,
    InvalidState,
    LeaseLost,
    QuackMeshError,
    ValidationFailed,
)
from quackmesh.core.schemas import (
    Hardware,
    NodeRegister,
    TaskLease,
    TaskReport,
    TaskState,
    Verification,
)
from quackmesh.core.wallet import Wallet
from quackmesh.ledger import (
    MINT,
    TREASURY,
    LedgerEntry,
    LedgerTransaction,
    job_escrow_account,
    rental_escrow_account,
    stake_account,
    wallet_account,
)
from quackmesh.sdk import Client

from .conftest import BASE
from .test_verification import LINE_RESULT, OTHER, WRONG, FixedRng

T = TypeVar("T")

DUCK = 1_000_000
MIN_STAKE = 1_000 * DUCK  # the default min_stake
PPH = 3_600_000  # 3.6 DUCK an hour: 1,000 micro-DUCK a second
LEASE_S = 600.0  # longer than the unbonding: a node can unbond all its stake mid-lease
UNBONDING_S = 100.0
TERMINAL = ("succeeded", "failed", "cancelled")
OPEN = (TaskState.QUEUED.value, TaskState.LEASED.value)
MAX_NODES = 7
MAX_CLIENTS = 4

# Policy name -> (verification, max_replicas): the escrow is max_price × units × that.
POLICIES: dict[str, tuple[Verification, int]] = {
    "none": (Verification(policy="none"), 1),
    "redundant-2": (Verification(policy="redundant", replicas=2), 4),
    "redundant-3": (Verification(policy="redundant", replicas=3), 5),
    "adaptive": (Verification(policy="adaptive"), 3),
}

STAKE_MOVES = [
    *("stake 1", "stake half", "stake min"),
    *("unstake 1", "unstake half", "unstake all", "unstake all+1", "unstake min"),
]

picks = st.integers(min_value=0, max_value=1_000)  # an index, taken modulo a list's length


@dataclass
class Actor:
    sdk: Client
    honest: bool = True  # a node: reports the right answer (else a wrong one)
    for_rent: bool = False  # a node with an hourly price

    @property
    def address(self) -> str:
        return self.sdk.address


@dataclass
class Held:
    node: Actor
    lease: TaskLease


def pick(items: list[T], i: int) -> T:
    return items[i % len(items)]


class TrustMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="qm-trust-"))
        app = create_app(
            Settings(
                home=self.tmp / "home",
                database_url=f"sqlite:///{self.tmp / 'coordinator.db'}",
                dev_mode=True,
                access_log=False,
                log_level="WARNING",
                sweep_interval_s=3600.0,  # the machine drives sweep_once() itself
                match_window_s=0.0,
                lease_s=LEASE_S,
                unbonding_s=UNBONDING_S,
                rate_submit_per_s=10_000.0,
                rate_submit_burst=10_000,
                rate_read_per_s=10_000.0,
                rate_read_burst=10_000,
            ),
            configure_logs=False,
        )
        self.tc = TestClient(app, base_url=BASE)
        self.tc.__enter__()
        self.rt: Runtime = app.state.runtime
        self.data = self.tmp / "line.csv"
        self.data.write_text("x,y\n1,3\n2,5\n3,7\n4,9\n")
        self.minted = 0  # every faucet call, by our own count
        self.clients: list[Actor] = []
        self.nodes: list[Actor] = []
        self.jobs: list[tuple[Actor, str]] = []
        self.rentals: list[tuple[Actor, str]] = []
        self.held: list[Held] = []
        self.auditor = self._sdk()
        self.seen: dict[str, tuple[int, int]] = {}  # see _unchanged_since_last_look

    def teardown(self) -> None:
        self.tc.__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- helpers ---------------------------------------------------------------------

    def _sdk(self) -> Client:
        return Client(BASE, Wallet.create(), transport=self.tc._transport)

    def _faucet(self, actor: Actor, amount: int) -> None:
        actor.sdk.faucet(amount)
        self.minted += amount

    def _read(self, fn: Callable[[Session], T]) -> T:
        with self.rt.sessions() as session:
            return fn(session)

    def _balance(self, account: str) -> int:
        return self._read(lambda s: self.rt.ledger.balance(s, account))

    def _journal_len(self) -> int:
        return self._read(
            lambda s: int(s.scalar(select(func.count()).select_from(LedgerTransaction)) or 0)
        )

    def _attempt(
        self,
        name: str,
        call: Callable[[], T],
        refusal: type[QuackMeshError] | None,
    ) -> T | None:
        """Run ``call``: it must be refused with ``refusal`` (writing nothing) if one is
        predicted, and must succeed otherwise. Any other error fails the test."""
        before = self._journal_len()
        try:
            result = call()
        except QuackMeshError as exc:
            if refusal is None or not isinstance(exc, refusal):
                raise
            assert self._journal_len() == before, f"{name} was refused but wrote to the journal"
            event(f"{name}: refused ({type(exc).__name__})")
            return None
        assert refusal is None, f"{name} succeeded; expected {refusal.__name__}"
        event(f"{name}: done")
        return result

    def _register(self, *, honest: bool, trusted: bool, price: int, pph: int, stake: int) -> None:
        node = Actor(self._sdk(), honest=honest, for_rent=pph > 0)
        node.sdk.register_node(
            NodeRegister(
                name="prop-node",
                hardware=Hardware(cpu_cores=2, ram_bytes=2**30),
                price_per_unit=price,
                slots=2,
                workloads=["ml.linear_regression"],
                price_per_hour=pph,
            )
        )
        if stake > 0:
            self._faucet(node, stake)
            node.sdk.stake(stake)
        if trusted:  # reputation to re-run disputes; a long valid run for adaptive trust
            with self.rt.sessions.begin() as session:
                row = session.get(Node, node.address)
                assert row is not None
                row.rep_validity = row.rep_timeliness = row.rep_uptime = 1.0
                session.add(
                    NodeTrust(
                        node=node.address,
                        kind="ml.linear_regression",
                        consecutive_valid=50,
                        valid=50,
                        invalid=0,
                        updated_at=time.time(),
                    )
                )
        self.nodes.append(node)

    def _report(self, held: Held, result: dict[str, object] | None) -> None:
        """Report ``result`` (``None``: a failure) for a lease, predicting LeaseLost."""
        self.held = [h for h in self.held if h is not held]

        def still_held(s: Session) -> bool:
            task = s.get(Task, held.lease.task_id)
            assert task is not None
            return (
                task.state == TaskState.LEASED.value
                and task.node == held.node.address
                and task.lease_id == held.lease.lease_id
            )

        if result is None:
            body = TaskReport(
                lease_id=held.lease.lease_id, outcome="failed", failure_reason="crash"
            )
        else:
            body = TaskReport(lease_id=held.lease.lease_id, outcome="succeeded", output=result)
        refusal = None if self._read(still_held) else LeaseLost
        name = "report " + ("failure" if result is None else "result")
        self._attempt(name, lambda: held.node.sdk.report(held.lease.task_id, body), refusal)

    def _own_result(self, node: Actor) -> dict[str, object]:
        return LINE_RESULT if node.honest else WRONG

    def _lease(self, node: Actor) -> Held | None:
        tasks = node.sdk.lease(max_tasks=1, wait_s=0).tasks
        if not tasks:
            return None
        held = Held(node, tasks[0])
        self.held.append(held)
        return held

    # --- setup -----------------------------------------------------------------------

    @initialize(
        rentable=st.lists(st.booleans(), min_size=6, max_size=6),
        extra=st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), max_size=1),
        jobs=st.lists(st.sampled_from(sorted(POLICIES)), min_size=1, max_size=4),
    )
    def start(
        self, rentable: list[bool], extra: list[tuple[bool, bool, bool]], jobs: list[str]
    ) -> None:
        """A funded client; nodes staked with three times the minimum: two honest, three
        honest and trusted enough to re-run disputes, one cheater, and maybe one more of
        any kind (some for rent); and a few jobs queued."""
        client = Actor(self._sdk())
        self._faucet(client, 500 * DUCK)
        self.clients.append(client)
        # (honest, trusted, price per unit): every one but the second takes 300-priced jobs
        kinds = [(True, False, 300), (True, False, 500), (True, True, 200), (True, True, 250)]
        kinds += [(True, True, 300), (False, False, 300)]
        kinds += [(honest, trusted, 400) for honest, trusted, _ in extra]
        rents = rentable + [r for _, _, r in extra]
        for (honest, trusted, price), for_rent in zip(kinds, rents, strict=True):
            self._register(
                honest=honest,
                trusted=trusted,
                price=price,
                pph=PPH if for_rent else 0,
                stake=3 * MIN_STAKE,  # room to unstake some and lose a few slashes
            )
        for policy in jobs:
            self._submit(client, policy, check=True, max_price=1_000, on_rental=False)

    # --- accounts and stake ----------------------------------------------------------

    @rule(
        i=picks,
        who=st.sampled_from(["new client", "client", "node"]),
        amount=st.sampled_from([2_000, 5 * DUCK, 50 * DUCK, MIN_STAKE]),
    )
    def fund(self, i: int, who: str, amount: int) -> None:
        """The faucet pays a new client (while there are few), a client or a node."""
        if who == "new client" and len(self.clients) < MAX_CLIENTS:
            self.clients.append(Actor(self._sdk()))
            actor = self.clients[-1]
        else:
            actor = pick(self.nodes if who == "node" else self.clients, i)
        self._faucet(actor, amount)

    @precondition(lambda self: len(self.nodes) < MAX_NODES)
    @rule(
        honest=st.booleans(),
        trusted=st.booleans(),
        price=st.sampled_from([200, 400, 900]),
        pph=st.sampled_from([0, PPH]),
        stake=st.sampled_from([0, MIN_STAKE, 2 * MIN_STAKE, 5 * MIN_STAKE]),
    )
    def add_node(self, honest: bool, trusted: bool, price: int, pph: int, stake: int) -> None:
        self._register(honest=honest, trusted=trusted, price=price, pph=pph, stake=stake)

    @rule(
        i=picks,
        node=st.booleans(),
        how=st.sampled_from(STAKE_MOVES),
    )
    def move_stake(self, i: int, node: bool, how: str) -> None:
        """Stake from the wallet (refused beyond it) or unstake (refused beyond the
        effective stake: staked minus what is already unbonding)."""
        actor = pick(self.nodes if node else self.clients, i)
        verb, size = how.split()

        def counts(s: Session) -> tuple[int, int, int]:
            effective = effective_stakes(self.rt.ledger, s, [actor.address])[actor.address]
            wallet = self.rt.ledger.balance(s, wallet_account(actor.address))
            rows = s.scalar(select(func.count()).select_from(Unbonding)) or 0
            return effective, wallet, rows

        effective, wallet, rows = self._read(counts)
        if verb == "stake":
            amount = {"1": 1, "half": max(1, wallet // 2), "min": MIN_STAKE}[size]
            refusal = InsufficientBalance if amount > wallet else None
            self._attempt("stake", lambda: actor.sdk.stake(amount), refusal)
            return
        amount = {
            "1": 1,
            "half": max(1, effective // 2),
            "all": max(1, effective),
            "all+1": effective + 1,
            "min": MIN_STAKE,
        }[size]
        refusal = InsufficientBalance if amount > effective else None
        self._attempt("unstake", lambda: actor.sdk.unstake(amount), refusal)
        assert self._read(counts)[2] == rows + (refusal is None)

    # --- jobs ------------------------------------------------------------------------

    @rule(
        i=picks,
        policy=st.sampled_from(sorted(POLICIES)),
        check=st.booleans(),
        max_price=st.sampled_from([1_000, 300]),
        on_rental=st.booleans(),
        run_by=st.none() | picks,
    )
    def submit(
        self,
        i: int,
        policy: str,
        check: bool,
        max_price: int,
        on_rental: bool,
        run_by: int | None,
    ) -> None:
        """Submit a job; with ``run_by``, that node works at once (it takes the oldest
        task it may, not necessarily this job's)."""
        self._submit(
            pick(self.clients, i), policy, check=check, max_price=max_price, on_rental=on_rental
        )
        if run_by is not None:
            self._work(pick(self.nodes, run_by))

    def _submit(
        self, client: Actor, policy: str, *, check: bool, max_price: int, on_rental: bool
    ) -> None:
        verification, max_replicas = POLICIES[policy]
        # Adaptive: the dice are thrown when the primary reports; 0.0 always spot-checks,
        # 0.999 skips the check of a trusted node (p = 1/50). The last submit's choice holds.
        self.rt.rng = FixedRng(0.0 if check else 0.999)
        rental_id = None
        refusal: type[QuackMeshError] | None = None
        mine = [r for owner, r in self.rentals if owner is client]
        if on_rental and mine:
            rental_id = mine[-1]
            rental = self._read(lambda s: s.get_one(Rental, rental_id))
            if rental.state != "active" or time.time() >= rental.ends_at:
                refusal = InvalidState
        elif self._balance(wallet_account(client.address)) < max_price * max_replicas:
            refusal = InsufficientBalance  # one unit of work: linear regression on 4 rows
        job = self._attempt(
            f"submit {policy}" + (" on rental" if rental_id else ""),
            lambda: client.sdk.submit(
                "ml.linear_regression",
                data=self.data,
                params={"target": "y"},
                max_price=max_price,
                verification=verification,
                rental_id=rental_id,
            ),
            refusal,
        )
        if job is not None:
            assert job.units == 1
            assert job.escrowed == (0 if rental_id else max_price * max_replicas)
            self.jobs.append((client, job.id))

    @precondition(lambda self: self.nodes)
    @rule(i=picks)
    def lease(self, i: int) -> None:
        held = self._lease(pick(self.nodes, i))
        event("lease: got a task" if held else "lease: nothing")

    @precondition(lambda self: self.held)
    @rule(i=picks, what=st.sampled_from(["own", "own", "right", "other", "failed"]))
    def report(self, i: int, what: str) -> None:
        held = pick(self.held, i)
        result = {
            "own": self._own_result(held.node),
            "right": LINE_RESULT,
            "other": OTHER,
            "failed": None,
        }[what]
        self._report(held, result)

    @rule(i=picks)
    def work(self, i: int) -> None:
        """A node leases a task and reports its own answer at once."""
        self._work(pick(self.nodes, i))

    def _work(self, node: Actor) -> None:
        held = self._lease(node)
        if held is not None:
            self._report(held, self._own_result(node))

    @rule(first=picks, finish_held=st.booleans())
    def drain(self, first: int, finish_held: bool) -> None:
        """Every node works (its own answers), node ``first`` first, until nobody gets a
        task: queues run dry, disputes are re-run and decided where enough eligible nodes
        exist. With ``finish_held`` the leases already held report first (late replicas)."""
        self._drain(first, finish_held=finish_held)

    def _drain(self, first: int, *, finish_held: bool) -> None:
        if finish_held:
            for out in list(self.held):
                self._report(out, self._own_result(out.node))
        k = first % len(self.nodes)
        order = self.nodes[k:] + self.nodes[:k]
        for _ in range(12):
            progressed = False
            for node in order:
                held = self._lease(node)
                if held is not None:
                    self._report(held, self._own_result(node))
                    progressed = True
            if not progressed:
                return

    @precondition(lambda self: self.jobs)
    @rule(i=picks)
    def cancel(self, i: int) -> None:
        client, job_id = pick(self.jobs, i)
        state = self._read(lambda s: s.get_one(Job, job_id).state)
        self._attempt(
            "cancel",
            lambda: client.sdk.cancel(job_id),
            InvalidState if state in TERMINAL else None,
        )

    @precondition(lambda self: self.jobs)
    @rule(
        i=picks,
        which=st.sampled_from(["any", "succeeded", "suspect"]),
        then_drain=st.booleans(),
    )
    def dispute(self, i: int, which: str, then_drain: bool) -> None:
        """Dispute a job: any, one that succeeded, or one whose accepted result came from a
        cheater (if there is such a job); with ``then_drain`` the held leases report and
        every node works right after."""
        cheaters = {n.address for n in self.nodes if not n.honest}

        def candidates(s: Session) -> set[str]:
            if which == "any":
                return set()
            stmt = select(Job.id).where(Job.state == "succeeded")
            if which == "suspect":
                stmt = stmt.join(Task, Task.job_id == Job.id).where(
                    Task.node.in_(cheaters),
                    Task.dispute_id.is_(None),
                    Task.verdict.in_(["valid", "unchecked"]),
                )
            return set(s.scalars(stmt))

        wanted = self._read(candidates)
        client, job_id = pick([j for j in self.jobs if j[1] in wanted] or self.jobs, i)

        def predict(s: Session) -> type[QuackMeshError] | None:
            job = s.get(Job, job_id)
            assert job is not None
            if job.state != "succeeded":
                return InvalidState
            # A replica still out (a late one, or an open dispute's re-runs): refused.
            running = s.scalar(select(Task.id).where(Task.job_id == job_id, Task.state.in_(OPEN)))
            open_one = s.scalar(
                select(Dispute.id).where(Dispute.job_id == job_id, Dispute.state == "open")
            )
            if running is not None or open_one is not None:
                return InvalidState
            cfg = self.rt.settings
            cost = cfg.dispute_fee + (cfg.dispute_replicas + 2) * job.max_price * job.units
            if self.rt.ledger.balance(s, wallet_account(client.address)) < cost:
                return InsufficientBalance
            return None

        self._attempt(
            "dispute", lambda: client.sdk.dispute(job_id, reason="prop"), self._read(predict)
        )
        if then_drain:
            self._drain(0, finish_held=True)

    # --- rentals ---------------------------------------------------------------------

    @rule(
        i=picks,
        first=picks,
        second=st.none() | picks,
        any_node=st.booleans(),
        hours=st.sampled_from([0.01, 0.05, 1.0]),
        budget=st.sampled_from([DUCK // 10, 10 * DUCK]),
    )
    def rent(
        self, i: int, first: int, second: int | None, any_node: bool, hours: float, budget: int
    ) -> None:
        """Rent one or two nodes (unless ``any_node``, ones with an hourly price)."""
        client = pick(self.clients, i)
        pool = [n for n in self.nodes if any_node or n.for_rent] or self.nodes
        chosen = [pick(pool, first)]
        if second is not None and pick(pool, second) is not chosen[0]:
            chosen.append(pick(pool, second))
        addresses = [n.address for n in chosen]

        def predict(s: Session) -> type[QuackMeshError] | None:
            rows = [s.get(Node, a) for a in addresses]
            stakes = effective_stakes(self.rt.ledger, s, addresses)
            rented = active_rentals(s, addresses)
            for row in rows:
                assert row is not None
                if (
                    row.status != "online"
                    or row.price_per_hour <= 0
                    or stakes[row.address] < self.rt.settings.min_stake
                    or row.address in rented
                ):
                    return InvalidState
            cost = rental_cost([r.price_per_hour for r in rows if r is not None], hours)
            if cost > budget:
                return ValidationFailed
            if self.rt.ledger.balance(s, wallet_account(client.address)) < cost:
                return InsufficientBalance
            return None

        rental = self._attempt(
            "rent",
            lambda: client.sdk.rent(nodes=addresses, hours=hours, budget=budget),
            self._read(predict),
        )
        if rental is not None:
            self.rentals.append((client, rental.id))

    @precondition(lambda self: self.rentals)
    @rule(i=picks)
    def cancel_rental(self, i: int) -> None:
        client, rental_id = pick(self.rentals, i)
        state = self._read(lambda s: s.get_one(Rental, rental_id).state)
        self._attempt(
            "cancel rental",
            lambda: client.sdk.cancel_rental(rental_id),
            InvalidState if state != "active" else None,
        )

    # --- time ------------------------------------------------------------------------

    @rule(delta=st.sampled_from([0.0, 45.0, 150.0, 700.0, 3_700.0]), silent=st.none() | picks)
    def advance(self, delta: float, silent: int | None) -> None:
        """A sweep ``delta`` seconds from now: every node but ``silent`` heartbeats first
        (holding no lease, so leases past their expiry go back to the queue). Settles
        rentals, releases matured unbondings, marks silent nodes offline."""
        now = time.time() + delta
        quiet = None if silent is None else pick(self.nodes, silent)
        for node in self.nodes:
            if node is not quiet:
                self.rt.liveness.beat(node.address, Beat(at=now, running=(), draining=False))
        requeued = sweep_once(self.rt, now=now)
        event(f"advance: {(requeued and 'leases expired') or 'no lease expired'}")

    # --- invariants ------------------------------------------------------------------

    def _unchanged_since_last_look(self, name: str) -> bool:
        """True if neither the journal nor the slashes changed since invariant ``name``
        last looked: it would get the same answer, so the HTTP round trip is skipped."""

        def fingerprint(s: Session) -> tuple[int, int]:
            txs = s.scalar(select(func.max(LedgerTransaction.seq))) or 0
            return int(txs), int(s.scalar(select(func.count()).select_from(Slash)) or 0)

        now = self._read(fingerprint)
        unchanged = self.seen.get(name) == now
        self.seen[name] = now
        return unchanged

    @invariant()
    def journal_verifies_and_sums_to_zero(self) -> None:
        if self._unchanged_since_last_look("journal"):
            return
        check = self.auditor.ledger_check()
        assert check.ok, check.problems
        assert check.total == 0

    @invariant()
    def only_mint_is_negative_and_it_is_what_the_faucet_minted(self) -> None:
        balances = self._read(lambda s: self.rt.ledger.balances(s))
        negative = {a: b for a, b in balances.items() if a != MINT and b < 0}
        assert not negative, negative
        assert balances.get(MINT, 0) == -self.minted
        assert sum(b for a, b in balances.items() if a != MINT) == self.minted

    @invariant()
    def jobs_match_their_tasks_and_escrow(self) -> None:
        fee_bps = self.rt.settings.fee_bps

        def load(
            s: Session,
        ) -> tuple[list[Job], dict[str, list[Task]], dict[str, list[Dispute]], dict[str, int]]:
            jobs = list(s.scalars(select(Job)))
            tasks: dict[str, list[Task]] = defaultdict(list)
            for task in s.scalars(select(Task)):
                tasks[task.job_id].append(task)
            disputes: dict[str, list[Dispute]] = defaultdict(list)
            for row in s.scalars(select(Dispute)):
                disputes[row.job_id].append(row)
            return jobs, tasks, disputes, self.rt.ledger.balances(s, prefix="escrow:job:")

        jobs, tasks, disputes, escrows = self._read(load)
        for job in jobs:
            mine = tasks[job.id]
            originals = [t for t in mine if t.dispute_id is None]
            held = escrows.get(job_escrow_account(job.id), 0)
            where = f"job {job.id} ({job.policy}, {job.state})"
            assert job.paid == sum(t.paid for t in originals), where
            assert job.fee == sum(t.paid * fee_bps // 10_000 for t in originals), where
            for t in mine:
                if t.paid > 0:  # paid; slashed afterwards if a dispute overturned it
                    assert t.payment_state in ("paid", "slashed"), where
                if t.payment_state == "paid":
                    assert t.paid > 0 and t.payment_tx is not None, where
            if job.rental_id is not None:
                assert job.escrowed == 0 and job.paid == 0, where
            open_disputes = [d for d in disputes[job.id] if d.state == "open"]
            open_tasks = [t for t in mine if t.state in OPEN]
            if job.state in TERMINAL and not open_disputes and not open_tasks:
                assert held == 0, f"{where}: {held} left in escrow"
            if not disputes[job.id]:
                assert held == job.escrowed - job.paid - job.refunded, where
                continue
            # Disputed (only once nothing of the job was running): the job's own escrow was
            # settled in full, overturns refunded the client beyond it (clawbacks), and the
            # escrow holds exactly what open disputes escrowed, none of it paid out yet.
            returned = sum(int(d.outcome.get("returned_to_client", 0)) for d in disputes[job.id])
            assert job.escrowed - job.paid - (job.refunded - returned) == 0, where
            assert 0 <= returned <= job.paid, where
            assert held == sum(d.escrowed for d in open_disputes), where
            for d in disputes[job.id]:
                reruns = [t for t in mine if t.dispute_id == d.id]
                if d.state == "open":
                    assert sum(t.paid for t in reruns) == 0, where
                    continue
                assert not [t for t in reruns if t.state in OPEN], where
                # Re-runs paid, the fee to the provider(s) when upheld, the rest refunded.
                rest = d.escrowed - sum(t.paid for t in reruns) - int(d.outcome["refunded"])
                assert rest in ((0, d.fee) if d.state == "upheld" else (0,)), (where, d.state)

    @invariant()
    def rentals_match_their_escrow(self) -> None:
        def load(s: Session) -> tuple[list[Rental], dict[str, int], dict[str, int]]:
            members: dict[str, int] = defaultdict(int)
            for m in s.scalars(select(RentalNode)):
                members[m.rental_id] += m.paid
            escrows = self.rt.ledger.balances(s, prefix="escrow:rental:")
            return list(s.scalars(select(Rental))), members, escrows

        rentals, paid_to_members, escrows = self._read(load)
        for r in rentals:
            held = escrows.get(rental_escrow_account(r.id), 0)
            assert held == r.escrowed - r.paid - r.refunded, r.id
            assert r.paid == paid_to_members[r.id] and r.paid <= r.escrowed
            assert 0 <= r.fee <= r.paid
            if r.state != "active":
                assert held == 0, f"rental {r.id} is {r.state} with {held} in escrow"

    @invariant()
    def every_slash_that_took_stake_is_in_the_ledger(self) -> None:
        if self._unchanged_since_last_look("slashes"):
            return
        slashes = self.auditor.slashes()

        def legs(s: Session) -> dict[str, tuple[str, dict[str, int]]]:
            """Kind and postings of every slash transaction, by tx id."""
            out: dict[str, tuple[str, dict[str, int]]] = {}
            txs = s.scalars(select(LedgerTransaction).where(LedgerTransaction.kind == "slash"))
            for tx in txs:
                entries = s.scalars(select(LedgerEntry).where(LedgerEntry.seq == tx.seq))
                out[tx.tx_id] = (tx.kind, {e.account: e.amount for e in entries})
            return out

        posted = self._read(legs)
        for row in slashes:
            if row.amount > 0:
                assert row.tx_id is not None and row.tx_id in posted, row
                kind, moved = posted[row.tx_id]
                assert kind == "slash"
                assert moved == {stake_account(row.node): -row.amount, TREASURY: row.amount}
            else:
                assert row.amount == 0 and row.tx_id is None, row
        if len(slashes) < 100:  # the endpoint's page: all of them, so no slash unrecorded
            assert {row.tx_id for row in slashes if row.amount > 0} == set(posted)
        slashed_tasks = self._read(
            lambda s: set(s.scalars(select(Task.id).where(Task.payment_state == "slashed")))
        )
        assert slashed_tasks <= {row.task_id for row in slashes}

    @invariant()
    def unbondings_release_at_most_what_was_asked(self) -> None:
        rows = self._read(lambda s: list(s.scalars(select(Unbonding))))
        for row in rows:
            assert 0 <= row.released <= row.amount
            if row.state == "released":
                assert (row.tx_id is not None) == (row.released > 0)
            else:
                assert row.released == 0


TestTrustConservation = TrustMachine.TestCase
TestTrustConservation.settings = settings(
    max_examples=15,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
