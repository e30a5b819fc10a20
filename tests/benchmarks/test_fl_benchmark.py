"""Smoke test for benchmarks/fl.py: the quick run end to end, real node subprocesses
included; it checks the promised figures are there and sane — never timings."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "fl.py"

pytestmark = pytest.mark.slow

HAS_FLOWER = all(importlib.util.find_spec(m) is not None for m in ("flwr", "ray"))


def run_quick(*args: str) -> tuple[str, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])


def is_fraction(x: Any) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0


def test_quick_run_reports_accuracy_robustness_secagg_and_quackmesh_overhead() -> None:
    out, data = run_quick("--skip-flower")
    for words in ("centralised", "robustness", "secure aggregation", "overhead", "aim"):
        assert words in out
    assert "Flower: skipped" in out
    assert data["benchmark"] == "fl" and data["mode"] == "quick"
    assert data["config"]["n_params"] > 0

    rows = data["accuracy"]
    assert {(r["dataset"], r["partition"]) for r in rows} == {
        ("digits", "iid"),
        ("digits", "dirichlet"),
    }
    for r in rows:
        assert is_fraction(r["fedavg"]) and is_fraction(r["centralised"])
        assert math.isclose(r["gap_points"], 100 * (r["centralised"] - r["fedavg"]))
        assert r["met"] is (r["gap_points"] <= r["aim_points"])
        assert len(r["fedavg_curve"]) == data["config"]["rounds"]
        assert sum(r["client_rows"]) > 0

    rob = data["robustness"]
    assert set(rob["results"]) == {"fedavg", "krum", "multikrum", "median", "trimmed_mean"}
    assert 1 <= rob["malicious"] < rob["clients"]
    for row in rob["results"].values():
        assert set(row) == {"clean", "sign_flip", "gaussian"}
        # None only for a run that diverged; otherwise an accuracy.
        assert all(v is None or is_fraction(v) for v in row.values())
        assert is_fraction(row["clean"])
    assert set(rob["aims"]) == {
        "median/sign_flip",
        "median/gaussian",
        "trimmed_mean/sign_flip",
        "trimmed_mean/gaussian",
    }

    assert [s["clients"] for s in data["secagg"]] == [10, 50]
    for s in data["secagg"]:
        assert s["params"] == data["config"]["n_params"]
        assert s["secure_ms"] > 0 and s["plain_ms"] > 0
        assert s["ratio"] > 0 and s["round_ratio"] > 0
        assert s["max_abs_error"] < 0.01  # the unmasked sum is the real sum

    ov = data["overhead"]
    qm = ov["quackmesh"]
    assert qm["ok"] is True and qm["state"] == "succeeded"
    assert is_fraction(qm["accuracy"])
    assert len(qm["round_seconds"]) == ov["rounds"]
    assert qm["per_round_s"] > 0 and qm["peak_rss_mib"] > 0
    assert qm["peak_processes"] >= 1 + ov["clients"]  # the child and its node subprocesses
    assert qm["seed_mapping_checked"] is True
    assert ov["flower"] is None and ov["ratios"] is None
    assert ov["flower_skipped"]


@pytest.mark.skipif(not HAS_FLOWER, reason="flwr[simulation] is not importable here")
def test_quick_run_against_flower_reports_ratios() -> None:
    _, data = run_quick("--flower-python", sys.executable)
    ov = data["overhead"]
    fl = ov["flower"]
    assert fl is not None and fl["ok"] is True
    assert is_fraction(fl["accuracy"])
    assert len(fl["round_seconds"]) == ov["rounds"]
    ratios = ov["ratios"]
    for key in ("per_round", "steady_per_round", "wall", "peak_rss"):
        assert ratios[key] > 0, key
    assert abs(ratios["accuracy_diff_points"]) <= 100
