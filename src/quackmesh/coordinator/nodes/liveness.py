"""Write-behind liveness: heartbeats land in memory and are flushed to the database in batches.

A row update per heartbeat would make the database the ceiling on how many nodes one
coordinator can hold. Instead a heartbeat only records (time, running tasks) in a dict;
the sweeper flushes the latest beat per node every ``sweep_interval_s`` in one
transaction, extends the leases of the tasks the node says it is running, and computes
which of those tasks the node must stop (lease lost, job cancelled) for its next reply.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from quackmesh.core.schemas import NodeStatus

__all__ = ["Beat", "Liveness"]


@dataclass(frozen=True)
class Beat:
    at: float
    running: tuple[str, ...]
    draining: bool


class Liveness:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Beat] = {}
        self._status: dict[str, NodeStatus] = {}
        self._cancel: dict[str, list[str]] = {}

    def known(self, address: str) -> bool:
        return address in self._status

    def set_status(self, address: str, status: NodeStatus) -> None:
        with self._lock:
            self._status[address] = status

    def status(self, address: str) -> NodeStatus:
        return self._status.get(address, NodeStatus.OFFLINE)

    def beat(self, address: str, beat: Beat) -> tuple[NodeStatus, list[str]]:
        """Record a beat; returns the status to report and the tasks to cancel."""
        with self._lock:
            self._pending[address] = beat
            cancel = self._cancel.pop(address, [])
            if beat.draining:  # effective at once: ends this node's long-poll early
                self._status[address] = NodeStatus.DRAINING
            status = self._status.get(address, NodeStatus.OFFLINE)
        if status == NodeStatus.OFFLINE:
            status = NodeStatus.DRAINING if beat.draining else NodeStatus.ONLINE
        return status, cancel

    def take_pending(self) -> dict[str, Beat]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def restore(self, beats: dict[str, Beat]) -> None:
        """Put back beats whose flush failed; a newer beat that arrived meanwhile wins."""
        with self._lock:
            for address, beat in beats.items():
                current = self._pending.get(address)
                if current is None or current.at < beat.at:
                    self._pending[address] = beat

    def put_cancel(self, address: str, task_ids: list[str]) -> None:
        if task_ids:
            with self._lock:
                self._cancel.setdefault(address, []).extend(task_ids)
