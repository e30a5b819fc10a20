"""``quackmesh job submit|status|result|cancel|list|explain``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table

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
from quackmesh.core.schemas import JobPublic, JobState, Verification
from quackmesh.sdk import Client

app = typer.Typer(help="Submit and follow jobs.", no_args_is_help=True)

WalletOpt = Annotated[Path | None, typer.Option("--wallet", "-w", help="keystore file")]
CoordOpt = Annotated[
    str, typer.Option("--coordinator", "-c", help="coordinator URL [env QUACKMESH_COORDINATOR]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
TERMINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
POLICIES = ("none", "redundant", "adaptive", "honeypot", "reference")


def _describe(job: JobPublic) -> str:
    task = job.tasks[0] if job.tasks else None
    where = f" on {task.node[:10]}…" if task and task.node else ""
    tries = f", attempt {task.attempts}" if task and task.attempts > 1 else ""
    return f"{job.id} {job.kind}: [bold]{job.state.value}[/]{where}{tries}"


def follow(client: Client, job_id: str, *, timeout: float) -> JobPublic:
    """A live spinner until the job finishes, refreshed by the job's events as they happen."""
    job = client.status(job_id)
    with Live(Spinner("dots", text=_describe(job)), console=console, transient=True) as live:
        if job.state not in TERMINAL:
            for _ in job_changes(client, job_id, timeout=timeout):
                job = client.status(job_id)
                live.update(Spinner("dots", text=_describe(job)))
                if job.state in TERMINAL:
                    break
    if job.state not in TERMINAL:
        die(f"job {job_id} still {job.state.value} after {timeout:.0f}s", ExitCode.TIMEOUT)
    return job


_PAYMENT_STYLE = {
    "paid": "[green]",
    "slashed": "[red]",
    "refunded": "[cyan]",
    "escrowed": "[yellow]",
    "unpaid": "[dim]",
    "rental": "[blue]",
}


def _summary(job: JobPublic) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("job", job.id)
    table.add_row("kind", job.kind)
    table.add_row("state", job.state.value)
    table.add_row("units", str(job.units))
    table.add_row("escrowed", format_duck(job.escrowed))
    table.add_row("paid", f"{format_duck(job.paid)} (fee {format_duck(job.fee)})")
    table.add_row("refunded", format_duck(job.refunded))
    v = job.verification
    if v.policy != "none":
        table.add_row(
            "verification",
            f"{v.policy} (replicas {v.replicas}, quorum {v.quorum}, at most {v.max_replicas})",
        )
    if job.rental_id:
        table.add_row("rental", job.rental_id)
    for task in job.tasks:
        paid = f" {format_duck(task.paid)}" if task.paid else ""
        tx = f" tx {task.payment_tx[:12]}…" if task.payment_tx else ""
        table.add_row(
            "task",
            f"{task.id} [{task.role}] {task.state.value} node={task.node or '-'}"
            f" attempts={task.attempts} verdict={task.verdict}"
            f" payment={_PAYMENT_STYLE.get(task.payment_state, '')}{task.payment_state}[/]{paid}{tx}",
        )
        for failure in task.failures:
            table.add_row(
                "",
                f"[red]failed on {failure.node[:10]}…: {failure.reason}[/] {failure.detail[:120]}",
            )
    if job.error:
        table.add_row("error", f"[red]{job.error}[/]")
    console.print(table)


@app.command()
@handle_errors
def submit(
    kind: Annotated[str, typer.Argument(help="workload kind, e.g. ml.kmeans")],
    data: Annotated[
        Path,
        typer.Option("--data", "-d", exists=True, dir_okay=False, help="CSV, NPZ or Parquet file"),
    ],
    max_price: Annotated[str, typer.Option("--max-price", help="max DUCK per compute unit")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="k=v (repeatable; JSON values)")
    ] = None,
    max_attempts: Annotated[int, typer.Option(help="tries before the job fails")] = 3,
    timeout_s: Annotated[
        float, typer.Option("--task-timeout", help="wall-clock limit per task (s)")
    ] = 600.0,
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="wait and show progress")] = False,
    timeout: Annotated[
        float, typer.Option(help="with --follow: give up after this many seconds")
    ] = 900.0,
    rental: Annotated[
        str | None,
        typer.Option("--rental", help="run only on this rental's nodes (paid by the rental)"),
    ] = None,
    verify: Annotated[
        str,
        typer.Option(
            "--verify", help="verification policy: none|redundant|adaptive|honeypot|reference"
        ),
    ] = "none",
    replicas: Annotated[
        int | None, typer.Option(min=1, max=10, help="redundant: replicas k [default 3]")
    ] = None,
    quorum: Annotated[
        int | None,
        typer.Option(min=1, max=10, help="redundant: agreeing results needed [default majority]"),
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(min=1, max=10, help="cap on replicas when there is no quorum")
    ] = None,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Upload DATA and submit a job; the escrow is max price × the job's compute units."""
    params = dict(parse_param(p) for p in (param or []))
    price = parse_amount(max_price, "--max-price")
    if verify not in POLICIES:
        die(f"--verify must be one of {', '.join(POLICIES)}", ExitCode.USAGE)
    verification = Verification.model_validate(
        {"policy": verify, "replicas": replicas, "quorum": quorum, "max_replicas": max_replicas}
    )
    with Client(coordinator, load_wallet(wallet)) as client:
        job = client.submit(
            kind,
            data=data,
            params=params,
            max_price=price,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            rental_id=rental,
            verification=verification,
        )
        if not json_out:
            console.print(
                f"submitted {job.id} ({job.units} units, escrowed {format_duck(job.escrowed)})"
            )
        if follow_:
            job = follow(client, job.id, timeout=timeout)
    if json_out:
        print_json(job.model_dump(mode="json"))
    elif follow_:
        _summary(job)
    if follow_ and job.state != JobState.SUCCEEDED:
        raise typer.Exit(int(ExitCode.JOB_FAILED))


@app.command()
@handle_errors
def status(
    job_id: str,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Show a job, its tasks and its payment."""
    with Client(coordinator, load_wallet(wallet)) as client:
        job = client.status(job_id)
    if json_out:
        print_json(job.model_dump(mode="json"))
    else:
        _summary(job)


@app.command()
@handle_errors
def result(
    job_id: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write the result JSON here")
    ] = None,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
) -> None:
    """Print (or save) a finished job's result."""
    with Client(coordinator, load_wallet(wallet)) as client:
        res = client.result(job_id)
    if output is not None:
        import json

        output.write_text(json.dumps(res.result, indent=2))
        console.print(f"wrote {output} (sha256 {res.output_sha256})")
    else:
        print_json(res.result)


@app.command()
@handle_errors
def cancel(
    job_id: str, wallet: WalletOpt = None, coordinator: CoordOpt = DEFAULT_COORDINATOR
) -> None:
    """Cancel a queued or running job; its escrow is refunded."""
    with Client(coordinator, load_wallet(wallet)) as client:
        job = client.cancel(job_id)
    console.print(f"{job.id} cancelled; refunded {format_duck(job.refunded)}")


@app.command("list")
@handle_errors
def list_(
    state: Annotated[JobState | None, typer.Option(help="only jobs in this state")] = None,
    limit: int = 50,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """List your jobs, newest first."""
    with Client(coordinator, load_wallet(wallet)) as client:
        jobs = client.list_jobs(state=state, limit=limit)
    if json_out:
        print_json([j.model_dump(mode="json") for j in jobs])
        return
    table = Table("id", "kind", "state", "units", "paid", "created")
    for j in jobs:
        table.add_row(
            j.id,
            j.kind,
            j.state.value,
            str(j.units),
            format_duck(j.paid),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.created_at)),
        )
    console.print(table)


@app.command()
@handle_errors
def explain(
    job_id: str,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Why a job waits: every node, and the rule that keeps it from each waiting task."""
    with Client(coordinator, load_wallet(wallet)) as client:
        report = client.explain(job_id)
    if json_out:
        print_json(report.model_dump(mode="json"))
        return
    for task in report.tasks:
        table = Table(
            "node",
            "name",
            "eligible",
            "reason",
            "detail",
            title=f"task {task.task_id} ({task.role}, {task.state.value})",
        )
        for c in task.candidates:
            table.add_row(
                f"{c.node[:10]}…",
                c.name,
                "[green]✓[/]" if c.eligible else "[red]✗[/]",
                c.reason or "-",
                c.detail,
            )
        console.print(table)
    console.print(f"{report.job_id} {report.state.value}: {report.summary}", highlight=False)


@app.command()
@handle_errors
def dispute(
    job_id: Annotated[str, typer.Argument(help="a succeeded job of yours")],
    reason: Annotated[str, typer.Option(help="what looks wrong")] = "",
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="wait for the re-runs' verdict")
    ] = False,
    timeout: Annotated[float, typer.Option(help="with --follow: give up after (s)")] = 900.0,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Dispute a job's result: high-reputation nodes re-run it. Overturned: the provider
    is slashed and you are refunded; upheld: the dispute fee goes to the provider."""
    with Client(coordinator, load_wallet(wallet)) as client:
        row = client.dispute(job_id, reason=reason)
        if not json_out:
            console.print(
                f"dispute {row.id} opened on {job_id}: escrowed {format_duck(row.escrowed)}"
                f" (fee {format_duck(row.fee)} + re-runs)"
            )
        deadline = time.monotonic() + timeout
        while follow_ and row.state == "open":
            if time.monotonic() > deadline:
                die(f"dispute {row.id} still open after {timeout:.0f}s", ExitCode.TIMEOUT)
            time.sleep(0.5)
            row = next(d for d in client.disputes(job_id) if d.id == row.id)
    if json_out:
        print_json(row.model_dump(mode="json"))
    elif row.state != "open":
        console.print(f"dispute {row.id}: [bold]{row.state}[/] {row.outcome}", highlight=False)
