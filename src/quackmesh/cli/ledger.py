"""``quackmesh ledger verify|export``: audit the DUCK journal, locally or remotely."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import typer

from quackmesh.cli.common import console, die, handle_errors, print_json
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.coordinator.db.engine import make_engine, make_session_factory
from quackmesh.coordinator.settings import Settings
from quackmesh.core.wallet import Wallet
from quackmesh.ledger import (
    LedgerCheck,
    PostedTx,
    SqlLedger,
    audit_chain,
    read_jsonl,
    write_csv,
    write_jsonl,
)
from quackmesh.sdk import Client

app = typer.Typer(help="Audit and export the DUCK ledger.", no_args_is_help=True)

CoordOpt = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        "-c",
        help="audit a remote coordinator's public journal instead of the local database",
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="local database [default: QUACKMESH_DATABASE_URL or SQLite in QUACKMESH_HOME]",
    ),
]
PAGE = 5000


def _remote_journal(url: str) -> Iterator[PostedTx]:
    # Reading the journal needs no identity; a throwaway key signs nothing here.
    with Client(url, Wallet.create()) as client:
        after = 0
        while True:
            page = list(read_jsonl(io.StringIO(client.ledger_journal(after=after, limit=PAGE))))
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1].seq


def _local_url(database_url: str | None) -> str:
    url = database_url or Settings().resolved_database_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        die(
            f"no coordinator database at {url}; pass --database-url or --coordinator",
            ExitCode.USAGE,
        )
    return url


@app.command()
@handle_errors
def verify(
    coordinator: CoordOpt = None,
    database_url: DbOpt = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-hash the journal chain and check that every account sums to zero."""
    if coordinator:
        check: LedgerCheck = audit_chain(_remote_journal(coordinator))
    else:
        engine = make_engine(_local_url(database_url))
        with make_session_factory(engine)() as session:
            check = SqlLedger().verify(session)
        engine.dispose()
    if json_out:
        print_json(
            {
                "ok": check.ok,
                "transactions": check.transactions,
                "head": check.head,
                "total": check.total,
                "problems": list(check.problems),
            }
        )
    elif check.ok:
        console.print(
            f"[green]ledger ok[/]: {check.transactions} transactions, sum {check.total}, head {check.head[:16]}…"
        )
    else:
        for problem in check.problems:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
    if not check.ok:
        raise typer.Exit(int(ExitCode.CHECK_FAILED))


@app.command()
@handle_errors
def export(
    fmt: Annotated[
        Literal["csv", "jsonl"],
        typer.Option(
            "--format", "-f", help="csv (one row per entry) or jsonl (one transaction per line)"
        ),
    ] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file [default: stdout]")
    ] = None,
    coordinator: CoordOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Write the journal as CSV or JSON Lines."""
    writer = write_csv if fmt == "csv" else write_jsonl
    fh = output.open("w", newline="") if output else sys.stdout
    try:
        if coordinator:
            count = writer(_remote_journal(coordinator), fh)
        else:
            engine = make_engine(_local_url(database_url))
            with make_session_factory(engine)() as session:
                count = writer(SqlLedger().iter_journal(session), fh)
            engine.dispose()
    finally:
        if output:
            fh.close()
    if output:
        console.print(f"wrote {count} transactions to {output}")
