"""Submitting an ``fl.train`` job: validate the spec and the data, escrow, create the run.

Money (all micro-DUCK)::

    submit   wallet:<owner>  -> escrow:job:<id>   rounds × clients_per_round × max_price
                                                   × units_cap  +  reward_budget
    train    escrow:job:<id> -> wallet:<node>     price × units of its data (− fee), per update
    reward   escrow:job:<id> -> wallet:<node>     its share of the round's reward (− fee)
    end      escrow:job:<id> -> wallet:<owner>    whatever is left

``units_cap`` prices one local training task on the largest dataset that may be used:
``ceil(rows × n_params × local_epochs / 10⁶)`` (the ``fl.local_train`` cost), with
``rows`` the largest advertised row count of the named dataset (or ``max_rows``, or the
largest shard of an uploaded ``data`` input).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import FlRun, Job, Node
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.rentals.service import require_rental
from quackmesh.core.errors import ValidationFailed
from quackmesh.core.ids import new_id
from quackmesh.core.schemas import JobCreate, JobState
from quackmesh.ledger import job_escrow_account
from quackmesh.workloads.base import ceil_div, params_error

if TYPE_CHECKING:  # torch is imported lazily: the coordinator starts without it
    from quackmesh.coordinator.runtime import Runtime
    from quackmesh.fl.spec import FlTrainSpec

__all__ = ["FL_INPUTS", "parse_fl_spec", "submit_fl_job"]

FL_INPUTS = ("data", "eval", "init")


def parse_fl_spec(params: dict[str, Any]) -> FlTrainSpec:
    from quackmesh.fl.spec import FlTrainSpec

    try:
        return FlTrainSpec.model_validate(params)
    except ValidationError as exc:
        raise params_error(exc) from exc


def _check_strategy(spec: FlTrainSpec) -> None:
    from quackmesh.fl.strategies import StrategyError, make_strategy

    try:
        make_strategy(spec.strategy.name, spec.strategy.params)
    except StrategyError as exc:
        raise ValidationFailed(str(exc), field="params.strategy.params") from exc


def _check_labelled(spec: FlTrainSpec, path: Path, name: str) -> int:
    """Load a labelled client input and check it fits the model; returns its rows."""
    from quackmesh.fl.data import load_local

    ds = load_local(path, label=spec.label)
    field = f"inputs.{name}"
    if ds.X.shape[1] != spec.model.n_features:
        raise ValidationFailed(
            f"input {name!r} has {ds.X.shape[1]} features; the model takes {spec.model.n_features}",
            field=field,
        )
    if len(ds.y) and int(ds.y.max()) >= spec.model.n_classes:
        raise ValidationFailed(
            f"input {name!r} has label {int(ds.y.max())}; the model has "
            f"{spec.model.n_classes} classes",
            field=field,
        )
    return int(ds.X.shape[0])


def _rows_cap(session: Session, spec: FlTrainSpec, data_rows: int | None) -> int:
    if spec.max_rows is not None:
        return spec.max_rows if data_rows is None else min(spec.max_rows, data_rows)
    if data_rows is not None:
        return ceil_div(data_rows, spec.clients_per_round)
    rows = [
        int(info.get("rows", 0))
        for datasets in session.scalars(select(Node.datasets))
        for info in datasets
        if info.get("name") == spec.dataset
    ]
    if not rows:
        raise ValidationFailed(
            f"no node advertises dataset {spec.dataset!r}; set params.max_rows to price the "
            "job anyway, or check `quackmesh market list --dataset NAME`",
            field="params.dataset",
        )
    return max(rows)


def _initial_weights(spec: FlTrainSpec, init: Path | None) -> bytes:
    from quackmesh.fl.zoo import init_weights, weights_from_safetensors, weights_to_safetensors

    if init is not None:
        data = init.read_bytes()
        weights_from_safetensors(data, spec.model)  # ModelError (422, field model) if wrong
        return data
    return weights_to_safetensors(init_weights(spec.model, seed=spec.seed))


def submit_fl_job(rt: Runtime, session: Session, *, owner: str, body: JobCreate) -> Job:
    """Validate an ``fl.train`` submission and create its job and run (no tasks yet: the
    first round starts on the next sweep or report)."""
    from quackmesh.fl.zoo import count_params

    spec = parse_fl_spec(body.params)
    _check_strategy(spec)
    unknown = sorted(set(body.inputs) - set(FL_INPUTS))
    if unknown:
        raise ValidationFailed(
            f"unexpected input {unknown[0]!r} for fl.train (known: {', '.join(FL_INPUTS)})",
            field=f"inputs.{unknown[0]}",
        )
    if spec.dataset is None and "data" not in body.inputs:
        raise ValidationFailed(
            "name a node-local dataset (params.dataset) or upload one as input 'data'",
            field="params.dataset",
        )
    if spec.dataset is not None and "data" in body.inputs:
        raise ValidationFailed(
            "give either params.dataset (node-local data) or input 'data', not both",
            field="inputs.data",
        )
    if spec.contribution == "loo" and "eval" not in body.inputs:
        raise ValidationFailed(
            "leave-one-out contribution needs an 'eval' input (holdout data)",
            field="params.contribution",
        )
    for sha in body.inputs.values():
        rt.blobs.owned(session, sha, owner)
    paths = {name: rt.blobs.path_for(sha) for name, sha in body.inputs.items()}
    data_rows = _check_labelled(spec, paths["data"], "data") if "data" in paths else None
    if "eval" in paths:
        _check_labelled(spec, paths["eval"], "eval")
    if spec.dataset is None and spec.clients_per_round > (data_rows or 0):
        raise ValidationFailed(
            "input 'data' has fewer rows than clients_per_round", field="inputs.data"
        )
    model_bytes = _initial_weights(spec, paths.get("init"))
    rows_cap = _rows_cap(session, spec, data_rows)
    units_cap = max(1, ceil_div(rows_cap * count_params(spec.model) * spec.local_epochs, 10**6))
    now = time.time()
    if body.rental_id is not None:
        require_rental(session, rental_id=body.rental_id, owner=owner, now=now)
    compute = 0 if body.rental_id else spec.rounds * spec.clients_per_round * units_cap
    escrowed = compute * body.max_price + spec.reward_budget
    job = Job(
        id=new_id("job"),
        owner=owner,
        kind="fl.train",
        params=spec.model_dump(mode="json"),
        inputs=dict(body.inputs),
        state=JobState.QUEUED.value,
        units=units_cap,
        max_price=body.max_price,
        escrowed=escrowed,
        paid=0,
        fee=0,
        refunded=0,
        max_attempts=1,
        timeout_s=min(body.timeout_s, spec.round_timeout_s),
        memory_mb=body.memory_mb,
        created_at=now,
        updated_at=now,
        rental_id=body.rental_id,
    )
    session.add(job)
    session.flush()
    shards: dict[str, Any] = {}
    if "data" in paths:
        shards = {"order": _shard(rt, session, spec, paths["data"], owner=owner), "nodes": {}}
    session.add(
        FlRun(
            job_id=job.id,
            round=1,
            phase="select",
            model_sha=rt.blobs.put_bytes(session, model_bytes, owner=owner),
            opt_state_sha=None,
            eps_spent=0.0,
            reward_paid=0,
            compute_paid=0,
            units_cap=units_cap,
            shards=shards,
            round_started_at=now,
            deadline=now + spec.round_timeout_s,  # to find min_clients nodes
            retries=0,
            eligible=0,
            updated_at=now,
        )
    )
    if escrowed > 0:
        rt.ledger.escrow(
            session, owner=owner, account=job_escrow_account(job.id), amount=escrowed, ref=job.id
        )
    emit(session, "job.submitted", job_id=job.id, address=owner, kind=job.kind, escrowed=escrowed)
    return job


def _shard(
    rt: Runtime, session: Session, spec: FlTrainSpec, path: Path, *, owner: str
) -> list[str]:
    """Split the uploaded data into ``clients_per_round`` IID shards (CSV blobs)."""
    import tempfile

    from quackmesh.fl.data import load_local, partition_iid, subset, write_csv

    ds = load_local(path, label=spec.label)
    parts = partition_iid(ds.rows, spec.clients_per_round, seed=spec.seed)
    out = []
    with tempfile.TemporaryDirectory(prefix="quackmesh-shards-") as tmp:
        for i, idx in enumerate(parts):
            target = Path(tmp) / f"shard-{i}.csv"
            write_csv(subset(ds, idx), target, label=spec.label)
            out.append(rt.blobs.put_bytes(session, target.read_bytes(), owner=owner))
    return out
