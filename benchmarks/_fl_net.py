"""Overhead half of ``fl.py``: one ``fl.train`` job on a real local network against the
same training under Flower's simulation engine, each measured from outside.

Both sides run in a child process of the benchmark, so each is measured the same way:
wall-clock time per round, and the peak of the summed resident memory (RSS) of the child
and all its descendants, sampled every 50 ms with psutil (:class:`TreeSampler`). Summed
RSS counts pages shared between processes (torch's libraries, mostly) once per process:
it is what ``ps`` would add up, an upper bound on physical memory, the same rule for both.

* QuackMesh (``python benchmarks/_fl_net.py CONFIG``, :func:`quackmesh_main`): the
  coordinator under uvicorn in a thread of the child (SQLite, as ``quackmesh up``), real
  ``quackmesh node start`` subprocesses holding one partition each
  (:func:`quackmesh.cli.fldata.prepare_node_data`), every task in its sandboxed child
  process, the client on the SDK over HTTP. Round times come from the run's history.
* Flower (``benchmarks/_fl_flower.py`` under an interpreter with flwr): the same
  partitions (read back from the nodes' CSV files), initial weights and client seeds.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLE_S = 0.05
DUCK = 1_000_000
NODE_PRICE = 100  # micro-DUCK per compute unit
MAX_PRICE = 1_000
FLOWER_HINT = (
    "python3.11 -m venv .venv-bench && .venv-bench/bin/pip install 'flwr[simulation]==1.41.0' "
    "torch==2.13.0 safetensors==0.8.0 psutil && .venv-bench/bin/pip install --no-deps -e ."
)


class TreeSampler:
    """Samples the summed RSS of a process and all its descendants in a thread."""

    def __init__(self, pid: int, interval: float = SAMPLE_S) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_bytes = 0
        self.peak_procs = 0
        self.seen: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return  # the root has exited
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                    self.seen.setdefault(proc.pid, proc)
                except psutil.Error:
                    continue  # exited between listing and reading
            self.peak_bytes = max(self.peak_bytes, total)
            self.peak_procs = max(self.peak_procs, len(procs))
            self._stop.wait(self.interval)

    def reap(self) -> int:
        """Terminate descendants seen while sampling that outlived the root; how many."""
        left = [p for p in self.seen.values() if p.pid != self.root.pid and p.is_running()]
        for proc in left:
            try:
                proc.terminate()
            except psutil.Error:
                continue
        psutil.wait_procs(left, timeout=10)
        return len(left)


@dataclass
class ChildRun:
    rc: int
    wall_s: float
    peak_mib: float
    peak_procs: int
    log: str
    result: dict[str, Any] = field(default_factory=dict)


def run_measured(cmd: list[str], *, result: Path, timeout: float, env: Any = None) -> ChildRun:
    """Run ``cmd`` with its process tree sampled; read the JSON it writes to ``result``."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    with TreeSampler(proc.pid) as sampler:
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    wall = time.perf_counter() - started
    sampler.reap()
    log.seek(0)
    text = log.read().decode(errors="replace")
    log.close()
    data = json.loads(result.read_text()) if result.exists() else {}
    return ChildRun(rc, wall, sampler.peak_bytes / 2**20, sampler.peak_procs, text, data)


# --- the QuackMesh side (runs in the child process) ---------------------------------------


def quackmesh_main(config_path: str) -> int:
    """Start a local network, run one ``fl.train`` job to the end, write its timings."""
    from _common import NO_RATE_LIMITS
    from quackmesh.cli.localnet import LocalNetwork
    from quackmesh.coordinator import Settings
    from quackmesh.core.schemas import JobState
    from quackmesh.core.wallet import Wallet
    from quackmesh.sdk import Client

    cfg = json.loads(Path(config_path).read_text())
    settings = Settings(
        home=Path(cfg["home"]), database_url=None, dev_mode=True, access_log=False,
        log_level="WARNING", offline_after_s=15.0, sweep_interval_s=0.5, match_window_s=0.0,
        lease_s=120.0, **NO_RATE_LIMITS,
    )  # fmt: skip
    registries = [Path(p) for p in cfg["registries"]]
    n = len(registries)
    out: dict[str, Any] = {"t0": time.time()}
    net = LocalNetwork(settings)
    try:
        net.start_coordinator_thread()
        net.start_nodes(n, price=NODE_PRICE, datasets=registries, heartbeat_s=1.0)
        if net.wait_nodes_online(n, timeout=cfg["timeout"]) < n:
            raise RuntimeError(f"fewer than {n} nodes came online; see {settings.home}/logs")
        out["online_at"] = time.time()
        # The coordinator numbers a round's clients 1..n by sorted address (rounds.py).
        order = sorted(w.address for w in net.node_wallets)
        out["client_ids"] = [order.index(w.address) + 1 for w in net.node_wallets]
        with Client(net.url, Wallet.create()) as client:
            client.faucet(100 * DUCK)
            job = client.train(cfg["params"], max_price=MAX_PRICE, eval_data=Path(cfg["holdout"]))
            deadline = time.monotonic() + cfg["timeout"]
            run = client.fl_run(job.id)
            while run.state in (JobState.QUEUED, JobState.RUNNING):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"fl.train still {run.state.value} after {cfg['timeout']}s")
                time.sleep(0.25)
                run = client.fl_run(job.id)
        out["done_at"] = time.time()
        out["state"] = run.state.value
        out["stop_reason"] = run.stop_reason
        out["rounds"] = [
            {
                "round": r.round,
                "seconds": r.finished_at - r.started_at,
                "accuracy": r.accuracy,
                "participants": r.participants,
            }
            for r in run.history
        ]
        first = [c.node for c in run.history[0].clients] if run.history else []
        out["seed_mapping_checked"] = first == order
    finally:
        net.stop()
        Path(cfg["result"]).write_text(json.dumps(out))
    return 0


# --- orchestration (runs in the benchmark process) ----------------------------------------


def flower_python(explicit: str | None) -> tuple[str | None, str]:
    """An interpreter that imports flwr, ray and quackmesh.fl; ``(None, why)`` if none."""
    candidates = [explicit] if explicit else [sys.executable, str(ROOT / ".venv-bench/bin/python")]
    why = "no candidate interpreter"
    for python in candidates:
        if python is None or not Path(python).exists():
            why = f"{python} does not exist"
            continue
        probe = "import flwr, ray, quackmesh.fl.train; print(flwr.__version__)"
        proc = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode == 0:
            return python, proc.stdout.strip()
        why = (
            f"{python}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}"
        )
    return None, why


def _round_figures(seconds: list[float]) -> dict[str, float | None]:
    steady = seconds[1:] if len(seconds) > 1 else seconds
    return {
        "per_round_s": float(np.mean(seconds)) if seconds else None,
        "steady_per_round_s": float(np.mean(steady)) if steady else None,
        "first_round_s": seconds[0] if seconds else None,
    }


def run_overhead(
    *,
    dataset: str,
    holdout: int,
    n_clients: int,
    rounds: int,
    epochs: int,
    lr: float,
    batch_size: int,
    hidden: list[int],
    seed: int,
    flower: str | None,
    timeout: float,
) -> dict[str, Any]:
    """Both sides on the same partitions; figures and ratios QuackMesh ÷ Flower."""
    from quackmesh.cli.fldata import prepare_node_data
    from quackmesh.fl.data import load_local

    with tempfile.TemporaryDirectory(prefix="qm-fl-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data = prepare_node_data(
            tmp / "data", n_clients, dataset=dataset, partition="iid",  # type: ignore[arg-type]
            holdout=holdout, seed=seed,
        )  # fmt: skip
        model = {"arch": "mlp", "n_features": data.n_features, "n_classes": data.n_classes}
        params = {
            "model": {**model, "hidden": hidden}, "dataset": dataset, "rounds": rounds,
            "clients_per_round": n_clients, "min_clients": n_clients, "local_epochs": epochs,
            "batch_size": batch_size, "lr": lr, "seed": seed, "federated_eval": False,
            "contribution": "agreement", "round_timeout_s": timeout,
        }  # fmt: skip
        qm_cfg = {
            "home": str(tmp / "home"), "registries": [str(p) for p in data.registries],
            "holdout": str(data.holdout), "params": params, "timeout": timeout,
            "result": str(tmp / "qm.json"),
        }  # fmt: skip
        (tmp / "qm-config.json").write_text(json.dumps(qm_cfg))
        qm = run_measured(
            [sys.executable, str(HERE / "_fl_net.py"), str(tmp / "qm-config.json")],
            result=tmp / "qm.json",
            timeout=timeout + 120,
        )
        qm_rounds = qm.result.get("rounds", [])
        ok = qm.rc == 0 and qm.result.get("state") == "succeeded" and len(qm_rounds) == rounds
        quackmesh: dict[str, Any] = {
            "ok": ok,
            "state": qm.result.get("state"),
            "stop_reason": qm.result.get("stop_reason"),
            "accuracy": qm_rounds[-1]["accuracy"] if qm_rounds else None,
            "round_seconds": [r["seconds"] for r in qm_rounds],
            **_round_figures([r["seconds"] for r in qm_rounds]),
            "wall_s": qm.wall_s,
            "peak_rss_mib": qm.peak_mib,
            "peak_processes": qm.peak_procs,
            "seed_mapping_checked": qm.result.get("seed_mapping_checked"),
        }
        if not ok:
            quackmesh["log_tail"] = qm.log[-3000:]
        result: dict[str, Any] = {"quackmesh": quackmesh, "flower": None, "ratios": None}
        if flower is None or not ok:
            return result
        arrays: dict[str, Any] = {}
        for i, registry in enumerate(data.registries):
            ds = load_local(registry.parent / f"{dataset}.csv", label="label")
            arrays[f"X_{i}"], arrays[f"y_{i}"] = ds.X, ds.y
        hold = load_local(data.holdout, label="label")
        arrays["X_hold"], arrays["y_hold"] = hold.X, hold.y
        np.savez(tmp / "flower.npz", **arrays)
        fl_cfg = {
            "data": str(tmp / "flower.npz"), "result": str(tmp / "flower.json"),
            "model": params["model"], "rounds": rounds, "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "seed": seed,
            "client_ids": qm.result["client_ids"], "threads": 1, "cpus": os.cpu_count() or 1,
            "cpus_per_client": 1,
        }  # fmt: skip
        (tmp / "flower-config.json").write_text(json.dumps(fl_cfg))
        fl = run_measured(
            [flower, str(HERE / "_fl_flower.py"), str(tmp / "flower-config.json")],
            result=tmp / "flower.json",
            timeout=timeout + 120,
            env={**os.environ, "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0"},
        )
        at = fl.result.get("eval_at", [])
        fl_seconds = [b - a for a, b in itertools.pairwise(at)]
        fl_ok = fl.rc == 0 and len(fl_seconds) == rounds
        accs = fl.result.get("accuracy", [])
        result["flower"] = {
            "ok": fl_ok,
            "accuracy": accs[-1] if accs else None,
            "round_seconds": fl_seconds,
            **_round_figures(fl_seconds),
            "startup_s": at[0] - fl.result["started_at"] if at else None,
            "wall_s": fl.wall_s,
            "peak_rss_mib": fl.peak_mib,
            "peak_processes": fl.peak_procs,
        }
        if not fl_ok:
            result["flower"]["log_tail"] = fl.log[-3000:]
            return result
        f = result["flower"]
        result["ratios"] = {
            "per_round": quackmesh["per_round_s"] / f["per_round_s"],
            "steady_per_round": quackmesh["steady_per_round_s"] / f["steady_per_round_s"],
            "wall": quackmesh["wall_s"] / f["wall_s"],
            "peak_rss": quackmesh["peak_rss_mib"] / f["peak_rss_mib"],
            "accuracy_diff_points": 100.0 * (quackmesh["accuracy"] - f["accuracy"]),
        }
        return result


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: _fl_net.py CONFIG_JSON")
    sys.exit(quackmesh_main(sys.argv[1]))
