"""``quackmesh up``: a long-running local network (coordinator + optional demo nodes)."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from quackmesh.cli.common import console


def up(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8787,
    host: Annotated[
        str, typer.Option(help="address to bind (0.0.0.0 for other machines)")
    ] = "127.0.0.1",
    demo_nodes: Annotated[
        int, typer.Option(min=0, max=64, help="local provider nodes to start")
    ] = 0,
    dev: Annotated[
        bool, typer.Option("--dev/--no-dev", help="development mode (faucet on)")
    ] = True,
) -> None:
    """Start the coordinator (SQLite + local blobs in QUACKMESH_HOME) until Ctrl-C."""
    import uvicorn

    from quackmesh.cli.localnet import LocalNetwork
    from quackmesh.coordinator.settings import Settings

    settings = Settings(dev_mode=dev)
    net = LocalNetwork(settings, host=host, port=port)
    console.print(f"QuackMesh coordinator on {net.url}  (API docs {net.url}/docs)")
    console.print(f"  home: {settings.home}   database: {settings.resolved_database_url()}")
    console.print(
        f"  join a node: quackmesh node start --coordinator {net.url} --wallet WALLET.json"
    )

    def start_nodes() -> None:
        if demo_nodes:
            net.wait_healthy(60)
            net.start_nodes(demo_nodes, price=10_000)
            online = net.wait_nodes_online(demo_nodes)
            console.print(f"  {online}/{demo_nodes} demo nodes online")

    server = uvicorn.Server(net.server_config())
    threading.Thread(target=start_nodes, daemon=True).start()
    try:
        server.run()
    finally:
        net.stop_nodes()
