"""Verification policies as pure decision functions (no database, no network).

A job's task is run by one or more *replicas*. After every reported result the service
asks :func:`decide` what to do with the results so far; the same functions drive
``benchmarks/verification.py``, so the figures there are the coordinator's behaviour.

* ``none`` — one result, accepted as reported.
* ``redundant`` — ``k`` replicas on distinct nodes; results are grouped by the workload's
  ``agree()`` and a group of ``quorum`` wins. Without a quorum more replicas are issued,
  up to ``max_replicas``; then the job fails (and is refunded).
* ``adaptive`` — BOINC's adaptive replication (Anderson, "BOINC: a platform for volunteer
  computing", J. Grid Computing 2020, §6.3): a node's run of consecutive valid results for
  a workload earns trust; an untrusted node's result is always re-checked by a second
  replica, a trusted node's with probability :func:`check_probability`, which falls as
  the run grows. A check that disagrees calls a tie-breaker; any lost vote resets trust.
* ``honeypot`` — one result is accepted; the coordinator also sends the node known-answer
  tasks (indistinguishable from real ones) and a node caught by one is slashed and its
  recent ``honeypot``-policy results are re-checked.
* ``reference`` — the result is re-run on a verifier node the operator marked; the
  verifier's result is the authority.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

__all__ = [
    "Decision",
    "Group",
    "Plan",
    "Policy",
    "Vote",
    "check_probability",
    "decide",
    "group_results",
    "plan_for",
]


class Policy(StrEnum):
    NONE = "none"  # accept the first result
    REDUNDANT = "redundant"  # k replicas, quorum q
    ADAPTIVE = "adaptive"  # spot-check with a probability that falls as trust grows
    HONEYPOT = "honeypot"  # accept; known-answer tasks keep nodes honest
    REFERENCE = "reference"  # re-run on an operator-marked verifier node


@dataclass(frozen=True)
class Plan:
    """How many replicas to queue at submission, how many must agree, and the cap."""

    policy: Policy
    initial: int
    quorum: int
    max_replicas: int


def plan_for(
    policy: Policy,
    *,
    replicas: int | None = None,
    quorum: int | None = None,
    max_replicas: int | None = None,
) -> Plan:
    """The plan for a policy, with defaults filled in; ``ValueError`` names a bad field."""
    if policy in (Policy.NONE, Policy.HONEYPOT):
        if replicas not in (None, 1) or quorum not in (None, 1) or max_replicas not in (None, 1):
            raise ValueError(f"replicas: policy {policy.value} runs exactly one replica")
        return Plan(policy, initial=1, quorum=1, max_replicas=1)
    if policy is Policy.REFERENCE:
        if replicas not in (None, 2) or quorum not in (None, 2):
            raise ValueError("replicas: policy reference runs the task and one reference re-run")
        return Plan(policy, initial=2, quorum=2, max_replicas=2)
    if policy is Policy.ADAPTIVE:
        if replicas not in (None, 1) or quorum not in (None, 2):
            raise ValueError("replicas: policy adaptive starts with one replica, checks with 2")
        cap = 3 if max_replicas is None else max_replicas
        if not 2 <= cap <= 10:
            raise ValueError("max_replicas: adaptive needs 2 to 10 (check plus tie-breakers)")
        return Plan(policy, initial=1, quorum=2, max_replicas=cap)
    k = 3 if replicas is None else replicas
    if not 2 <= k <= 10:
        raise ValueError("replicas: redundant needs 2 to 10 replicas")
    q = k // 2 + 1 if quorum is None else quorum
    if not (max(2, k // 2 + 1) <= q <= k):
        # A quorum of half or less could be met by two disagreeing groups at once.
        raise ValueError(f"quorum: must be a strict majority of replicas ({k // 2 + 1} to {k})")
    cap = min(10, k + 2) if max_replicas is None else max_replicas
    if not k <= cap <= 10:
        raise ValueError(f"max_replicas: must be between replicas ({k}) and 10")
    return Plan(policy, initial=k, quorum=q, max_replicas=cap)


def check_probability(consecutive_valid: int, *, trust_after: int, min_check: float) -> float:
    """Chance that a result from a node with this run of valid results is re-checked.

    1 until the node has ``trust_after`` consecutive valid results, then ``1/run`` (as
    BOINC), never below ``min_check`` so a trusted node is never entirely unchecked.
    """
    if consecutive_valid < max(1, trust_after):
        return 1.0
    return max(min_check, 1.0 / consecutive_valid)


@dataclass(frozen=True)
class Vote:
    """One reported result. ``authority`` marks a reference verifier's result."""

    task_id: str
    node: str
    output: Any
    authority: bool = False


@dataclass(frozen=True)
class Group:
    """Results that agree with the group's first member (its representative)."""

    votes: tuple[Vote, ...]

    @property
    def representative(self) -> Vote:
        return self.votes[0]

    def __len__(self) -> int:
        return len(self.votes)


def group_results(votes: Sequence[Vote], agree: Callable[[Any, Any], bool]) -> list[Group]:
    """Greedy consensus grouping, in report order: a vote joins the first group whose
    representative it agrees with, else starts a new group. Largest group first (ties:
    the earlier group), so ``groups[0]`` is the leading answer.
    """
    members: list[list[Vote]] = []
    for vote in votes:
        for group in members:
            if agree(group[0].output, vote.output):
                group.append(vote)
                break
        else:
            members.append([vote])
    order = sorted(range(len(members)), key=lambda i: (-len(members[i]), i))
    return [Group(tuple(members[i])) for i in order]


@dataclass(frozen=True)
class Decision:
    """What to do next. ``accept``: ``winners`` are valid, ``losers`` lost the vote;
    ``more``: issue ``more`` replicas; ``wait``: outstanding replicas may still settle it;
    ``fail``: no quorum within the cap.
    """

    action: Literal["accept", "more", "wait", "fail"]
    winners: tuple[Vote, ...] = ()
    losers: tuple[Vote, ...] = ()
    more: int = 0
    reason: str = ""


def decide(
    votes: Sequence[Vote],
    *,
    quorum: int,
    max_replicas: int,
    issued: int,
    outstanding: int,
    agree: Callable[[Any, Any], bool],
) -> Decision:
    """Decide a job from its results so far.

    ``issued`` counts every replica ever queued for the job (reported, outstanding or
    failed), ``outstanding`` those queued or running now. A vote marked ``authority`` (a
    reference re-run) decides alone: its group wins.
    """
    groups = group_results(votes, agree)
    authority = next((g for g in groups if any(v.authority for v in g.votes)), None)
    if authority is not None:
        losers = tuple(v for g in groups if g is not authority for v in g.votes)
        return Decision("accept", authority.votes, losers, reason="reference result decides")
    best = groups[0] if groups else Group(())
    if len(best) >= quorum:
        losers = tuple(v for g in groups[1:] for v in g.votes)
        return Decision("accept", best.votes, losers, reason=f"{len(best)} of {len(votes)} agree")
    missing = quorum - len(best)
    if outstanding >= missing:
        return Decision("wait", reason=f"{outstanding} replica(s) outstanding")
    want = max(1, missing - outstanding)
    room = max_replicas - issued
    if room <= 0:
        return Decision(
            "fail", reason=f"no {quorum} agreeing results within {max_replicas} replicas"
        )
    return Decision("more", more=min(want, room), reason=f"{len(best)} agree, need {quorum}")
