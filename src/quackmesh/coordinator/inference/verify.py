"""Spot checks of inference answers: re-run on other nodes, slash the minority.

After a request is answered (and the caller has its answer), it is re-run with
probability ``p`` on a different node that serves the same model. ``p`` follows the
adaptive replication of task verification (BOINC, see ``verify/policy.py``): with
``inference_check_adaptive`` every answer of a (node, model) is checked until
``adaptive_trust`` in a row agreed, then ``1/run``; never below ``inference_check_rate``.

Decoding is greedy, so honest nodes serving the same model agree: generations by exact
token ids (text when a node sent no ids), embeddings by cosine similarity of each vector
pair at least ``inference_cosine_min``. A node serving a different or quantised model
than it advertises disagrees. On disagreement a third node breaks the tie: the node
outside the agreeing pair is slashed (``accounts/staking.slash``, with the evidence) and
its reputation validity falls; agreeing nodes' validity rises and their trust run grows.
Two nodes that disagree with no third to ask, or three that all differ, are
``inconclusive``: nobody is slashed on a coin toss.

Checks are paid by the treasury (which the fees fund) at the checking node's price, as far
as the treasury holds DUCK; a checker in the minority is not paid. When the serving node
is the one found wrong, the caller gets its charge back from the treasury.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from quackmesh.coordinator.accounts.staking import slash
from quackmesh.coordinator.db.models import InferenceRequest, Node, NodeTrust
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.inference import dispatch
from quackmesh.coordinator.inference.billing import charge_for
from quackmesh.coordinator.inference.known import Known
from quackmesh.coordinator.inference.metering import PromptSize
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.verify.policy import Vote, check_probability, group_results
from quackmesh.coordinator.verify.service import record_verdict
from quackmesh.ledger import TREASURY, wallet_account

__all__ = [
    "Meter",
    "answers_agree",
    "check_price",
    "check_probability_for",
    "cosine",
    "digest",
    "maybe_check",
    "pay_from_treasury",
    "trust_kind",
    "verdict_of",
]

log = logging.getLogger("quackmesh.coordinator.inference")


@dataclass(frozen=True)
class Meter:
    """How the original request was metered (a checker is paid the same way)."""

    embed: bool
    prompt: PromptSize
    max_tokens: int
    texts: int


def trust_kind(model: str) -> str:
    """The ``NodeTrust.kind`` of a model (64 characters at most, still unique)."""
    kind = f"infer:{model}"
    if len(kind) <= 64:
        return kind
    return f"infer:{model[:41]}~{hashlib.sha256(model.encode()).hexdigest()[:16]}"


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return -1.0
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    if norm == 0.0 or not math.isfinite(norm):
        return 1.0 if not x.any() and not y.any() else -1.0
    return float(np.dot(x, y) / norm)


def answers_agree(a: dispatch.Output, b: dispatch.Output, *, cosine_min: float) -> bool:
    """Embeddings: every vector pair at ``cosine_min`` or above. Generations: the same
    token ids when both sent ids, else the same text."""
    if a.embeddings is not None or b.embeddings is not None:
        if a.embeddings is None or b.embeddings is None or len(a.embeddings) != len(b.embeddings):
            return False
        return all(
            cosine(x, y) >= cosine_min for x, y in zip(a.embeddings, b.embeddings, strict=True)
        )
    if a.ids_complete and b.ids_complete:
        return a.token_ids == b.token_ids
    return a.text == b.text


def verdict_of(
    outputs: Sequence[dispatch.Output], *, cosine_min: float
) -> tuple[list[str], list[str]]:
    """``(agreeing, minority)`` node addresses: a group of at least two agreeing answers
    wins and every other node is in the minority; no such group: ``([], [])``."""
    votes = [Vote(task_id=o.node, node=o.node, output=o) for o in outputs]

    def agree(x: Any, y: Any) -> bool:
        return answers_agree(x, y, cosine_min=cosine_min)

    groups = group_results(votes, agree)
    if not groups or len(groups[0]) < 2:
        return [], []
    winners = [v.node for v in groups[0].votes]
    losers = [v.node for g in groups[1:] for v in g.votes]
    return winners, losers


def check_probability_for(rt: Runtime, run: int) -> float:
    s = rt.settings
    if not s.inference_check_adaptive:
        return s.inference_check_rate
    p = check_probability(run, trust_after=s.adaptive_trust, min_check=s.inference_check_rate)
    return max(s.inference_check_rate, p)


def _trust_run(rt: Runtime, node: str, model: str) -> int:
    with rt.reads() as session:
        trust = session.get(NodeTrust, (node, trust_kind(model)))
        return 0 if trust is None else trust.consecutive_valid


async def _rerun(rt: Runtime, spec: dispatch.Spec) -> dispatch.Output | None:
    result: dispatch.Output | None = None
    async for event in dispatch.run(rt, spec, incremental=False):
        if isinstance(event, dispatch.Finished):
            result = event.output
    return result


async def maybe_check(
    rt: Runtime,
    *,
    request_id: str,
    spec: dispatch.Spec,
    original: dispatch.Output,
    meter: Meter,
    tried: frozenset[str],
) -> str | None:
    """Maybe re-run a finished request elsewhere and act on the verdict; returns the
    verdict (``valid`` | ``invalid`` | ``inconclusive``) or ``None`` when not checked."""
    s = rt.settings
    if s.inference_check_rate <= 0 and not s.inference_check_adaptive:
        return None
    nodes = await rt.inference.directory.current(
        rt.ledger, rt.reads, max_age=s.inference_directory_s
    )
    others = frozenset(
        a
        for a, n in nodes.items()
        if spec.model in n.models
        and n.eligible(min_stake=s.min_stake, payer=spec.payer)
        and a not in tried
        and a != original.node
    )
    if not others:
        return None
    run_length = await run_in_threadpool(_trust_run, rt, original.node, spec.model)
    if rt.rng.random() >= check_probability_for(rt, run_length):
        return None
    excluded = tried | {original.node}
    check_spec = replace(spec, price_cap=None, candidates=others, excluded=excluded)
    second = await _rerun(rt, check_spec)
    if second is None:
        return None  # nobody could check it now: unchecked, not held against anyone
    outputs = [original, second]
    if not answers_agree(original, second, cosine_min=s.inference_cosine_min):
        third = await _rerun(rt, replace(check_spec, excluded=excluded | {second.node}))
        if third is not None:
            outputs.append(third)
    winners, losers = verdict_of(outputs, cosine_min=s.inference_cosine_min)
    verdict = "inconclusive" if not winners else ("invalid" if original.node in losers else "valid")
    await run_in_threadpool(
        _record,
        rt,
        request_id=request_id,
        model=spec.model,
        outputs=outputs,
        winners=winners,
        losers=losers,
        verdict=verdict,
        meter=meter,
    )
    for loser in losers:
        rt.metrics.slashes.labels("inference").inc()
        rt.inference.broker.evict(loser)  # its stake may be below the minimum now
    if winners and original.node in winners:  # a known answer for honeypots from now on
        rt.inference.known.remember(
            Known(
                request_id=request_id,
                spec=spec,
                answer=original,
                meter=meter,
                answered_by=frozenset(o.node for o in outputs),
            )
        )
    return verdict


def digest(output: dispatch.Output) -> str:
    if output.embeddings is not None:
        data = np.asarray(output.embeddings, dtype="<f4").tobytes()
    elif output.ids_complete:
        data = ",".join(map(str, output.token_ids)).encode()
    else:
        data = output.text.encode()
    return hashlib.sha256(data).hexdigest()


def check_price(output: dispatch.Output, meter: Meter) -> int:
    """What the treasury pays ``output``'s node for a check or a honeypot: its price for
    the request as ``meter`` metered it, no fee."""
    return charge_for(
        output,
        embed=meter.embed,
        prompt=meter.prompt,
        max_tokens=meter.max_tokens,
        texts=meter.texts,
        fee_bps=0,
    ).amount


def pay_from_treasury(
    rt: Runtime, session: Session, *, to: str, amount: int, ref: str, memo: str
) -> int:
    amount = min(amount, rt.ledger.balance(session, TREASURY))
    if amount > 0:
        rt.ledger.transfer(
            session,
            src=TREASURY,
            dst=wallet_account(to),
            amount=amount,
            kind="settle",
            memo=memo,
            ref=ref,
        )
    return max(0, amount)


def _record(
    rt: Runtime,
    *,
    request_id: str,
    model: str,
    outputs: list[dispatch.Output],
    winners: list[str],
    losers: list[str],
    verdict: str,
    meter: Meter,
) -> None:
    """One transaction: reputation and trust, slashes, checkers' pay, the caller's refund."""
    now = time.time()
    kind = trust_kind(model)
    original = outputs[0]
    evidence = {
        "request_id": request_id,
        "model": model,
        "answers": {o.node: digest(o) for o in outputs},
        "agreeing": winners,
        "minority": losers,
    }
    with rt.sessions.begin() as session:
        row = session.get(InferenceRequest, request_id, with_for_update=True)
        for address in sorted({*winners, *losers}):
            node = session.get(Node, address, with_for_update=True)
            if node is not None:
                valid = address in winners
                record_verdict(rt, session, node=node, kind=kind, valid=valid, now=now)
        for address in losers:
            slash(rt, session, node=address, reason="inference", evidence=evidence, now=now)
        paid: dict[str, int] = {}
        for checker in outputs[1:]:
            if checker.node in losers:
                continue
            cost = check_price(checker, meter)
            paid[checker.node] = pay_from_treasury(
                rt, session, to=checker.node, amount=cost, ref=request_id, memo="inference check"
            )
        compensated = 0
        if row is not None and original.node in losers and row.charged > 0:
            compensated = pay_from_treasury(
                rt,
                session,
                to=row.address,
                amount=row.charged,
                ref=request_id,
                memo="inference answer found wrong: charge returned",
            )
        if row is not None:
            row.verdict = verdict
            row.checked_by = [o.node for o in outputs[1:]]
        emit(
            session,
            "inference.checked",
            node=original.node,
            address=row.address if row is not None else None,
            at=now,
            request_id=request_id,
            model=model,
            verdict=verdict,
            checked_by=[o.node for o in outputs[1:]],
            minority=losers,
            checkers_paid=paid,
            compensated=compensated,
        )
    log.info(
        "inference checked",
        extra={"request_id": request_id, "verdict": verdict, "minority": losers},
    )
