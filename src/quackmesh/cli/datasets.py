"""``quackmesh node datasets add|list|remove``: the node's own data for federated training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from quackmesh.cli.common import console, handle_errors, print_json
from quackmesh.cli.wallet import JsonOpt

app = typer.Typer(
    help="Register this node's own datasets for federated training (their rows never leave).",
    no_args_is_help=True,
)

RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry", help="the node's dataset registry [default: $QUACKMESH_HOME/datasets.json]"
    ),
]


def _registry(path: Path | None) -> Path:
    from quackmesh.node.datasets import default_registry

    return path or default_registry()


@app.command("add")
@handle_errors
def add(
    name: Annotated[str, typer.Argument(help="the name jobs use, e.g. mnist")],
    path: Annotated[Path, typer.Argument(help="a CSV, NPZ or Parquet file on this machine")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv|npz|parquet; checked against the file's bytes"),
    ] = None,
    label: Annotated[str, typer.Option("--label", help="the label column")] = "label",
    coarsen: Annotated[
        int | None,
        typer.Option(
            "--coarsen", min=1, help="round the advertised label counts to this step (privacy)"
        ),
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="overwrite an existing name")] = False,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check and register a dataset; the node advertises its shape, never its rows."""
    from quackmesh.node.datasets import add_dataset

    if fmt is not None and fmt not in ("csv", "npz", "parquet"):
        from quackmesh.cli.common import die
        from quackmesh.cli.exit_codes import ExitCode

        die("--format must be csv, npz or parquet", ExitCode.USAGE)
    entry = add_dataset(
        _registry(registry),
        name=name,
        path=path,
        label=label,
        coarsen=coarsen,
        fmt=fmt,
        replace=replace,
    )
    if json_out:
        print_json(entry.to_json())
        return
    info = entry.info
    console.print(
        f"registered [bold]{info.name}[/]: {info.rows} rows, {info.features} features, "
        f"{len(info.label_histogram)} labels ({info.format}, label column {info.label!r}); "
        "restart the node to advertise it",
        highlight=False,
    )


@app.command("list")
@handle_errors
def list_(registry: RegistryOpt = None, json_out: JsonOpt = False) -> None:
    """The registered datasets and what the node advertises about each."""
    from quackmesh.node.datasets import load_registry

    entries = load_registry(_registry(registry))
    if json_out:
        print_json({name: e.to_json() for name, e in entries.items()})
        return
    table = Table("name", "rows", "features", "labels", "format", "path")
    for name, e in sorted(entries.items()):
        hist = ", ".join(f"{k}:{v}" for k, v in sorted(e.info.label_histogram.items())[:6])
        more = "…" if len(e.info.label_histogram) > 6 else ""
        table.add_row(
            name, str(e.info.rows), str(e.info.features), hist + more, e.info.format, str(e.path)
        )
    console.print(table)


@app.command("remove")
@handle_errors
def remove(
    name: Annotated[str, typer.Argument(help="the dataset to forget (the file is kept)")],
    registry: RegistryOpt = None,
) -> None:
    """Stop advertising a dataset (from the next node start); the file is not touched."""
    from quackmesh.node.datasets import remove_dataset

    remove_dataset(_registry(registry), name)
    console.print(f"removed {name}")
