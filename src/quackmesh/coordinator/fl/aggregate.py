"""Closing a round: aggregate, add DP noise, evaluate, score contributions, pay rewards.

Validate before you aggregate or pay: every update is decoded from safetensors and checked
against the model's declared shapes (float32, finite) before it is used; a bad update
drops its client (unpaid, no reward). The maths lives in :mod:`quackmesh.fl`; this module
only loads, calls and records.

Contribution score (the public definition; README "Contribution and rewards"):

* ``loo`` (default when the job has an ``eval`` input): each accepted update's
  leave-one-out validation gain — the holdout loss of the round's mean update without it
  minus the loss with everyone, clipped at 0;
* ``agreement``: cosine similarity of the update with the strategy's aggregate, clipped to
  [0, 1];
* updates a robust strategy rejected score 0;
* under secure aggregation no single update is visible, so every client whose masked
  update was included scores 1 (an even split).

The round's reward (``reward_budget // rounds``, the remainder in the last round) is split
in proportion to the scores with :func:`quackmesh.fl.contribution.split_reward`; what a
round does not pay stays in escrow and is refunded at the end.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import FlClient, FlRound, FlRun, Job
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.errors import ValidationFailed
from quackmesh.ledger import job_escrow_account

if TYPE_CHECKING:
    from quackmesh.fl.data import Dataset
    from quackmesh.fl.spec import FlTrainSpec

__all__ = ["close_round", "decode_update", "epsilon_after", "final_result", "sampling_rate"]

FloatArray = npt.NDArray[np.float64]


def sampling_rate(spec: FlTrainSpec, eligible: int) -> float:
    """The share of the eligible population a round samples (the accountant's ``q``)."""
    return min(1.0, spec.clients_per_round / max(eligible, 1))


def epsilon_after(spec: FlTrainSpec, *, rounds: int, eligible: int) -> float:
    from quackmesh.fl.dp import epsilon_after as eps

    if spec.dp is None:
        raise ValueError("not a DP job")
    return eps(
        rounds=rounds,
        sampling_rate=sampling_rate(spec, eligible),
        noise_multiplier=spec.dp.noise_multiplier,
        delta=spec.dp.delta,
    )


def _weights(rt: Runtime, sha: str, spec: FlTrainSpec) -> dict[str, Any]:
    from quackmesh.fl.zoo import weights_from_safetensors

    return dict(weights_from_safetensors(rt.blobs.path_for(sha).read_bytes(), spec.model))


def _flat(weights: dict[str, Any], spec: FlTrainSpec) -> FloatArray:
    """``(n_params,)`` in the zoo's declared order (the order nodes mask in)."""
    from quackmesh.fl.params import flatten
    from quackmesh.fl.zoo import param_shapes

    return flatten({name: weights[name] for name in param_shapes(spec.model)})


def _unflat(vector: FloatArray, spec: FlTrainSpec) -> dict[str, Any]:
    from quackmesh.fl.params import unflatten
    from quackmesh.fl.zoo import param_shapes

    return unflatten(vector, param_shapes(spec.model))


def decode_update(result: Any, spec: FlTrainSpec) -> tuple[FloatArray, int]:
    """A plain ``fl.local_train`` result -> (flat delta, n_examples); ``ValidationFailed``
    when it is malformed, the wrong shape, not float32 or not finite."""
    from quackmesh.fl.zoo import weights_from_safetensors

    if not isinstance(result, dict) or not isinstance(result.get("delta"), str):
        raise ValidationFailed("update has no delta", field="output")
    n = result.get("n_examples")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ValidationFailed("update has no positive integer n_examples", field="output")
    try:
        raw = base64.b64decode(result["delta"], validate=True)
    except ValueError as exc:
        raise ValidationFailed("delta is not base64", field="output") from exc
    delta = weights_from_safetensors(raw, spec.model, field="output.delta")
    return _flat(dict(delta), spec), n


def _holdout(rt: Runtime, job: Job, spec: FlTrainSpec) -> Dataset | None:
    from quackmesh.fl.data import load_local

    sha = job.inputs.get("eval")
    if sha is None:
        return None
    return load_local(rt.blobs.path_for(sha), label=spec.label, name="eval")


def _load_state(rt: Runtime, run: FlRun) -> dict[str, FloatArray]:
    if run.opt_state_sha is None:
        return {}
    from safetensors.numpy import load

    return {
        k: np.asarray(v, dtype=np.float64)
        for k, v in load(rt.blobs.path_for(run.opt_state_sha).read_bytes()).items()
    }


def _save_state(
    rt: Runtime, session: Session, job: Job, state: dict[str, FloatArray]
) -> str | None:
    if not state:
        return None
    from safetensors.numpy import save

    return rt.blobs.put_bytes(
        session, save({k: np.ascontiguousarray(v) for k, v in state.items()}), owner=job.owner
    )


def close_round(
    rt: Runtime, session: Session, *, job: Job, run: FlRun, clients: list[FlClient], now: float
) -> None:
    """Aggregate the round's updates into the next global model and record the round."""
    from quackmesh.coordinator.fl.protocol import unmask_sum
    from quackmesh.coordinator.fl.rounds import spec_of
    from quackmesh.fl.dp import clip_update, gaussian_noise
    from quackmesh.fl.strategies import make_strategy

    spec = spec_of(job)
    strategy = make_strategy(spec.strategy.name, spec.strategy.params)
    params = _flat(_weights(rt, run.model_sha, spec), spec)
    state = _load_state(rt, run)
    rng = np.random.default_rng([spec.seed, run.round, run.retries, 0xD9])
    done = [c for c in clients if c.state in ("trained", "revealed")]
    updates: FloatArray | None = None
    accepted = np.ones(len(done), dtype=bool)
    detail: dict[str, Any] = {"strategy": strategy.name, "attempt": run.retries}
    if spec.secure_aggregation:
        # U3: every client whose masked update went out, even if it then missed the unmask
        included = [c for c in clients if c.update_sha is not None]
        total, weight = unmask_sum(rt, run=run, clients=clients, spec=spec)
        done = included
        accepted = np.ones(len(done), dtype=bool)
        if spec.dp is not None:  # clients clipped and sent weight 1: the sum of clipped deltas
            delta = total / len(done) + gaussian_noise(
                total.shape[0],
                noise_multiplier=spec.dp.noise_multiplier,
                clip_norm=spec.dp.clip_norm,
                n_clients=len(done),
                rng=rng,
            )
            new_params, state = strategy.server_step(params, delta, state)
        else:
            out = strategy.run_round_from_sum(params, total, weight, state)
            new_params, state = out.params, out.state
        detail["secure_aggregation"] = {"total_weight": weight, "included": len(done)}
    else:
        rows, counts = [], []
        for client in done:
            vector, n = decode_update(
                json.loads(rt.blobs.path_for(client.update_sha or "").read_bytes()), spec
            )
            rows.append(vector)
            counts.append(n)
            client.n_examples = n
        updates = np.stack(rows)  # (n_clients, n_params)
        num = np.asarray(counts, dtype=np.int64)
        if spec.dp is not None:
            clipped = np.stack([clip_update(row, spec.dp.clip_norm)[0] for row in updates])
            agg = strategy.aggregate_updates(clipped, np.ones(len(done), dtype=np.int64))
            noise = gaussian_noise(
                params.shape[0],
                noise_multiplier=spec.dp.noise_multiplier,
                clip_norm=spec.dp.clip_norm,
                n_clients=len(done),
                rng=rng,
            )
            new_params, state = strategy.server_step(params, agg.delta + noise, state)
            accepted = agg.accepted
            updates = clipped
        else:
            out = strategy.run_round(params, updates, num, state)
            new_params, state, accepted = out.params, out.state, out.aggregate.accepted
    holdout = _holdout(rt, job, spec)
    loss = accuracy = None
    if holdout is not None:
        from quackmesh.fl.train import evaluate

        loss, accuracy = evaluate(spec.model, _unflat(new_params, spec), holdout.X, holdout.y)
    scores = _scores(spec, params, updates, done, accepted, holdout)
    rewards = _pay_rewards(rt, session, job, run, spec, done, scores)
    fed = _federated_eval(done)
    from quackmesh.fl.zoo import weights_to_safetensors

    model_sha = rt.blobs.put_bytes(
        session, weights_to_safetensors(_unflat(new_params, spec)), owner=job.owner
    )
    epsilon = None
    if spec.dp is not None:
        epsilon = epsilon_after(spec, rounds=run.round, eligible=run.eligible)
        run.eps_spent = epsilon
    for client, ok, score, reward in zip(done, accepted, scores, rewards, strict=True):
        client.accepted = bool(ok)
        client.score = float(score)
        client.reward = reward
    compute = sum(c.compute_paid for c in clients)
    session.add(
        FlRound(
            job_id=job.id,
            round=run.round,
            state="done",
            started_at=run.round_started_at,
            finished_at=now,
            participants=len(done),
            dropped=sum(1 for c in clients if c.state == "dropped"),
            loss=loss,
            accuracy=accuracy,
            fed_loss=fed[0],
            fed_accuracy=fed[1],
            epsilon=epsilon,
            reward=sum(rewards),
            compute=compute,
            model_sha=model_sha,
            detail={**detail, "contribution": _method(spec, holdout), "eligible": run.eligible},
        )
    )
    run.model_sha = model_sha
    run.opt_state_sha = _save_state(rt, session, job, state)
    emit(
        session,
        "fl.round_finished",
        job_id=job.id,
        address=job.owner,
        at=now,
        round=run.round,
        participants=len(done),
        loss=loss,
        accuracy=accuracy,
        epsilon=epsilon,
        reward=sum(rewards),
    )
    run.round += 1
    run.retries = 0
    run.phase = "select"
    run.deadline = now + spec.round_timeout_s
    run.updated_at = now
    job.updated_at = now


def _method(spec: FlTrainSpec, holdout: Dataset | None) -> str:
    if spec.secure_aggregation:
        return "even"
    if spec.contribution == "auto":
        return "loo" if holdout is not None else "agreement"
    return spec.contribution


def _scores(
    spec: FlTrainSpec,
    params: FloatArray,
    updates: FloatArray | None,
    done: list[FlClient],
    accepted: npt.NDArray[np.bool_],
    holdout: Dataset | None,
) -> list[float]:
    from quackmesh.fl.contribution import agreement_scores, loo_scores

    method = _method(spec, holdout)
    if method == "even" or updates is None:
        return [1.0] * len(done)
    mask = np.asarray(accepted, dtype=bool)
    if method == "loo" and holdout is not None:
        from quackmesh.fl.train import evaluate

        def loss_of(vector: FloatArray) -> float:
            return evaluate(spec.model, _unflat(vector, spec), holdout.X, holdout.y)[0]

        counts = np.asarray([max(c.n_examples, 1) for c in done], dtype=np.int64)
        scores = loo_scores(
            evaluate=loss_of, params=params, updates=updates, num_examples=counts, accepted=mask
        )
    else:
        mean = updates[mask].mean(axis=0) if mask.any() else np.zeros(updates.shape[1])
        scores = agreement_scores(updates, mean, mask)
    return [float(s) for s in scores]


def _round_budget(spec: FlTrainSpec, round_no: int) -> int:
    base = spec.reward_budget // spec.rounds
    return base + (spec.reward_budget - base * spec.rounds if round_no == spec.rounds else 0)


def _pay_rewards(
    rt: Runtime,
    session: Session,
    job: Job,
    run: FlRun,
    spec: FlTrainSpec,
    done: list[FlClient],
    scores: list[float],
) -> list[int]:
    from quackmesh.fl.contribution import split_reward

    budget = _round_budget(spec, run.round)
    rewards = split_reward(budget, scores) if done else []
    payouts = [
        (c.node, r, r * rt.settings.fee_bps // 10_000)
        for c, r in zip(done, rewards, strict=True)
        if r > 0
    ]
    if payouts:
        rt.ledger.settle_many(
            session,
            escrow=job_escrow_account(job.id),
            payouts=payouts,
            owner=None,
            ref=job.id,
            memo=f"fl round {run.round} rewards",
        )
        paid = sum(r for _, r, _ in payouts)
        fees = sum(f for _, _, f in payouts)
        run.reward_paid += paid
        job.paid += paid - fees
        job.fee += fees
    return list(rewards)


def _federated_eval(done: list[FlClient]) -> tuple[float | None, float | None]:
    pairs = [(c.fed_loss, c.fed_accuracy, c.n_examples) for c in done if c.fed_loss is not None]
    total = sum(max(n, 1) for *_, n in pairs)
    if not pairs or total == 0:
        return None, None
    loss = sum((lo or 0.0) * max(n, 1) for lo, _, n in pairs) / total
    acc = sum((ac or 0.0) * max(n, 1) for _, ac, n in pairs) / total
    return loss, acc


def final_result(rt: Runtime, session: Session, *, job: Job, run: FlRun) -> dict[str, Any]:
    """The job's result: the final model's sha256, its model card and the last metrics."""
    from quackmesh.coordinator.fl.rounds import spec_of
    from quackmesh.fl.zoo import model_card

    spec = spec_of(job)
    rounds = list(
        session.scalars(select(FlRound).where(FlRound.job_id == job.id).order_by(FlRound.round))
    )
    last = rounds[-1] if rounds else None
    card = model_card(
        spec.model,
        extra={
            "trained_by": "quackmesh fl.train",
            "job_id": job.id,
            "rounds": len(rounds),
            "strategy": spec.strategy.model_dump(mode="json"),
            "secure_aggregation": spec.secure_aggregation,
            "dp": spec.dp.model_dump(mode="json") if spec.dp else None,
            "epsilon": run.eps_spent if spec.dp else None,
            "holdout_accuracy": last.accuracy if last else None,
            "holdout_loss": last.loss if last else None,
            "dataset": spec.dataset or "uploaded (sharded)",
            "stop_reason": run.stop_reason,
        },
    )
    return {
        "model_sha256": run.model_sha,
        "model_card": card,
        "rounds": len(rounds),
        "accuracy": last.accuracy if last else None,
        "loss": last.loss if last else None,
        "epsilon": run.eps_spent if spec.dp else None,
        "reward_paid": run.reward_paid,
        "compute_paid": run.compute_paid,
    }
