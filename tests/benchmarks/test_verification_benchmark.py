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
