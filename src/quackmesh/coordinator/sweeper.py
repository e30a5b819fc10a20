"""The coordinator's background loop: flush liveness, detect silent nodes, expire leases,
settle rentals, release matured unbondings, sample uptime for reputation and move
federated rounds past their deadlines."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import func, select

from quackmesh.coordinator.accounts.staking import release_matured
from quackmesh.coordinator.db.models import Node
from quackmesh.coordinator.fl.rounds import tick as fl_tick
from quackmesh.coordinator.nodes.service import flush_beats, mark_silent_offline, sample_uptime
from quackmesh.coordinator.rentals.service import settle_rentals
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.scheduler.service import expire_leases
from quackmesh.core.schemas import NodeStatus

__all__ = ["Sweeper", "sweep_once"]

log = logging.getLogger("quackmesh.coordinator.sweeper")

UPTIME_SAMPLE_S = 60.0  # one uptime sample per node per minute feeds the reputation EWMA


def sweep_once(rt: Runtime, *, now: float | None = None) -> int:
    """One pass; returns how many leases went back to the queue (or failed their job)."""
    t = time.time() if now is None else now
    beats = rt.liveness.take_pending()
    try:
        with rt.sessions.begin() as session:
            flush_beats(session, rt.liveness, beats, lease_s=rt.settings.lease_s, now=t)
    except Exception:
        rt.liveness.restore(beats)  # a failed flush must not make live nodes look silent
        raise
    with rt.sessions.begin() as session:
        offline = mark_silent_offline(
            session, rt.liveness, now=t, offline_after=rt.settings.offline_after_s
        )
        requeued = expire_leases(rt, session, now=t, offline_nodes=offline)
        online = session.scalar(
            select(func.count()).select_from(Node).where(Node.status == NodeStatus.ONLINE.value)
        )
    with rt.sessions.begin() as session:  # after offline detection: silent nodes stop earning
        settle_rentals(rt, session, now=t)
    with rt.sessions.begin() as session:
        release_matured(rt, session, now=t)
        if t - rt.last_uptime_sample >= UPTIME_SAMPLE_S:
            sample_uptime(session, alpha=rt.settings.reputation_alpha)
            rt.last_uptime_sample = t
    fl_tick(rt, now=t)  # federated rounds: deadlines, dropouts, waiting for nodes
    rt.metrics.nodes_online.set(online or 0)
    if requeued:
        rt.notifier.notify(requeued)
    return requeued


class Sweeper:
    """Runs :func:`sweep_once` every ``sweep_interval_s`` in a daemon thread until stopped."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._thread = threading.Thread(target=self._loop, name="quackmesh-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.rt.stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self.rt.stop.wait(self.rt.settings.sweep_interval_s):
            try:
                sweep_once(self.rt)
            except Exception:
                log.exception("sweep failed; retrying next interval")
