"""``quackmesh up``: a long-running local network (coordinator + optional demo nodes)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from quackmesh.cli.common import console, die
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.core.errors import ChainError

if TYPE_CHECKING:
    from quackmesh.coordinator.chain.link import ChainLink


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
    chain: Annotated[
        str | None,
        typer.Option(
            help="on-chain settlement: off; local (an in-process EVM deployed at start and "
            "gone when the coordinator stops, so use a fresh QUACKMESH_HOME each time); or "
            "a JSON-RPC URL (with --chain-key-file, the keystore password in "
            "QUACKMESH_CHAIN_KEY_PASSWORD and home/chain.json from `quackmesh chain deploy`)."
            " Default: QUACKMESH_CHAIN, else off",
        ),
    ] = None,
    chain_key_file: Annotated[
        Path | None,
        typer.Option(
            help="operator keystore for a JSON-RPC chain (default: QUACKMESH_CHAIN_KEY_FILE)"
        ),
    ] = None,
) -> None:
    """Start the coordinator (SQLite + local blobs in QUACKMESH_HOME) until Ctrl-C."""
    import uvicorn

    from quackmesh.cli.localnet import LocalNetwork, freeze_startup_objects
    from quackmesh.coordinator.settings import Settings

    overrides: dict[str, Any] = {"dev_mode": dev}
    if chain is not None:
        mode = chain.strip()
        if mode.lower() not in ("off", "local") and not mode.startswith(("http://", "https://")):
            die(
                f"--chain takes off, local or an http(s) JSON-RPC URL, not {chain!r}",
                ExitCode.USAGE,
            )
        overrides["chain"] = mode
    if chain_key_file is not None:
        overrides["chain_key_file"] = chain_key_file
    settings = Settings(**overrides)
    net = LocalNetwork(settings, host=host, port=port)
    try:
        config = net.server_config()  # with a chain: connects to it (or deploys, local)
    except ChainError as exc:
        die(f"chain: {exc.detail}", ExitCode.ERROR)
    console.print(f"QuackMesh coordinator on {net.url}  (API docs {net.url}/docs)")
    console.print(f"  dashboard: {net.url}/")
    console.print(f"  home: {settings.home}   database: {settings.resolved_database_url()}")
    console.print(f"  chain: {_describe_chain(net.chain, settings.chain)}", highlight=False)
    console.print(
        f"  join a node: quackmesh node start --coordinator {net.url} --wallet WALLET.json"
    )

    def start_nodes() -> None:
        if demo_nodes:
            net.wait_healthy(60)
            net.start_nodes(demo_nodes, price=10_000)
            online = net.wait_nodes_online(demo_nodes)
            console.print(f"  {online}/{demo_nodes} demo nodes online")

    server = uvicorn.Server(config)
    freeze_startup_objects()
    threading.Thread(target=start_nodes, daemon=True).start()
    try:
        server.run()
    finally:
        net.stop_nodes()


def _describe_chain(link: ChainLink | None, setting: str) -> str:
    if link is None:
        return "off (the SQL ledger alone; --chain local to settle on an in-process EVM)"
    chain_id = link.deployment.chain_id
    if link.local:
        where = f"local in-process EVM (chain id {chain_id}; it lives only as long as this process)"
    else:  # the host only: a provider URL's path or user part may carry an API key
        parts = urlsplit(setting.strip())
        host = parts.hostname or "?"
        where = (
            f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''} (chain id {chain_id})"
        )
    return f"{where}; Vault {link.vault_address}, DuckToken {link.deployment.token}, operator {link.operator}"
