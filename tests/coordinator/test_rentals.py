"""Rentals: escrow up front, per-period settlement of online time, refunds, matching.

Contract tests, run on SQLite and PostgreSQL. Time is driven explicitly: heartbeats are
fed to the liveness buffer with chosen timestamps and ``sweep_once``/``settle_rentals``
run at chosen ``now`` values, so every amount below is exact.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable

import pytest

from quackmesh.coordinator.db.models import Node, Rental
from quackmesh.coordinator.nodes.liveness import Beat
from quackmesh.coordinator.rentals.service import (
    cancel_rental,
    earned,
    get_owned_rental,
    rental_cost,
    require_rental,
    settle_rentals,
)
from quackmesh.coordinator.sweeper import sweep_once
from quackmesh.core.errors import (
    InsufficientBalance,
    InvalidState,
    NodeNotFound,
    NotFound,
    ValidationFailed,
)
from quackmesh.core.schemas import GpuInfo, Hardware, RentalPublic
from quackmesh.ledger import TREASURY, rental_escrow_account, wallet_account
from quackmesh.sdk import Client

from .conftest import Net

PPH = 3_600_000  # 3.6 DUCK an hour: 1,000 micro-DUCK a second, 60,000 a minute
DUCK = 1_000_000
GPU = GpuInfo(model="RTX 4090", memory_bytes=24 * 2**30)


def gpus(n: int) -> Hardware:
    return Hardware(cpu_cores=8, ram_bytes=2**34, gpus=[GPU] * n)


def balance(net: Net, account: str) -> int:
    with net.rt.sessions() as session:
        return net.rt.ledger.balance(session, account)


def fee(amount: int, net: Net) -> int:
    return amount * net.rt.settings.fee_bps // 10_000


def conserved(net: Net) -> None:
    check = net.client().ledger_check()
    assert check.ok and check.total == 0, check.problems


def beat(net: Net, at: float, *nodes: Client) -> None:
    """Heartbeats received at ``at`` (flushed by the next sweep)."""
    for node in nodes:
        net.rt.liveness.beat(node.address, Beat(at=at, running=(), draining=False))


def settle(net: Net, now: float) -> int:
    with net.rt.sessions.begin() as session:
        return settle_rentals(net.rt, session, now=now)


def cancel_at(net: Net, rental: RentalPublic, now: float) -> None:
    with net.rt.sessions.begin() as session:
        row = get_owned_rental(session, rental.id, rental.client, for_update=True)
        cancel_rental(net.rt, session, row, now=now)


def rented_by(net: Net, node: Client) -> str | None:
    return next(n.rental_id for n in net.client().nodes() if n.address == node.address)


def test_cost_is_rounded_up_and_earnings_down() -> None:
    assert rental_cost([1_000_001], 0.5) == 500_001
    assert rental_cost([PPH, 2 * PPH], 1 / 3) == 3_600_000
    assert earned(59.9999997, PPH) == 60_000  # float noise below a millisecond is ignored
    assert earned(0.0015, PPH) == 2 and earned(0.0004, PPH) == 0


@pytest.mark.parametrize("module", ["quackmesh.coordinator.rentals.service", "quackmesh.cli.rent"])
def test_exported_names_are_sorted_and_exist(module: str) -> None:
    mod = importlib.import_module(module)
    key = lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n)  # noqa: E731
    assert list(mod.__all__) == sorted(mod.__all__, key=key)
    assert all(hasattr(mod, name) for name in mod.__all__)


def test_rent_escrows_the_whole_cost_up_front(net: Net) -> None:
    a, b = net.node(price_per_hour=PPH), net.node(price_per_hour=2 * PPH)
    client = net.funded(100 * DUCK)
    rental = client.rent(nodes=[a.address, b.address], hours=1.5, budget=20 * DUCK)
    cost = 3 * PPH * 3 // 2  # 16.2 DUCK
    assert rental.state == "active" and rental.escrowed == cost and rental.price_per_hour == 3 * PPH
    assert rental.ends_at - rental.started_at == pytest.approx(5400)
    assert {(n.node, n.price_per_hour, n.paid) for n in rental.nodes} == {
        (a.address, PPH, 0),
        (b.address, 2 * PPH, 0),
    }
    assert client.balance().available == 100 * DUCK - cost
    assert balance(net, rental_escrow_account(rental.id)) == cost
    assert rented_by(net, a) == rented_by(net, b) == rental.id
    assert client.rental(rental.id) == rental and client.rentals() == [rental]
    conserved(net)


def test_settles_each_period_with_fee_and_a_silent_node_stops_earning(net: Net) -> None:
    """Nodes A and B at 1,000 µDUCK/s for 180 s; A goes silent after its beat at +50 s."""
    a, b = net.node(price_per_hour=PPH), net.node(price_per_hour=PPH)
    client = net.funded(10 * DUCK)
    rental = client.rent(nodes=[a.address, b.address], hours=0.05, budget=DUCK)
    assert rental.escrowed == 360_000
    s = rental.started_at
    treasury = balance(net, TREASURY)

    beat(net, s + 25, a, b)
    sweep_once(net.rt, now=s + 30)  # less than a settle period: nothing is paid yet
    assert client.rental(rental.id).paid == 0

    beat(net, s + 50, a, b)
    sweep_once(net.rt, now=s + 60)  # one minute each: 60,000 gross, 3,000 fee
    first = client.rental(rental.id)
    assert [n.paid for n in first.nodes] == [60_000, 60_000] and first.fee == 2 * 3_000
    assert balance(net, wallet_account(a.address)) == 57_000

    beat(net, s + 110, b)  # A is silent: offline at the next sweep, paid up to +50 + 30 s
    sweep_once(net.rt, now=s + 120)
    assert [n.status for n in net.client().nodes() if n.address == a.address] == ["offline"]
    beat(net, s + 170, b)
    sweep_once(net.rt, now=s + 185)  # past ends_at (+180): final settlement and refund

    done = client.rental(rental.id)
    by_node = {n.node: n for n in done.nodes}
    assert by_node[a.address].online_s == pytest.approx(80) and by_node[a.address].paid == 80_000
    assert by_node[b.address].online_s == pytest.approx(180) and by_node[b.address].paid == 180_000
    fees = fee(60_000, net) * 4 + fee(20_000, net)
    assert done.state == "ended" and done.ended_at == done.ends_at
    assert done.paid == 260_000 and done.fee == fees and done.refunded == 100_000
    assert balance(net, wallet_account(a.address)) == 80_000 - fee(60_000, net) - fee(20_000, net)
    assert balance(net, wallet_account(b.address)) == 180_000 - 3 * fee(60_000, net)
    assert balance(net, TREASURY) - treasury == fees
    assert client.balance().available == 10 * DUCK - 260_000
    assert balance(net, rental_escrow_account(rental.id)) == 0
    assert rented_by(net, b) is None  # back on the open market
    types = [e["type"] for e in net.tc.get("/v1/events", params={"limit": 1000}).json()]
    assert types.count("rental.settled") == 5 and types[-1] == "rental.ended"
    conserved(net)


def test_a_late_sweep_pays_only_up_to_ends_at_and_never_twice(
    net_factory: Callable[..., Net],
) -> None:
    net = net_factory(offline_after_s=3600.0)  # the nodes stay online without heartbeats
    a, b = net.node(price_per_hour=PPH), net.node(price_per_hour=2 * PPH)
    client = net.funded(10 * DUCK)
    rental = client.rent(nodes=[a.address, b.address], hours=0.05, budget=DUCK)
    assert rental.escrowed == 540_000
    assert settle(net, rental.started_at + 500) == 2
    assert settle(net, rental.started_at + 900) == 0
    done = client.rental(rental.id)
    assert done.state == "ended" and done.paid == 540_000 and done.refunded == 0
    assert sorted(n.paid for n in done.nodes) == [180_000, 360_000]
    assert client.balance().available == 10 * DUCK - 540_000
    conserved(net)


def test_cancel_settles_the_time_used_and_refunds_the_rest(net: Net) -> None:
    node = net.node(price_per_hour=PPH)
    client = net.funded(10 * DUCK)
    rental = client.rent(nodes=[node.address], hours=2, budget=10 * DUCK)
    s = rental.started_at
    beat(net, s + 55, node)
    sweep_once(net.rt, now=s + 60)
    beat(net, s + 85, node)
    sweep_once(net.rt, now=s + 85)  # not due: 25 s since the last settlement
    cancel_at(net, rental, s + 90)

    done = client.rental(rental.id)
    assert done.state == "cancelled" and done.ended_at == pytest.approx(s + 90)
    assert done.paid == 90_000 and done.refunded == 2 * PPH - 90_000
    assert client.balance().available == 10 * DUCK - 90_000
    assert balance(net, wallet_account(node.address)) == 90_000 - fee(60_000, net) - fee(
        30_000, net
    )
    with pytest.raises(InvalidState, match="already cancelled"):
        client.cancel_rental(rental.id)
    assert rented_by(net, node) is None
    again = net.funded(10 * DUCK).rent(nodes=[node.address], hours=1, budget=10 * DUCK)
    assert again.state == "active"
    conserved(net)


def test_cancel_over_http_refunds_everything_not_paid(net: Net) -> None:
    node = net.node(price_per_hour=PPH)
    client = net.funded(10 * DUCK)
    rental = client.rent(nodes=[node.address], hours=1, budget=10 * DUCK)
    done = client.cancel_rental(rental.id)
    assert done.state == "cancelled"
    assert done.paid + done.refunded == rental.escrowed == PPH
    assert client.balance().available == 10 * DUCK - done.paid
    assert balance(net, rental_escrow_account(rental.id)) == 0
    conserved(net)


def test_budget_too_small_is_422_showing_the_cost_and_writes_nothing(net: Net) -> None:
    node = net.node(price_per_hour=PPH)
    client = net.funded(10 * DUCK)
    before = net.journal_count()
    with pytest.raises(ValidationFailed, match=r"costs 86\.4 DUCK.*budget of 50 DUCK") as err:
        client.rent(nodes=[node.address], hours=24, budget=50 * DUCK)
    assert err.value.context["field"] == "budget" and err.value.context["cost"] == 24 * PPH
    with pytest.raises(InsufficientBalance):  # within budget, but more than the wallet holds
        client.rent(nodes=[node.address], hours=24, budget=100 * DUCK)
    assert net.journal_count() == before and client.rentals() == []
    assert client.balance().available == 10 * DUCK and rented_by(net, node) is None
    conserved(net)


def test_a_node_already_rented_is_409_naming_it(net: Net) -> None:
    a, b = net.node(price_per_hour=PPH), net.node(price_per_hour=PPH)
    first = net.funded(10 * DUCK).rent(nodes=[a.address], hours=1, budget=10 * DUCK)
    second = net.funded(10 * DUCK)
    before = net.journal_count()
    with pytest.raises(InvalidState, match=f"node {a.address} is already rented") as err:
        second.rent(nodes=[b.address, a.address], hours=1, budget=10 * DUCK)
    assert err.value.context["reason"] == "rented"
    assert net.journal_count() == before and rented_by(net, b) is None
    assert rented_by(net, a) == first.id
    conserved(net)


def test_unrentable_nodes_and_bad_requests_are_refused_clearly(net: Net) -> None:
    priced = net.node(price_per_hour=PPH)
    not_for_rent = net.node(price_per_hour=0)
    unstaked = net.node(price_per_hour=PPH, stake=0)
    client = net.funded(10 * DUCK)

    def rent(nodes: list[str], *, gpus: int | None = None, hours: float = 1) -> RentalPublic:
        return client.rent(nodes=nodes, gpus=gpus, hours=hours, budget=10 * DUCK)

    with pytest.raises(InvalidState, match="is not for rent") as err:
        rent([not_for_rent.address])
    assert err.value.context["node"] == not_for_rent.address
    assert err.value.context["reason"] == "not_for_rent"
    with pytest.raises(InvalidState, match="0 DUCK staked, less than the 1000 DUCK") as err:
        rent([unstaked.address])
    assert err.value.context["reason"] == "unstaked"
    with pytest.raises(NodeNotFound, match="is not registered"):
        rent(["0x" + "ab" * 20])
    with pytest.raises(ValidationFailed, match="listed twice"):
        rent([priced.address, priced.address.lower()])
    with pytest.raises(ValidationFailed, match="not both"):
        rent([priced.address], gpus=1)
    with pytest.raises(ValidationFailed, match="name the nodes"):
        rent([])
    with pytest.raises(ValidationFailed, match="too short to cost anything"):
        rent([priced.address], hours=1e-9)

    sweep_once(net.rt, now=time.time() + net.rt.settings.offline_after_s + 1)
    with pytest.raises(InvalidState, match="is offline: only online nodes") as err:
        rent([priced.address])
    assert err.value.context["reason"] == "offline"
    assert client.rentals() == [] and client.balance().available == 10 * DUCK
    conserved(net)


def test_renters_racing_for_one_node_get_it_once(net: Net) -> None:
    node = net.node(price_per_hour=PPH)
    renters = [net.funded(10 * DUCK) for _ in range(4)]
    start = threading.Barrier(len(renters))
    won: list[str] = []
    lost: list[BaseException] = []

    def race(client: Client) -> None:
        start.wait()
        try:
            won.append(client.rent(nodes=[node.address], hours=1, budget=10 * DUCK).id)
        except BaseException as exc:  # collected and asserted below
            lost.append(exc)

    threads = [threading.Thread(target=race, args=(c,)) for c in renters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1 and len(lost) == 3, lost
    assert all(isinstance(e, InvalidState) for e in lost), lost
    assert rented_by(net, node) == won[0]
    assert sorted(c.balance().available for c in renters) == [10 * DUCK - PPH] + [10 * DUCK] * 3
    conserved(net)


def test_gpus_picks_the_cheapest_per_gpu_then_the_most_reputable(net: Net) -> None:
    one = net.node(price_per_hour=2 * DUCK, hardware=gpus(1))  # 2 DUCK per GPU-hour
    four = net.node(price_per_hour=4 * DUCK, hardware=gpus(4))  # 1
    two = net.node(price_per_hour=3 * DUCK, hardware=gpus(2))  # 1.5
    twin = net.node(price_per_hour=3 * DUCK, hardware=gpus(2))  # 1.5, better reputation
    net.node(price_per_hour=DUCK // 10)  # cheapest, but no GPU
    net.node(price_per_hour=DUCK // 10, hardware=gpus(8), stake=0)  # not staked
    net.node(price_per_hour=0, hardware=gpus(8))  # not for rent
    with net.rt.sessions.begin() as session:
        node = session.get(Node, twin.address)
        assert node is not None
        node.rep_validity = 0.9
    client = net.funded(100 * DUCK)

    rental = client.rent(gpus=5, hours=1, budget=10 * DUCK)
    assert {n.node for n in rental.nodes} == {four.address, twin.address}
    assert rental.escrowed == 7 * DUCK
    with pytest.raises(InvalidState, match=r"only 3 GPU\(s\) are available.*asked for 4") as err:
        client.rent(gpus=4, hours=1, budget=10 * DUCK)
    assert (err.value.context["available"], err.value.context["requested"]) == (3, 4)
    assert {n.node for n in client.rent(gpus=3, hours=1, budget=10 * DUCK).nodes} == {
        one.address,
        two.address,
    }
    conserved(net)


def test_someone_elses_rental_is_404_and_require_rental_checks_state(net: Net) -> None:
    node = net.node(price_per_hour=PPH)
    owner = net.funded(10 * DUCK)
    rental = owner.rent(nodes=[node.address], hours=1, budget=10 * DUCK)
    stranger = net.funded(DUCK)
    with pytest.raises(NotFound):
        stranger.rental(rental.id)
    with pytest.raises(NotFound):
        stranger.cancel_rental(rental.id)
    with pytest.raises(NotFound):
        owner.rental("rental_nope")
    assert stranger.rentals() == []

    with net.rt.sessions() as session:
        found = require_rental(session, rental_id=rental.id, owner=owner.address, now=time.time())
        assert isinstance(found, Rental) and found.id == rental.id
        with pytest.raises(NotFound):
            require_rental(session, rental_id=rental.id, owner=stranger.address, now=time.time())
        with pytest.raises(InvalidState, match="is ended"):
            require_rental(
                session, rental_id=rental.id, owner=owner.address, now=rental.ends_at + 1
            )
    owner.cancel_rental(rental.id)
    with net.rt.sessions() as session, pytest.raises(InvalidState, match="is cancelled"):
        require_rental(session, rental_id=rental.id, owner=owner.address, now=time.time())
    conserved(net)


def test_rental_jobs_run_only_on_the_rented_nodes(net: Net) -> None:
    rented = net.node(price_per_hour=PPH)
    other = net.node(price_per_hour=PPH)
    client = net.funded(10 * DUCK)
    rental = client.rent(nodes=[rented.address], hours=1, budget=10 * DUCK)

    job = client.submit(
        "ml.linear_regression",
        data=net.csv(),
        params={"target": "y"},
        max_price=1_000,
        rental_id=rental.id,
    )
    assert job.escrowed == 0  # paid by the rental, not per task
    assert other.lease(max_tasks=1, wait_s=0).tasks == []
    leased = rented.lease(max_tasks=1, wait_s=0).tasks
    assert [t.job_id for t in leased] == [job.id]

    market = client.submit(
        "ml.linear_regression", data=net.csv(), params={"target": "y"}, max_price=1_000
    )
    assert rented.lease(max_tasks=1, wait_s=0).tasks == []  # reserved for its renter
    assert [t.job_id for t in other.lease(max_tasks=1, wait_s=0).tasks] == [market.id]
    conserved(net)


def test_ending_a_rental_fails_its_unfinished_jobs_and_balance_shows_its_escrow(
    net: Net,
) -> None:
    rented = net.node(price_per_hour=PPH)
    client = net.funded(10 * DUCK)
    rental = client.rent(nodes=[rented.address], hours=1, budget=10 * DUCK)
    assert client.balance().in_escrow == rental.escrowed
    job = client.submit(
        "ml.linear_regression",
        data=net.csv(),
        params={"target": "y"},
        max_price=1_000,
        rental_id=rental.id,
    )
    client.cancel_rental(rental.id)
    failed = client.status(job.id)
    assert failed.state.value == "failed" and "ended" in (failed.error or "")
    assert [t.state.value for t in failed.tasks] == ["cancelled"]
    assert rented.lease(max_tasks=1, wait_s=0).tasks == []
    assert client.balance().in_escrow == 0
    conserved(net)


def test_a_quote_previews_nodes_and_cost_and_reserves_nothing(net: Net) -> None:
    node = net.node(price_per_hour=PPH)
    client = net.funded(10 * DUCK)
    transactions = net.journal_count()
    preview = client.quote_rental(nodes=[node.address], hours=2, budget=PPH)
    assert [m.node for m in preview.nodes] == [node.address]
    assert preview.cost == 2 * PPH and preview.within_budget is False
    assert net.journal_count() == transactions and rented_by(net, node) is None
    rental = client.rent(nodes=[node.address], hours=2, budget=2 * PPH)
    assert rental.escrowed == preview.cost
