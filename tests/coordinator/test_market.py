"""The marketplace listing and ``job explain``, on SQLite and PostgreSQL.

Filters are strict (an unknown or malformed one is a 422 naming it), and ``explain``
reports, per node, the scheduler's own rule that keeps it from a waiting task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from quackmesh.coordinator.db.models import Node, Rental, RentalNode
from quackmesh.coordinator.market.explain import Candidate, Rules, describe, explain_task
from quackmesh.coordinator.market.service import (
    DEFAULT_SORT,
    GIB,
    PARAMETERS,
    MarketQuery,
    matches,
    parse_market_query,
    sort_key,
)
from quackmesh.coordinator.scheduler.rules import NodeView, Reason, TaskView
from quackmesh.coordinator.sweeper import sweep_once
from quackmesh.core.errors import JobNotFound, ValidationFailed
from quackmesh.core.schemas import ExplainPublic, GpuInfo, Hardware, JobState, TaskState
from quackmesh.sdk import Client

from .conftest import Net

LINREG = "ml.linear_regression"


def addresses(found: Any) -> set[str]:
    return {n.address for n in found.nodes}


def set_node(net: Net, address: str, **values: object) -> None:
    with net.rt.sessions.begin() as session:
        node = session.get(Node, address)
        assert node is not None
        for key, value in values.items():
            setattr(node, key, value)


def go_offline(net: Net, node: Client) -> None:
    """Backdate the node's last beat, then let the sweeper find it silent."""
    set_node(net, node.address, last_seen_at=time.time() - 3_600)
    sweep_once(net.rt)


def submit(client: Client, net: Net, *, max_price: int = 400, **kw: Any) -> str:
    job = client.submit(LINREG, data=net.csv(), params={"target": "y"}, max_price=max_price, **kw)
    return job.id


def by_reason(report: ExplainPublic) -> dict[str | None, set[str]]:
    out: dict[str | None, set[str]] = {}
    for entry in report.tasks[0].candidates:
        out.setdefault(entry.reason, set()).add(entry.node)
    return out


@pytest.fixture
def market(net: Net) -> dict[str, str]:
    """Three different nodes: a gaming rig, a GPU server for rent, a small CPU box."""
    rig = net.node(
        name="rig",
        price=100,
        kinds=(LINREG, "ml.kmeans"),
        hardware=Hardware(
            cpu_cores=8, ram_bytes=32 * GIB, gpus=[GpuInfo(model="RTX 4090", memory_bytes=24 * GIB)]
        ),
        region="eu-west",
    )
    server = net.node(
        name="server",
        price=500,
        kinds=(LINREG, "ml.pca"),
        hardware=Hardware(
            cpu_cores=64,
            ram_bytes=512 * GIB,
            gpus=[GpuInfo(model="NVIDIA A100-SXM4-80GB", memory_bytes=80 * GIB)] * 2,
        ),
        region="us-east",
        price_per_hour=2_000_000,
    )
    box = net.node(
        name="box",
        price=50,
        kinds=("ml.pca",),
        hardware=Hardware(cpu_cores=2, ram_bytes=4 * GIB),
        region="eu-west",
        stake=0,
    )
    set_node(net, rig.address, rep_validity=1.0)  # score 0.75; the others stay at 0.5
    return {"rig": rig.address, "server": server.address, "box": box.address}


# --- listing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, {"rig", "server", "box"}),
        ({"gpu_model": "rtx"}, {"rig"}),
        ({"gpu_model": "a100"}, {"server"}),
        ({"min_gpus": 2}, {"server"}),
        ({"min_gpus": 1}, {"rig", "server"}),
        ({"min_gpu_memory_gb": 40}, {"server"}),
        ({"gpu_model": "4090", "min_gpu_memory_gb": 40}, set()),
        ({"min_cpu_cores": 8}, {"rig", "server"}),
        ({"min_ram_gb": 31.5}, {"rig", "server"}),
        ({"max_price": 100}, {"rig", "box"}),
        ({"min_reputation": 0.7}, {"rig"}),
        ({"region": "eu-west"}, {"rig", "box"}),
        ({"workload": "ml.pca"}, {"server", "box"}),
        ({"rentable": True}, {"server"}),
        ({"rentable": False}, {"rig", "box"}),
        ({"region": "eu-west", "workload": LINREG}, {"rig"}),
    ],
)
def test_each_filter_selects_the_right_nodes(
    net: Net, market: dict[str, str], filters: dict[str, Any], expected: set[str]
) -> None:
    found = net.client().market_nodes(**filters)
    assert addresses(found) == {market[name] for name in expected}
    assert found.total == len(expected)


def rent(net: Net, node: str) -> str:
    """An active rental holding ``node`` (rows only: the rental flow is tested elsewhere)."""
    now = time.time()
    with net.rt.sessions.begin() as session:
        session.add(
            Rental(
                id="r1",
                client="0x" + "c" * 40,
                state="active",
                hours=1.0,
                price_per_hour=2_000_000,
                escrowed=2_000_000,
                started_at=now,
                ends_at=now + 3_600,
                settled_at=now,
            )
        )
        session.flush()
        session.add(RentalNode(rental_id="r1", node=node, price_per_hour=2_000_000))
    return "r1"


def test_a_rented_node_is_not_rentable_and_explain_says_so(
    net: Net, market: dict[str, str]
) -> None:
    rental = rent(net, market["server"])
    client = net.funded()
    assert addresses(client.market_nodes(rentable=True)) == set()
    (server,) = client.market_nodes(gpu_model="a100").nodes
    assert server.rental_id == rental
    report = client.explain(submit(client, net, max_price=1_000))
    entry = next(e for e in report.tasks[0].candidates if e.node == market["server"])
    assert (entry.reason, entry.detail) == ("rented", f"reserved by rental {rental}")


def test_online_filter_follows_liveness(net: Net, market: dict[str, str]) -> None:
    set_node(net, market["box"], last_seen_at=time.time() - 3_600)
    sweep_once(net.rt)
    client = net.client()
    assert addresses(client.market_nodes(online=True)) == {market["rig"], market["server"]}
    assert addresses(client.market_nodes(online=False)) == {market["box"]}


def test_listing_shows_stake_reputation_and_hardware(net: Net, market: dict[str, str]) -> None:
    nodes = {n.address: n for n in net.client().market_nodes().nodes}
    rig, box = nodes[market["rig"]], nodes[market["box"]]
    assert rig.stake == net.rt.settings.min_stake and box.stake == 0
    assert rig.reputation is not None and rig.reputation.score == pytest.approx(0.75)
    assert rig.hardware.gpus[0].model == "RTX 4090" and rig.region == "eu-west"


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        (None, ["rig", "box", "server"]),  # -reputation, then price
        ("price", ["box", "rig", "server"]),
        ("-price", ["server", "rig", "box"]),
        ("-cores", ["server", "rig", "box"]),
        ("ram", ["box", "rig", "server"]),
        ("-gpu_memory", ["server", "rig", "box"]),
        ("-price_per_hour,price", ["server", "box", "rig"]),
        ("stake,-cores", ["box", "server", "rig"]),
    ],
)
def test_sorting(net: Net, market: dict[str, str], sort: str | None, order: list[str]) -> None:
    found = net.client().market_nodes(sort=sort)
    assert [n.address for n in found.nodes] == [market[name] for name in order]


def test_filters_are_documented_in_openapi(net: Net) -> None:
    spec = net.tc.get("/openapi.json").json()
    params = spec["paths"]["/v1/market/nodes"]["get"]["parameters"]
    assert [p["name"] for p in params] == list(PARAMETERS)


def test_limit_keeps_the_total(net: Net, market: dict[str, str]) -> None:
    found = net.client().market_nodes(limit=1, sort="price")
    assert [n.address for n in found.nodes] == [market["box"]] and found.total == 3


def test_unknown_filter_is_a_422_naming_it(net: Net) -> None:
    response = net.tc.get("/v1/market/nodes", params={"max_prise": "10", "region": "eu-west"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed" and body["field"] == "max_prise"
    assert "max_prise" in body["detail"] and "max_price" in body["known"]
    with pytest.raises(ValidationFailed) as err:
        net.client().market_nodes(gpu="4090")
    assert err.value.context["field"] == "gpu" and "unknown filter gpu" in err.value.detail


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("sort=foo", "sort"),
        ("sort=price,-price", "sort"),
        ("min_reputation=2", "min_reputation"),
        ("min_reputation=nan", "min_reputation"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("online=maybe", "online"),
        ("min_cpu_cores=many", "min_cpu_cores"),
        ("max_price=-1", "max_price"),
        ("min_ram_gb=", "min_ram_gb"),
        ("workload=ml.nope", "workload"),
        ("region=a&region=b", "region"),
    ],
)
def test_bad_value_is_a_422_naming_the_field(net: Net, query: str, field: str) -> None:
    response = net.tc.get(f"/v1/market/nodes?{query}")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and field in body["detail"]


# --- the pure functions, without HTTP -------------------------------------------------------


def test_parse_market_query_defaults_and_values() -> None:
    assert parse_market_query([]) == MarketQuery()
    q = parse_market_query(
        [("online", "TRUE"), ("min_gpus", "2"), ("sort", "-stake, price"), ("limit", "7")]
    )
    assert (q.online, q.min_gpus, q.sort, q.limit) == (True, 2, ("-stake", "price"), 7)
    assert MarketQuery().sort == DEFAULT_SORT


def test_gpu_filters_count_the_same_gpus(net: Net, market: dict[str, str]) -> None:
    server = next(n for n in net.client().market_nodes().nodes if n.address == market["server"])
    assert matches(server, MarketQuery(gpu_model="a100", min_gpus=2, min_gpu_memory_gb=80))
    assert not matches(server, MarketQuery(gpu_model="a100", min_gpus=3))
    assert not matches(server, MarketQuery(gpu_model="h100"))
    assert sort_key(server, ["-cores"])[0] == -64


@pytest.mark.parametrize(
    "module", ["quackmesh.coordinator.market.service", "quackmesh.coordinator.market.explain"]
)
def test_all_is_sorted_and_complete(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    key = lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n)  # noqa: E731
    assert list(mod.__all__) == sorted(mod.__all__, key=key)
    assert all(hasattr(mod, name) for name in mod.__all__)


# --- explain ----------------------------------------------------------------------------------


def test_explain_names_the_rule_for_every_node(net: Net) -> None:
    client = net.funded()
    busy = net.node(name="busy", price=300, slots=1)
    submit(client, net)  # the busy node takes this one and has no slot left
    assert len(busy.lease(max_tasks=1, wait_s=0).tasks) == 1
    job_id = submit(client, net)

    ok = net.node(name="ok", price=300)
    dear = net.node(name="dear", price=500)
    poor = net.node(name="poor", price=300, stake=0)
    pca = net.node(name="pca", kinds=("ml.pca",))
    gone = net.node(name="gone", price=300)
    go_offline(net, gone)

    report = client.explain(job_id)
    assert report.job_id == job_id and report.state == JobState.QUEUED
    assert [t.state for t in report.tasks] == [TaskState.QUEUED]
    assert by_reason(report) == {
        None: {ok.address},
        "price": {dear.address},
        "stake": {poor.address},
        "capability": {pca.address},
        "busy": {busy.address},
        "offline": {gone.address},
    }
    details = {e.node: e.detail for e in report.tasks[0].candidates}
    assert details[dear.address] == "asks 0.0005 DUCK/unit, job pays at most 0.0004 DUCK/unit"
    assert details[poor.address] == "effective stake 0 DUCK < minimum 1000 DUCK"
    assert details[pca.address] == f"does not run {LINREG}"
    assert details[busy.address] == "1/1 slots busy"
    assert details[gone.address].startswith("offline: last seen")
    assert report.tasks[0].candidates[0].eligible  # eligible nodes come first
    assert report.summary == "1 of 6 nodes could take it now"

    # What explain promised is what the scheduler does.
    for node in (dear, poor, pca, busy):
        assert node.lease(max_tasks=1, wait_s=0).tasks == []
    assert [t.job_id for t in ok.lease(max_tasks=1, wait_s=0).tasks] == [job_id]


def test_explain_summary_counts_reasons_when_no_node_can_take_it(net: Net) -> None:
    client = net.funded()
    job_id = submit(client, net, max_price=100)
    net.node(price=500)
    net.node(price=200)
    net.node(price=50, stake=0)
    go_offline(net, net.node(price=50))
    report = client.explain(job_id)
    assert report.summary == "no node can take it: 2 price, 1 offline, 1 stake"
    assert not any(e.eligible for e in report.tasks[0].candidates)


def test_explain_with_no_nodes_at_all(net: Net) -> None:
    client = net.funded()
    report = client.explain(submit(client, net))
    assert report.tasks[0].candidates == [] and report.summary == "no node is registered"


def test_explain_shows_a_node_that_failed_the_task_as_excluded(net: Net) -> None:
    from quackmesh.core.schemas import TaskReport

    client = net.funded()
    job_id = submit(client, net)
    node = net.node(price=300)
    lease = node.lease(max_tasks=1, wait_s=0).tasks[0]
    node.report(
        lease.task_id, TaskReport(lease_id=lease.lease_id, outcome="failed", failure_reason="crash")
    )
    entry = client.explain(job_id).tasks[0].candidates[0]
    assert (entry.reason, entry.detail) == ("excluded", "already failed this task")


def test_explain_shows_the_holder_of_a_leased_task(net: Net) -> None:
    client = net.funded()
    job_id = submit(client, net)
    node = net.node(name="holder", price=300)
    node.lease(max_tasks=1, wait_s=0)
    report = client.explain(job_id)
    assert report.state == JobState.RUNNING
    (task,) = report.tasks
    assert task.state == TaskState.LEASED
    assert [(e.node, e.name, e.eligible) for e in task.candidates] == [
        (node.address, "holder", True)
    ]
    assert task.candidates[0].detail.startswith("running on it")
    assert report.summary == "1 task running"


def test_explain_of_a_finished_job_lists_no_tasks(net: Net) -> None:
    client = net.funded()
    job_id = submit(client, net)
    net.node()
    client.cancel(job_id)
    report = client.explain(job_id)
    assert report.state == JobState.CANCELLED and report.tasks == []
    assert report.summary == "the job is finished (cancelled); no task is waiting for a node"


def test_explain_of_someone_elses_job_is_404(net: Net) -> None:
    owner = net.funded()
    job_id = submit(owner, net)
    with pytest.raises(JobNotFound):
        net.client().explain(job_id)
    with pytest.raises(JobNotFound):
        owner.explain("nope")


def test_explain_waiting_during_the_match_window(net_factory: Callable[..., Net]) -> None:
    net = net_factory(match_window_s=60.0)
    client = net.funded()
    job_id = submit(client, net)
    node = net.node(price=300)
    (entry,) = client.explain(job_id).tasks[0].candidates
    assert entry.reason == "waiting" and "has first pick for" in entry.detail
    assert node.lease(max_tasks=1, wait_s=0).tasks == []


# --- every rule has its own wording ----------------------------------------------------------

NODE = NodeView(
    address="0x" + "a" * 40,
    status="online",
    workloads=frozenset({LINREG}),
    price_per_unit=100,
    slots=2,
    busy=0,
    stake=10,
    reputation=0.5,
    verifier=False,
    rental_id=None,
)
TASK = TaskView(job_id="j", kind=LINREG, max_price=400, excluded_nodes=frozenset(), queued_at=0.0)
RULES = Rules(min_stake=10, window_s=0.0, now=100.0)


@pytest.mark.parametrize(
    ("node", "task", "reason", "words"),
    [
        ({"status": "draining"}, {}, Reason.DRAINING, "draining"),
        ({"rental_id": "r1"}, {}, Reason.RENTED, "reserved by rental r1"),
        ({}, {"rental_id": "r2"}, Reason.NOT_IN_RENTAL, "not part of rental r2"),
        ({}, {"pinned_node": "0x" + "b" * 40}, Reason.PINNED, "reserved for node 0xbbbbbbbb"),
        ({}, {"verifier_only": True}, Reason.VERIFIER, "verifier"),
        ({}, {"min_reputation": 0.6}, Reason.REPUTATION, "reputation 0.50 < 0.60"),
        ({}, {"excluded_nodes": frozenset({NODE.address})}, Reason.EXCLUDED, "replica"),
        ({"busy": 2}, {}, Reason.BUSY, "2/2 slots busy"),
        ({"models": frozenset({"tiny"})}, {"model": "big"}, Reason.MODEL, "serve model big"),
    ],
)
def test_each_reason_is_described(
    node: dict[str, Any], task: dict[str, Any], reason: Reason, words: str
) -> None:
    from dataclasses import replace

    cand = Candidate(view=replace(NODE, **node), name="n", last_seen_at=99.0)
    (entry,) = explain_task(replace(TASK, **task), [cand], RULES)
    assert (entry.eligible, entry.reason) == (False, reason.value)
    assert words in entry.detail
    assert describe(None, cand, TASK, RULES) == "can take it now at 0.0001 DUCK/unit"
