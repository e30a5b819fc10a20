"""The subscriber side of ``benchmarks/events.py``: processes full of WebSocket clients.

Each process (multiprocessing, spawn) connects its share of the subscribers to
``/v1/events/ws`` with the ``websockets`` asyncio client, then records for every subscriber
what arrived (ids must come exactly once, strictly increasing) and for every delivery the
delay ``receive time - event at``, per event type (one type per load phase). The driver
talks to it over a pipe: ``"progress"`` (how far the slowest subscriber got, CPU used so
far) and ``"finish"`` (close the sockets, send back every figure).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from _events_server import raise_open_files

__all__ = ["Clients", "SubState", "SubscriberPool", "client_process"]


@dataclass
class SubState:
    """What one subscriber saw: ids must arrive exactly once, strictly increasing."""

    first: int = 0
    last: int = 0
    count: int = 0
    duplicates: int = 0  # an id equal to the previous one
    reordered: int = 0  # an id below the previous one
    gaps: int = 0  # ids skipped over
    closed: str | None = None  # why the socket ended before the driver closed it


@dataclass
class PhaseAcc:
    """Per event type (one type per phase), in one client process."""

    delays: array.array[float]
    deliveries: int = 0
    frames: int = 0
    last_recv: float = 0.0


class SubscriberPool:
    """``n`` WebSocket subscribers in one process, and what they received."""

    def __init__(self, url: str, n: int, compression: str | None) -> None:
        self.url = url
        self.compression = compression
        self.states = [SubState() for _ in range(n)]
        self.phases: dict[str, PhaseAcc] = {}
        self.socks: list[Any] = []
        self.connected = 0
        self.closing = False  # set before the driver closes the sockets itself
        # How late this process's event loop wakes up (wall time, seconds): a busy client
        # reads its sockets late, and that lateness is part of every delay it measures.
        self.lag_at = array.array("d")
        self.lag = array.array("d")
        self._gate = asyncio.Semaphore(32)  # connect a few at a time: no SYN backlog overflow

    async def subscribe(self, st: SubState) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        async with self._gate:
            ws = await connect(
                self.url, compression=self.compression, max_size=None, ping_interval=None,
                open_timeout=60, close_timeout=5,
            )  # fmt: skip
        self.socks.append(ws)
        self.connected += 1
        loads, now = json.loads, time.time
        try:
            async for message in ws:
                t = now()
                events = loads(message)["events"]
                if events:
                    self.record(st, events, t)
        except ConnectionClosed as exc:
            if not self.closing:
                st.closed = str(exc.rcvd.code if exc.rcvd else "abnormal")
        else:
            if not self.closing:
                st.closed = str(ws.close_code)

    def record(self, st: SubState, events: list[dict[str, Any]], t: float) -> None:
        """Account one frame received at ``t``; the common case (ids continue the stream,
        one event type) without a Python loop per event, so one process keeps up with
        hundreds of subscribers."""
        first, n = events[0]["id"], len(events)
        typ = events[0]["type"]
        if (
            (st.count == 0 or first == st.last + 1)
            and events[-1]["id"] == first + n - 1
            and events[-1]["type"] == typ
            and [ev["id"] for ev in events] == list(range(first, first + n))
            and all(ev["type"] == typ for ev in events)
        ):
            if st.count == 0:
                st.first = first
            st.last, st.count = first + n - 1, st.count + n
            acc = self._acc(typ)
            acc.delays.extend([t - ev["at"] for ev in events])
            acc.deliveries += n
        else:
            for ev in events:
                i = ev["id"]
                if st.count == 0:
                    st.first = i
                elif i == st.last:
                    st.duplicates += 1
                elif i < st.last:
                    st.reordered += 1
                elif i > st.last + 1:
                    st.gaps += i - st.last - 1
                st.last = max(st.last, i)
                st.count += 1
                acc = self._acc(ev["type"])
                acc.delays.append(t - ev["at"])
                acc.deliveries += 1
        acc.frames += 1  # a frame counts for the phase of its last event
        acc.last_recv = max(acc.last_recv, t)

    def _acc(self, typ: str) -> PhaseAcc:
        acc = self.phases.get(typ)
        if acc is None:
            acc = self.phases[typ] = PhaseAcc(array.array("d"))
        return acc

    async def watch_lag(self, period: float = 0.02) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + period
            await asyncio.sleep(period)
            self.lag.append(max(0.0, loop.time() - due))
            self.lag_at.append(time.time())

    def progress(self) -> dict[str, Any]:
        return {
            "min_last": min((s.last for s in self.states), default=0),
            "cpu_s": time.process_time(),
            "closed": sum(s.closed is not None for s in self.states),
        }

    def result(self) -> dict[str, Any]:
        return {
            "subs": [vars(s) for s in self.states],
            "lag_at": self.lag_at.tobytes(),
            "lag": self.lag.tobytes(),
            "phases": {
                typ: {
                    "delays": acc.delays.tobytes(),
                    "deliveries": acc.deliveries,
                    "frames": acc.frames,
                    "last_recv": acc.last_recv,
                }
                for typ, acc in self.phases.items()
            },
        }

    async def close(self) -> None:
        self.closing = True
        await asyncio.gather(*(ws.close() for ws in self.socks), return_exceptions=True)


async def _client_main(conn: Connection, url: str, n: int, compression: str | None) -> None:
    """Connect, say how many made it, then answer the driver until it says ``finish``."""
    pool = SubscriberPool(url, n, compression)
    tasks = [asyncio.create_task(pool.subscribe(st)) for st in pool.states]
    watcher = asyncio.create_task(pool.watch_lag())
    deadline = time.monotonic() + 120.0
    while pool.connected < n and time.monotonic() < deadline:
        if any(t.done() and t.exception() is not None for t in tasks):
            break
        await asyncio.sleep(0.05)
    errors = [repr(t.exception()) for t in tasks if t.done() and t.exception() is not None]
    conn.send({"connected": pool.connected, "errors": errors[:3]})
    while await asyncio.to_thread(conn.recv) != "finish":
        conn.send(pool.progress())
    watcher.cancel()
    await pool.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(pool.result())


def client_process(conn: Connection, url: str, n: int, compression: str | None) -> None:
    """Entry point of one subscriber process (multiprocessing, spawn)."""
    raise_open_files()
    try:
        asyncio.run(_client_main(conn, url, n, compression))
    finally:
        conn.close()


class Clients:
    """The subscriber processes and their pipes."""

    def __init__(self, url: str, subscribers: int, procs: int, compression: str | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        shares = [
            subscribers // procs + (1 if i < subscribers % procs else 0) for i in range(procs)
        ]
        for share in shares:
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=client_process, args=(theirs, url, share, compression), daemon=True
            )
            proc.start()
            theirs.close()
            self.pipes.append(mine)
            self.procs.append(proc)

    def recv_all(self, timeout: float) -> list[Any]:
        out = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise RuntimeError(f"a subscriber process did not answer in {timeout:.0f}s")
            out.append(pipe.recv())
        return out

    def ask(self, cmd: str, timeout: float = 60.0) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(cmd)
        return self.recv_all(timeout)

    def stop(self) -> None:
        for pipe in self.pipes:  # a process still waiting for a command (after a failure)
            with contextlib.suppress(OSError, ValueError):
                pipe.send("finish")
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()
