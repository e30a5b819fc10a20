"""Verification policies, slashing, reputation, honeypots and disputes through the real
coordinator (HTTP app in-process, real database: SQLite and PostgreSQL)."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from sqlalchemy import select

from quackmesh.coordinator.db.models import Event, Honeypot, Job, Node, NodeTrust, Slash, Task
from quackmesh.coordinator.sweeper import sweep_once
from quackmesh.coordinator.verify.honeypots import HONEYPOT_OWNER, inject
from quackmesh.core.errors import DevModeOnly, InvalidState, JobNotFound, ValidationFailed
from quackmesh.core.schemas import Hardware, JobState, NodeRegister, TaskState, Verification
from quackmesh.ledger import TREASURY, stake_account, wallet_account
from quackmesh.sdk import Client

from .conftest import Net
from .test_jobs_flow import balances, lease_one
from .test_jobs_flow import succeed as report_success

SHAPE = {"n_samples": 4, "feature_names": ["x"], "target": "y"}
LINE_RESULT = {"coefficients": [2.0], "intercept": 1.0, "r2": 1.0, "mse": 0.0, **SHAPE}
WRONG = {"coefficients": [9.0], "intercept": -3.0, "r2": 0.1, "mse": 7.0, **SHAPE}
OTHER = {"coefficients": [5.0], "intercept": 2.0, "r2": 0.5, "mse": 3.0, **SHAPE}


def succeed(node: Client, lease: Any, result: dict[str, object] = LINE_RESULT) -> int:
    return report_success(node, lease, result)


MIN = 1_000_000_000  # default min_stake: 1,000 DUCK


class FixedRng(random.Random):
    """``random()`` returns a fixed value: drives the adaptive spot-check decision."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def submit(net: Net, client: Client, policy: str, **kw: Any) -> Any:
    return client.submit(
        "ml.linear_regression",
        data=net.csv(),
        params={"target": "y"},
        max_price=1_000,
        verification=Verification(policy=policy, **kw),  # type: ignore[arg-type]
    )


def ledger_ok(net: Net) -> None:
    check = net.client().ledger_check()
    assert check.ok and check.total == 0, check.problems


def set_node(net: Net, address: str, **values: Any) -> None:
    with net.rt.sessions.begin() as session:
        node = session.get(Node, address)
        assert node is not None
        for key, value in values.items():
            setattr(node, key, value)


def test_redundant_majority_wins_and_the_dissenter_is_slashed_unpaid(net: Net) -> None:
    client = net.funded()
    job = submit(net, client, "redundant", replicas=3)
    assert job.escrowed == 1_000 * 5  # max_price × units × max_replicas (k + 2)
    assert [t.role for t in job.tasks] == ["primary", "replica", "replica"]
    a, b, cheat = net.node(price=400), net.node(price=300), net.node(price=200)
    la, lb, lc = lease_one(a), lease_one(b), lease_one(cheat)
    assert len({la.task_id, lb.task_id, lc.task_id}) == 3
    assert succeed(cheat, lc, WRONG) == 0  # waits for the others
    assert succeed(a, la) == 0
    assert client.status(job.id).state == JobState.RUNNING
    assert succeed(b, lb) == 300

    done = client.status(job.id)
    assert done.state == JobState.SUCCEEDED
    assert client.result(job.id).result["coefficients"] == [2.0]
    by_node = {t.node: t for t in done.tasks}
    assert (by_node[a.address].payment_state, by_node[a.address].paid) == ("paid", 400)
    assert by_node[a.address].verdict == "valid" and by_node[a.address].payment_tx
    assert by_node[cheat.address].payment_state == "slashed"
    assert by_node[cheat.address].verdict == "invalid" and by_node[cheat.address].paid == 0
    assert (done.paid, done.fee, done.refunded) == (700, 35, 5_000 - 700)

    (slash,) = client.slashes(node=cheat.address)
    assert slash.amount == MIN // 10 and slash.reason == "lost_vote"
    assert slash.evidence["rejected"]["node"] == cheat.address
    assert {e["node"] for e in slash.evidence["accepted"]} == {a.address, b.address}
    assert slash.tx_id == by_node[cheat.address].payment_tx
    assert balances(net, stake_account(cheat.address), wallet_account(cheat.address)) == [
        MIN - MIN // 10,
        0,
    ]
    assert cheat.stake_info().eligible is False  # below the minimum: no more paid work
    assert cheat.lease(max_tasks=1, wait_s=0).tasks == []
    rep = cheat.node(cheat.address).reputation
    assert rep is not None and rep.validity < 0.5 and rep.results_invalid == 1
    metrics = net.tc.get("/metrics").text
    assert 'quackmesh_slashes_total{reason="lost_vote"} 1.0' in metrics
    ledger_ok(net)


def test_redundant_without_quorum_adds_replicas_up_to_the_cap_then_fails_and_refunds(
    net: Net,
) -> None:
    client = net.funded()
    job = submit(net, client, "redundant", replicas=2, max_replicas=3)
    n1, n2, n3 = net.node(), net.node(), net.node()
    succeed(n1, lease_one(n1), LINE_RESULT)
    succeed(n2, lease_one(n2), WRONG)
    status = client.status(job.id)
    assert status.state == JobState.RUNNING and len(status.tasks) == 3  # one more replica
    succeed(n3, lease_one(n3), OTHER)  # three different answers, cap reached
    done = client.status(job.id)
    assert done.state == JobState.FAILED and "verification failed" in (done.error or "")
    assert done.refunded == done.escrowed and done.paid == 0
    assert {t.payment_state for t in done.tasks} == {"unpaid"}
    assert client.slashes(job_id=job.id) == []  # no majority: nobody can be blamed
    assert client.balance().available == 10_000_000
    ledger_ok(net)


def test_replicas_never_run_twice_on_one_node(net: Net) -> None:
    client = net.funded()
    submit(net, client, "redundant", replicas=2)
    node = net.node(slots=4)
    assert len(node.lease(max_tasks=4, wait_s=0).tasks) == 1
    assert node.lease(max_tasks=4, wait_s=0).tasks == []
    other = net.node()
    assert len(other.lease(max_tasks=4, wait_s=0).tasks) == 1


def test_adaptive_checks_an_untrusted_node_and_a_lost_check_resets_trust(net: Net) -> None:
    client = net.funded()
    job = submit(net, client, "adaptive")
    assert len(job.tasks) == 1 and job.escrowed == 3_000
    cheat, honest, tiebreak = net.node(), net.node(), net.node()
    succeed(cheat, lease_one(cheat), WRONG)
    status = client.status(job.id)
    assert status.state == JobState.RUNNING  # untrusted: always checked
    assert [t.role for t in status.tasks] == ["primary", "check"]
    succeed(honest, lease_one(honest), LINE_RESULT)  # disagreement: a tie-breaker
    assert [t.role for t in client.status(job.id).tasks] == ["primary", "check", "check"]
    succeed(tiebreak, lease_one(tiebreak), LINE_RESULT)
    done = client.status(job.id)
    assert done.state == JobState.SUCCEEDED
    assert client.result(job.id).result["intercept"] == 1.0
    assert [s.node for s in client.slashes(job_id=job.id)] == [cheat.address]
    with net.rt.sessions() as session:
        trust = {t.node: t.consecutive_valid for t in session.scalars(select(NodeTrust))}
    assert trust == {cheat.address: 0, honest.address: 1, tiebreak.address: 1}
    ledger_ok(net)


def test_adaptive_accepts_a_trusted_node_unchecked_when_the_dice_say_so(net: Net) -> None:
    client = net.funded()
    node = net.node()
    with net.rt.sessions.begin() as session:
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
    # p(check) = max(min_check, 1/50) = 0.02: a draw of 0.5 skips the check ...
    net.rt.rng = FixedRng(0.5)
    job = submit(net, client, "adaptive")
    succeed(node, lease_one(node))
    done = client.status(job.id)
    assert done.state == JobState.SUCCEEDED and done.tasks[0].verdict == "unchecked"
    assert done.refunded == 3_000 - 400
    # ... and a draw of 0.01 < 0.02 checks it anyway: trust never means unchecked forever.
    net.rt.rng = FixedRng(0.01)
    job2 = submit(net, client, "adaptive")
    succeed(node, lease_one(node))
    assert [t.role for t in client.status(job2.id).tasks] == ["primary", "check"]


def test_reference_policy_runs_on_a_verifier_and_its_result_decides(net: Net) -> None:
    client = net.funded()
    job = submit(net, client, "reference")
    assert [t.role for t in job.tasks] == ["primary", "reference"]
    worker, plain, verifier = net.node(), net.node(), net.node()
    set_node(net, verifier.address, verifier=True)
    succeed(worker, lease_one(worker), WRONG)
    assert plain.lease(max_tasks=1, wait_s=0).tasks == []  # the reference needs a verifier
    explain = client.explain(job.id)
    reasons = {c.node: c.reason for t in explain.tasks for c in t.candidates}
    assert reasons[plain.address] == "verifier"
    succeed(verifier, lease_one(verifier), LINE_RESULT)
    done = client.status(job.id)
    assert done.state == JobState.SUCCEEDED
    assert client.result(job.id).result["coefficients"] == [2.0]
    assert [s.node for s in client.slashes(job_id=job.id)] == [worker.address]
    ledger_ok(net)


def fund_treasury(net: Net, amount: int) -> None:
    donor = net.funded(amount)
    with net.rt.sessions.begin() as session:
        net.rt.ledger.transfer(
            session, src=wallet_account(donor.address), dst=TREASURY, amount=amount, kind="grant"
        )


def verified_pool_entry(net: Net, client: Client) -> None:
    """A redundant job three nodes agree on: its result becomes a known answer."""
    submit(net, client, "redundant", replicas=3, quorum=3)
    for node in (net.node(), net.node(), net.node()):
        succeed(node, lease_one(node))


def test_honeypot_catches_a_cheater_slashes_it_and_flags_its_recent_jobs(
    net_factory: Any,
) -> None:
    net = net_factory(honeypot_rate=1.0)
    client = net.funded()
    verified_pool_entry(net, client)
    fund_treasury(net, 10_000)
    cheat = net.node()
    job = submit(net, client, "honeypot")
    paid = succeed(cheat, lease_one(cheat), WRONG)  # accepted: honeypot jobs are not replicated
    assert paid == 400 and client.status(job.id).state == JobState.SUCCEEDED
    # The known-answer task is queued for that node and looks like any other lease.
    probe = lease_one(cheat)
    assert probe.kind == "ml.linear_regression" and probe.job_id != job.id
    assert set(probe.model_dump()) == set(lease_one_fields())
    treasury_before = balances(net, TREASURY)[0]
    assert succeed(cheat, probe, WRONG) == 0
    (slash,) = [s for s in client.slashes(node=cheat.address) if s.reason == "honeypot"]
    assert slash.amount == MIN // 10
    with net.rt.sessions() as session:
        flagged = session.scalars(select(Event).where(Event.type == "job.suspect")).all()
    assert [e.job_id for e in flagged] == [job.id]
    assert balances(net, TREASURY)[0] == treasury_before + 400 + MIN // 10  # refund + slash
    ledger_ok(net)


def lease_one_fields() -> tuple[str, ...]:
    return (
        "task_id",
        "job_id",
        "lease_id",
        "kind",
        "params",
        "inputs",
        "lease_expires_at",
        "limits",
        "local_inputs",
    )


def test_honeypot_passed_is_paid_from_the_treasury(net_factory: Any) -> None:
    net = net_factory(honeypot_rate=1.0)
    client = net.funded()
    verified_pool_entry(net, client)
    fund_treasury(net, 10_000)
    node = net.node()
    submit(net, client, "honeypot")
    succeed(node, lease_one(node))
    probe = lease_one(node)
    before = balances(net, wallet_account(node.address), TREASURY)
    assert succeed(node, probe) == 400
    after = balances(net, wallet_account(node.address), TREASURY)
    assert after == [before[0] + 400, before[1]]  # escrowed from the treasury at injection
    assert client.slashes(node=node.address) == []
    ledger_ok(net)


def test_no_honeypot_without_treasury_funds_or_a_verified_answer(net: Net) -> None:
    node = net.node()
    with net.rt.sessions.begin() as session:
        row = session.get(Node, node.address)
        assert row is not None
        assert inject(net.rt, session, node=row, now=time.time()) is None  # empty pool
    client = net.funded()
    submit(net, client, "redundant", replicas=2)  # two agreeing nodes are not enough
    for other in (net.node(), net.node()):
        succeed(other, lease_one(other))
    with net.rt.sessions.begin() as session:
        row = session.get(Node, node.address)
        assert row is not None
        assert inject(net.rt, session, node=row, now=time.time()) is None  # pool still empty
    verified_pool_entry(net, client)
    with net.rt.sessions.begin() as session:
        row = session.get(Node, node.address)
        assert row is not None
        assert inject(net.rt, session, node=row, now=time.time()) is None  # treasury too poor


def run_single(net: Net, client: Client, node: Client, result: dict[str, Any]) -> str:
    job = submit(net, client, "none")
    succeed(node, lease_one(node), result)
    return str(job.id)


def trusted_nodes(net: Net, n: int) -> list[Client]:
    nodes = [net.node() for _ in range(n)]
    for node in nodes:
        set_node(net, node.address, rep_validity=1.0, rep_timeliness=1.0, rep_uptime=1.0)
    return nodes


def test_dispute_overturned_slashes_the_provider_and_refunds_the_client(net: Net) -> None:
    client = net.funded()
    cheat = net.node(price=400)
    job_id = run_single(net, client, cheat, WRONG)
    low = net.node()  # reputation 0.5: too low to re-run a dispute
    r1, r2 = trusted_nodes(net, 2)
    wallet_before = client.balance().available
    dispute = client.dispute(job_id, reason="the fit is nonsense")
    assert dispute.state == "open" and dispute.escrowed == 1_000_000 + 4 * 1_000
    assert low.lease(max_tasks=1, wait_s=0).tasks == []
    assert cheat.lease(max_tasks=1, wait_s=0).tasks == []
    succeed(r1, lease_one(r1))
    succeed(r2, lease_one(r2))
    (resolved,) = client.disputes(job_id)
    assert resolved.state == "overturned"
    assert client.result(job_id).result["coefficients"] == [2.0]  # the right answer now
    # Client: dispute escrow back except the re-runs (2 × 400), plus the 400 it paid.
    assert client.balance().available == wallet_before + 400 - 2 * 400
    assert resolved.outcome["returned_to_client"] == 400
    slashes = client.slashes(node=cheat.address)
    assert [s.reason for s in slashes] == ["dispute"]
    assert balances(net, stake_account(cheat.address))[0] == MIN - 380 - (MIN - 380) // 10
    tasks = {t.node: t for t in client.status(job_id).tasks}
    assert tasks[cheat.address].payment_state == "slashed"
    assert tasks[r1.address].payment_state == "paid"
    ledger_ok(net)


def test_dispute_upheld_pays_the_fee_to_the_provider(net: Net) -> None:
    client = net.funded()
    honest = net.node(price=400)
    job_id = run_single(net, client, honest, LINE_RESULT)
    r1, r2 = trusted_nodes(net, 2)
    before = balances(net, wallet_account(honest.address))[0]
    client.dispute(job_id)
    succeed(r1, lease_one(r1))
    succeed(r2, lease_one(r2))
    (resolved,) = client.disputes(job_id)
    assert resolved.state == "upheld"
    assert balances(net, wallet_account(honest.address))[0] == before + 1_000_000
    assert client.slashes(node=honest.address) == []
    ledger_ok(net)


def test_dispute_rules(net_factory: Any) -> None:
    net = net_factory(dispute_window_s=5.0)
    client = net.funded()
    node = net.node()
    job = submit(net, client, "none")
    with pytest.raises(InvalidState):
        client.dispute(job.id)  # not finished yet
    succeed(node, lease_one(node))
    with pytest.raises(JobNotFound):
        net.funded().dispute(job.id)  # someone else's job
    client.dispute(job.id)
    with pytest.raises(InvalidState):
        client.dispute(job.id)  # one open dispute at a time
    late = submit(net, client, "none")
    succeed(node, lease_one(node))
    with net.rt.sessions.begin() as session:
        row = session.get(Job, late.id)
        assert row is not None
        row.completed_at = time.time() - 60
    with pytest.raises(InvalidState, match="window"):
        client.dispute(late.id)


def test_bad_verification_settings_are_422_with_the_field(net: Net) -> None:
    client = net.funded()
    cases = [
        ({"policy": "redundant", "replicas": 1}, "verification.replicas"),
        ({"policy": "redundant", "replicas": 3, "quorum": 4}, "verification.quorum"),
        ({"policy": "redundant", "replicas": 3, "max_replicas": 2}, "verification.max_replicas"),
        ({"policy": "none", "replicas": 3}, "verification.replicas"),
    ]
    for spec, field in cases:
        with pytest.raises(ValidationFailed) as info:
            submit(net, client, **spec)
        assert info.value.context.get("field") == field
    assert client.balance().available == 10_000_000


def test_unstaked_node_gets_no_paid_work_and_explain_says_stake(net: Net) -> None:
    client = net.funded()
    job = submit(net, client, "none")
    poor = net.node(stake=0)
    assert poor.lease(max_tasks=1, wait_s=0).tasks == []
    reasons = {c.node: c.reason for t in client.explain(job.id).tasks for c in t.candidates}
    assert reasons[poor.address] == "stake"
    poor.faucet(MIN)
    poor.stake(MIN)
    assert len(poor.lease(max_tasks=1, wait_s=0).tasks) == 1


def test_unstaking_unbonds_stays_slashable_and_is_released_after_the_period(
    net_factory: Any,
) -> None:
    net = net_factory(unbonding_s=100.0)
    client = net.funded()
    node = net.node()
    info = node.unstake(MIN // 2)
    assert (info.staked, info.unbonding, info.effective) == (MIN, MIN // 2, MIN // 2)
    assert not info.eligible and node.balance().available == 0
    # A lost vote while unbonding still slashes the whole stake held.
    submit(net, client, "redundant", replicas=2)
    honest = net.node()
    succeed(node, _force_lease(net, node), WRONG)
    succeed(honest, lease_one(honest))
    third = net.node()
    succeed(third, lease_one(third))
    staked_after = node.stake_info().staked
    assert staked_after == MIN - MIN // 10
    sweep_once(net.rt, now=time.time() + 50)
    assert node.balance().available == 0  # not yet
    sweep_once(net.rt, now=time.time() + 101)
    assert node.balance().available == MIN // 2
    assert node.stake_info().staked == staked_after - MIN // 2
    ledger_ok(net)


def _force_lease(net: Net, node: Client) -> Any:
    """Lease for a node below the minimum stake: lower the minimum for one claim."""
    saved = net.rt.settings.min_stake
    object.__setattr__(net.rt.settings, "min_stake", 0)
    try:
        return lease_one(node)
    finally:
        object.__setattr__(net.rt.settings, "min_stake", saved)


def test_staked_clients_jobs_go_first(net: Net) -> None:
    plain, staker = net.funded(), net.funded(5 * MIN)
    staker.stake(3 * MIN)
    assert staker.stake_info().priority == 3
    first = submit(net, plain, "none")
    second = submit(net, staker, "none")
    assert second.priority == 3 and first.priority == 0
    node = net.node()
    assert lease_one(node).job_id == second.id


def test_better_scored_nodes_get_the_first_pick_within_the_match_window(
    net_factory: Any,
) -> None:
    net = net_factory(match_window_s=30.0)
    client = net.funded()
    weak, strong = net.node(price=900), net.node(price=100, stake=10 * MIN)
    set_node(net, strong.address, rep_validity=1.0, rep_timeliness=1.0, rep_uptime=1.0)
    job = submit(net, client, "none")
    # Scores: strong 0.98 (waits 0.6 s), weak 0.30 (waits 21 s). Age the task by 1 s.
    with net.rt.sessions.begin() as session:
        session.execute(
            Task.__table__.update()
            .where(Task.job_id == job.id)
            .values(queued_at=Task.queued_at - 1.0)
        )
    assert weak.lease(max_tasks=1, wait_s=0).tasks == []
    reasons = {c.node: c.reason for t in client.explain(job.id).tasks for c in t.candidates}
    assert reasons[weak.address] == "waiting"
    assert lease_one(strong).job_id == job.id


def test_test_behaviours_are_refused_outside_development_mode(net_factory: Any) -> None:
    net = net_factory(dev_mode=False)
    body = NodeRegister(
        name="cheater",
        hardware=Hardware(cpu_cores=1, ram_bytes=2**30),
        price_per_unit=1,
        slots=1,
        workloads=["ml.kmeans"],
        behaviour="wrong",
    )
    with pytest.raises(DevModeOnly):
        net.client().register_node(body)


def test_reputation_parts_move_with_results_and_lease_expiry(net_factory: Any) -> None:
    net = net_factory(lease_s=5.0, offline_after_s=600.0)
    client = net.funded()
    node = net.node()
    submit(net, client, "none")
    lease_one(node)
    sweep_once(net.rt, now=time.time() + 6)  # the lease expires: timeliness sample 0
    rep = node.node(node.address).reputation
    assert rep is not None and rep.timeliness < 0.5 and rep.validity == 0.5
    with net.rt.sessions() as session:
        slashes = session.scalars(select(Slash)).all()
    assert slashes == []
    task = client.list_jobs()[0].tasks[0]
    assert task.state == TaskState.QUEUED


def test_honeypot_jobs_are_invisible_to_clients(net_factory: Any) -> None:
    net = net_factory(honeypot_rate=1.0)
    client = net.funded()
    verified_pool_entry(net, client)
    fund_treasury(net, 10_000)
    node = net.node()
    submit(net, client, "honeypot")
    succeed(node, lease_one(node))
    jobs = client.list_jobs()
    assert all(j.owner == client.address for j in jobs)
    with net.rt.sessions() as session:
        hidden = session.scalars(select(Job).where(Job.owner == HONEYPOT_OWNER)).all()
    assert len(hidden) == 1 and hidden[0].honeypot


def test_a_late_replica_is_still_judged_paid_if_right_slashed_if_wrong(net: Net) -> None:
    client = net.funded()
    job = submit(net, client, "redundant", replicas=4)  # quorum 3
    a, b, c, slow_cheat = (net.node(price=400) for _ in range(4))
    leases = [lease_one(n) for n in (a, b, c, slow_cheat)]
    for node, lease in zip((a, b, c), leases, strict=False):
        succeed(node, lease)
    decided = client.status(job.id)
    assert decided.state == JobState.SUCCEEDED and decided.paid == 1_200
    # Pay for the replica still running is kept in escrow until it reports.
    assert decided.refunded == decided.escrowed - 1_200 - 400
    with pytest.raises(InvalidState, match="still has a replica"):
        client.dispute(job.id)  # that kept pay lives in the same escrow account
    assert succeed(slow_cheat, leases[3], WRONG) == 0
    done = client.status(job.id)
    late = next(t for t in done.tasks if t.node == slow_cheat.address)
    assert (late.verdict, late.payment_state) == ("invalid", "slashed")
    assert [s.node for s in client.slashes(job_id=job.id)] == [slow_cheat.address]
    assert done.refunded == done.escrowed - 1_200
    ledger_ok(net)

    job2 = submit(net, client, "redundant", replicas=4)
    nodes = (a, b, c, net.node(price=400))
    leases = [lease_one(n) for n in nodes]
    for node, lease in zip(nodes[:3], leases[:3], strict=True):
        succeed(node, lease)
    assert succeed(nodes[3], leases[3]) == 400  # late but right: paid
    assert client.status(job2.id).paid == 1_600
    ledger_ok(net)


def test_a_default_redundant_job_fills_the_known_answer_pool_once_three_agree(net: Net) -> None:
    client = net.funded()
    job = submit(net, client, "redundant")  # k=3, quorum 2
    nodes = (net.node(), net.node(), net.node())
    leases = [lease_one(n) for n in nodes]
    succeed(nodes[0], leases[0])
    succeed(nodes[1], leases[1])  # decided by two: not yet a known answer

    def pool() -> list[str]:
        with net.rt.sessions() as session:
            return [h.source_job for h in session.scalars(select(Honeypot))]

    assert pool() == []
    succeed(nodes[2], leases[2])  # the late third agrees
    assert pool() == [job.id]
