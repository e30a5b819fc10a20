"""Federated training through the coordinator: rounds, dropouts, restarts, secure
aggregation, DP, contribution rewards and the money, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quackmesh.coordinator.db.models import FlRun, Node
from quackmesh.coordinator.fl.rounds import tick
from quackmesh.core.errors import InvalidState, NotFound, ValidationFailed
from quackmesh.core.schemas import JobState
from quackmesh.fl.data import Dataset, load_builtin, train_holdout_split, write_csv
from quackmesh.fl.zoo import ModelSpec, weights_from_safetensors
from quackmesh.ledger import job_escrow_account

from .conftest import Net
from .fl_support import FlNode, drive, partitions

DUCK = 1_000_000
# The round machinery is backend-neutral; the heavier scenarios run on SQLite only (the
# money-moving happy paths above run on both backends).
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def digits() -> tuple[Dataset, Dataset]:
    return train_holdout_split(load_builtin("digits"), holdout=300, seed=0)


def _params(**over: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": {"arch": "logreg", "n_features": 64, "n_classes": 10},
        "dataset": "digits",
        "rounds": 3,
        "clients_per_round": 3,
        "min_clients": 2,
        "local_epochs": 2,
        "lr": 0.1,
        "reward_budget": 3 * DUCK,
        "round_timeout_s": 60.0,
    }
    params.update(over)
    return params


def _holdout(net: Net, holdout: Dataset) -> Path:
    path = net.tmp / "holdout.csv"
    write_csv(holdout, path)
    return path


def _nodes(net: Net, train: Dataset, n: int, **kw: Any) -> list[FlNode]:
    return [FlNode(net, part, index=i, **kw) for i, part in enumerate(partitions(train, n))]


def test_fedavg_run_trains_pays_by_contribution_and_conserves_money(
    net: Net, digits: tuple[Dataset, Dataset]
) -> None:
    train, holdout = digits
    nodes = _nodes(net, train, 3)
    client = net.funded(100 * DUCK)
    job = client.train(_params(), max_price=1_000, eval_data=_holdout(net, holdout))
    assert job.state == JobState.RUNNING  # round 1 started at submission
    before = {n.address: n.client.balance().available for n in nodes}
    drive(nodes)
    run = client.fl_run(job.id)
    assert run.state == JobState.SUCCEEDED, run
    assert [r.round for r in run.history] == [1, 2, 3]
    accuracies = [r.accuracy for r in run.history]
    assert accuracies[-1] is not None and accuracies[-1] > 0.85
    assert all(r.fed_accuracy is not None for r in run.history)  # federated evaluation
    # Rewards: each round's budget is split by score and paid through the ledger.
    for r in run.history:
        assert r.participants == 3
        assert r.reward == DUCK  # every honest update helped: the whole round budget
        assert sum(c.reward for c in r.clients) == r.reward
        assert all(c.accepted for c in r.clients)
        assert r.detail["contribution"] == "loo"
    earned = {n.address: n.client.balance().available - before[n.address] for n in nodes}
    fee_bps = net.rt.settings.fee_bps
    expected = {
        n.address: sum(
            (c.reward - c.reward * fee_bps // 10_000)
            + (c.compute_paid - c.compute_paid * fee_bps // 10_000)
            for r in run.history
            for c in r.clients
            if c.node == n.address
        )
        for n in nodes
    }
    assert earned == expected
    final = client.status(job.id)
    assert final.paid + final.fee + final.refunded == final.escrowed
    with net.rt.reads() as session:
        assert net.rt.ledger.balance(session, job_escrow_account(job.id)) == 0
    assert client.ledger_check().ok
    # The final model downloads as safetensors (checked against its sha256) with a card.
    path = client.download_model(job.id, net.tmp / "model.safetensors")
    spec = ModelSpec(arch="logreg", n_features=64, n_classes=10)
    weights = weights_from_safetensors(path.read_bytes(), spec)
    assert set(weights) == {"out.weight", "out.bias"}
    card = client.model_card(job.id)
    assert card["weights_sha256"] == run.model_sha256
    assert card["extra"]["holdout_accuracy"] == accuracies[-1]


@sqlite_only
def test_dropout_is_tolerated_down_to_min_clients(
    net: Net, digits: tuple[Dataset, Dataset]
) -> None:
    train, holdout = digits
    nodes = _nodes(net, train, 3)
    client = net.funded(100 * DUCK)
    job = client.train(
        _params(rounds=2, round_timeout_s=30.0), max_price=1_000, eval_data=_holdout(net, holdout)
    )
    drive(nodes, silent={2: ("train",)})  # node 2 takes its task and goes quiet
    assert client.fl_run(job.id).phase == "train"
    tick(net.rt, now=time.time() + 31)  # the round deadline passes (the sweeper's FL pass)
    drive(nodes, silent={2: ("train",)})
    tick(net.rt, now=time.time() + 62)
    drive(nodes, silent={2: ("train",)})
    run = client.fl_run(job.id)
    assert run.state == JobState.SUCCEEDED, run
    first = run.history[0]
    assert first.participants == 2 and first.dropped == 1
    silent = next(c for c in first.clients if c.node == nodes[2].address)
    assert silent.state == "dropped" and silent.reward == 0 and silent.compute_paid == 0


@sqlite_only
def test_too_few_clients_retries_then_fails_and_refunds(
    net: Net, digits: tuple[Dataset, Dataset]
) -> None:
    train, _ = digits
    nodes = _nodes(net, train, 2)
    client = net.funded(100 * DUCK)
    start = client.balance().available
    job = client.train(_params(min_clients=2, clients_per_round=2), max_price=1_000)
    for attempt in range(3):  # every attempt: one node fails its task
        for lease in nodes[0].leases():
            nodes[0].fail(lease)
        drive(nodes[1:])
        if attempt < 2:
            assert client.fl_run(job.id).state == JobState.RUNNING
    final = client.status(job.id)
    assert final.state == JobState.FAILED
    assert "failed 3 times" in (final.error or "")
    spent = final.paid + final.fee
    assert client.balance().available == start - spent  # only the work done was paid for


@sqlite_only
def test_retried_rounds_never_pay_more_than_the_escrow_holds(
    net: Net, digits: tuple[Dataset, Dataset]
) -> None:
    """Escrow prices rounds × clients training tasks; retries may train more. The extra
    ones are paid from what is left (never from the rewards), and nothing errors."""
    train, _ = digits
    nodes = _nodes(net, train, 2, price=1_000)  # asks the max price: escrow covers 2 tasks
    client = net.funded(100 * DUCK)
    job = client.train(_params(rounds=1, clients_per_round=2, min_clients=2), max_price=1_000)
    for _ in range(3):  # node 0 fails every attempt; node 1 trains three times
        for lease in nodes[0].leases():
            nodes[0].fail(lease)
        drive(nodes[1:])
    final = client.status(job.id)
    assert final.state == JobState.FAILED
    trained = [t for t in final.tasks if t.state.value == "succeeded"]
    assert len(trained) == 3
    assert trained[0].paid > 0 and trained[1].paid > 0
    assert trained[2].paid == 0  # the escrow held only the rewards by then
    assert final.refunded == 3 * DUCK  # the unspent reward budget comes back
    assert final.paid + final.fee + final.refunded == final.escrowed
    with net.rt.reads() as session:
        assert net.rt.ledger.balance(session, job_escrow_account(job.id)) == 0
    assert client.ledger_check().ok


@sqlite_only
def test_uploaded_data_is_sharded_across_trainers_and_a_lost_trainers_shard_moves(
    net: Net, digits: tuple[Dataset, Dataset]
) -> None:
    """The rented-trainer flow: the client's upload is split into one shard per trainer,
    each trainer downloads only its shard, and a departed trainer's shard moves on."""
    train, holdout = digits
    nodes = _nodes(net, train, 3)
    upload = net.tmp / "upload.csv"
    write_csv(train, upload)
    client = net.funded(100 * DUCK)
    params = _params(rounds=3, clients_per_round=2, min_clients=2, dataset=None)
    job = client.train(params, max_price=1_000, data=upload, eval_data=_holdout(net, holdout))
    drive(nodes, until=lambda: len(client.fl_run(job.id).history) >= 1)
    first = {c.node for c in client.fl_run(job.id).history[0].clients}
    shards = {t.id: t for t in client.status(job.id).tasks if t.state.value == "succeeded"}
    assert len(shards) == 2
    gone = sorted(first)[0]
    with net.rt.sessions.begin() as session:  # one trainer leaves the network
        row = session.get(Node, gone)
        assert row is not None
        row.status = "offline"
    others = [n for n in nodes if n.address != gone]
    for _ in range(3):
        tick(net.rt)  # the sweeper sees its pinned task can never be leased, and moves on
        drive(others)
    run = client.fl_run(job.id)
    assert run.state == JobState.SUCCEEDED, run
    later = {c.node for r in run.history[1:] for c in r.clients if c.state != "dropped"}
    assert gone not in later and later == {n.address for n in others}
    assert run.history[-1].accuracy is not None and run.history[-1].accuracy > 0.8
    with net.rt.reads() as session:
        fl_run = session.get(FlRun, job.id)
        assert fl_run is not None
        assert len(fl_run.shards["order"]) == 2
        assert sorted(fl_run.shards["nodes"].values()) == [0, 1]


@sqlite_only
def test_coordinator_restart_resumes_at_the_current_round(
    net_factory: Callable[..., Net], digits: tuple[Dataset, Dataset]
) -> None:
    train, holdout = digits
    first = net_factory()
    nodes = _nodes(first, train, 3)
    owner = first.funded(100 * DUCK)
    job = owner.train(_params(rounds=3), max_price=1_000, eval_data=_holdout(first, holdout))
    drive(nodes, until=lambda: len(owner.fl_run(job.id).history) >= 1)
    assert owner.fl_run(job.id).round == 2
    first.tc.__exit__(None, None, None)  # the coordinator stops mid-run
    second = net_factory()  # same database, a new process's worth of state
    for node in nodes:
        node.net = second
        node.client = second.client(node.client.wallet)
    owner2 = second.client(owner.wallet)
    assert owner2.fl_run(job.id).round == 2  # resumed from the database
    drive(nodes)
    run = owner2.fl_run(job.id)
    assert run.state == JobState.SUCCEEDED
    assert [r.round for r in run.history] == [1, 2, 3]


def test_secure_aggregation_with_dp_survives_a_dropout_after_masking(
    net: Net, digits: tuple[Dataset, Dataset]
) -> None:
    train, holdout = digits
    nodes = _nodes(net, train, 4)
    client = net.funded(100 * DUCK)
    params = _params(
        rounds=2,
        clients_per_round=4,
        min_clients=3,
        secure_aggregation=True,
        dp={"noise_multiplier": 0.1, "clip_norm": 1.0, "delta": 1e-5},
        round_timeout_s=30.0,
    )
    job = client.train(params, max_price=1_000, eval_data=_holdout(net, holdout))
    drive(nodes, silent={3: ("unmask",)})  # node 3 masks its update, then vanishes
    tick(net.rt, now=time.time() + 31)
    drive(nodes, silent={3: ("unmask",)})
    tick(net.rt, now=time.time() + 62)
    drive(nodes, silent={3: ("unmask",)})
    run = client.fl_run(job.id)
    assert run.state == JobState.SUCCEEDED, run
    first = run.history[0]
    assert first.detail["secure_aggregation"]["included"] == 4  # its masked update counted
    assert first.detail["contribution"] == "even"
    assert all(c.n_examples == 0 for c in first.clients)  # no one's count is revealed
    eps = [r.epsilon for r in run.history]
    assert eps[0] is not None and eps[1] is not None and 0 < eps[0] < eps[1]
    assert run.epsilon == eps[1]
    assert run.history[-1].accuracy is not None and run.history[-1].accuracy > 0.5


@sqlite_only
def test_masked_sum_matches_the_plain_run(net: Net, digits: tuple[Dataset, Dataset]) -> None:
    """The same round with and without secure aggregation gives the same model (within
    the quantisation bound): the coordinator only saw masked vectors."""
    train, _ = digits
    nodes = _nodes(net, train, 3)
    client = net.funded(100 * DUCK)
    spec = ModelSpec(arch="logreg", n_features=64, n_classes=10)
    models = []
    for secagg in (False, True):
        job = client.train(
            _params(rounds=1, secure_aggregation=secagg, reward_budget=0), max_price=1_000
        )
        drive(nodes)
        path = client.download_model(job.id, net.tmp / f"m-{secagg}.safetensors")
        models.append(weights_from_safetensors(path.read_bytes(), spec))
    for name in models[0]:
        assert np.allclose(models[0][name], models[1][name], atol=1e-4)


@sqlite_only
def test_epsilon_budget_stops_the_run_early(net: Net, digits: tuple[Dataset, Dataset]) -> None:
    train, _ = digits
    nodes = _nodes(net, train, 3)
    client = net.funded(100 * DUCK)
    dp = {"noise_multiplier": 1.0, "clip_norm": 5.0, "epsilon_budget": 6.0}
    job = client.train(_params(rounds=50, dp=dp), max_price=1_000)
    drive(nodes)
    run = client.fl_run(job.id)
    assert run.state == JobState.SUCCEEDED
    assert 1 <= len(run.history) < 50
    assert run.epsilon is not None and run.epsilon <= 6.0
    assert "budget" in (run.stop_reason or "")
    assert client.status(job.id).refunded > 0  # unspent rounds come back


@sqlite_only
def test_robust_strategy_rejects_a_poisoner_and_it_earns_no_reward(
    net: Net, digits: tuple[Dataset, Dataset]
) -> None:
    train, holdout = digits
    parts = partitions(train, 5)
    nodes = [
        FlNode(net, part, index=i, behaviour="wrong" if i == 4 else "honest")
        for i, part in enumerate(parts)
    ]
    client = net.funded(100 * DUCK)
    params = _params(
        rounds=2,
        clients_per_round=5,
        min_clients=3,
        strategy={"name": "median", "params": {}},
        contribution="agreement",
    )
    job = client.train(params, max_price=1_000, eval_data=_holdout(net, holdout))
    drive(nodes)
    run = client.fl_run(job.id)
    assert run.state == JobState.SUCCEEDED
    for r in run.history:
        bad = next(c for c in r.clients if c.node == nodes[4].address)
        assert not bad.accepted and bad.score == 0 and bad.reward == 0
        assert sum(c.reward for c in r.clients) == r.reward == 3 * DUCK // 2
    assert run.history[-1].accuracy is not None and run.history[-1].accuracy > 0.7


@sqlite_only
def test_market_filters_nodes_by_dataset(net: Net, digits: tuple[Dataset, Dataset]) -> None:
    train, _ = digits
    _nodes(net, train, 2)
    net.node(name="plain")
    found = net.client().market_nodes(dataset="digits")
    assert found.total == 2
    info = found.nodes[0].datasets[0]
    assert info.name == "digits" and info.features == 64 and sum(info.label_histogram.values())
    assert net.client().market_nodes(dataset="mnist").total == 0


@sqlite_only
@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"dataset": "nowhere"}, "params.dataset"),
        ({"strategy": {"name": "krum", "params": {}}, "secure_aggregation": True}, "params"),
        ({"strategy": {"name": "trimmed_mean", "params": {"beta": 0.7}}}, "params.strategy"),
        ({"min_clients": 5}, "params"),
        ({"model": {"arch": "cnn28", "n_features": 64, "n_classes": 10}}, "params.model"),
        ({"contribution": "loo"}, "params.contribution"),
        ({"rounds": 0}, "params.rounds"),
    ],
)
def test_bad_fl_specs_are_422_naming_the_field(
    net: Net, digits: tuple[Dataset, Dataset], over: dict[str, Any], field: str
) -> None:
    train, _ = digits
    _nodes(net, train, 1)
    client = net.funded(100 * DUCK)
    start = client.balance().available
    with pytest.raises(ValidationFailed) as err:
        client.train(_params(**over), max_price=1_000)
    assert str(err.value.context.get("field", "")).startswith(field), err.value.context
    assert client.balance().available == start  # nothing charged


@sqlite_only
def test_eval_data_must_fit_the_model(net: Net, digits: tuple[Dataset, Dataset]) -> None:
    train, _ = digits
    _nodes(net, train, 1)
    client = net.funded(100 * DUCK)
    bad = net.csv("a,b,label\n1,2,0\n3,4,1\n", name="bad.csv")
    with pytest.raises(ValidationFailed) as err:
        client.train(_params(), max_price=1_000, eval_data=bad)
    assert err.value.context["field"] == "inputs.eval"


@sqlite_only
def test_fl_views_are_owner_only_and_model_waits_for_the_end(
    net: Net, digits: tuple[Dataset, Dataset]
) -> None:
    train, _ = digits
    _nodes(net, train, 2)
    client = net.funded(100 * DUCK)
    job = client.train(_params(), max_price=1_000)
    with pytest.raises(NotFound):
        net.client().fl_run(job.id)
    with pytest.raises(InvalidState):
        client.download_model(job.id, net.tmp / "early.safetensors")
    with net.rt.reads() as session:
        assert session.get(FlRun, job.id) is not None
    plain = client.submit(
        "ml.linear_regression", data=net.csv(), max_price=1_000, params={"target": "y"}
    )
    with pytest.raises(NotFound):
        client.fl_run(plain.id)
