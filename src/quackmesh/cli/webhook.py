"""``quackmesh webhook add|list|remove|deliveries|redeliver``: your events, pushed to a URL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from quackmesh.cli.common import (
    DEFAULT_COORDINATOR,
    console,
    die,
    err_console,
    handle_errors,
    load_wallet,
    print_json,
)
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.core.webhook_schemas import DeliveryPublic, WebhookCreate
from quackmesh.sdk import Client

__all__ = ["app"]

app = typer.Typer(
    help="Receive your events (jobs, payments, rentals, stakes …) as signed HTTP POSTs.",
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
def add(
    url: Annotated[str, typer.Argument(help="http(s) URL that receives the POSTs")],
    types: Annotated[
        list[str],
        typer.Option(
            "--type",
            "-t",
            help="event type (payment.settled), prefix (job.*) or *; repeat for several",
        ),
    ],
    description: Annotated[str, typer.Option("--description", "-d", help="a note")] = "",
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Register URL for your events of the given --type(s); prints the signing secret once."""
    try:
        WebhookCreate(url=url, types=types, description=description)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        if loc[0] == "types" and len(loc) > 1:
            message = (
                f"--type: {err['input']!r} is neither an event type (payment.settled), "
                "a prefix (job.*) nor *"
            )
        else:
            message = f"--{'type' if loc[0] == 'types' else loc[0]}: {err['msg']}"
        die(escape(message), ExitCode.USAGE)
    with Client(coordinator, load_wallet(wallet)) as client:
        hook = client.webhook_create(url, types=types, description=description)
    if json_out:
        print_json(hook.model_dump(mode="json"))
        return
    console.print(f"webhook [bold]{hook.id}[/] → {hook.url} ({', '.join(hook.types)})")
    console.print(f"secret  [bold]{hook.secret}[/]", highlight=False)
    err_console.print(
        "Keep the secret: it will not be shown again. Check each delivery's "
        "QuackMesh-Signature with it (README: Webhooks)."
    )


@app.command("list")
@handle_errors
def list_(
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """List your active webhooks."""
    with Client(coordinator, load_wallet(wallet)) as client:
        hooks = client.webhooks()
    if json_out:
        print_json([h.model_dump(mode="json") for h in hooks])
        return
    table = Table("id", "url", "types", "created", "description")
    for h in hooks:
        table.add_row(h.id, h.url, ", ".join(h.types), _when(h.created_at), h.description)
    console.print(table)


@app.command()
@handle_errors
def remove(
    webhook_id: Annotated[str, typer.Argument(metavar="ID")],
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
) -> None:
    """Stop sending to a webhook; its pending deliveries fail, its history stays."""
    with Client(coordinator, load_wallet(wallet)) as client:
        client.webhook_delete(webhook_id)
    console.print(f"removed {webhook_id}")


def _deliveries_table(rows: list[DeliveryPublic]) -> Table:
    table = Table("id", "event", "state", "attempts", "last status", "next attempt / delivered")
    for d in rows:
        colour = {"delivered": "green", "failed": "red"}.get(d.state, "yellow")
        last = str(d.last_status) if d.last_status is not None else (d.last_error or "-")
        when = _when(d.delivered_at) if d.state == "delivered" else _when(d.next_attempt_at)
        table.add_row(
            str(d.id),
            f"{d.event_type} #{d.event_id}",
            f"[{colour}]{d.state}[/]",
            str(d.attempts),
            last,
            when,
        )
    return table


@app.command()
@handle_errors
def deliveries(
    webhook_id: Annotated[str, typer.Argument(metavar="ID")],
    state: Annotated[
        Literal["pending", "delivered", "failed"] | None,
        typer.Option("--state", help="only deliveries in this state"),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """A webhook's deliveries, newest first: state, attempts and the last outcome."""
    with Client(coordinator, load_wallet(wallet)) as client:
        rows = client.webhook_deliveries(webhook_id, state=state, limit=limit)
    if json_out:
        print_json([d.model_dump(mode="json") for d in rows])
        return
    console.print(_deliveries_table(rows))


@app.command()
@handle_errors
def redeliver(
    webhook_id: Annotated[str, typer.Argument(metavar="ID")],
    delivery_id: Annotated[int, typer.Argument(metavar="DELIVERY", min=1)],
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Send a delivered or failed delivery again, now."""
    with Client(coordinator, load_wallet(wallet)) as client:
        row = client.webhook_redeliver(webhook_id, delivery_id)
    if json_out:
        print_json(row.model_dump(mode="json"))
        return
    console.print(f"delivery {row.id} ({row.event_type} #{row.event_id}) is {row.state} again")
