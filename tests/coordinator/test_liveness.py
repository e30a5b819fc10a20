"""Write-behind liveness: beats kept in memory, flushed in batches, never lost on failure."""

from __future__ import annotations

from quackmesh.coordinator.nodes.liveness import Beat, Liveness
from quackmesh.core.schemas import NodeStatus


def test_a_failed_flush_puts_beats_back_and_newer_beats_win() -> None:
    live = Liveness()
    live.beat("0xA", Beat(at=1.0, running=("t1",), draining=False))
    live.beat("0xB", Beat(at=1.0, running=(), draining=False))
    taken = live.take_pending()
    assert set(taken) == {"0xA", "0xB"} and live.take_pending() == {}
    live.beat("0xB", Beat(at=2.0, running=(), draining=True))  # arrives while flushing
    live.restore(taken)
    again = live.take_pending()
    assert again["0xA"].at == 1.0 and again["0xB"].at == 2.0 and again["0xB"].draining


def test_draining_beat_takes_effect_at_once_and_cancels_are_delivered_once() -> None:
    live = Liveness()
    live.set_status("0xA", NodeStatus.ONLINE)
    status, _ = live.beat("0xA", Beat(at=1.0, running=(), draining=True))
    assert status == NodeStatus.DRAINING and live.status("0xA") == NodeStatus.DRAINING
    live.put_cancel("0xA", ["t9"])
    assert live.beat("0xA", Beat(at=2.0, running=("t9",), draining=True))[1] == ["t9"]
    assert live.beat("0xA", Beat(at=3.0, running=(), draining=True))[1] == []
