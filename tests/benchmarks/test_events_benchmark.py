"""Tests for benchmarks/events.py: the smoke run end to end, and its delivery verdict.

The smoke run starts a real coordinator process and real WebSocket subscribers on
loopback; it checks that every subscriber got every event exactly once, in order, and that
the figures are well formed. Nothing here asserts on how fast anything was.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
SCRIPT = BENCH / "events.py"


def _load() -> ModuleType:
    name = "qm_bench_events"
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the script imports its helpers (_common, ...)
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def _frame(*ids: int, type_: str = "bench.r0", at: float = 100.0) -> list[dict[str, Any]]:
    return [{"id": i, "type": type_, "at": at} for i in ids]


def test_subscriber_accounting_of_an_in_order_stream() -> None:
    _load()
    from _events_clients import SubscriberPool, SubState

    pool, st = SubscriberPool("ws://127.0.0.1:1/v1/events/ws", 1, None), SubState()
    pool.record(st, _frame(5, 6, 7), 100.5)
    pool.record(st, _frame(8, type_="faucet.minted"), 101.0)
    pool.record(st, [*_frame(9), *_frame(10, type_="faucet.minted")], 102.0)
    assert (st.first, st.last, st.count) == (5, 10, 6)
    assert st.duplicates == st.reordered == st.gaps == 0
    bench, faucet = pool.phases["bench.r0"], pool.phases["faucet.minted"]
    assert list(bench.delays) == [0.5, 0.5, 0.5, 2.0]
    assert (bench.deliveries, faucet.deliveries) == (4, 2)
    assert bench.frames + faucet.frames == 3


def test_subscriber_accounting_counts_gaps_duplicates_and_reorders() -> None:
    _load()
    from _events_clients import SubscriberPool, SubState

    pool, st = SubscriberPool("ws://127.0.0.1:1/v1/events/ws", 1, None), SubState()
    pool.record(st, _frame(1, 2), 101.0)
    pool.record(st, _frame(2, 5), 101.0)  # 2 again, then 3 and 4 skipped
    pool.record(st, _frame(4, 6), 101.0)  # 4 arrives late
    assert (st.first, st.last, st.count) == (1, 6, 6)
    assert (st.duplicates, st.gaps, st.reordered) == (1, 2, 1)


def _sub(first: int, last: int, count: int, **kw: Any) -> dict[str, Any]:
    state = {"first": first, "last": last, "count": count, "duplicates": 0, "reordered": 0}
    return {**state, "gaps": 0, "closed": None, **kw}


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_delivery_check_accepts_a_complete_ordered_stream() -> None:
    check = _load().check_delivery([_sub(11, 20, 10), _sub(11, 20, 10)], 10, 20)
    assert check["subscribers_ok"] == 2
    assert check["missing_deliveries"] == check["duplicates"] == check["reordered"] == 0


def test_delivery_check_counts_gaps_duplicates_reorders_and_early_closes() -> None:
    subs = [
        _sub(11, 20, 9, gaps=1),  # one id skipped
        _sub(11, 20, 11, duplicates=1),  # one id twice
        _sub(11, 20, 10, reordered=1, gaps=1),  # one id late: out of order
        _sub(11, 15, 5, closed="1013"),  # the server dropped it as too slow
        _sub(12, 20, 9),  # connected too late for the first event
    ]
    check = _load().check_delivery(subs, 10, 20)
    assert check["subscribers_ok"] == 0
    assert check["duplicates"] == 1
    assert check["reordered"] == 1
    assert check["gap_ids"] == 2
    assert check["closed_early"] == 1
    assert check["close_codes"] == ["1013"]
    assert check["missing_deliveries"] == 1 + 1 + 5 + 1


def test_aim_is_only_judged_on_the_in_process_phase_at_the_aim_rate() -> None:
    bench = _load()
    phase = {"source": "in-process", "rate": 50.0, "drained": True, "delay_ms": {"p99": 5.0}}
    assert bench.aim([phase])["met"] is None
    at_aim = {**phase, "rate": bench.AIM_RATE}
    assert bench.aim([at_aim])["met"] is True
    assert bench.aim([{**at_aim, "delay_ms": {"p99": 1e4}}])["met"] is False
    assert bench.aim([{**at_aim, "drained": False}])["met"] is False


@pytest.mark.slow
def test_events_smoke_every_subscriber_gets_every_event_once_in_order() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    out = proc.stdout
    for words in ("state change -> delivery", "p99 ms", "deliv ev/s", "exactly once", "aim p99"):
        assert words in out, words
    data = json.loads(out.strip().splitlines()[-1])
    assert data["benchmark"] == "events"
    assert data["ok"] is True
    assert data["exactly_once_in_order"] is True
    subscribers = data["subscribers"]
    delivery = data["delivery"]
    assert delivery["subscribers_ok"] == subscribers
    assert delivery["expected_events_per_subscriber"] > 0
    for key in ("missing_deliveries", "duplicates", "reordered", "gap_ids", "closed_early"):
        assert delivery[key] == 0, key
    assert data["aim"]["met"] is None  # the smoke run does not run at the aim's rate
    assert [p["source"] for p in data["phases"]] == ["in-process", "api"]
    total = 0
    for phase in data["phases"]:
        assert phase["drained"] is True
        assert phase["request_errors"] == 0
        assert phase["events"] > 0
        assert phase["deliveries"] == phase["expected_deliveries"] == phase["events"] * subscribers
        total += phase["events"]
        for key in ("delivered_events_per_s", "frames_per_s", "events_per_frame"):
            assert _positive(phase[key]), (key, phase[key])
        delay = phase["delay_ms"]
        assert set(delay) == {"p50", "p95", "p99", "max", "min"}
        assert all(_positive(delay[k]) for k in delay), delay
        assert delay["min"] <= delay["p50"] <= delay["p95"] <= delay["p99"] <= delay["max"]
        for key in ("server_loop_cpu_us_per_frame", "server_cpu_us_per_delivery"):
            assert _positive(phase[key]), (key, phase[key])
        assert len(phase["client_cpu_pct"]) == data["args"]["client_procs"]
        lag = phase["client_loop_lag_ms"]
        assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in lag.values())
    assert total == delivery["expected_events_per_subscriber"]
