"""``quackmesh keys create|list|revoke``: API keys for the OpenAI-compatible gateway."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from quackmesh.cli.common import (
    DEFAULT_COORDINATOR,
    console,
    err_console,
    handle_errors,
    load_wallet,
    print_json,
)
from quackmesh.sdk import Client

__all__ = ["app"]

app = typer.Typer(
    help="API keys for the OpenAI-compatible gateway (requests are paid from your wallet).",
    no_args_is_help=True,
)

WalletOpt = Annotated[Path | None, typer.Option("--wallet", "-w", help="keystore file")]
CoordOpt = Annotated[
    str, typer.Option("--coordinator", "-c", help="coordinator URL [env QUACKMESH_COORDINATOR]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


@app.command()
@handle_errors
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="a label to recognise it by")] = "",
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Create an API key spending from your wallet; prints the key once."""
    with Client(coordinator, load_wallet(wallet)) as client:
        key = client.api_key_create(name)
    if json_out:
        print_json(key.model_dump(mode="json"))
        return
    console.print(f"key [bold]{key.id}[/] {key.name or ''}".rstrip())
    console.print(key.key, highlight=False, soft_wrap=True)
    err_console.print(
        "Keep the key: it will not be shown again. Use it as the OpenAI API key with "
        f"base URL {coordinator.rstrip('/')}/v1."
    )


@app.command("list")
@handle_errors
def list_(
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """List your API keys (the keys themselves are never shown again)."""
    with Client(coordinator, load_wallet(wallet)) as client:
        keys = client.api_key_list()
    if json_out:
        print_json([k.model_dump(mode="json") for k in keys])
        return
    table = Table("id", "name", "prefix", "created", "last used", "state")
    for k in keys:
        state = "[red]revoked[/]" if k.revoked else "[green]active[/]"
        table.add_row(
            k.id, k.name, f"{k.prefix}…", _when(k.created_at), _when(k.last_used_at), state
        )
    console.print(table)


@app.command()
@handle_errors
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID")],
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
) -> None:
    """Revoke one of your API keys; the gateway refuses it from now on."""
    with Client(coordinator, load_wallet(wallet)) as client:
        key = client.api_key_revoke(key_id)
    console.print(f"revoked {key.id}")
