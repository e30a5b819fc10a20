"""``job explain``: for each waiting task, every node and the rule that keeps it away.

"No bids, no reason" is the top complaint of Akash users; here a client sees, per node,
the first rule of :func:`quackmesh.coordinator.scheduler.rules.exclusion` that fails, the
very function the scheduler's ``claim_tasks`` applies, so the reason shown is the reason
the scheduler acts on. Nothing is re-implemented here except the human wording.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Job, Node, Task
from quackmesh.coordinator.jobs.service import tasks_of
from quackmesh.coordinator.scheduler.rules import (
    NodeView,
    Reason,
    TaskView,
    claim_delay,
    exclusion,
    match_score,
)
from quackmesh.coordinator.scheduler.views import node_views, task_view
from quackmesh.core.money import format_duck
from quackmesh.core.schemas import ExplainEntry, ExplainPublic, ExplainTask, JobState, TaskState
from quackmesh.ledger import Ledger

__all__ = [
    "MAX_CANDIDATES",
    "Candidate",
    "Rules",
    "describe",
    "explain_job",
    "explain_task",
    "summarize",
]

MAX_CANDIDATES = 500  # nodes evaluated per job, most recently seen first
_ORDER = {reason: i for i, reason in enumerate(Reason)}
_FINISHED = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


@dataclass(frozen=True)
class Candidate:
    """A node as matching sees it, plus what the explanation shows about it."""

    view: NodeView
    name: str
    last_seen_at: float


@dataclass(frozen=True)
class Rules:
    """The coordinator settings the rules take, and the moment they are applied at."""

    min_stake: int
    window_s: float
    now: float


def _ago(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7_200:
        return f"{s / 60:.0f} min"
    if s < 172_800:
        return f"{s / 3_600:.0f} h"
    return f"{s / 86_400:.0f} d"


def _short(address: str) -> str:
    return f"{address[:10]}…" if len(address) > 12 else address


def describe(
    reason: Reason | None,
    cand: Candidate,
    task: TaskView,
    rules: Rules,
    *,
    failed_on: frozenset[str] = frozenset(),
) -> str:
    """One human line for why ``reason`` applies to ``cand`` (or why it may take the task)."""
    node = cand.view
    price = format_duck(node.price_per_unit)
    match reason:
        case None:
            if task.rental_id is not None:
                return f"in rental {task.rental_id}; can take it now"
            return f"can take it now at {price}/unit"
        case Reason.OFFLINE:
            return f"offline: last seen {_ago(rules.now - cand.last_seen_at)} ago"
        case Reason.DRAINING:
            return "draining: finishing its work, taking nothing new"
        case Reason.CAPABILITY:
            return f"does not run {task.kind}"
        case Reason.MODEL:
            return f"does not serve model {task.model}"
        case Reason.RENTED:
            return f"reserved by rental {node.rental_id}"
        case Reason.NOT_IN_RENTAL:
            return f"not part of rental {task.rental_id}"
        case Reason.PINNED:
            return f"this task is reserved for node {_short(task.pinned_node or '')}"
        case Reason.PRICE:
            return f"asks {price}/unit, job pays at most {format_duck(task.max_price)}/unit"
        case Reason.STAKE:
            return (
                f"effective stake {format_duck(node.stake)} < minimum "
                f"{format_duck(rules.min_stake)}"
            )
        case Reason.EXCLUDED:
            if node.address in failed_on:
                return "already failed this task"
            return "already ran or failed a replica of this job"
        case Reason.VERIFIER:
            return "a reference re-run needs an operator-marked verifier"
        case Reason.REPUTATION:
            return f"reputation {node.reputation:.2f} < {task.min_reputation:.2f} needed"
        case Reason.BUSY:
            return f"{node.busy}/{node.slots} slots busy"
        case Reason.WAITING:
            score = match_score(
                reputation=node.reputation,
                stake=node.stake,
                min_stake=rules.min_stake,
                price=node.price_per_unit,
                max_price=task.max_price,
            )
            left = task.queued_at + claim_delay(score, rules.window_s) - rules.now
            return f"a better-scored node has first pick for {max(0.0, left):.1f} s"
    return str(reason)  # pragma: no cover - every Reason is matched above


def explain_task(
    task: TaskView,
    candidates: Sequence[Candidate],
    rules: Rules,
    *,
    failed_on: frozenset[str] = frozenset(),
) -> list[ExplainEntry]:
    """Every candidate with the first rule that excludes it; eligible ones first."""
    entries: list[tuple[int, ExplainEntry]] = []
    for cand in candidates:
        reason = exclusion(
            cand.view,
            task,
            min_stake=rules.min_stake,
            now=rules.now,
            window_s=rules.window_s,
            check_busy=True,
        )
        entry = ExplainEntry(
            node=cand.view.address,
            name=cand.name,
            eligible=reason is None,
            reason=None if reason is None else reason.value,
            detail=describe(reason, cand, task, rules, failed_on=failed_on),
        )
        entries.append((-1 if reason is None else _ORDER[reason], entry))
    entries.sort(key=lambda pair: pair[0])  # stable: keeps most recently seen first
    return [entry for _, entry in entries]


def _task_summary(entries: Sequence[ExplainEntry]) -> str:
    if not entries:
        return "no node is registered"
    eligible = sum(e.eligible for e in entries)
    if eligible:
        return f"{eligible} of {len(entries)} nodes could take it now"
    counts = Counter(e.reason for e in entries if e.reason is not None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], _ORDER[Reason(kv[0])]))
    return "no node can take it: " + ", ".join(f"{n} {reason}" for reason, n in ranked)


def summarize(state: JobState, tasks: Sequence[ExplainTask], *, scanned_note: str = "") -> str:
    """One line for the whole job: how many nodes could take each waiting task."""
    if state in _FINISHED:
        return f"the job is finished ({state.value}); no task is waiting for a node"
    waiting = [t for t in tasks if t.state == TaskState.QUEUED]
    running = [t for t in tasks if t.state == TaskState.LEASED]
    parts: list[str] = []
    if len(waiting) == 1:
        parts.append(_task_summary(waiting[0].candidates))
    else:
        parts.extend(f"task {t.task_id}: {_task_summary(t.candidates)}" for t in waiting)
    if running:
        parts.append(f"{len(running)} task{'s' if len(running) > 1 else ''} running")
    if not parts:
        return "no task is waiting for a node"
    return "; ".join(parts) + scanned_note


def _holder_entry(task: Task, candidate: Candidate | None, now: float) -> ExplainEntry:
    address = task.node or ""
    left = f" (lease ends in {_ago((task.lease_expires_at or now) - now)})"
    return ExplainEntry(
        node=address,
        name=candidate.name if candidate is not None else "",
        eligible=True,
        reason=None,
        detail=f"running on it{left}",
    )


def _candidates(session: Session, ledger: Ledger, nodes: Iterable[Node]) -> dict[str, Candidate]:
    rows = list(nodes)
    views = node_views(ledger, session, rows)
    return {
        n.address: Candidate(view=views[n.address], name=n.name, last_seen_at=n.last_seen_at)
        for n in rows
    }


def explain_job(
    session: Session,
    job: Job,
    *,
    ledger: Ledger,
    rules: Rules,
    max_nodes: int = MAX_CANDIDATES,
) -> ExplainPublic:
    state = JobState(job.state)
    if state in _FINISHED:
        return ExplainPublic(job_id=job.id, state=state, summary=summarize(state, []), tasks=[])
    open_tasks = [
        t for t in tasks_of(session, job.id) if t.state in {TaskState.QUEUED, TaskState.LEASED}
    ]
    nodes = list(
        session.scalars(
            select(Node).order_by(Node.last_seen_at.desc(), Node.address).limit(max_nodes)
        )
    )
    cands = _candidates(session, ledger, nodes)
    holders = [t.node for t in open_tasks if t.node and t.node not in cands]
    if holders:
        extra = session.scalars(select(Node).where(Node.address.in_(holders)))
        cands.update(_candidates(session, ledger, extra))
    ordered = [cands[n.address] for n in nodes]
    explained: list[ExplainTask] = []
    for task in open_tasks:
        if task.state == TaskState.LEASED:
            entries = [_holder_entry(task, cands.get(task.node or ""), rules.now)]
        else:
            failed_on = frozenset(str(f.get("node", "")) for f in task.failures)
            entries = explain_task(task_view(task, job), ordered, rules, failed_on=failed_on)
        explained.append(
            ExplainTask(
                task_id=task.id, role=task.role, state=TaskState(task.state), candidates=entries
            )
        )
    note = ""
    total = session.scalar(select(func.count()).select_from(Node)) or 0
    if total > len(nodes):
        note = f" (checked the {len(nodes)} most recently seen of {total} nodes)"
    return ExplainPublic(
        job_id=job.id,
        state=state,
        summary=summarize(state, explained, scanned_note=note),
        tasks=explained,
    )
