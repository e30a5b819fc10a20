"""Reputation: exponentially weighted records of valid results, timeliness and uptime.

Each part is an EWMA in [0, 1] that starts at the neutral 0.5 (a new node is neither
trusted nor distrusted) and moves ``alpha`` of the way toward each new sample::

    part ← (1 − α)·part + α·sample

* validity — 1 for a result that won a vote (or passed a known-answer check), 0 for a lost
  vote; results accepted unchecked move nothing, since nobody knows if they were right;
* timeliness — 1 for a result within half its time limit, falling linearly to 0 at the
  limit; 0 for a lease that expired without a report;
* uptime — sampled by the sweeper: 1 while Online, 0 while Offline or Draining.

The score is ``0.5·validity + 0.3·timeliness + 0.2·uptime``: honesty matters most.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NEUTRAL", "WEIGHTS", "Reputation", "ewma", "timeliness_sample"]

NEUTRAL = 0.5
WEIGHTS = {"validity": 0.5, "timeliness": 0.3, "uptime": 0.2}


@dataclass(frozen=True)
class Reputation:
    validity: float = NEUTRAL
    timeliness: float = NEUTRAL
    uptime: float = NEUTRAL

    @property
    def score(self) -> float:
        return round(
            WEIGHTS["validity"] * self.validity
            + WEIGHTS["timeliness"] * self.timeliness
            + WEIGHTS["uptime"] * self.uptime,
            6,
        )


def ewma(old: float, sample: float, alpha: float) -> float:
    """One EWMA step, clamped to [0, 1]."""
    return min(1.0, max(0.0, (1.0 - alpha) * old + alpha * sample))


def timeliness_sample(elapsed_s: float, limit_s: float) -> float:
    """1.0 within half the limit, then linear down to 0.0 at the limit (and beyond)."""
    if limit_s <= 0:
        return 1.0
    half = limit_s / 2
    if elapsed_s <= half:
        return 1.0
    return max(0.0, 1.0 - (elapsed_s - half) / half)
