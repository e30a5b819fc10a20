"""Known-answer requests on the gateway path: the trust issue's honeypots for live inference.

Every answer a spot check found valid (at least two nodes agreed on it) becomes a
**known answer**, kept per model, at most :data:`.known.KNOWN_PER_MODEL` of them, the oldest
dropped first. After a node answers a caller, with probability
``inference_honeypot_rate`` the coordinator sends that node one known request that the
node did not answer before, through the same lease queue as callers' work and in the same
shape (model, op, input, stream flag): nothing marks it. Its answer must agree with the
known one (:func:`verify.answers_agree`: token ids, text or cosine):

* agreeing, the node is paid from the treasury at its price, as a checker is (under a
  fresh reference, not the known request's), and its trust for the model grows; no
  event is published, so nothing tells the node afterwards which request it was;
* disagreeing, it is slashed with reason ``honeypot`` and the evidence, its validity
  falls and the broker drops it (its stake may now be below the minimum);
* not answering (busy, gone, failed) counts for nothing.

This catches a node that answers honestly while it is being checked and cheats otherwise:
with adaptive checks a trusted node is re-run rarely, but honeypots keep arriving at
``inference_honeypot_rate`` per answered request.

Known answers live in the memory of one coordinator process (like the gateway's queues)
and start empty after a restart. Sending a caller's earlier input to another node is
what spot checks already do; known answers are never shown to anyone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from starlette.concurrency import run_in_threadpool

from quackmesh.coordinator.accounts.staking import slash
from quackmesh.coordinator.db.models import Node
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.inference import dispatch
from quackmesh.coordinator.inference.known import Known
from quackmesh.coordinator.inference.verify import (
    answers_agree,
    check_price,
    digest,
    pay_from_treasury,
    trust_kind,
)
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.verify.service import record_verdict
from quackmesh.core.ids import new_id

__all__ = ["maybe_send", "send"]

log = logging.getLogger("quackmesh.coordinator.inference")


async def maybe_send(rt: Runtime, *, node: str, model: str) -> str | None:
    """With probability ``inference_honeypot_rate``, :func:`send` ``node`` a known request
    of ``model``; returns the verdict or ``None`` when none was sent or answered."""
    if rt.settings.inference_honeypot_rate <= 0:
        return None
    if rt.rng.random() >= rt.settings.inference_honeypot_rate:
        return None
    return await send(rt, node=node, model=model)


async def send(rt: Runtime, *, node: str, model: str) -> str | None:
    """Send ``node`` one known request of ``model`` and judge its answer: ``valid``,
    ``invalid``, or ``None`` (no known request for it, or no answer)."""
    known = rt.inference.known.pick(model, node)
    if known is None:
        return None
    spec = replace(
        known.spec,
        payer=None,
        price_cap=None,
        candidates=frozenset({node}),
        excluded=frozenset(),
        only=node,
    )
    output: dispatch.Output | None = None
    async for event in dispatch.run(rt, spec, incremental=False):
        if isinstance(event, dispatch.Finished):
            output = event.output
    if output is None or output.node != node:
        return None
    verdict = await run_in_threadpool(_judge, rt, known=known, output=output)
    if verdict == "invalid":
        rt.metrics.slashes.labels("honeypot").inc()
        rt.inference.broker.evict(node)
    return verdict


def _judge(rt: Runtime, *, known: Known, output: dispatch.Output) -> str:
    """One transaction: the verdict on the node's trust, then its pay, or its slash and an
    ``inference.checked`` event."""
    now = time.time()
    valid = answers_agree(known.answer, output, cosine_min=rt.settings.inference_cosine_min)
    verdict = "valid" if valid else "invalid"
    with rt.sessions.begin() as session:
        node = session.get(Node, output.node, with_for_update=True)
        if node is not None:
            kind = trust_kind(known.spec.model)
            record_verdict(rt, session, node=node, kind=kind, valid=valid, now=now)
        if valid:
            cost = check_price(output, known.meter)
            # A fresh reference: the node's ledger history does not point at the known request.
            pay_from_treasury(
                rt, session, to=output.node, amount=cost, ref=new_id("inf"), memo="inference"
            )
        else:
            evidence = {
                "known_request": known.request_id,
                "model": known.spec.model,
                "expected": digest(known.answer),
                "answered": digest(output),
                "agreed_by": sorted(known.answered_by),
            }
            slash(rt, session, node=output.node, reason="honeypot", evidence=evidence, now=now)
            emit(
                session,
                "inference.checked",
                node=output.node,
                at=now,
                model=known.spec.model,
                verdict=verdict,
                checked_by=[],
                minority=[output.node],
                checkers_paid={},
                compensated=0,
            )
    log.info("inference honeypot", extra={"node": output.node, "verdict": verdict})
    return verdict
