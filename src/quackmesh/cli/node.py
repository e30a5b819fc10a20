"""``quackmesh node start``: run a provider node."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from quackmesh.cli import datasets as datasets_cli
from quackmesh.cli.common import (
    DEFAULT_COORDINATOR,
    console,
    die,
    handle_errors,
    load_wallet,
    parse_amount,
    print_json,
)
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.cli.wallet import CoordOpt, JsonOpt, WalletOpt
from quackmesh.core.money import format_duck
from quackmesh.core.schemas import Behaviour, StakePublic
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

app = typer.Typer(help="Run a provider node and manage its stake.", no_args_is_help=True)
app.add_typer(datasets_cli.app, name="datasets")

BEHAVIOURS: tuple[Behaviour, ...] = ("honest", "wrong", "lazy", "flaky")


def _behaviour(value: str) -> Behaviour:
    for known in BEHAVIOURS:
        if value == known:
            return known
    die(f"--behaviour must be one of {', '.join(BEHAVIOURS)}", ExitCode.USAGE)


@app.command()
@handle_errors
def start(
    coordinator: Annotated[
        str, typer.Option("--coordinator", "-c", help="coordinator URL")
    ] = DEFAULT_COORDINATOR,
    wallet: Annotated[
        Path | None, typer.Option("--wallet", "-w", help="the node's keystore file")
    ] = None,
    price: Annotated[str, typer.Option(help="DUCK asked per compute unit")] = "0.01",
    slots: Annotated[int, typer.Option(min=1, max=256, help="tasks run at once [default: 1]")] = 1,
    name: Annotated[str | None, typer.Option(help="display name [default: host name]")] = None,
    heartbeat: Annotated[float, typer.Option(help="seconds between heartbeats")] = 5.0,
    drain_timeout: Annotated[
        float, typer.Option(help="on Ctrl-C, wait this long for running tasks")
    ] = 300.0,
    isolate_network: Annotated[
        bool, typer.Option(help="run tasks without network (root + unshare)")
    ] = False,
    region: Annotated[str, typer.Option(help="region label shown in the marketplace")] = "",
    price_per_hour: Annotated[
        str, typer.Option(help="DUCK per hour for rentals; 0 = not for rent")
    ] = "0",
    stake: Annotated[
        str | None,
        typer.Option(help="at start, top the stake up to this many DUCK [default: no change]"),
    ] = None,
    faucet: Annotated[
        bool, typer.Option(help="development mode: mint the DUCK the --stake top-up needs")
    ] = False,
    behaviour: Annotated[
        str,
        typer.Option(
            help="test networks only: honest|wrong|lazy|flaky (refused outside development mode)"
        ),
    ] = "honest",
    datasets: Annotated[
        Path | None,
        typer.Option(
            "--datasets",
            help="dataset registry to advertise [default: $QUACKMESH_HOME/datasets.json]",
        ),
    ] = None,
    serve: Annotated[
        list[str] | None,
        typer.Option(
            "--serve",
            metavar="MODEL=BACKEND[@PRICE]",
            help=(
                "serve a model for inference (repeatable). BACKEND: minilm (bundled"
                " all-MiniLM-L6-v2 embeddings), st:DIR (local sentence-transformers dir),"
                " hf:DIR (local Hugging Face causal LM dir), openai:URL\\[#NAME] or"
                " openai-embed:URL\\[#NAME] (a local OpenAI-compatible server; NAME: its model"
                " name, default MODEL). PRICE in DUCK per 1,000 tokens (generate) or per text"
                " (embed) \\[default: 0]."
                " Example: --serve tiny=hf:./tiny@0.002"
            ),
        ),
    ] = None,
    serve_memory: Annotated[
        int,
        typer.Option(min=256, help="memory limit (MB of address space) of each served model"),
    ] = 16_384,
) -> None:
    """Join a coordinator: register, heartbeat, lease tasks and run them sandboxed.

    Ctrl-C once drains (running tasks finish, no new leases); twice releases them.
    """
    from quackmesh.inference.backends import parse_serves
    from quackmesh.node.agent import NodeAgent, NodeConfig
    from quackmesh.node.datasets import default_registry, load_registry
    from quackmesh.node.sandbox import network_isolation_available

    logging.basicConfig(level=os.environ.get("QUACKMESH_LOG_LEVEL", "WARNING"))
    if isolate_network and not network_isolation_available():
        die("--isolate-network needs root and util-linux `unshare` on this machine", ExitCode.USAGE)
    try:
        served = parse_serves(serve or [])
    except ValueError as exc:
        die(escape(str(exc)), ExitCode.USAGE)
    config = NodeConfig(
        coordinator=coordinator,
        name=name or socket.gethostname()[:64],
        price_per_unit=parse_amount(price, "--price"),
        slots=slots,
        heartbeat_s=heartbeat,
        drain_timeout_s=drain_timeout,
        isolate_network=isolate_network,
        region=region,
        price_per_hour=parse_amount(price_per_hour, "--price-per-hour"),
        stake=parse_amount(stake, "--stake") if stake is not None else 0,
        faucet=faucet,
        behaviour=_behaviour(behaviour),
        datasets=load_registry(datasets or default_registry()),
        serve=served,
        serve_memory_mb=serve_memory,
    )
    agent = NodeAgent(
        config, load_wallet(wallet), on_event=lambda msg: console.print(msg, highlight=False)
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        agent.request_drain()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    agent.run()


def _print_stake(info: StakePublic, json_out: bool) -> None:
    if json_out:
        print_json(info.model_dump())
        return
    state = "[green]eligible[/]" if info.eligible else "[yellow]below the minimum[/]"
    console.print(
        f"{info.address}: staked {format_duck(info.staked)}, unbonding"
        f" {format_duck(info.unbonding)}, effective {format_duck(info.effective)}"
        f" (minimum {format_duck(info.min_stake)}: {state}); queue priority {info.priority}",
        highlight=False,
    )
    for row in info.unbondings:
        if row.state == "unbonding":
            left = max(0.0, row.release_at - time.time())
            console.print(
                f"  unbonding {format_duck(row.amount)}: released in {left / 3600:.1f} h "
                "(slashable until then)",
                highlight=False,
            )


@app.command("stake")
@handle_errors
def stake_cmd(
    amount: Annotated[str, typer.Argument(help="DUCK to move from the wallet into stake")],
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Stake DUCK: nodes need the minimum stake for paid work; more stake ranks higher."""
    with Client(coordinator, load_wallet(wallet)) as client:
        info = client.stake(parse_amount(amount, "amount"))
    _print_stake(info, json_out)


@app.command("unstake")
@handle_errors
def unstake_cmd(
    amount: Annotated[str, typer.Argument(help="DUCK to take out of stake")],
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Start unbonding: the DUCK stop counting now and reach the wallet after the
    unbonding period; until then they can still be slashed."""
    with Client(coordinator, load_wallet(wallet)) as client:
        info = client.unstake(parse_amount(amount, "amount"))
    _print_stake(info, json_out)


@app.command("status")
@handle_errors
def status_cmd(
    address: Annotated[
        str | None, typer.Argument(help="node address [default: the wallet's]")
    ] = None,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """A node's status, reputation (with its parts), stake and slashes."""
    with Client(coordinator, load_wallet(wallet) if address is None else Wallet.create()) as client:
        who = address or client.address
        node = client.node(who)
        info = client.stake_info(who)
        slashes = client.slashes(node=who)
    if json_out:
        print_json(
            {
                "node": node.model_dump(),
                "stake": info.model_dump(),
                "slashes": [s.model_dump() for s in slashes],
            }
        )
        return
    rep = node.reputation
    console.print(f"[bold]{node.name}[/] {node.address}: {node.status.value}", highlight=False)
    if rep is not None:
        console.print(
            f"reputation {rep.score:.3f} (validity {rep.validity:.3f}, timeliness"
            f" {rep.timeliness:.3f}, uptime {rep.uptime:.3f}; {rep.results_valid} valid,"
            f" {rep.results_invalid} invalid results)",
            highlight=False,
        )
    _print_stake(info, False)
    for s in slashes:
        console.print(
            f"[red]slashed[/] {format_duck(s.amount)} for {s.reason} (job {s.job_id}, tx {s.tx_id})",
            highlight=False,
        )
