"""``quackmesh train``: federated training across the nodes that hold the data.

    quackmesh train --model cnn28 --dataset mnist --rounds 20 --follow

The model's input width and class count are read from what the nodes advertise about the
dataset (or from ``--data``/``--eval`` files), so the common case needs no shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from quackmesh.cli.common import (
    DEFAULT_COORDINATOR,
    console,
    die,
    handle_errors,
    job_changes,
    load_wallet,
    parse_amount,
    parse_param,
    print_json,
)
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.core.money import format_duck
from quackmesh.core.schemas import FlRunPublic, JobState
from quackmesh.sdk import Client

__all__ = ["follow_training", "train"]

TERMINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
ARCHS = ("logreg", "mlp", "cnn28", "cnn1d")
STRATEGIES = (
    "fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "krum",
    "multikrum",
    "median",
    "trimmed_mean",
)


def _shape_from_market(client: Client, dataset: str) -> tuple[int, int]:
    found = client.market_nodes(dataset=dataset, limit=500).nodes
    infos = [d for n in found for d in n.datasets if d.name == dataset]
    if not infos:
        die(
            f"no node advertises dataset {dataset!r}; see `quackmesh market list --dataset NAME`",
            ExitCode.REJECTED,
        )
    features = infos[0].features
    labels = {int(k) for info in infos for k in info.label_histogram if k.lstrip("-").isdigit()}
    return features, max(2, max(labels, default=1) + 1)


def _shape_from_file(path: Path, label: str) -> tuple[int, int]:
    from quackmesh.fl.data import load_local

    ds = load_local(path, label=label)
    return int(ds.X.shape[1]), ds.n_classes


def _line(run: FlRunPublic) -> str:
    last = run.history[-1] if run.history else None
    acc = f"{last.accuracy:.2%}" if last and last.accuracy is not None else "-"
    fed = f"{last.fed_accuracy:.2%}" if last and last.fed_accuracy is not None else "-"
    eps = f"{run.epsilon:.2f}" if run.epsilon is not None else "-"
    return (
        f"accuracy {acc} (on nodes {fed}) · ε {eps} · spent {format_duck(run.spent)} DUCK"
        f" · {run.phase}"
    )


def follow_training(client: Client, job_id: str, *, timeout: float) -> FlRunPublic:
    """A progress bar over rounds, moved by the job's events, until the job ends (Ctrl-C
    stops following only)."""
    run = client.fl_run(job_id)
    columns = (
        TextColumn("round {task.completed:.0f}/{task.total:.0f}"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(_line(run), total=run.rounds, completed=len(run.history))
        if run.state not in TERMINAL:
            for _ in job_changes(client, job_id, timeout=timeout):
                run = client.fl_run(job_id)
                progress.update(bar, completed=len(run.history), description=_line(run))
                if run.state in TERMINAL:
                    break
    if run.state not in TERMINAL:
        die(f"job {job_id} still {run.state.value} after {timeout:.0f}s", ExitCode.TIMEOUT)
    return run


@handle_errors
def train(
    model: Annotated[str, typer.Option("--model", help="logreg | mlp | cnn28 | cnn1d")] = "mlp",
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="a node-local dataset name, e.g. mnist")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="upload this file and shard it across trainers")
    ] = None,
    eval_file: Annotated[
        Path | None, typer.Option("--eval", help="holdout file for central evaluation")
    ] = None,
    label: Annotated[str, typer.Option("--label", help="label column")] = "label",
    hidden: Annotated[str, typer.Option("--hidden", help="mlp hidden sizes, e.g. 128,64")] = "128",
    rounds: Annotated[int, typer.Option("--rounds", min=1, max=1000)] = 10,
    clients: Annotated[int, typer.Option("--clients", min=1, help="clients per round")] = 3,
    min_clients: Annotated[int, typer.Option("--min-clients", min=1)] = 2,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="local epochs")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    optimizer: Annotated[str, typer.Option("--optimizer", help="sgd | adam")] = "sgd",
    lr: Annotated[float, typer.Option("--lr", help="local learning rate")] = 0.05,
    strategy: Annotated[str, typer.Option("--strategy", help=", ".join(STRATEGIES))] = "fedavg",
    strategy_param: Annotated[
        list[str] | None, typer.Option("--strategy-param", help="KEY=VALUE; repeat")
    ] = None,
    secagg: Annotated[bool, typer.Option("--secagg", help="secure aggregation")] = False,
    dp_noise: Annotated[
        float | None, typer.Option("--dp-noise", help="DP noise multiplier (turns DP on)")
    ] = None,
    dp_clip: Annotated[float, typer.Option("--dp-clip", help="DP clip norm")] = 1.0,
    dp_delta: Annotated[float, typer.Option("--dp-delta")] = 1e-5,
    epsilon_budget: Annotated[
        float | None, typer.Option("--epsilon-budget", help="stop before ε would pass this")
    ] = None,
    reward: Annotated[
        str, typer.Option("--reward", help="DUCK split among contributors by score")
    ] = "0",
    max_price: Annotated[str, typer.Option("--max-price", help="DUCK per compute unit")] = "0.05",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    rental: Annotated[str | None, typer.Option("--rental", help="train on this rental")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="show a progress bar")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="with --follow: save model + card here")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to follow")] = 3600.0,
    wallet: Annotated[Path | None, typer.Option("--wallet", "-w")] = None,
    coordinator: Annotated[str, typer.Option("--coordinator", "-c")] = DEFAULT_COORDINATOR,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Train a model across provider nodes; their data never leaves them."""
    if model not in ARCHS:
        die(f"--model must be one of {', '.join(ARCHS)}", ExitCode.USAGE)
    if (dataset is None) == (data is None):
        die("give exactly one of --dataset (node-local data) or --data (a file)", ExitCode.USAGE)
    with Client(coordinator, load_wallet(wallet)) as client:
        if data is not None:
            n_features, n_classes = _shape_from_file(data, label)
        else:
            n_features, n_classes = _shape_from_market(client, dataset or "")
        spec: dict[str, Any] = {
            "arch": model,
            "n_features": n_features,
            "n_classes": n_classes,
        }
        if model == "mlp":
            spec["hidden"] = [int(h) for h in hidden.split(",") if h.strip()]
        params: dict[str, Any] = {
            "model": spec,
            "dataset": dataset,
            "label": label,
            "rounds": rounds,
            "clients_per_round": clients,
            "min_clients": min(min_clients, clients),
            "local_epochs": epochs,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "lr": lr,
            "strategy": {"name": strategy, "params": dict(map(parse_param, strategy_param or []))},
            "secure_aggregation": secagg,
            "reward_budget": parse_amount(reward, "--reward"),
            "seed": seed,
        }
        if dp_noise is not None:
            params["dp"] = {
                "noise_multiplier": dp_noise,
                "clip_norm": dp_clip,
                "delta": dp_delta,
                "epsilon_budget": epsilon_budget,
            }
        job = client.train(
            params,
            max_price=parse_amount(max_price, "--max-price"),
            eval_data=eval_file,
            data=data,
            rental_id=rental,
        )
        if not follow:
            if json_out:
                print_json(job.model_dump(mode="json"))
            else:
                console.print(
                    f"submitted {job.id}: {rounds} rounds of {model} on "
                    f"{dataset or data}; escrowed {format_duck(job.escrowed)} DUCK. "
                    f"Follow with `quackmesh train-status {job.id}`",
                    highlight=False,
                )
            return
        run = follow_training(client, job.id, timeout=timeout)
        if out is not None and run.state == JobState.SUCCEEDED:
            client.download_model(job.id, out)
            card = out.with_suffix(".card.json")
            card.write_text(json.dumps(client.model_card(job.id), indent=2) + "\n")
    _report(run, out)
    if run.state != JobState.SUCCEEDED:
        die(f"training {run.state.value}: {run.stop_reason or ''}", ExitCode.JOB_FAILED)


def _report(run: FlRunPublic, out: Path | None) -> None:
    last = run.history[-1] if run.history else None
    acc = f"{last.accuracy:.2%}" if last and last.accuracy is not None else "n/a"
    console.print(
        f"{run.job_id}: {run.state.value} after {len(run.history)} round(s); holdout accuracy "
        f"{acc}; paid {format_duck(run.compute_paid)} DUCK compute + "
        f"{format_duck(run.reward_paid)} DUCK rewards"
        + (f"; ε={run.epsilon:.3g}" if run.epsilon is not None else "")
        + (f"; stopped: {run.stop_reason}" if run.stop_reason else ""),
        highlight=False,
    )
    if out is not None and run.state == JobState.SUCCEEDED:
        console.print(f"model saved to {out} (card {out.with_suffix('.card.json')})")


@handle_errors
def train_status(
    job_id: Annotated[str, typer.Argument(help="an fl.train job id")],
    follow: Annotated[bool, typer.Option("--follow")] = False,
    timeout: Annotated[float, typer.Option("--timeout")] = 3600.0,
    wallet: Annotated[Path | None, typer.Option("--wallet", "-w")] = None,
    coordinator: Annotated[str, typer.Option("--coordinator", "-c")] = DEFAULT_COORDINATOR,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """A federated job's rounds: accuracy, ε, participants, contribution scores, rewards."""
    with Client(coordinator, load_wallet(wallet)) as client:
        run = follow_training(client, job_id, timeout=timeout) if follow else client.fl_run(job_id)
    if json_out:
        print_json(run.model_dump(mode="json"))
        return
    from rich.table import Table

    table = Table("round", "clients", "dropped", "accuracy", "loss", "ε", "reward", "scores")
    for r in run.history:
        scores = ", ".join(
            f"{c.node[:8]}…={c.score:.2f}" for c in r.clients if c.state != "dropped"
        )
        table.add_row(
            str(r.round),
            str(r.participants),
            str(r.dropped),
            f"{r.accuracy:.2%}" if r.accuracy is not None else "-",
            f"{r.loss:.3f}" if r.loss is not None else "-",
            f"{r.epsilon:.2f}" if r.epsilon is not None else "-",
            format_duck(r.reward),
            scores,
        )
    console.print(table)
    _report(run, None)
