"""The round state machine of an ``fl.train`` job; every step is one transaction.

All round state lives in the database (``fl_runs``, ``fl_clients``, ``fl_rounds``), so a
restarted coordinator resumes at the current round and phase. :func:`advance` is called
after every report or failure of a round task and by the sweeper (deadlines)::

    select ──► train ──► (aggregate) ──► select (next round) … ──► done
       └─secure aggregation─► advertise ─► shares ─► train ─► unmask ─► (aggregate)

Each phase sends one task to every client still in the round, pinned to its node:
``fl.secagg`` steps run in the node agent (key agreement, shares), ``fl.local_train`` in the
node's sandbox. A phase ends when every client answered or the round deadline passed; the
silent ones are dropped. A phase left with fewer than ``min_clients`` (or, with secure
aggregation, fewer than the Shamir threshold) retries the round with fresh nodes, at
most ``MAX_RETRIES`` times, then fails the job (the escrow's rest is refunded).
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import FlClient, FlRun, Job, Node, Task
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.scheduler.rules import TaskView, exclusion
from quackmesh.coordinator.scheduler.views import node_views
from quackmesh.core.schemas import JobState, NodeStatus, TaskState
from quackmesh.ledger import job_escrow_account

if TYPE_CHECKING:
    from quackmesh.fl.spec import FlTrainSpec

__all__ = [
    "MAX_RETRIES",
    "SECAGG_KIND",
    "TRAIN_KIND",
    "advance",
    "clients_of",
    "eligible_nodes",
    "on_task_failed",
    "on_task_success",
    "tick",
]

log = logging.getLogger("quackmesh.coordinator.fl")

TRAIN_KIND = "fl.local_train"
SECAGG_KIND = "fl.secagg"
MAX_RETRIES = 2
ACTIVE = ("select", "advertise", "shares", "train", "unmask")
# Which client state a phase waits for, and the state an answer moves it to.
WAITING = {"advertise": "selected", "shares": "advertised", "unmask": "trained"}
ANSWERED = {"advertise": "advertised", "shares": "shared", "train": "trained", "unmask": "revealed"}


def _waiting_state(phase: str, spec: FlTrainSpec) -> str:
    """The client state a phase waits on (training follows the shares under secagg)."""
    if phase == "train":
        return "shared" if spec.secure_aggregation else "selected"
    return WAITING[phase]


def spec_of(job: Job) -> FlTrainSpec:
    from quackmesh.fl.spec import FlTrainSpec

    return FlTrainSpec.model_validate(job.params)


def clients_of(session: Session, run: FlRun) -> list[FlClient]:
    stmt = select(FlClient).where(
        FlClient.job_id == run.job_id,
        FlClient.round == run.round,
        FlClient.attempt == run.retries,
    )
    return list(session.scalars(stmt.order_by(FlClient.client_id)))


def round_tag(run: FlRun) -> str:
    return f"{run.job_id}/{run.round}/{run.retries}"


# --- selection -------------------------------------------------------------------------------


def eligible_nodes(rt: Runtime, session: Session, job: Job, spec: FlTrainSpec) -> list[str]:
    """Online nodes that may take this job's training tasks (the scheduler's own rules)
    and hold its data: the named dataset, or (uploaded data) any trainer."""
    nodes = list(session.scalars(select(Node).where(Node.status == NodeStatus.ONLINE.value)))
    views = node_views(rt.ledger, session, nodes)
    probe = TaskView(
        job_id=job.id,
        kind=TRAIN_KIND,
        max_price=job.max_price,
        excluded_nodes=frozenset(),
        queued_at=0.0,
        min_reputation=spec.min_reputation,
        rental_id=job.rental_id,
    )
    out = []
    for node in nodes:
        if spec.secure_aggregation and SECAGG_KIND not in node.workloads:
            continue
        if spec.dataset is not None and not any(
            d.get("name") == spec.dataset for d in node.datasets
        ):
            continue
        reason = exclusion(
            views[node.address],
            probe,
            min_stake=rt.settings.min_stake,
            now=time.time(),
            window_s=0.0,
            check_busy=False,
        )
        if reason is None:
            out.append(node.address)
    return sorted(out)


def _select(rt: Runtime, session: Session, job: Job, run: FlRun, now: float) -> None:
    spec = spec_of(job)
    eligible = eligible_nodes(rt, session, job, spec)
    shards = run.shards.get("nodes", {}) if run.shards else {}
    if shards:  # the uploaded-data case: keep each shard on its trainer while it is eligible
        keep = [n for n in eligible if n in shards]
        spare = [n for n in eligible if n not in shards]
        chosen = keep[: spec.clients_per_round]
    else:
        spare, chosen = eligible, []
    need = spec.clients_per_round - len(chosen)
    rng = random.Random(f"{spec.seed}/{run.round}/{run.retries}")
    if need > 0:
        chosen += rng.sample(spare, min(need, len(spare)))
    if len(chosen) < spec.min_clients:
        if now > run.deadline:
            _fail(
                rt,
                session,
                job,
                run,
                f"round {run.round}: only {len(eligible)} eligible node(s), "
                f"{spec.min_clients} needed",
                now,
            )
        return  # wait for nodes until the deadline
    if spec.dp is not None and spec.dp.epsilon_budget is not None:
        from quackmesh.coordinator.fl.aggregate import epsilon_after

        eps = epsilon_after(spec, rounds=run.round, eligible=len(eligible))
        if eps > spec.dp.epsilon_budget:
            finish(
                rt,
                session,
                job,
                run,
                now,
                reason=f"ε budget spent: a round more would reach ε={eps:.3g}",
            )
            return
    if run.shards:
        _assign_shards(run, chosen, eligible)
    run.round_started_at = now
    run.deadline = now + spec.round_timeout_s
    run.eligible = len(eligible)
    for i, node in enumerate(sorted(chosen), start=1):
        session.add(
            FlClient(
                job_id=job.id,
                round=run.round,
                attempt=run.retries,
                node=node,
                client_id=i,
                state="selected",
                keys={},
                shares={},
                reveal={},
                n_examples=0,
                score=0.0,
                accepted=False,
                reward=0,
                compute_paid=0,
                units=0,
            )
        )
    session.flush()
    if job.state == JobState.QUEUED.value:
        job.state = JobState.RUNNING.value
        emit(session, "job.running", job_id=job.id, address=job.owner, at=now)
    emit(
        session,
        "fl.round_started",
        job_id=job.id,
        address=job.owner,
        at=now,
        round=run.round,
        clients=sorted(chosen),
        attempt=run.retries,
    )
    if spec.secure_aggregation:
        _start_phase(rt, session, job, run, "advertise", now)
    else:
        _start_phase(rt, session, job, run, "train", now)


def _assign_shards(run: FlRun, chosen: list[str], eligible: list[str]) -> None:
    """Give every chosen node a shard; a shard whose trainer is gone moves to a new one."""
    nodes = {n: i for n, i in dict(run.shards.get("nodes", {})).items() if n in eligible}
    free = [i for i in range(len(run.shards["order"])) if i not in nodes.values()]
    for node in chosen:
        if node not in nodes and free:
            nodes[node] = free.pop(0)
    run.shards = {"order": run.shards["order"], "nodes": nodes}


# --- phases --------------------------------------------------------------------------------


def _new_task(
    session: Session,
    job: Job,
    client: FlClient,
    *,
    kind: str,
    params: dict[str, Any],
    inputs: dict[str, str],
    local_inputs: dict[str, str] | None,
    units: int,
    now: float,
) -> Task:
    from quackmesh.coordinator.jobs.service import new_task

    task = new_task(job, role="fl", now=now, pinned_node=client.node, priority=job.priority)
    task.kind = kind
    task.params = params
    task.inputs = inputs
    task.local_inputs = local_inputs
    task.units = units
    session.add(task)
    client.task_id = task.id
    session.info["tasks_queued"] = session.info.get("tasks_queued", 0) + 1
    return task


def _node_rows(session: Session, node: str, dataset: str) -> int:
    row = session.get(Node, node)
    for info in row.datasets if row is not None else []:
        if info.get("name") == dataset:
            return int(info.get("rows", 0))
    return 0


def _start_phase(
    rt: Runtime, session: Session, job: Job, run: FlRun, phase: str, now: float
) -> None:
    from quackmesh.coordinator.fl import protocol

    spec = spec_of(job)
    run.phase = phase
    run.updated_at = now
    clients = clients_of(session, run)
    if phase == "train":
        _start_train(rt, session, job, run, spec, clients, now)
        return
    waiting = _waiting_state(phase, spec)
    for client in clients:
        if client.state != waiting:
            continue
        params = protocol.step_params(phase, run=run, client=client, clients=clients, spec=spec)
        _new_task(
            session,
            job,
            client,
            kind=SECAGG_KIND,
            params=params,
            inputs={},
            local_inputs=None,
            units=0,
            now=now,
        )


def _start_train(
    rt: Runtime,
    session: Session,
    job: Job,
    run: FlRun,
    spec: FlTrainSpec,
    clients: list[FlClient],
    now: float,
) -> None:
    from quackmesh.coordinator.fl import protocol
    from quackmesh.fl.strategies import make_strategy
    from quackmesh.fl.zoo import count_params
    from quackmesh.workloads.base import ceil_div

    base = {
        **spec.train_params(),
        **make_strategy(spec.strategy.name, spec.strategy.params).client_config(),
    }
    want = _waiting_state("train", spec)
    n_params = count_params(spec.model)
    for client in clients:
        if client.state != want:
            continue
        params = {
            **base,
            "seed": (spec.seed * 1_000_003 + run.round * 1009 + client.client_id) % 2**31,
            "federated_eval": spec.federated_eval,
        }
        inputs = {"model": run.model_sha}
        local: dict[str, str] | None = None
        if spec.dataset is not None:
            local = {"data": spec.dataset}
            rows = _node_rows(session, client.node, spec.dataset)
        else:
            shard = run.shards["order"][run.shards["nodes"][client.node]]
            inputs["data"] = shard
            rows = run.units_cap  # priced at the cap: every shard is at most that big
        if spec.max_rows is not None:
            rows = min(rows, spec.max_rows)
        units = max(1, ceil_div(rows * n_params * spec.local_epochs, 10**6))
        if spec.secure_aggregation:
            params["secagg"] = protocol.train_secagg(
                run=run, client=client, clients=clients, spec=spec
            )
        _new_task(
            session,
            job,
            client,
            kind=TRAIN_KIND,
            params=params,
            inputs=inputs,
            local_inputs=local,
            units=min(units, run.units_cap),
            now=now,
        )


# --- reports ----------------------------------------------------------------------------


def _client_for(session: Session, task: Task) -> tuple[FlRun, FlClient | None]:
    run = session.get(FlRun, task.job_id)
    if run is None:
        raise LookupError(f"job {task.job_id} has no federated run")
    client = session.scalars(select(FlClient).where(FlClient.task_id == task.id)).first()
    return run, client


def on_task_success(
    rt: Runtime,
    session: Session,
    *,
    task: Task,
    job: Job,
    node: Node,
    now: float,
) -> int:
    """A round task reported (``verify.service.on_success`` marked it succeeded): record the
    answer, pay training, move the round on."""
    from quackmesh.coordinator.fl import protocol

    task.verdict = "unchecked"
    output_sha256 = task.output_sha256 or ""
    run, client = _client_for(session, task)
    current = client is not None and client.round == run.round and client.attempt == run.retries
    if client is None or not current or run.phase not in ANSWERED:
        task.payment_state = "unpaid"  # a straggler from a finished phase or round
        return 0
    if client.state != _waiting_state(run.phase, spec_of(job)):
        task.payment_state = "unpaid"
        return 0
    output = _load_output(rt, output_sha256)
    try:
        protocol.record_answer(run.phase, client=client, output=output, spec=spec_of(job))
    except ValueError as exc:
        task.verdict = "invalid"
        task.payment_state = "unpaid"
        _drop(session, job, client, now, reason=f"bad {run.phase} answer: {exc}"[:300])
        advance(rt, session, job=job, now=now)
        return 0
    client.state = ANSWERED[run.phase]
    paid = 0
    if run.phase == "train":
        client.update_sha = output_sha256
        paid = _pay_training(rt, session, job, run, client, task)
    else:
        task.payment_state = "unpaid"  # protocol steps are part of the training price
    advance(rt, session, job=job, now=now)
    return paid


def _load_output(rt: Runtime, sha256: str) -> Any:
    import json

    return json.loads(rt.blobs.path_for(sha256).read_bytes())


def _pay_training(
    rt: Runtime, session: Session, job: Job, run: FlRun, client: FlClient, task: Task
) -> int:
    if task.rental_id is not None:
        task.payment_state = "rental"
        return 0
    amount = (task.price_per_unit or 0) * (task.units or 0)
    # Retried rounds can train more tasks than the escrow priced (rounds × clients): pay
    # what the escrow still holds beyond the unpaid rewards, never more (no 402 to a node).
    escrow = job_escrow_account(job.id)
    spare = rt.ledger.balance(session, escrow) - (spec_of(job).reward_budget - run.reward_paid)
    amount = max(0, min(amount, spare))
    fee = amount * rt.settings.fee_bps // 10_000
    _, tx = rt.ledger.settle_many(
        session,
        escrow=escrow,
        payouts=[(client.node, amount, fee)],
        owner=None,
        ref=job.id,
        memo=f"fl round {run.round} training",
    )
    task.paid = amount - fee
    task.payment_state = "paid"
    task.payment_tx = tx.tx_id if tx is not None else None
    client.compute_paid = amount
    client.units = task.units or 0
    run.compute_paid += amount
    job.paid += amount - fee
    job.fee += fee
    return amount - fee


def on_task_failed(rt: Runtime, session: Session, *, task: Task, job: Job, now: float) -> None:
    """A round task failed or its lease expired: the client drops out of the round."""
    task.state = TaskState.FAILED.value
    task.finished_at = now
    task.lease_id = None
    task.payment_state = "unpaid"
    _, client = _client_for(session, task)
    if client is not None and client.state != "dropped":
        reason = task.failures[-1]["reason"] if task.failures else "failed"
        _drop(session, job, client, now, reason=reason)
    advance(rt, session, job=job, now=now)


# --- the driver ---------------------------------------------------------------------------


def advance(rt: Runtime, session: Session, *, job: Job, now: float) -> None:
    """Move the job's run as far as it can go now (idempotent; safe to call any time)."""
    run = session.get(FlRun, job.id)
    if run is None or run.phase not in ACTIVE:
        return
    if job.state not in (JobState.QUEUED.value, JobState.RUNNING.value):
        run.phase = "failed" if job.state != JobState.SUCCEEDED.value else "done"
        return
    if run.phase == "select":
        _select(rt, session, job, run, now)
        return
    clients = clients_of(session, run)
    waiting_state = _waiting_state(run.phase, spec_of(job))
    waiting = [c for c in clients if c.state == waiting_state]
    if waiting and now < run.deadline:
        stuck = _unreachable(rt, session, job, waiting)
        for client in stuck:  # its task can never be leased: do not wait for the deadline
            _drop(session, job, client, now, reason="node no longer eligible (offline, stake)")
        if len(stuck) < len(waiting):
            return
    for client in waiting:  # past the deadline: the silent ones drop out
        _drop(session, job, client, now, reason=f"no {run.phase} answer before the deadline")
    answered = [c for c in clients if c.state == ANSWERED[run.phase]]
    spec = spec_of(job)
    need = spec.min_clients
    if spec.secure_aggregation:
        from quackmesh.coordinator.fl.protocol import threshold_for

        need = max(need, threshold_for(clients))
    if len(answered) < need:
        _retry(
            rt,
            session,
            job,
            run,
            now,
            f"{len(answered)} of {len(clients)} clients answered {run.phase}; {need} needed",
        )
        return
    nxt = {"advertise": "shares", "shares": "train"}
    if run.phase in nxt:
        _start_phase(rt, session, job, run, nxt[run.phase], now)
    elif run.phase == "train" and spec.secure_aggregation:
        _start_phase(rt, session, job, run, "unmask", now)
    else:
        from quackmesh.coordinator.fl.aggregate import close_round

        close_round(rt, session, job=job, run=run, clients=clients, now=now)
        if run.round > spec.rounds:
            finish(rt, session, job, run, now, reason=None)
        else:
            _select(rt, session, job, run, now)  # the next round starts at once


def _unreachable(
    rt: Runtime, session: Session, job: Job, waiting: list[FlClient]
) -> list[FlClient]:
    """Waiting clients whose queued task its node may no longer lease (it went offline or
    was slashed below the minimum stake); a leased task is given its lease time."""
    queued = []
    for client in waiting:
        task = session.get(Task, client.task_id) if client.task_id else None
        if task is not None and task.state == TaskState.QUEUED.value:
            queued.append(client)
    if not queued:
        return []
    eligible = set(eligible_nodes(rt, session, job, spec_of(job)))
    return [c for c in queued if c.node not in eligible]


def _drop(session: Session, job: Job, client: FlClient, now: float, *, reason: str) -> None:
    client.state = "dropped"
    if client.task_id is not None:
        task = session.get(Task, client.task_id)
        if task is not None and task.state in (TaskState.QUEUED.value, TaskState.LEASED.value):
            task.state = TaskState.CANCELLED.value
            task.lease_id = None
            task.finished_at = now
            task.payment_state = "unpaid"
    emit(
        session,
        "fl.client_dropped",
        job_id=job.id,
        node=client.node,
        at=now,
        round=client.round,
        reason=reason,
    )


def _retry(rt: Runtime, session: Session, job: Job, run: FlRun, now: float, why: str) -> None:
    for client in clients_of(session, run):
        if client.state != "dropped":
            _drop(session, job, client, now, reason="round restarted")
    if run.retries >= MAX_RETRIES:
        _fail(
            rt, session, job, run, f"round {run.round} failed {run.retries + 1} times: {why}", now
        )
        return
    run.retries += 1
    run.phase = "select"
    run.deadline = now + spec_of(job).round_timeout_s
    emit(
        session,
        "fl.round_retry",
        job_id=job.id,
        address=job.owner,
        at=now,
        round=run.round,
        reason=why,
    )
    _select(rt, session, job, run, now)


def _fail(rt: Runtime, session: Session, job: Job, run: FlRun, error: str, now: float) -> None:
    from quackmesh.coordinator.jobs.service import fail_job

    run.phase = "failed"
    run.stop_reason = error
    run.updated_at = now
    fail_job(rt, session, job, error=error, now=now)


def finish(
    rt: Runtime, session: Session, job: Job, run: FlRun, now: float, *, reason: str | None
) -> None:
    """The run is over: publish the final model and its card, refund the escrow's rest."""
    from quackmesh.coordinator.fl.aggregate import final_result
    from quackmesh.coordinator.jobs.service import refund_job
    from quackmesh.core.canon import canonical_json

    run.phase = "done"
    run.stop_reason = reason
    run.updated_at = now
    result = final_result(rt, session, job=job, run=run)
    job.result_sha256 = rt.blobs.put_bytes(session, canonical_json(result), owner=job.owner)
    job.state = JobState.SUCCEEDED.value
    job.completed_at = now
    job.updated_at = now
    refund_job(rt, session, job)
    emit(
        session,
        "job.succeeded",
        job_id=job.id,
        address=job.owner,
        at=now,
        rounds=run.round - 1,
        paid=job.paid,
        refunded=job.refunded,
        stop_reason=reason,
    )


def tick(rt: Runtime, *, now: float | None = None) -> int:
    """The sweeper's pass: advance every active run (deadlines, waiting for nodes, nodes
    that can no longer take their task)."""
    t = time.time() if now is None else now
    with rt.reads() as session:
        ids = list(
            session.scalars(
                select(FlRun.job_id).where(FlRun.phase.in_(ACTIVE))  # few: one per FL job
            )
        )
    queued = 0
    for job_id in ids:
        try:
            with rt.sessions.begin() as session:
                job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one()
                advance(rt, session, job=job, now=t)
                queued += session.info.get("tasks_queued", 0)
        except Exception:
            log.exception("federated run %s could not advance; retrying next sweep", job_id)
    if queued:
        rt.notifier.notify_all()
    return queued
