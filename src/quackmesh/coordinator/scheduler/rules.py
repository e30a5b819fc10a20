"""Matching rules as pure functions: who may take a task, who goes first, queue priority.

The scheduler (``claim_tasks``) and ``job explain`` both call :func:`exclusion`, so the
reason a client is shown is the rule the scheduler applied. Rules are checked in the
order of :class:`Reason`; the first that fails is the one reported.

Preference (documented in the README, "Matching"): every node gets a **match score**
in [0, 1]::

    score = 0.5 · reputation + 0.3 · min(1, stake / (10 · min_stake)) + 0.2 · (1 − price / max_price)

and a fresh task is held back from a node for ``(1 − score) · match_window_s`` seconds
after it was queued, so when several nodes poll, the best-scored one gets first pick
(a pull-model auction: Akash's bid window, in a second). After the window any eligible
node may take it.

Queue priority ("priority access"): a client with staked DUCK gets
``priority = min(10, stake // priority_stake_step)``; queued tasks are handed out by
priority first, then first in, first out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MAX_PRIORITY",
    "NodeView",
    "Reason",
    "TaskView",
    "claim_delay",
    "client_priority",
    "exclusion",
    "match_score",
]

MAX_PRIORITY = 10


class Reason(StrEnum):
    """Why a node cannot take a task, in the order the rules are checked."""

    OFFLINE = "offline"  # not heartbeating
    DRAINING = "draining"  # finishing its work, taking nothing new
    CAPABILITY = "capability"  # does not advertise the task's workload
    MODEL = "model"  # does not serve the model the task names (served kinds: infer.generate)
    RENTED = "rented"  # reserved by another client's rental
    NOT_IN_RENTAL = "not_in_rental"  # the job runs on a rental this node is not part of
    PINNED = "pinned"  # the task is reserved for another node
    PRICE = "price"  # asks more per unit than the job's max price
    STAKE = "stake"  # holds less than the minimum stake
    EXCLUDED = "excluded"  # already failed this task or ran another replica of its job
    VERIFIER = "verifier"  # a reference re-run needs an operator-marked verifier
    REPUTATION = "reputation"  # a dispute re-run needs a high-reputation node
    BUSY = "busy"  # every slot is taken
    WAITING = "waiting"  # a better-scored node has the first pick for a moment


@dataclass(frozen=True)
class NodeView:
    address: str
    status: str
    workloads: frozenset[str]
    price_per_unit: int
    slots: int
    busy: int  # tasks it holds now
    stake: int  # effective stake: staked minus unbonding, micro-DUCK
    reputation: float
    verifier: bool
    rental_id: str | None  # the active rental it belongs to, if any
    models: frozenset[str] = frozenset()  # names of the models it serves (--serve)


@dataclass(frozen=True)
class TaskView:
    job_id: str
    kind: str
    max_price: int
    excluded_nodes: frozenset[str]
    queued_at: float
    pinned_node: str | None = None
    verifier_only: bool = False
    min_reputation: float = 0.0
    rental_id: str | None = None
    model: str | None = None  # the served model the task needs, if any


def match_score(
    *, reputation: float, stake: int, min_stake: int, price: int, max_price: int
) -> float:
    stake_ref = 10 * max(min_stake, 1_000_000)  # at least 10 DUCK, so min_stake=0 still scales
    stake_part = min(1.0, stake / stake_ref)
    price_part = 1.0 - min(1.0, price / max_price) if max_price > 0 else 0.0
    return 0.5 * reputation + 0.3 * stake_part + 0.2 * price_part


def claim_delay(score: float, window_s: float) -> float:
    """Seconds after queueing before a node with ``score`` may take a fresh task."""
    return max(0.0, 1.0 - score) * window_s


def client_priority(stake: int, step: int) -> int:
    return min(MAX_PRIORITY, max(0, stake) // step)


def exclusion(
    node: NodeView,
    task: TaskView,
    *,
    min_stake: int,
    now: float,
    window_s: float,
    check_busy: bool = True,
) -> Reason | None:
    """The first rule that keeps ``node`` from ``task``, or ``None`` when it may take it."""
    if node.status == "offline":
        return Reason.OFFLINE
    if node.status == "draining":
        return Reason.DRAINING
    if task.kind not in node.workloads:
        return Reason.CAPABILITY
    if task.model is not None and task.model not in node.models:
        return Reason.MODEL
    if task.rental_id is None and node.rental_id is not None:
        return Reason.RENTED
    if task.rental_id is not None and node.rental_id != task.rental_id:
        return Reason.RENTED if node.rental_id else Reason.NOT_IN_RENTAL
    if task.pinned_node is not None and task.pinned_node != node.address:
        return Reason.PINNED
    # Rented nodes are paid by the hour, not per task: no price rule inside a rental.
    if task.rental_id is None and node.price_per_unit > task.max_price:
        return Reason.PRICE
    if node.stake < min_stake:
        return Reason.STAKE
    if node.address in task.excluded_nodes:
        return Reason.EXCLUDED
    if task.verifier_only and not node.verifier:
        return Reason.VERIFIER
    if node.reputation < task.min_reputation:
        return Reason.REPUTATION
    if check_busy and node.busy >= node.slots:
        return Reason.BUSY
    if task.pinned_node is None and task.rental_id is None and window_s > 0:
        score = match_score(
            reputation=node.reputation,
            stake=node.stake,
            min_stake=min_stake,
            price=node.price_per_unit,
            max_price=task.max_price,
        )
        if now < task.queued_at + claim_delay(score, window_s):
            return Reason.WAITING
    return None
