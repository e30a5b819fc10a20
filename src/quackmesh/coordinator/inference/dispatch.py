"""Run one inference request over successive nodes until one answers (failover).

An attempt fails when its node does not open the answer stream within
``inference_pickup_s``, sends no first line within ``inference_first_chunk_s`` of that,
falls silent for ``inference_stall_s``, sends an ``error`` line or a line that is not a
valid :class:`InferenceChunk` for the request, or its stream ends without ``done`` (the
connection closed early). The request then goes to the next node, that one excluded,
up to ``inference_max_attempts`` nodes — before the caller sees any failure.

A streamed generation whose first node already delivered some text continues on the next
node. Decoding is greedy, so an honest node produces the same tokens from the start: its
output is held back until it covers what the caller already has, checked to begin with
exactly that (token ids when both nodes send them, else text), and only the rest is
passed on. If it begins differently the caller's stream ends with an error instead of a
spliced answer.

An ``error`` line whose message starts with ``context_length_exceeded`` is the caller's
fault, not the node's: it ends the request (400) without trying another node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from quackmesh.coordinator.inference.broker import Attempt, Op, Pending, StreamEnd
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.inference_schemas import InferenceChunk, Usage

__all__ = [
    "CONTEXT_ERROR",
    "Delta",
    "Event",
    "Failed",
    "Failure",
    "Finished",
    "Op",
    "Output",
    "Spec",
    "check_embeddings",
    "run",
]

T = TypeVar("T")
CONTEXT_ERROR = "context_length_exceeded"


@dataclass(frozen=True)
class Spec:
    """What to run, and where it may run."""

    model: str
    op: Op
    input: dict[str, Any]
    stream: bool
    payer: str | None  # rental rule: a rented node serves only its renter
    price_cap: int | None  # None: any price (verification re-runs)
    candidates: frozenset[str]  # eligible nodes serving the model, when it was accepted
    excluded: frozenset[str] = frozenset()
    texts: int = 0  # embed: the vectors the answer must hold
    only: str | None = None  # only this node may run it (honeypots)


@dataclass(frozen=True)
class Output:
    """A complete answer from one node."""

    node: str
    price: int
    text: str = ""
    token_ids: tuple[int, ...] = ()
    ids_complete: bool = False  # every piece of text came with its token ids
    embeddings: list[list[float]] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    first_chunk_ms: float | None = None


@dataclass(frozen=True)
class Failure:
    node: str
    reason: str


@dataclass(frozen=True)
class Delta:
    """New text for the caller (streamed generation only), from ``node`` at ``price``."""

    text: str
    token_ids: tuple[int, ...] = ()
    node: str = ""
    price: int = 0


@dataclass(frozen=True)
class Finished:
    output: Output
    failures: tuple[Failure, ...]


@dataclass(frozen=True)
class Failed:
    """``code``: ``no_node`` (nobody took it), ``upstream`` (every node that tried failed),
    ``mismatch`` (a continuation began differently) or ``context`` (input too long)."""

    code: Literal["no_node", "upstream", "mismatch", "context"]
    message: str
    failures: tuple[Failure, ...] = ()


Event = Delta | Finished | Failed


class _AttemptFailed(Exception):
    def __init__(self, reason: str, *, penalty_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.penalty_s = penalty_s


class _ContextExceeded(Exception):
    pass


class _Mismatch(Exception):
    pass


async def _within(awaitable: Awaitable[T], timeout: float, reason: str) -> T:
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            return await awaitable
    except TimeoutError:
        raise _AttemptFailed(reason, penalty_s=timeout) from None


def check_embeddings(chunk: InferenceChunk, *, texts: int, dims: int | None) -> list[list[float]]:
    """The ``done`` line of an embed answer: one finite vector per text, all one size."""
    vectors = chunk.embeddings
    if vectors is None or len(vectors) != texts:
        got = "none" if vectors is None else str(len(vectors))
        raise _AttemptFailed(f"embed answer has {got} vectors for {texts} texts")
    size = dims or (len(vectors[0]) if vectors else 0)
    if size == 0 or any(len(v) != size for v in vectors):
        raise _AttemptFailed(f"embed answer vectors are not all {size}-dimensional")
    if not bool(np.isfinite(np.asarray(vectors, dtype=np.float64)).all()):
        raise _AttemptFailed("embed answer holds a non-finite number")
    return vectors


@dataclass
class _Prefix:
    """What the caller already has, and the next node's output held back against it."""

    text: str = ""
    ids: list[int] = field(default_factory=list)
    ids_complete: bool = True

    def add(self, text: str, ids: list[int]) -> None:
        self.text += text
        self.ids.extend(ids)
        if text and not ids:
            self.ids_complete = False

    def covered_by(self, text: str, ids: list[int], *, ids_complete: bool) -> Delta | None:
        """The part of a new node's output past this prefix, once it covers it (``None``
        while it does not yet); ``_Mismatch`` as soon as it diverges."""
        use_ids = self.ids_complete and ids_complete and bool(self.ids)
        if use_ids:
            if ids[: len(self.ids)] != self.ids[: len(ids)]:
                raise _Mismatch("token ids differ from those already delivered")
            if len(ids) < len(self.ids):
                return None
        else:
            shortest = min(len(text), len(self.text))
            if text[:shortest] != self.text[:shortest]:
                raise _Mismatch("text differs from what was already delivered")
            if len(text) < len(self.text):
                return None
        if not text.startswith(self.text):
            raise _Mismatch("text differs from what was already delivered")
        return Delta(text[len(self.text) :], tuple(ids[len(self.ids) :]) if use_ids else ())


async def run(rt: Runtime, spec: Spec, *, incremental: bool) -> AsyncGenerator[Event, None]:
    """Run ``spec``; yields :class:`Delta` (``incremental`` generation only) and then one
    :class:`Finished` or :class:`Failed`. Closing the iterator early abandons the node."""
    s = rt.settings
    broker = rt.inference.broker
    excluded = set(spec.excluded)
    failures: list[Failure] = []
    delivered = _Prefix()
    for _ in range(s.inference_max_attempts):
        if not spec.candidates - excluded:
            break
        pending = Pending(
            model=spec.model,
            op=spec.op,
            input=spec.input,
            stream=spec.stream,
            deadline_s=s.inference_deadline_s,
            payer=spec.payer,
            price_cap=spec.price_cap,
            excluded=frozenset(excluded),
            min_stake=s.min_stake,
            only=spec.only,
        )
        attempt = broker.submit(pending) or await broker.wait(pending, s.inference_queue_s)
        if attempt is None:
            break
        try:
            output: Output | None = None
            async for event in _attempt(rt, spec, attempt, delivered, incremental=incremental):
                if isinstance(event, Output):
                    output = event
                else:
                    delivered.add(event.text, list(event.token_ids))
                    yield event
        except _AttemptFailed as exc:
            failures.append(Failure(attempt.node.address, exc.reason))
            excluded.add(attempt.node.address)
            broker.observe(
                attempt.node.address,
                spec.model,
                1000 * max(exc.penalty_s, time.perf_counter() - attempt.handed_at),
                alpha=s.inference_latency_alpha,
            )
            continue
        except _ContextExceeded as exc:
            yield Failed("context", str(exc), tuple(failures))
            return
        except _Mismatch as exc:
            failures.append(Failure(attempt.node.address, f"continuation mismatch: {exc}"))
            yield Failed("mismatch", f"the next node's answer {exc}", tuple(failures))
            return
        finally:
            broker.close_attempt(attempt)
        if output is not None:
            yield Finished(output, tuple(failures))
            return
    if failures:
        tried = "; ".join(f"{f.node}: {f.reason}" for f in failures)
        yield Failed("upstream", f"{len(failures)} node(s) failed ({tried})", tuple(failures))
    else:
        yield Failed("no_node", "every node serving it is busy or unavailable")


async def _attempt(
    rt: Runtime, spec: Spec, attempt: Attempt, delivered: _Prefix, *, incremental: bool
) -> AsyncIterator[Output | Delta]:
    """Read one node's answer; yields the deltas to pass on, then its :class:`Output`."""
    s = rt.settings
    deadline = time.monotonic() + s.inference_deadline_s
    served = attempt.node.models[spec.model]
    node = attempt.node.address

    def left(limit: float) -> float:
        return min(limit, deadline - time.monotonic())

    await _within(attempt.opened.wait(), left(s.inference_pickup_s), "did not pick the work up")
    text, ids, ids_complete = "", [], True
    matched = not delivered.text and not delivered.ids
    first_ms: float | None = None
    while True:
        limit, reason = (
            (s.inference_first_chunk_s, "sent no answer in time")
            if first_ms is None
            else (s.inference_stall_s, "stream stalled")
        )
        item = await _within(attempt.chunks.get(), left(limit), reason)
        if isinstance(item, StreamEnd):
            raise _AttemptFailed(item.reason)
        if first_ms is None:
            first_ms = 1000 * (time.perf_counter() - attempt.handed_at)
            rt.inference.broker.observe(node, spec.model, first_ms, alpha=s.inference_latency_alpha)
        if item.type == "error":
            if item.message.startswith(CONTEXT_ERROR):
                raise _ContextExceeded(item.message)
            raise _AttemptFailed(f"node error: {item.message or 'no message'}")
        if spec.op == "embed":
            if item.type != "done":
                raise _AttemptFailed("embed answers are a single done line")
            vectors = check_embeddings(item, texts=spec.texts, dims=served.dims)
            yield Output(
                node=node,
                price=attempt.price,
                embeddings=vectors,
                usage=item.usage,
                first_chunk_ms=first_ms,
            )
            return
        # generation: deltas, then done (whose own text and ids, if any, come last)
        if item.text or item.token_ids:
            text += item.text
            ids.extend(item.token_ids)
            if item.text and not item.token_ids:
                ids_complete = False
            if incremental:
                if matched:
                    yield Delta(item.text, tuple(item.token_ids), node, attempt.price)
                else:
                    rest = delivered.covered_by(text, ids, ids_complete=ids_complete)
                    if rest is not None:
                        matched = True
                        if rest.text or rest.token_ids:
                            yield Delta(rest.text, rest.token_ids, node, attempt.price)
        if item.type == "done":
            if not matched:
                raise _Mismatch("ended before reaching the text already delivered")
            yield Output(
                node=node,
                price=attempt.price,
                text=text,
                token_ids=tuple(ids),
                ids_complete=ids_complete and bool(ids),
                finish_reason=item.finish_reason,
                usage=item.usage,
                first_chunk_ms=first_ms,
            )
            return
