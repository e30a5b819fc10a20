"""``quackmesh market list``: browse provider nodes by hardware, price, reputation, region."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import typer
from rich.table import Table

from quackmesh.cli.common import (
    DEFAULT_COORDINATOR,
    console,
    handle_errors,
    parse_amount,
    print_json,
)
from quackmesh.core.money import format_duck
from quackmesh.core.schemas import NodePublic
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client

app = typer.Typer(help="Browse the marketplace of provider nodes.", no_args_is_help=True)

GIB = 2**30
CoordOpt = Annotated[
    str, typer.Option("--coordinator", "-c", help="coordinator URL [env QUACKMESH_COORDINATOR]")
]


def _gib(n: int) -> str:
    value = n / GIB
    return f"{value:.0f} GiB" if value >= 10 or value == int(value) else f"{value:.1f} GiB"


def _gpus(node: NodePublic) -> str:
    if not node.hardware.gpus:
        return "-"
    groups = Counter((g.model, g.memory_bytes) for g in node.hardware.gpus)
    return ", ".join(f"{n}× {model} ({_gib(mem)})" for (model, mem), n in groups.items())


def _table(nodes: list[NodePublic], total: int) -> Table:
    table = Table(
        "address",
        "name",
        "status",
        "region",
        "cores",
        "RAM",
        "GPUs",
        "price/unit",
        "price/hour",
        "reputation",
        "stake",
        "rented",
        "datasets",
        caption=f"{len(nodes)} of {total} matching nodes",
    )
    for n in nodes:
        table.add_row(
            f"{n.address[:10]}…",
            n.name,
            n.status.value,
            n.region or "-",
            str(n.hardware.cpu_cores),
            _gib(n.hardware.ram_bytes),
            _gpus(n),
            format_duck(n.price_per_unit),
            format_duck(n.price_per_hour) if n.price_per_hour else "-",
            f"{n.reputation.score:.2f}" if n.reputation is not None else "-",
            format_duck(n.stake),
            n.rental_id or "-",
            ", ".join(f"{d.name} ({d.rows} rows)" for d in n.datasets) or "-",
        )
    return table


@app.command("list")
@handle_errors
def list_(
    online: Annotated[
        bool | None, typer.Option("--online/--offline", help="only online / not-online nodes")
    ] = None,
    gpu_model: Annotated[
        str | None, typer.Option("--gpu-model", help="GPU model contains this (any case)")
    ] = None,
    min_gpus: Annotated[int | None, typer.Option("--min-gpus", help="at least N GPUs")] = None,
    min_gpu_memory: Annotated[
        float | None, typer.Option("--min-gpu-memory", help="GiB on each counted GPU")
    ] = None,
    min_cores: Annotated[
        int | None, typer.Option("--min-cores", help="at least N CPU cores")
    ] = None,
    min_ram: Annotated[float | None, typer.Option("--min-ram", help="at least N GiB RAM")] = None,
    max_price: Annotated[
        str | None, typer.Option("--max-price", help="asks at most this many DUCK per unit")
    ] = None,
    min_reputation: Annotated[
        float | None, typer.Option("--min-reputation", help="reputation score 0..1")
    ] = None,
    region: Annotated[str | None, typer.Option("--region", help="exactly this region")] = None,
    workload: Annotated[
        str | None, typer.Option("--workload", help="advertises this kind, e.g. ml.kmeans")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="holds this node-local dataset (FL)")
    ] = None,
    rentable: Annotated[
        bool | None,
        typer.Option("--rentable/--not-rentable", help="for rent by the hour and not rented"),
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option(
            "--sort",
            help="price, reputation, stake, cores, ram, gpu_memory, price_per_hour, "
            "last_seen; '-' descends; comma-separated [default: -reputation,price]",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="most nodes shown (1..500)")] = 100,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List nodes matching every filter; the coordinator refuses a filter it does not know."""
    filters: dict[str, Any] = {
        "online": online,
        "gpu_model": gpu_model,
        "min_gpus": min_gpus,
        "min_gpu_memory_gb": min_gpu_memory,
        "min_cpu_cores": min_cores,
        "min_ram_gb": min_ram,
        "max_price": None if max_price is None else parse_amount(max_price, "--max-price"),
        "min_reputation": min_reputation,
        "region": region,
        "workload": workload,
        "dataset": dataset,
        "rentable": rentable,
        "sort": sort,
        "limit": limit,
    }
    # A public read: any key may sign it, so no wallet is needed.
    with Client(coordinator, Wallet.create()) as client:
        found = client.market_nodes(**filters)
    if json_out:
        print_json(found.model_dump(mode="json"))
    else:
        console.print(_table(found.nodes, found.total))
