"""Verification: pure policy and reputation functions under a thin service."""

from quackmesh.coordinator.verify.policy import (
    Decision,
    Group,
    Plan,
    Policy,
    Vote,
    check_probability,
    decide,
    group_results,
    plan_for,
)
from quackmesh.coordinator.verify.reputation import Reputation, ewma, timeliness_sample

__all__ = [
    "Decision",
    "Group",
    "Plan",
    "Policy",
    "Reputation",
    "Vote",
    "check_probability",
    "decide",
    "ewma",
    "group_results",
    "plan_for",
    "timeliness_sample",
]
