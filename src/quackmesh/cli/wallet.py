"""``quackmesh wallet new|show|balance|faucet``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from quackmesh.cli.common import (
    DEFAULT_COORDINATOR,
    console,
    default_wallet_path,
    die,
    handle_errors,
    load_wallet,
    parse_amount,
    print_json,
    read_password,
)
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.core.money import format_duck
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

app = typer.Typer(
    help="Create and inspect wallets (encrypted Ethereum keystore files).", no_args_is_help=True
)

WalletOpt = Annotated[
    Path | None,
    typer.Option(
        "--wallet", "-w", help="keystore file [default: $QUACKMESH_HOME/wallets/default.json]"
    ),
]
CoordOpt = Annotated[
    str, typer.Option("--coordinator", "-c", help="coordinator URL [env QUACKMESH_COORDINATOR]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


@app.command()
@handle_errors
def new(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="where to write the keystore")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a new key and save it as an encrypted keystore (mode 0600)."""
    path = out or default_wallet_path()
    if path.exists():
        die(f"{path} already exists; refusing to overwrite a wallet (use --out)", ExitCode.WALLET)
    wallet = Wallet.create()
    wallet.save(path, read_password(confirm=True))
    if json_out:
        print_json({"address": wallet.address, "path": str(path)})
    else:
        console.print(f"created wallet [bold]{wallet.address}[/] in {path}")


@app.command()
@handle_errors
def show(wallet: WalletOpt = None, json_out: JsonOpt = False) -> None:
    """Show a wallet's address (read from the keystore; no password needed)."""
    path = wallet or default_wallet_path()
    if not path.exists():
        die(f"no wallet at {path}; create one with `quackmesh wallet new`", ExitCode.WALLET)
    try:
        address = "0x" + str(json.loads(path.read_text())["address"]).removeprefix("0x")
    except (ValueError, KeyError) as exc:
        die(f"{path} is not a keystore file: {exc}", ExitCode.WALLET)
    if json_out:
        print_json({"address": address, "path": str(path)})
    else:
        console.print(f"{address}  ({path})", highlight=False)


@app.command()
@handle_errors
def balance(
    wallet: WalletOpt = None, coordinator: CoordOpt = DEFAULT_COORDINATOR, json_out: JsonOpt = False
) -> None:
    """Show the wallet's DUCK balance on the coordinator's ledger."""
    with Client(coordinator, load_wallet(wallet)) as client:
        bal = client.balance()
    if json_out:
        print_json(bal.model_dump())
    else:
        console.print(
            f"{bal.address}: {format_duck(bal.available)} available, {format_duck(bal.in_escrow)} in escrow"
        )


@app.command()
@handle_errors
def faucet(
    amount: Annotated[str, typer.Argument(help="DUCK to mint, e.g. 100 or 0.5")],
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
) -> None:
    """Mint development DUCK (only on a coordinator in development mode)."""
    with Client(coordinator, load_wallet(wallet)) as client:
        bal = client.faucet(parse_amount(amount, "amount"))
    console.print(f"{bal.address}: {format_duck(bal.available)} available")
