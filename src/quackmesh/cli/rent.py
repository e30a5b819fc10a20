"""``quackmesh rent`` and ``quackmesh rental list|show|cancel``: reserve nodes by the hour."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

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
from quackmesh.core.money import format_duck
from quackmesh.core.schemas import RentalPublic
from quackmesh.sdk import Client

__all__ = ["rent", "rental_app"]

rental_app = typer.Typer(help="List, show and cancel your rentals.", no_args_is_help=True)

WalletOpt = Annotated[Path | None, typer.Option("--wallet", "-w", help="keystore file")]
CoordOpt = Annotated[
    str, typer.Option("--coordinator", "-c", help="coordinator URL [env QUACKMESH_COORDINATOR]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _summary(rental: RentalPublic) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("rental", rental.id)
    table.add_row("state", rental.state)
    table.add_row(
        "hours", f"{rental.hours:g} ({_when(rental.started_at)} → {_when(rental.ends_at)})"
    )
    table.add_row("price", f"{format_duck(rental.price_per_hour)}/h")
    table.add_row("escrowed", format_duck(rental.escrowed))
    table.add_row("paid", f"{format_duck(rental.paid)} (fee {format_duck(rental.fee)})")
    table.add_row("refunded", format_duck(rental.refunded))
    for node in rental.nodes:
        table.add_row(
            "node",
            f"{node.node} {format_duck(node.price_per_hour)}/h "
            f"online {node.online_s:.0f} s paid {format_duck(node.paid)}",
        )
    if rental.ended_at is not None:
        table.add_row("ended", _when(rental.ended_at))
    console.print(table)


@handle_errors
def rent(
    hours: Annotated[float, typer.Option("--hours", help="how long to rent for")],
    budget: Annotated[
        str, typer.Option("--budget", help="most DUCK to escrow; refused if it costs more")
    ],
    nodes: Annotated[
        list[str] | None, typer.Argument(help="addresses of the nodes to rent", show_default=False)
    ] = None,
    gpus: Annotated[
        int | None,
        typer.Option("--gpus", min=1, help="instead of NODE…: the cheapest nodes per GPU"),
    ] = None,
    quote: Annotated[
        bool, typer.Option("--quote", help="only show what it would take and cost")
    ] = False,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Rent NODE… (or --gpus N) for --hours at their hourly price (--quote: preview only).

    The whole cost is escrowed up front; providers are paid from it per minute of online
    time, and whatever is left comes back when the rental ends or is cancelled. Run jobs
    on the rented nodes with `quackmesh job submit … --rental ID`.
    """
    if bool(nodes) == (gpus is not None):
        die("name the nodes to rent, or give --gpus N (not both)", ExitCode.USAGE)
    if hours <= 0:
        die("--hours must be a positive number of hours", ExitCode.USAGE)
    limit = parse_amount(budget, "--budget")
    with Client(coordinator, load_wallet(wallet)) as client:
        if quote:
            preview = client.quote_rental(nodes=nodes, gpus=gpus, hours=hours, budget=limit)
        else:
            rental = client.rent(nodes=nodes, gpus=gpus, hours=hours, budget=limit)
    if quote:
        if json_out:
            print_json(preview.model_dump(mode="json"))
            return
        verdict = "within" if preview.within_budget else "[red]over[/]"
        console.print(
            f"{len(preview.nodes)} node(s) for {preview.hours:g} h at"
            f" {format_duck(preview.price_per_hour)}/h would cost {format_duck(preview.cost)},"
            f" {verdict} the budget of {format_duck(limit)}; nothing reserved"
        )
        for member in preview.nodes:
            console.print(f"  {member.node}  {format_duck(member.price_per_hour)}/h")
        return
    if json_out:
        print_json(rental.model_dump(mode="json"))
        return
    console.print(
        f"rented {len(rental.nodes)} node(s) for {rental.hours:g} h at "
        f"{format_duck(rental.price_per_hour)}/h: escrowed {format_duck(rental.escrowed)} "
        f"(budget {format_duck(limit)})"
    )
    console.print(f"rental id [bold]{rental.id}[/]: run jobs on it with --rental {rental.id}")
    _summary(rental)


@rental_app.command("list")
@handle_errors
def list_(
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """List your rentals, newest first."""
    with Client(coordinator, load_wallet(wallet)) as client:
        rentals = client.rentals()
    if json_out:
        print_json([r.model_dump(mode="json") for r in rentals])
        return
    table = Table("id", "state", "nodes", "price/h", "escrowed", "paid", "refunded", "ends")
    for r in rentals:
        table.add_row(
            r.id,
            r.state,
            str(len(r.nodes)),
            format_duck(r.price_per_hour),
            format_duck(r.escrowed),
            format_duck(r.paid),
            format_duck(r.refunded),
            _when(r.ends_at),
        )
    console.print(table)


@rental_app.command()
@handle_errors
def show(
    rental_id: str,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Show a rental: its nodes, their online time and what they were paid."""
    with Client(coordinator, load_wallet(wallet)) as client:
        rental = client.rental(rental_id)
    if json_out:
        print_json(rental.model_dump(mode="json"))
    else:
        _summary(rental)


@rental_app.command()
@handle_errors
def cancel(
    rental_id: str,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """End a rental now: the time used is paid, the rest of the escrow refunded."""
    with Client(coordinator, load_wallet(wallet)) as client:
        rental = client.cancel_rental(rental_id)
    if json_out:
        print_json(rental.model_dump(mode="json"))
        return
    console.print(
        f"{rental.id} {rental.state}; paid {format_duck(rental.paid)}, "
        f"refunded {format_duck(rental.refunded)}"
    )
