"""Paying for inference: reserve the most a request may cost, settle what it did cost.

Money flow (micro-DUCK), one database transaction per step, ledger ``ref`` = request id::

    reserve   wallet:<payer>     -> escrow:infer:<id>  the cap price × (prompt bound +
                                                       max_tokens) / 1000, or × texts
    settle    escrow:infer:<id>  -> wallet:<node>      charge − fee
              escrow:infer:<id>  -> treasury           fee = charge × fee_bps / 10⁴
              escrow:infer:<id>  -> wallet:<payer>     the rest
    fail      escrow:infer:<id>  -> wallet:<payer>     everything

The charge is the serving node's price for what it did (see :mod:`.metering`), never more
than was reserved: the node's price is at most the cap, and billed tokens are clamped to
the bounds the reservation used. A request whose process died before settling is
refunded when the coordinator starts again (:func:`refund_orphans`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from quackmesh.coordinator.db.models import ApiKey, InferenceRequest
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.inference.dispatch import Failure, Output
from quackmesh.coordinator.inference.metering import PromptSize, fee_of, generate_cost
from quackmesh.coordinator.runtime import Runtime
from quackmesh.ledger.accounts import infer_escrow_account

__all__ = ["Charge", "charge_for", "fail", "refund_orphans", "reserve", "settle"]


@dataclass(frozen=True)
class Charge:
    """What a request costs its payer: ``amount`` (the node's pay plus ``fee``)."""

    amount: int
    fee: int
    prompt_tokens: int
    completion_tokens: int


def charge_for(
    output: Output, *, embed: bool, prompt: PromptSize, max_tokens: int, texts: int, fee_bps: int
) -> Charge:
    """The charge for ``output`` at its node's price, tokens clamped to the reserved bounds."""
    reported = output.usage
    prompt_tokens = min(reported.prompt_tokens, prompt.high) if reported else prompt.estimate
    if embed:
        amount = output.price * texts
        return Charge(amount, fee_of(amount, fee_bps), prompt_tokens, 0)
    if output.token_ids:
        completion = len(output.token_ids)  # the ids the caller saw: verifiable
    elif reported is not None:
        completion = reported.completion_tokens
    else:
        completion = max(len(output.text.split()), -(-len(output.text.encode()) // 4))
    completion = min(completion, max_tokens)
    amount = generate_cost(output.price, prompt_tokens + completion)
    return Charge(amount, fee_of(amount, fee_bps), prompt_tokens, completion)


def reserve(
    rt: Runtime,
    *,
    request_id: str,
    address: str,
    key_id: str | None,
    model: str,
    op: str,
    amount: int,
) -> None:
    """Hold ``amount`` for the request (``InsufficientBalance`` → 402, nothing written);
    with ``key_id``, also stamp that key's ``last_used_at``."""
    now = time.time()
    with rt.sessions.begin() as session:
        if amount > 0:
            rt.ledger.escrow(
                session,
                owner=address,
                account=infer_escrow_account(request_id),
                amount=amount,
                ref=request_id,
                memo=f"inference {op} {model}"[:256],
            )
        session.add(
            InferenceRequest(
                id=request_id,
                address=address,
                key_id=key_id,
                model=model,
                op=op,
                state="reserved",
                reserved=amount,
                charged=0,
                fee=0,
                refunded=0,
                prompt_tokens=0,
                completion_tokens=0,
                attempts=0,
                failed_nodes=[],
                verdict="unchecked",
                checked_by=[],
                created_at=now,
            )
        )
        if key_id is not None:
            session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))


def _failovers(
    session: Session, request_id: str, failures: tuple[Failure, ...], now: float
) -> None:
    for failure in failures:
        emit(
            session,
            "inference.failover",
            node=failure.node,
            at=now,
            request_id=request_id,
            reason=failure.reason[:300],
        )


def settle(
    rt: Runtime,
    *,
    request_id: str,
    output: Output,
    charge: Charge,
    failures: tuple[Failure, ...],
) -> int:
    """Pay the node, take the fee, refund the rest; returns the amount charged."""
    now = time.time()
    with rt.sessions.begin() as session:
        row = session.get(InferenceRequest, request_id, with_for_update=True)
        if row is None or row.state != "reserved":
            return 0 if row is None else row.charged
        amount = min(charge.amount, row.reserved)
        fee = min(charge.fee, amount)
        payouts = [(output.node, amount, fee)] if amount > 0 else []
        refund, _ = rt.ledger.settle_many(
            session,
            escrow=infer_escrow_account(request_id),
            payouts=payouts,
            owner=row.address,
            ref=request_id,
            memo=f"inference {row.op} {row.model}"[:256],
        )
        row.state = "completed"
        row.node = output.node
        row.price = output.price
        row.charged, row.fee, row.refunded = amount, fee, refund
        row.prompt_tokens = charge.prompt_tokens
        row.completion_tokens = charge.completion_tokens
        row.attempts = len(failures) + 1
        row.failed_nodes = [f.node for f in failures]
        row.first_chunk_ms = output.first_chunk_ms
        row.finished_at = now
        _failovers(session, request_id, failures, now)
        emit(
            session,
            "inference.completed",
            node=output.node,
            address=row.address,
            at=now,
            request_id=request_id,
            model=row.model,
            op=row.op,
            amount=amount,
            fee=fee,
            refunded=refund,
            prompt_tokens=charge.prompt_tokens,
            completion_tokens=charge.completion_tokens,
            attempts=row.attempts,
        )
        return amount


def fail(rt: Runtime, *, request_id: str, error: str, failures: tuple[Failure, ...]) -> int:
    """Refund the whole reservation; returns the amount refunded."""
    now = time.time()
    with rt.sessions.begin() as session:
        row = session.get(InferenceRequest, request_id, with_for_update=True)
        if row is None or row.state != "reserved":
            return 0
        refund = rt.ledger.refund(
            session,
            escrow=infer_escrow_account(request_id),
            owner=row.address,
            ref=request_id,
            memo=f"inference {row.op} {row.model} failed"[:256],
        )
        row.state = "failed"
        row.refunded = refund
        row.error = error[:2000]
        row.attempts = len(failures)
        row.failed_nodes = [f.node for f in failures]
        row.finished_at = now
        _failovers(session, request_id, failures, now)
        emit(
            session,
            "inference.failed",
            address=row.address,
            at=now,
            request_id=request_id,
            model=row.model,
            op=row.op,
            refunded=refund,
            error=error[:300],
        )
        return refund


def refund_orphans(rt: Runtime) -> int:
    """Refund requests a previous process reserved but never settled; returns how many."""
    with rt.sessions.begin() as session:
        ids = list(
            session.scalars(select(InferenceRequest.id).where(InferenceRequest.state == "reserved"))
        )
    for request_id in ids:
        fail(rt, request_id=request_id, error="the coordinator restarted", failures=())
    return len(ids)
