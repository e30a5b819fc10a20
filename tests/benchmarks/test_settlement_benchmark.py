"""Smoke tests for benchmarks/settlement.py: the quick run's JSON and the design's gas order.

The quick run (8 jobs one at a time, epochs of 16 and 300 jobs) goes through the script as
a subprocess, on the in-process EVM and on anvil. Without the anvil binary the anvil test
skips, except under ``CI``, where it fails. Gas comes from receipts and is deterministic;
nothing here asserts on wall-clock speed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "settlement.py"
ANVIL = ROOT / "node_modules" / ".bin" / "anvil"
RESULT_KEYS = {
    "backend", "mode", "jobs", "transactions", "total_gas", "gas_per_job", "seconds",
    "jobs_per_s", "jobs_per_block", "gas_by_call", "tree_ms", "ratio", "aim_met",
}  # fmt: skip


def _load() -> ModuleType:
    name = "qm_bench_settlement"
    if name in sys.modules:
        return sys.modules[name]
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))  # the script imports _settlement_chain
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


bench = _load()


@pytest.fixture(scope="module")
def quick() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for words in ("per-job", "batched", "gas/job", "jobs/s", "batching cuts gas per job"):
        assert words in proc.stdout
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def _check_backend(data: dict[str, Any], backend: str) -> None:
    report = data["backends"][backend]
    assert report["skipped"] is None
    results = report["results"]
    assert [r["mode"] for r in results] == ["per-job", "batched", "batched"]
    assert [r["jobs"] for r in results] == [8, 16, 300]
    for r in results:
        assert set(r) == RESULT_KEYS
        assert r["backend"] == backend
        for key in ("total_gas", "gas_per_job", "seconds", "jobs_per_s", "jobs_per_block"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert sum(r["gas_by_call"].values()) == r["total_gas"]
        assert r["gas_per_job"] == pytest.approx(r["total_gas"] / r["jobs"], abs=0.1)
    per_job, *batched = results
    # Two transactions per job: its record and its provider's payment.
    assert per_job["transactions"] == 2 * per_job["jobs"]
    assert set(per_job["gas_by_call"]) == {"record_jobs", "transfer"}
    assert per_job["ratio"] is None and per_job["tree_ms"] is None
    # One record_jobs per 256 jobs and one root per epoch.
    assert [b["transactions"] for b in batched] == [2, 3]
    for b in batched:
        assert set(b["gas_by_call"]) == {"record_jobs", "post_root"}
        assert b["gas_per_job"] < per_job["gas_per_job"]  # the point of batching
        assert b["ratio"] == pytest.approx(per_job["gas_per_job"] / b["gas_per_job"], rel=1e-3)
        assert b["aim_met"] is (b["ratio"] >= data["aim_ratio"])
        assert b["tree_ms"] >= 0
    # The root's fixed cost is spread thinner over a larger epoch.
    assert batched[1]["gas_per_job"] < batched[0]["gas_per_job"]
    # A provider's cash-out is measured apart: one voucher withdrawal, paid and checked.
    assert isinstance(report["withdrawal_gas"], int) and report["withdrawal_gas"] > 21_000


@pytest.mark.slow
def test_quick_run_on_the_in_process_evm(quick: dict[str, Any]) -> None:
    assert quick["benchmark"] == "settlement"
    assert quick["config"]["epoch_sizes"] == [16, 300]
    assert set(quick["modes"]) == {"per-job", "batched"}
    _check_backend(quick, "local")


@pytest.mark.slow
def test_quick_run_on_anvil(quick: dict[str, Any]) -> None:
    if not ANVIL.exists():
        reason = f"anvil is not installed at {ANVIL} (run `npm install`)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        assert quick["backends"]["anvil"]["skipped"]  # the script says why, and goes on
        pytest.skip(reason)
    _check_backend(quick, "anvil")


def test_jobs_are_recorded_at_most_256_per_call() -> None:
    ids = [bench.job_id(n) for n in range(600)]
    assert [len(c) for c in bench.chunks(ids)] == [256, 256, 88]
    assert len(set(ids)) == 600 and all(len(i) == 32 for i in ids)


@pytest.mark.parametrize(
    "argv", [["--epochs", "64,x"], ["--epochs", "0"], ["--per-job", "-1"], ["--providers", "-2"]]
)
def test_script_rejects_bad_sizes(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_script_refuses_anvil_without_the_binary(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--backend", "anvil", "--anvil", str(tmp_path / "no-anvil")])
