"""``quackmesh node start``: run a provider node."""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from quackmesh.cli.common import (
    DEFAULT_COORDINATOR,
    console,
    die,
    handle_errors,
    load_wallet,
    parse_amount,
)
from quackmesh.cli.exit_codes import ExitCode

app = typer.Typer(help="Run a provider node.", no_args_is_help=True)


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
) -> None:
    """Join a coordinator: register, heartbeat, lease tasks and run them sandboxed.

    Ctrl-C once drains (running tasks finish, no new leases); twice releases them.
    """
    from quackmesh.node.agent import NodeAgent, NodeConfig
    from quackmesh.node.sandbox import network_isolation_available

    logging.basicConfig(level=os.environ.get("QUACKMESH_LOG_LEVEL", "WARNING"))
    if isolate_network and not network_isolation_available():
        die("--isolate-network needs root and util-linux `unshare` on this machine", ExitCode.USAGE)
    config = NodeConfig(
        coordinator=coordinator,
        name=name or socket.gethostname()[:64],
        price_per_unit=parse_amount(price, "--price"),
        slots=slots,
        heartbeat_s=heartbeat,
        drain_timeout_s=drain_timeout,
        isolate_network=isolate_network,
    )
    agent = NodeAgent(
        config, load_wallet(wallet), on_event=lambda msg: console.print(msg, highlight=False)
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        agent.request_drain()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    agent.run()
