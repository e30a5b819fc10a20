"""One accepted gateway request from reservation to settlement (HTTP-free).

:class:`Accepted` is a request that passed validation, with its model resolved, its
price cap chosen and its reservation sized. :func:`reserved` writes the reservation
*while* the request is handed to a node — the database write is the slowest step on the
way, and the two need not wait for each other — but returns nothing the caller could see
before the reservation has committed; a refused reservation (402) cancels the attempt at
once, and the wallet then reserves first for a while (``REFUSED_S``), so a caller who
cannot pay cannot keep nodes busy. :func:`finish` and :func:`abort` settle in the
background (the caller's answer does not wait for the ledger write) and then maybe
spot-check the answer. :func:`failed_error` turns a dispatch failure into the caller's
error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from quackmesh.coordinator.inference import billing, dispatch, honeypots, verify
from quackmesh.coordinator.inference.errors import GatewayError, bad_request, no_node
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.errors import InsufficientBalance

__all__ = [
    "HANDOFF_TURNS",
    "REFUSED_S",
    "Accepted",
    "abort",
    "charge",
    "failed_error",
    "finish",
    "reserved",
    "start",
]

T = TypeVar("T")
REFUSED_S = 60.0  # after a refused reservation, the wallet reserves before dispatch
HANDOFF_TURNS = 4  # submit, the waiter's wake-up, the long-poll's answer, its write


@dataclass(frozen=True)
class Accepted:
    request_id: str
    address: str  # the paying wallet
    key_id: str | None  # set when its last_used_at is due (see keys.TOUCH_S)
    spec: dispatch.Spec
    meter: verify.Meter
    reserve: int  # micro-DUCK held in escrow:infer:<request_id>


async def start(rt: Runtime, req: Accepted) -> None:
    """Reserve the request's maximum cost (402 when the wallet cannot)."""
    await run_in_threadpool(
        billing.reserve,
        rt,
        request_id=req.request_id,
        address=req.address,
        key_id=req.key_id,
        model=req.spec.model,
        op=req.spec.op,
        amount=req.reserve,
    )


async def reserved(rt: Runtime, req: Accepted, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result (the dispatch up to what the caller sees first), once the
    request's reservation has committed; the two run at the same time. A refused
    reservation cancels ``work`` and raises ``InsufficientBalance``."""
    first = rt.inference.refused_recently(req.address, within=REFUSED_S)
    job: asyncio.Future[T] | None = None if first else asyncio.ensure_future(work)
    reservation: asyncio.Task[None] | None = None
    try:
        if job is not None:
            # A few loop turns first: the hand-off to an idle node (its long-poll's
            # answer) goes out before the reservation's thread competes for the GIL.
            for _ in range(HANDOFF_TURNS):
                await asyncio.sleep(0)
        reservation = asyncio.get_running_loop().create_task(start(rt, req))
        await asyncio.wait({reservation})
    except asyncio.CancelledError:  # the caller left: stop, refund once the write landed
        _drop(job, work)
        if reservation is not None:
            rt.inference.spawn(_refund_after(rt, req, reservation), name=f"left {req.request_id}")
        raise
    failure = reservation.exception()
    if failure is not None:
        _drop(job, work)
        if job is not None:
            await asyncio.wait({job})
        if isinstance(failure, InsufficientBalance):
            rt.inference.refused(req.address)
        raise failure
    try:
        return await (job if job is not None else work)
    except asyncio.CancelledError:  # reserved, then the caller left before an answer
        rt.inference.spawn(_refund_after(rt, req, reservation), name=f"left {req.request_id}")
        raise


def _drop(job: asyncio.Future[Any] | None, work: Coroutine[Any, Any, Any]) -> None:
    if job is None:
        work.close()  # never started
    else:
        job.cancel()


async def _refund_after(rt: Runtime, req: Accepted, reservation: asyncio.Task[None]) -> None:
    await asyncio.wait({reservation})
    if reservation.exception() is None:
        await run_in_threadpool(
            billing.fail, rt, request_id=req.request_id, error="the caller went away", failures=()
        )


def charge(rt: Runtime, req: Accepted, output: dispatch.Output) -> billing.Charge:
    m = req.meter
    return billing.charge_for(
        output,
        embed=m.embed,
        prompt=m.prompt,
        max_tokens=m.max_tokens,
        texts=m.texts,
        fee_bps=rt.settings.fee_bps,
    )


def finish(
    rt: Runtime,
    req: Accepted,
    done: dispatch.Finished,
    amount: billing.Charge,
    *,
    check: bool = True,
) -> None:
    """Settle a finished request, then maybe check its answer (``check=False`` for an
    answer cut short, which a full re-run would not match), then maybe send its node a
    honeypot (:mod:`.honeypots`); all in the background."""
    tried = frozenset(f.node for f in done.failures)

    async def after() -> None:
        await run_in_threadpool(
            billing.settle,
            rt,
            request_id=req.request_id,
            output=done.output,
            charge=amount,
            failures=done.failures,
        )
        if check:
            await verify.maybe_check(
                rt,
                request_id=req.request_id,
                spec=req.spec,
                original=done.output,
                meter=req.meter,
                tried=tried,
            )
        await honeypots.maybe_send(rt, node=done.output.node, model=req.spec.model)

    rt.inference.spawn(after(), name=f"settle {req.request_id}")


def abort(
    rt: Runtime, req: Accepted, *, error: str, failures: tuple[dispatch.Failure, ...]
) -> None:
    """Refund the whole reservation (in the background)."""
    rt.inference.spawn(
        run_in_threadpool(
            billing.fail, rt, request_id=req.request_id, error=error, failures=failures
        ),
        name=f"refund {req.request_id}",
    )


def failed_error(model: str, failed: dispatch.Failed) -> GatewayError:
    if failed.code == "context":
        return bad_request(failed.message, param="messages", code="context_length_exceeded")
    if failed.code == "no_node":
        return no_node(model, failed.message)
    return GatewayError(
        f"the request to {model!r} failed: {failed.message}",
        status=502,
        type_="server_error",
        code="upstream_error",
    )
