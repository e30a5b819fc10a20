"""Federated-learning benchmark: accuracy, robustness, overhead against Flower, secure
aggregation cost.

1. **Accuracy** — FedAvg (McMahan et al. 2017) on MNIST-5k (1,000 rows held out) and on
   scikit-learn's digits (300 held out), clients holding IID or Dirichlet(α=0.5) label
   skew partitions (Hsu et al. 2019), against the ceiling: *centralised* training of the
   same model, from the same initial weights, on the pooled training rows for
   ``rounds × local epochs`` epochs — the same number of passes over every example the
   federated clients make. Aims: ≤ 1 point below it for IID, ≤ 2 points for α=0.5.
2. **Robustness** — 30 % of the clients Byzantine (``-10 × delta`` sign flips, or
   ``N(0, 1)`` per coordinate), FedAvg and the robust strategies (Krum, Multi-Krum,
   coordinate median, trimmed mean) each told the true number of attackers. Aim: median
   and trimmed mean within 2 points of clean FedAvg.
3. **Overhead against Flower** — the same job on a real local network (coordinator,
   node subprocesses, HTTP, a sandboxed process per task) and in Flower's Ray
   simulation, one after the other: time per round and the peak summed RSS of each
   process tree, as ratios QuackMesh ÷ Flower (aim ≤ 0.5); accuracy at equal seeds
   (aim: within 0.5 point). Flower runs under ``--flower-python`` (default: this
   interpreter if it has flwr, else ``.venv-bench/bin/python``); without it that part is
   skipped and reported as ``null``, never estimated.
4. **Secure aggregation** — a full Bonawitz et al. round (in process) against the plain
   weighted sum, at 10 and 50 clients, for the benchmark's model size.

1, 2 and 4 run in this process (``quackmesh.fl`` only, 1 torch thread; deterministic for
a seed). ``--quick`` is a smoke-sized run on digits. Run with ``-h``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from _fl_net import FLOWER_HINT, flower_python, run_overhead
from _fl_sim import (
    GAUSSIAN_SIGMA,
    SIGN_FLIP_SCALE,
    FedConfig,
    SimResult,
    centralised,
    robust_params,
    run_federated,
    secagg_cost,
)
from quackmesh.fl.data import (
    Dataset,
    load_builtin,
    partition_dirichlet,
    partition_iid,
    train_holdout_split,
)
from quackmesh.fl.train import set_threads
from quackmesh.fl.zoo import ModelSpec, count_params

HOLDOUT = {"mnist": 1000, "digits": 300}
AIM_GAP = {"iid": 1.0, "dirichlet": 2.0}  # points below centralised
AIM_ROBUST = 2.0  # points below clean FedAvg, for median and trimmed mean
AIM_RATIO = 0.5  # QuackMesh ÷ Flower, time per round and peak memory
AIM_ACC_DIFF = 0.5  # points between QuackMesh and Flower at equal seeds
ALPHA = 0.5
ROBUST = ("fedavg", "krum", "multikrum", "median", "trimmed_mean")
ATTACKS = ("sign_flip", "gaussian")


@dataclass(frozen=True)
class Plan:
    datasets: tuple[str, ...]
    clients: int
    rounds: int
    epochs: int
    lr: float
    batch_size: int
    hidden: tuple[int, ...]
    seed: int
    malicious_share: float
    overhead_clients: int
    overhead_rounds: int
    secagg_clients: tuple[int, ...] = (10, 50)


def plan_from(args: argparse.Namespace) -> Plan:
    quick = args.quick
    clients = args.clients or (5 if quick else 10)
    return Plan(
        datasets=("digits",) if quick else ("mnist", "digits"),
        clients=clients,
        rounds=args.rounds or (5 if quick else 40),
        epochs=args.epochs or (1 if quick else 2),
        lr=args.lr,
        batch_size=32,
        hidden=(128,),
        seed=args.seed,
        malicious_share=0.3,
        overhead_clients=args.overhead_clients or (2 if quick else clients),
        overhead_rounds=args.overhead_rounds or (2 if quick else 5),
    )


def pct(x: float | None, missing: str = "n/a") -> str:
    return missing if x is None or math.isnan(x) else f"{100 * x:.2f} %"


def acc_or_none(r: SimResult) -> float | None:
    return None if r.diverged_round is not None or math.isnan(r.accuracy) else r.accuracy


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "missed")


# --- 1. accuracy ------------------------------------------------------------------------------


def data_for(plan: Plan, name: str) -> tuple[Dataset, Dataset, FedConfig]:
    ds = load_builtin(name)  # type: ignore[arg-type]
    train, holdout = train_holdout_split(ds, holdout=HOLDOUT[name], seed=plan.seed)
    spec = ModelSpec(
        arch="mlp", n_features=int(train.X.shape[1]), n_classes=train.n_classes, hidden=plan.hidden
    )
    cfg = FedConfig(
        spec=spec, rounds=plan.rounds, epochs=plan.epochs, batch_size=plan.batch_size,
        lr=plan.lr, seed=plan.seed,
    )  # fmt: skip
    return train, holdout, cfg


def accuracy_part(plan: Plan) -> tuple[list[dict[str, Any]], dict[str, SimResult]]:
    rows, clean = [], {}
    for name in plan.datasets:
        train, holdout, cfg = data_for(plan, name)
        ceiling = centralised(cfg, train, holdout)
        parts = {
            "iid": partition_iid(train.rows, plan.clients, seed=plan.seed),
            "dirichlet": partition_dirichlet(train.y, plan.clients, alpha=ALPHA, seed=plan.seed),
        }
        for partition, idx in parts.items():
            fed = run_federated(cfg, train, holdout, idx)
            clean[f"{name}/{partition}"] = fed
            acc = acc_or_none(fed)
            gap = None if acc is None else 100.0 * (ceiling.accuracy - acc)
            rows.append({
                "dataset": name, "partition": partition,
                "alpha": ALPHA if partition == "dirichlet" else None,
                "fedavg": acc, "centralised": ceiling.accuracy, "gap_points": gap,
                "aim_points": AIM_GAP[partition],
                "met": None if gap is None else gap <= AIM_GAP[partition],
                "fedavg_curve": fed.curve, "seconds": fed.seconds,
                "centralised_seconds": ceiling.seconds,
                "client_rows": [len(i) for i in idx],
            })  # fmt: skip
    return rows, clean


def print_accuracy(plan: Plan, rows: list[dict[str, Any]]) -> None:
    print("\n== accuracy on the holdout: FedAvg against centralised training ==")
    print(f"{'dataset':<8}{'partition':<16}{'FedAvg':>10}{'central':>10}{'gap':>8}  aim")
    for r in rows:
        part = "iid" if r["partition"] == "iid" else f"dirichlet α={ALPHA:g}"
        gap = "n/a" if r["gap_points"] is None else f"{r['gap_points']:.2f}"
        print(
            f"{r['dataset']:<8}{part:<16}{pct(r['fedavg'], 'diverged'):>10}{pct(r['centralised']):>10}"
            f"{gap:>8}  ≤ {r['aim_points']:g} point(s): {verdict(r['met'])}"
        )
    print(
        f"   centralised = same model and initial weights, pooled training rows, "
        f"{plan.rounds * plan.epochs} epochs (rounds × local epochs: the same passes over "
        "each example); gap in points, positive = FedAvg below"
    )


# --- 2. robustness ----------------------------------------------------------------------------


def robustness_part(plan: Plan, clean: dict[str, SimResult]) -> dict[str, Any]:
    name = plan.datasets[0]
    train, holdout, cfg = data_for(plan, name)
    parts = partition_iid(train.rows, plan.clients, seed=plan.seed)
    k = max(1, round(plan.malicious_share * plan.clients))
    bad = sorted(np.random.default_rng(plan.seed).choice(plan.clients, k, replace=False).tolist())
    table: dict[str, dict[str, float | None]] = {}
    diverged: dict[str, int] = {}  # "strategy/attack" -> the round the model blew up
    for strategy in ROBUST:
        params = robust_params(strategy, n_malicious=k, n_clients=plan.clients)
        row: dict[str, float | None] = {}
        for attack in ("none", *ATTACKS):
            if strategy == "fedavg" and attack == "none":
                result = clean[f"{name}/iid"]  # already run for the accuracy table
            else:
                result = run_federated(
                    cfg, train, holdout, parts, strategy=strategy, strategy_params=params,
                    attack=attack, malicious=bad,  # type: ignore[arg-type]
                )  # fmt: skip
            row["clean" if attack == "none" else attack] = acc_or_none(result)
            if result.diverged_round is not None:
                diverged[f"{strategy}/{attack}"] = result.diverged_round
        table[strategy] = row
    base = table["fedavg"]["clean"]
    aims: dict[str, bool | None] = {}
    for strategy in ("median", "trimmed_mean"):
        for attack in ATTACKS:
            acc = table[strategy][attack]
            ok = None if acc is None or base is None else 100.0 * (base - acc) <= AIM_ROBUST
            aims[f"{strategy}/{attack}"] = False if acc is None and base is not None else ok
    return {
        "dataset": name, "partition": "iid", "clients": plan.clients, "malicious": k,
        "malicious_clients": bad, "sign_flip_scale": SIGN_FLIP_SCALE,
        "gaussian_sigma": GAUSSIAN_SIGMA, "params": {
            s: robust_params(s, n_malicious=k, n_clients=plan.clients) for s in ROBUST
        },
        "clean_fedavg": base, "results": table, "diverged": diverged,
        "aim_points": AIM_ROBUST, "aims": aims,
    }  # fmt: skip


def print_robustness(rob: dict[str, Any]) -> None:
    print(
        f"\n== robustness: {rob['dataset']} iid, {rob['malicious']} of {rob['clients']} clients "
        "Byzantine (each strategy told how many) =="
    )
    flip, sigma = (
        f"sign flip ({rob['sign_flip_scale']:g}×)",
        f"gaussian (σ={rob['gaussian_sigma']:g})",
    )
    print(f"{'strategy':<14}{'clean':>10}{flip:>20}{sigma:>20}")
    for strategy, row in rob["results"].items():
        print(
            f"{strategy:<14}{pct(row['clean'], 'diverged'):>10}"
            f"{pct(row['sign_flip'], 'diverged'):>20}{pct(row['gaussian'], 'diverged'):>20}"
        )
    for key, round_no in rob["diverged"].items():
        print(f"   {key}: parameters no longer finite in round {round_no}")
    print(f"   strategy parameters: {json.dumps(rob['params'])}")
    for key, ok in rob["aims"].items():
        print(f"   aim: {key} within {rob['aim_points']:g} points of clean FedAvg: {verdict(ok)}")


# --- 3. overhead ------------------------------------------------------------------------------


def overhead_part(plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    python, version = (None, "not run (--skip-flower)")
    if not args.skip_flower:
        python, version = flower_python(args.flower_python)
    name = plan.datasets[0]
    result = run_overhead(
        dataset=name, holdout=HOLDOUT[name], n_clients=plan.overhead_clients,
        rounds=plan.overhead_rounds, epochs=plan.epochs, lr=plan.lr,
        batch_size=plan.batch_size, hidden=list(plan.hidden), seed=plan.seed,
        flower=python, timeout=args.timeout,
    )  # fmt: skip
    result.update(
        dataset=name, clients=plan.overhead_clients, rounds=plan.overhead_rounds,
        flower_python=python, flower_version=version if python else None,
        flower_skipped=None if python else version,
    )  # fmt: skip
    ratios = result["ratios"]
    if ratios is not None:
        result["aims"] = {
            "per_round": ratios["per_round"] <= AIM_RATIO,
            "peak_rss": ratios["peak_rss"] <= AIM_RATIO,
            "accuracy": abs(ratios["accuracy_diff_points"]) <= AIM_ACC_DIFF,
        }
    return result


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return str(x) if isinstance(x, int) else f"{x:.{digits}f}"


def print_overhead(ov: dict[str, Any]) -> None:
    print(
        f"\n== overhead against Flower: {ov['dataset']} iid, {ov['clients']} clients, "
        f"{ov['rounds']} rounds, same partitions, initial weights and client seeds =="
    )
    qm, fl, ratios = ov["quackmesh"], ov["flower"] or {}, ov["ratios"] or {}
    if not qm["ok"]:
        print(
            f"QuackMesh run FAILED ({qm['state']}: {qm['stop_reason']}):\n{qm.get('log_tail', '')}"
        )
    if ov["flower_skipped"]:
        print(f"Flower: skipped: {ov['flower_skipped']}")
        if "--skip-flower" not in ov["flower_skipped"]:
            print(f"   install it in its own venv (its pins clash with ours): {FLOWER_HINT}")
    elif fl and not fl["ok"]:
        print(f"Flower run FAILED:\n{fl.get('log_tail', '')}")
    else:
        print(f"Flower {ov['flower_version']} under {ov['flower_python']}")
    rows = [
        ("time per round, mean (s)", "per_round_s", "per_round", AIM_RATIO),
        ("  rounds 2.. (s)", "steady_per_round_s", "steady_per_round", None),
        ("  round 1 (s)", "first_round_s", None, None),
        ("whole run, start-up included (s)", "wall_s", "wall", None),
        ("peak RSS, process tree (MiB)", "peak_rss_mib", "peak_rss", AIM_RATIO),
        ("processes at peak", "peak_processes", None, None),
    ]
    print(f"{'':<34}{'QuackMesh':>12}{'Flower':>12}{'ratio':>9}  aim")
    for label, key, ratio_key, aim in rows:
        ratio = ratios.get(ratio_key) if ratio_key else None
        aim_text = ""
        if aim is not None:
            aim_text = f"≤ {aim:g}: {verdict(None if ratio is None else ratio <= aim)}"
        print(
            f"{label:<34}{_fmt(qm.get(key)):>12}{_fmt(fl.get(key)):>12}{_fmt(ratio):>9}  {aim_text}"
        )
    diff = ratios.get("accuracy_diff_points")
    ok = None if diff is None else abs(diff) <= AIM_ACC_DIFF
    print(
        f"{'holdout accuracy':<34}{pct(qm['accuracy']):>12}{pct(fl.get('accuracy')):>12}"
        f"{_fmt(diff):>9}  |diff| ≤ {AIM_ACC_DIFF:g} point: {verdict(ok)}"
    )
    print(
        "   QuackMesh: coordinator thread + node subprocesses + one sandboxed process per task "
        "(it imports torch: most of a round here); Flower: Ray, 1 CPU per client actor, actors "
        "kept warm after round 1. RSS summed over each tree (shared pages counted per process)."
    )


# --- 4. secure aggregation --------------------------------------------------------------------


def secagg_part(plan: Plan, clean: dict[str, SimResult]) -> list[dict[str, Any]]:
    _, _, cfg = data_for(plan, plan.datasets[0])
    base = clean[f"{plan.datasets[0]}/iid"]
    plain_round_s = base.seconds / max(1, plan.rounds)
    rows = []
    for n in plan.secagg_clients:
        cost = secagg_cost(n_clients=n, n_params=count_params(cfg.spec), seed=plan.seed)
        secure_s, plain_s = cost["secure_ms"] / 1000.0, cost["plain_ms"] / 1000.0
        cost["round_ratio"] = (plain_round_s + secure_s) / (plain_round_s + plain_s)
        cost["plain_round_ms"] = plain_round_s * 1000.0
        rows.append(cost)
    return rows


def print_secagg(rows: list[dict[str, Any]]) -> None:
    print(f"\n== secure aggregation per round ({rows[0]['params']:,} parameters) ==")
    print(
        f"{'clients':>8}{'secure ms':>12}{'per client':>12}{'plain sum ms':>14}{'ratio':>10}"
        f"{'round ratio':>13}"
    )
    for r in rows:
        print(
            f"{r['clients']:>8}{r['secure_ms']:>12.1f}{r['secure_ms_per_client']:>12.1f}"
            f"{r['plain_ms']:>14.2f}{r['ratio']:>10.1f}{r['round_ratio']:>13.2f}"
        )
    print(
        "   secure = every client's masking and the server's unmasking, one process, one core; "
        "round ratio = (plain FedAvg round here + secure) ÷ (plain round + plain sum), "
        f"the plain round being {rows[0]['plain_round_ms']:.0f} ms of local training and "
        "evaluation (same rows in total at any client count)"
    )


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke size: digits, 5 clients, 5 rounds")
    p.add_argument("--json", action="store_true", help="print one JSON line with every figure")
    p.add_argument("--skip-flower", action="store_true", help="no Flower comparison")
    p.add_argument("--skip-network", action="store_true", help="no overhead part at all")
    p.add_argument("--flower-python", help="interpreter with flwr[simulation] installed")
    p.add_argument("--rounds", type=int, help="FL rounds for accuracy/robustness (40; quick 5)")
    p.add_argument("--clients", type=int, help="clients (10; quick 5)")
    p.add_argument("--epochs", type=int, help="local epochs per round (2; quick 1)")
    p.add_argument("--lr", type=float, default=0.5, help="local SGD learning rate (0.5)")
    p.add_argument("--overhead-rounds", type=int, help="rounds of the network comparison (5)")
    p.add_argument("--overhead-clients", type=int, help="nodes in the comparison (--clients)")
    p.add_argument("--seed", type=int, default=0, help="seed of data splits, init and clients")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per network run")
    args = p.parse_args(argv)
    for name in ("rounds", "clients", "epochs", "overhead_rounds", "overhead_clients"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.clients is not None and args.clients < 4:
        p.error("--clients must be >= 4 (Krum needs n >= attackers + 3)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    set_threads(1)
    started = time.perf_counter()
    _, _, cfg = data_for(plan, plan.datasets[0])
    print(
        f"FL benchmark ({'quick' if args.quick else 'full'}): mlp {cfg.spec.n_features}-"
        f"{'-'.join(map(str, plan.hidden))}-{cfg.spec.n_classes} ({count_params(cfg.spec):,} "
        f"parameters on {plan.datasets[0]}), {plan.clients} clients, {plan.rounds} rounds × "
        f"{plan.epochs} local epoch(s), SGD lr {plan.lr:g}, batch {plan.batch_size}, seed "
        f"{plan.seed}; every client trains every round"
    )
    if not args.quick:
        print(
            "   sized to finish in about 10 minutes on a shared 2-core VM (mlp, 40 rounds: "
            "FedAvg near convergence; 5 rounds for the network comparison)"
        )
    rows, clean = accuracy_part(plan)
    print_accuracy(plan, rows)
    rob = robustness_part(plan, clean)
    print_robustness(rob)
    sec = secagg_part(plan, clean)
    print_secagg(sec)
    overhead = None
    if args.skip_network:
        print("\n== overhead against Flower: skipped (--skip-network) ==")
    else:
        overhead = overhead_part(plan, args)
        print_overhead(overhead)
    elapsed = time.perf_counter() - started
    print(f"\ndone in {elapsed:.0f} s")
    if args.json:
        out = {
            "benchmark": "fl", "mode": "quick" if args.quick else "full",
            "config": {**plan.__dict__, "n_params": count_params(cfg.spec)},
            "accuracy": rows, "robustness": rob, "secagg": sec, "overhead": overhead,
            "elapsed_s": elapsed,
        }  # fmt: skip
        print(json.dumps(out))
    failed = overhead is not None and not overhead["quackmesh"]["ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
