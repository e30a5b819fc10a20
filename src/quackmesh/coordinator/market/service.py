"""Marketplace listing: parse the query strictly, filter and sort nodes with pure functions.

A filter the server does not understand is an error, never silently ignored: a client that
misspells ``max_prise`` must not be shown expensive nodes as if they matched. So the query
string is parsed here, by name, instead of by FastAPI (which drops unknown parameters).

Filtering runs on :class:`NodePublic` (the same view ``GET /v1/nodes`` shows), so what a
client filters on is exactly what it reads; SQL only narrows the rows first.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import Node
from quackmesh.coordinator.nodes.service import node_public
from quackmesh.coordinator.scheduler.views import node_views
from quackmesh.core.errors import ValidationFailed
from quackmesh.core.schemas import MarketExclusion, MarketNodesPublic, NodePublic, NodeStatus
from quackmesh.ledger import Ledger

__all__ = [
    "DEFAULT_SORT",
    "GIB",
    "MAX_LIMIT",
    "PARAMETERS",
    "SORT_FIELDS",
    "MarketQuery",
    "matches",
    "mismatch",
    "openapi_parameters",
    "parse_market_query",
    "search_nodes",
    "sort_key",
]

T = TypeVar("T")

GIB = 2**30
MAX_LIMIT = 500
DEFAULT_SORT = ("-reputation", "price")

# name -> (OpenAPI type, description). The order is the order shown in errors and docs.
PARAMETERS: dict[str, tuple[str, str]] = {
    "online": ("boolean", "true: only online nodes; false: only offline or draining ones"),
    "gpu_model": ("string", "case-insensitive substring of a GPU model, e.g. 4090"),
    "min_gpus": ("integer", "at least this many GPUs (that pass the other GPU filters)"),
    "min_gpu_memory_gb": ("number", "GiB of memory on each counted GPU"),
    "min_cpu_cores": ("integer", "at least this many CPU cores"),
    "min_ram_gb": ("number", "at least this many GiB of RAM"),
    "max_price": ("integer", "asks at most this many micro-DUCK per compute unit"),
    "min_reputation": ("number", "reputation score at least this (0..1)"),
    "region": ("string", "exactly this region"),
    "workload": ("string", "advertises this workload kind, e.g. ml.kmeans"),
    "dataset": ("string", "holds a node-local dataset of this name (federated training)"),
    "model": ("string", "serves this model for inference (exact name)"),
    "rentable": ("boolean", "true: for rent (price per hour > 0) and not rented now"),
    "sort": ("string", "comma-separated keys, '-' for descending; default -reputation,price"),
    "limit": ("integer", f"most nodes returned, 1..{MAX_LIMIT} (default 100)"),
    "explain": ("boolean", "true: also list every excluded node with the first filter it fails"),
}


def _gpu_memory(node: NodePublic) -> float:
    return float(sum(g.memory_bytes for g in node.hardware.gpus))


def _reputation(node: NodePublic) -> float:
    return node.reputation.score if node.reputation is not None else 0.0


# Sort key name -> the number it sorts by. ``gpu_memory`` is the total over all GPUs.
SORT_FIELDS: dict[str, Callable[[NodePublic], float]] = {
    "price": lambda n: float(n.price_per_unit),
    "reputation": _reputation,
    "stake": lambda n: float(n.stake),
    "cores": lambda n: float(n.hardware.cpu_cores),
    "ram": lambda n: float(n.hardware.ram_bytes),
    "gpu_memory": _gpu_memory,
    "price_per_hour": lambda n: float(n.price_per_hour),
    "last_seen": lambda n: n.last_seen_at,
}


@dataclass(frozen=True)
class MarketQuery:
    """A parsed marketplace query; ``None`` means the filter is not applied."""

    online: bool | None = None
    gpu_model: str | None = None
    min_gpus: int | None = None
    min_gpu_memory_gb: float | None = None
    min_cpu_cores: int | None = None
    min_ram_gb: float | None = None
    max_price: int | None = None
    min_reputation: float | None = None
    region: str | None = None
    workload: str | None = None
    dataset: str | None = None
    model: str | None = None
    rentable: bool | None = None
    sort: tuple[str, ...] = DEFAULT_SORT
    limit: int = 100
    explain: bool = False


# --- parsing ---------------------------------------------------------------------------


def _bad(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{name}: {message}", field=name)


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"true", "1", "yes", "on"}:
        return True
    if value in {"false", "0", "no", "off"}:
        return False
    raise _bad(name, f"expected true or false, got {raw!r}")


def _int(name: str, raw: str, *, low: int, high: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise _bad(name, f"expected an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _bad(name, f"must be {bounds}, got {value}")
    return value


def _float(name: str, raw: str, *, low: float, high: float | None = None) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise _bad(name, f"expected a number, got {raw!r}") from None
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise _bad(name, f"must be {bounds}, got {raw!r}")
    return value


def _text(name: str, raw: str, *, max_length: int) -> str:
    value = raw.strip()
    if not value or len(value) > max_length:
        raise _bad(name, f"expected 1 to {max_length} characters, got {raw!r}")
    return value


def _sort(name: str, raw: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in raw.split(","))
    known = sorted(SORT_FIELDS) + sorted(f"-{k}" for k in SORT_FIELDS)
    for key in keys:
        if key.removeprefix("-") not in SORT_FIELDS:
            raise ValidationFailed(
                f"{name}: unknown sort key {key!r}; known: {', '.join(known)}",
                field=name,
                known=known,
            )
    fields = [k.removeprefix("-") for k in keys]
    if len(set(fields)) != len(fields):
        raise _bad(name, f"a key is given twice in {raw!r}")
    return keys


def parse_market_query(
    items: Iterable[tuple[str, str]], *, known_kinds: Collection[str] | None = None
) -> MarketQuery:
    """Parse query-string pairs; any unknown, repeated or malformed parameter is a 422."""
    given: dict[str, str] = {}
    unknown: list[str] = []
    for name, raw in items:
        if name not in PARAMETERS:
            unknown.append(name)
        elif name in given:
            raise _bad(name, "given more than once")
        else:
            given[name] = raw
    if unknown:
        names = ", ".join(dict.fromkeys(unknown))
        raise ValidationFailed(
            f"unknown filter {names}; known: {', '.join(PARAMETERS)}",
            field=unknown[0],
            unknown=list(dict.fromkeys(unknown)),
            known=list(PARAMETERS),
        )

    def opt(name: str, parse: Callable[[str, str], T]) -> T | None:
        return parse(name, given[name]) if name in given else None

    workload = opt("workload", lambda n, v: _text(n, v, max_length=64))
    if workload is not None and known_kinds is not None and workload not in known_kinds:
        raise ValidationFailed(
            f"workload: unknown workload kind {workload!r}",
            field="workload",
            known=sorted(known_kinds),
        )
    return MarketQuery(
        online=opt("online", _bool),
        gpu_model=opt("gpu_model", lambda n, v: _text(n, v, max_length=128)),
        min_gpus=opt("min_gpus", lambda n, v: _int(n, v, low=0, high=64)),
        min_gpu_memory_gb=opt("min_gpu_memory_gb", lambda n, v: _float(n, v, low=0.0)),
        min_cpu_cores=opt("min_cpu_cores", lambda n, v: _int(n, v, low=0)),
        min_ram_gb=opt("min_ram_gb", lambda n, v: _float(n, v, low=0.0)),
        max_price=opt("max_price", lambda n, v: _int(n, v, low=0)),
        min_reputation=opt("min_reputation", lambda n, v: _float(n, v, low=0.0, high=1.0)),
        region=opt("region", lambda n, v: _text(n, v, max_length=32)),
        workload=workload,
        dataset=opt("dataset", lambda n, v: _text(n, v, max_length=64)),
        model=opt("model", lambda n, v: _text(n, v, max_length=128)),
        rentable=opt("rentable", _bool),
        sort=opt("sort", _sort) or DEFAULT_SORT,
        limit=opt("limit", lambda n, v: _int(n, v, low=1, high=MAX_LIMIT)) or 100,
        explain=bool(opt("explain", _bool)),
    )


def openapi_parameters() -> list[dict[str, Any]]:
    """The query parameters for the OpenAPI document (parsing is by hand, see above)."""
    return [
        {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": d}
        for name, (kind, d) in PARAMETERS.items()
    ]


# --- filtering and sorting (pure) --------------------------------------------------------


def _gpus_ok(node: NodePublic, q: MarketQuery) -> bool:
    gpu_filter = q.gpu_model is not None or q.min_gpu_memory_gb is not None
    wanted = max(q.min_gpus or 0, 1 if gpu_filter else 0)
    if wanted == 0:
        return True
    model = (q.gpu_model or "").lower()
    min_bytes = (q.min_gpu_memory_gb or 0.0) * GIB
    counted = [
        g for g in node.hardware.gpus if model in g.model.lower() and g.memory_bytes >= min_bytes
    ]
    return len(counted) >= wanted


def mismatch(node: NodePublic, q: MarketQuery) -> tuple[str, str] | None:
    """The first filter of ``q`` that ``node`` fails, as ``(filter, why)``; None if it passes.

    GPU filters count the same GPUs (a node with one 4090 and one 8 GiB card does not pass
    ``gpu_model=4090&min_gpu_memory_gb=16``).
    """
    hw = node.hardware
    if q.online is not None and (node.status == NodeStatus.ONLINE) != q.online:
        return "online", f"is {node.status.value}"
    if not _gpus_ok(node, q):
        return "gpus", f"has {len(hw.gpus)} GPU(s), none or too few that fit"
    if q.min_cpu_cores is not None and hw.cpu_cores < q.min_cpu_cores:
        return "min_cpu_cores", f"has {hw.cpu_cores} cores"
    if q.min_ram_gb is not None and hw.ram_bytes < q.min_ram_gb * GIB:
        return "min_ram_gb", f"has {hw.ram_bytes / GIB:.1f} GiB RAM"
    if q.max_price is not None and node.price_per_unit > q.max_price:
        return "max_price", f"asks {node.price_per_unit} micro-DUCK/unit"
    if q.min_reputation is not None and _reputation(node) < q.min_reputation:
        return "min_reputation", f"reputation is {_reputation(node):.2f}"
    if q.region is not None and node.region != q.region:
        return "region", f"is in region {node.region or 'unset'!r}"
    if q.workload is not None and q.workload not in node.workloads:
        return "workload", f"does not run {q.workload}"
    if q.dataset is not None and all(d.name != q.dataset for d in node.datasets):
        return "dataset", f"holds no dataset {q.dataset!r}"
    if q.model is not None and all(m.name != q.model for m in node.models):
        return "model", f"does not serve model {q.model!r}"
    if q.rentable is not None:
        rentable = node.price_per_hour > 0 and node.rental_id is None
        if rentable != q.rentable:
            why = "is rented now" if node.rental_id else "is not for rent"
            return "rentable", why if q.rentable else "is for rent"
    return None


def matches(node: NodePublic, q: MarketQuery) -> bool:
    """Whether ``node`` passes every filter of ``q``."""
    return mismatch(node, q) is None


def sort_key(node: NodePublic, keys: Iterable[str]) -> tuple[Any, ...]:
    """A key for ``sorted``: each sort key in turn ('-' descends), then the address."""
    parts: list[Any] = []
    for key in keys:
        value = SORT_FIELDS[key.removeprefix("-")](node)
        parts.append(-value if key.startswith("-") else value)
    parts.append(node.address)
    return tuple(parts)


# --- the query --------------------------------------------------------------------------


def _narrow(stmt: Select[Node], q: MarketQuery) -> Select[Node]:
    if q.online is True:
        stmt = stmt.where(Node.status == NodeStatus.ONLINE.value)
    elif q.online is False:
        stmt = stmt.where(Node.status != NodeStatus.ONLINE.value)
    if q.region is not None:
        stmt = stmt.where(Node.region == q.region)
    if q.max_price is not None:
        stmt = stmt.where(Node.price_per_unit <= q.max_price)
    if q.rentable is True:
        stmt = stmt.where(Node.price_per_hour > 0)
    return stmt


def search_nodes(session: Session, q: MarketQuery, *, ledger: Ledger) -> MarketNodesPublic:
    stmt = select(Node)
    # SQL narrows on plain columns; :func:`matches` still decides every filter. To explain
    # the exclusions every node is read.
    if not q.explain:
        stmt = _narrow(stmt, q)
    rows = list(session.scalars(stmt))
    views = node_views(ledger, session, rows)
    public = [
        node_public(n, stake=views[n.address].stake, rental_id=views[n.address].rental_id)
        for n in rows
    ]
    found = sorted((n for n in public if matches(n, q)), key=lambda n: sort_key(n, q.sort))
    if not q.explain:
        return MarketNodesPublic(nodes=found[: q.limit], total=len(found))
    excluded = []
    for node in sorted(public, key=lambda n: n.address):
        miss = mismatch(node, q)
        if miss is not None:
            excluded.append(
                MarketExclusion(
                    address=node.address, name=node.name, reason=miss[0], detail=miss[1]
                )
            )
    counts = Counter(e.reason for e in excluded)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    reasons = ", ".join(f"{n} {reason}" for reason, n in ranked)
    return MarketNodesPublic(
        nodes=found[: q.limit],
        total=len(found),
        excluded=excluded,
        summary=f"{len(found)} of {len(public)} nodes match"
        + (f"; excluded: {reasons}" if reasons else ""),
    )
