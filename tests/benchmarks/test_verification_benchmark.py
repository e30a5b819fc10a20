"""Smoke tests for benchmarks/verification.py: small simulated networks, structural truths.

The simulation is run in-process through its importable ``simulate``/``run_all`` (and once
as a script for the JSON output). Nothing here asserts on timing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "verification.py"


def _load() -> ModuleType:
    name = "qm_bench_verification"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


bench = _load()
SMALL = bench.SimConfig(nodes=50, tasks=400, seed=7)


def _by_variant(config: Any, fraction: float) -> dict[str, Any]:
    return {v.value: bench.simulate(config, variant=v, fraction=fraction) for v in bench.Variant}


@pytest.fixture(scope="module")
def mixed() -> dict[str, Any]:
    """30 % cheaters, half lazy (they agree with each other), half wrong."""
    return _by_variant(SMALL, 0.3)


@pytest.fixture(scope="module")
def wrong_only() -> dict[str, Any]:
    """30 % cheaters that never agree with anyone, honest nodes included."""
    return _by_variant(dataclasses.replace(SMALL, lazy_share=0.0), 0.3)


def test_none_accepts_bad_results_at_about_the_cheater_rate(mixed: dict[str, Any]) -> None:
    none = mixed["none"]
    assert none.cheaters == 15
    assert none.overhead == 1.0
    assert 0.2 < none.bad_fraction < 0.4
    assert none.slashes == 0  # nothing is ever checked
    assert set(none.bad_by_role) == {"lazy", "wrong"}


def test_checking_policies_run_more_than_one_replica_per_task(mixed: dict[str, Any]) -> None:
    assert mixed["redundant"].overhead > 2.0  # at least two agreeing replicas per task
    assert mixed["adaptive"].overhead > 1.0
    assert mixed["adaptive"].checks > 0
    for variant in ("adaptive+honeypot", "honeypot"):
        hp = mixed[variant]
        assert hp.honeypots > 0, variant
        assert hp.executions >= hp.jobs + hp.honeypots, variant


def test_checking_policies_accept_fewer_bad_results_and_slash_cheaters(
    mixed: dict[str, Any],
) -> None:
    none = mixed["none"]
    for variant in ("redundant", "adaptive", "adaptive+honeypot", "honeypot"):
        r = mixed[variant]
        assert r.bad_accepted < none.bad_accepted, variant
        if variant != "honeypot":  # honeypots alone accept results until the node is caught
            assert r.bad_accepted < none.bad_accepted / 5, variant
        assert r.cheaters_slashed > 0, variant
        assert r.accepted + r.failed_no_quorum + r.failed_no_node == r.jobs, variant


def test_only_cheaters_are_slashed_when_cheaters_never_agree(wrong_only: dict[str, Any]) -> None:
    for variant, r in wrong_only.items():
        assert r.roles == {"honest": 35, "wrong": 15}
        assert r.honest_slashed == 0, variant
        assert r.honeypots_poisoned == 0, variant  # no two cheaters ever agree
        if variant != "none":
            assert r.slashes >= r.cheaters_slashed > 0, variant
        if variant in ("redundant", "adaptive", "adaptive+honeypot"):
            # A wrong result never finds a quorum and a wrong node never earns trust.
            assert r.bad_accepted == 0, variant


def test_late_replicas_are_judged_against_the_accepted_result(
    mixed: dict[str, Any], wrong_only: dict[str, Any]
) -> None:
    # redundant queues 3 replicas and accepts at 2 agreeing: the third, if already running,
    # reports late and is judged (verify.service.judge_late), not dropped.
    for scenario in (mixed, wrong_only):
        r = scenario["redundant"]
        assert r.late_results > 0
        assert r.late_judged == r.late_results  # every job was accepted, none failed
        assert r.executions >= r.jobs * 2 + r.late_results  # 2+ votes per job, then late
    # With wrong cheaters only, the accepted answer is always right: a late replica that
    # disagrees is a cheater, and it is slashed.
    r = wrong_only["redundant"]
    assert r.late_invalid > 0
    assert r.late_honest_slashed == 0
    for variant, r in mixed.items():
        if variant != "redundant":  # one replica at a time: nothing is ever late
            assert r.late_results == 0, variant


def test_a_late_replica_is_paid_if_it_agrees_and_slashed_if_not() -> None:
    roles = [bench.Role.HONEST, bench.Role.HONEST, bench.Role.HONEST, bench.Role.WRONG]
    sim = bench._Simulation(
        config=SMALL,
        variant=bench.Variant.REDUNDANT,
        roles=roles,
        truths=[10.0],
        rng=bench.random.Random(0),
    )
    job = bench._Job(0, 10.0, sim.plan)
    winners = (bench.Vote("t0", "0", 10.0), bench.Vote("t1", "1", 10.0))
    job.votes = list(winners)
    sim._accept(job, winners, (), graded=True)
    honest, wrong = sim.nodes[2], sim.nodes[3]
    sim._judge_late(honest, job, 10.0)
    sim._judge_late(wrong, job, 10.01)
    assert (honest.consecutive, honest.slashes, honest.stake) == (1, 0, SMALL.stake)
    assert honest.reputation.validity > 0.5
    assert (wrong.consecutive, wrong.slashes) == (0, 1)
    assert wrong.stake < SMALL.min_stake <= honest.stake
    assert (sim.late, sim.late_judged, sim.late_invalid) == (2, 2, 1)
    failed = bench._Job(1, 10.0, sim.plan, state="failed_no_quorum")
    sim._judge_late(honest, failed, 10.0)  # a failed job's replica is not graded
    assert (honest.consecutive, sim.late, sim.late_judged) == (1, 3, 2)


def test_the_honeypot_pool_needs_three_agreeing_nodes(mixed: dict[str, Any]) -> None:
    # The default plans accept as soon as two results agree, so no run adds a known
    # answer, and a lazy pair cannot poison the pool (verify.service.accept, ``strong``).
    for variant, r in mixed.items():
        assert r.pool_added == 0, variant
        assert r.honeypots_poisoned == 0, variant
        assert r.honest_failed_honeypots == 0, variant
    roles = [bench.Role.LAZY] * 3 + [bench.Role.HONEST] * 3
    sim = bench._Simulation(
        config=SMALL,
        variant=bench.Variant.ADAPTIVE_HONEYPOT,
        roles=roles,
        truths=[10.0, 20.0],
        rng=bench.random.Random(0),
    )
    seeded = len(sim.pool)
    lazy = tuple(bench.Vote(f"t{i}", str(i), bench.PLAUSIBLE) for i in range(3))
    pair, honest = bench._Job(0, 10.0, sim.plan), bench.Vote("t3", "3", 10.0)
    pair.votes = [*lazy[:2], honest]
    sim._accept(pair, lazy[:2], (honest,), graded=True)
    assert len(sim.pool) == seeded  # two agreeing nodes: not a known answer
    trio = bench._Job(1, 20.0, sim.plan)
    trio.votes = list(lazy)
    sim._accept(trio, lazy, (), graded=True)
    assert len(sim.pool) == seeded + 1  # three agreeing nodes are (wrong as they are)


def test_redundant_quorum_is_a_strict_majority() -> None:
    plan = bench.plan_for(bench.Policy.REDUNDANT)
    assert (plan.initial, plan.quorum) == (3, 2)
    assert plan.quorum > plan.initial / 2


def test_same_seed_gives_the_same_figures() -> None:
    config = dataclasses.replace(SMALL, tasks=200)
    first = bench.simulate(config, variant=bench.Variant.ADAPTIVE_HONEYPOT, fraction=0.1)
    again = bench.simulate(config, variant=bench.Variant.ADAPTIVE_HONEYPOT, fraction=0.1)
    assert first == again


def test_goal_verdict_is_computed_from_the_figures(mixed: dict[str, Any]) -> None:
    adaptive = dataclasses.replace(mixed["adaptive"], cheater_fraction=0.1)
    good = dataclasses.replace(adaptive, overhead=1.1, bad_fraction=0.005)
    costly = dataclasses.replace(adaptive, variant="adaptive+honeypot", overhead=1.3)
    verdicts = bench.goal_verdicts([good, costly, mixed["none"]])
    assert verdicts["adaptive"]["met"] is True
    assert verdicts["adaptive+honeypot"]["met"] is False
    assert "none" not in verdicts


def test_sleepers_are_a_separate_scenario() -> None:
    config = dataclasses.replace(SMALL, tasks=300)
    report = bench.run_all(config, fractions=[0.1], sleeper_fraction=0.1)
    assert [r.scenario for r in report["results"]] == ["cheaters"] * 5
    assert [r.scenario for r in report["sleepers"]] == ["sleepers"] * 5
    assert report["sleepers"][0].roles == {"honest": 45, "sleeper": 5}


@pytest.mark.slow
def test_script_prints_the_table_and_a_json_line() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--nodes", "50", "--tasks", "300", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for words in ("overhead", "bad accepted", "cheaters slashed", "lazy", "goal at 10%"):
        assert words in out
    data = json.loads(out.strip().splitlines()[-1])
    assert data["benchmark"] == "verification"
    assert data["config"]["nodes"] == 50
    assert len(data["results"]) == 10  # 5 rows x 2 cheater fractions
    assert {r["variant"] for r in data["results"]} == {v.value for v in bench.Variant}
    assert set(data["goal"]) == {"adaptive", "adaptive+honeypot"}
    for verdict in data["goal"].values():
        assert isinstance(verdict["met"], bool)
    assert len(data["sleepers"]) == 5


def test_script_rejects_a_bad_fraction() -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--fractions", "1.5"])
