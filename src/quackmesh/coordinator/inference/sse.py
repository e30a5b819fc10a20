"""Server-sent events for streamed completions, framed as OpenAI frames them.

``data: {chunk}`` events, then ``data: [DONE]``. The first chunk carries the assistant
role, each next one the new text, the last one ``finish_reason``; with
``stream_options.include_usage`` a chunk with no choices and the usage follows (usage is
``null`` in the others). The last data chunk also carries a ``quackmesh`` member
(request id, price charged in micro-DUCK, serving node), repeated in a comment line
(``: quackmesh …``, ignored by SSE clients) after ``[DONE]``. A failure after the
stream began is one ``data: {"error": {…}}`` event, as OpenAI sends it.

If the caller goes away mid-stream it pays the prompt and the tokens it was sent, at
the price of the node that sent them; if it was sent nothing, everything is refunded.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from quackmesh.coordinator.inference import dispatch, runner
from quackmesh.coordinator.inference.openai_schemas import (
    chat_chunk,
    text_completion_chunk,
    usage_dict,
)
from quackmesh.coordinator.runtime import Runtime

__all__ = ["sse_stream"]


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def sse_stream(
    rt: Runtime,
    req: runner.Accepted,
    events: AsyncGenerator[dispatch.Event, None],
    first: dispatch.Event,
    *,
    chat: bool,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The event stream of one streamed completion (``first``: its first dispatch event)."""
    model = req.spec.model
    id_ = f"{'chatcmpl' if chat else 'cmpl'}-{req.request_id}"
    created = int(time.time())

    def chunk(
        text: str | None, *, finish: str | None = None, usage: dict[str, int] | None = None
    ) -> dict[str, Any]:
        if chat:
            delta = None if text is None else ({"content": text} if finish is None else {})
            return chat_chunk(
                id_=id_, created=created, model=model, delta=delta, finish=finish, usage=usage
            )
        return text_completion_chunk(
            id_=id_, created=created, model=model, text=text, finish=finish, usage=usage
        )

    sent: list[dispatch.Delta] = []
    settled = False
    try:
        if chat:
            yield _event(
                chat_chunk(
                    id_=id_,
                    created=created,
                    model=model,
                    delta={"role": "assistant", "content": ""},
                )
            )
        event = first
        while True:
            if isinstance(event, dispatch.Delta):
                sent.append(event)
                yield _event(chunk(event.text))
            elif isinstance(event, dispatch.Finished):
                settled = True
                yield _finale(rt, req, event, chunk, include_usage=include_usage)
                return
            else:
                settled = True
                runner.abort(rt, req, error=event.message, failures=event.failures)
                yield _event(runner.failed_error(model, event).body())
                return
            event = await anext(events)
    finally:
        if not settled:
            rt.inference.spawn(_gone(rt, req, events, sent), name=f"gone {req.request_id}")


def _finale(
    rt: Runtime,
    req: runner.Accepted,
    done: dispatch.Finished,
    chunk: Callable[..., dict[str, Any]],
    *,
    include_usage: bool,
) -> bytes:
    out = done.output
    amount = runner.charge(rt, req, out)
    runner.finish(rt, req, done, amount)
    usage = usage_dict(amount.prompt_tokens, amount.completion_tokens)
    stamp = {"request_id": req.request_id, "price": amount.amount, "node": out.node}
    last = chunk("", finish=out.finish_reason or "stop")
    frames = []
    if include_usage:
        frames.append(last)
        last = chunk(None, usage=usage)
    last["quackmesh"] = stamp
    frames.append(last)
    comment = f": quackmesh request_id={req.request_id} price={amount.amount}\n\n"
    return b"".join(_event(f) for f in frames) + b"data: [DONE]\n\n" + comment.encode()


async def _gone(
    rt: Runtime,
    req: runner.Accepted,
    events: AsyncGenerator[dispatch.Event, None],
    sent: list[dispatch.Delta],
) -> None:
    """The caller left mid-stream: stop the node, bill what it was sent (or refund)."""
    await events.aclose()
    if not sent:
        runner.abort(rt, req, error="the caller went away", failures=())
        return
    last = sent[-1]
    ids = [i for d in sent for i in d.token_ids]
    partial = dispatch.Output(
        node=last.node,
        price=last.price,
        text="".join(d.text for d in sent),
        token_ids=tuple(ids),
        ids_complete=all(d.token_ids or not d.text for d in sent) and bool(ids),
        finish_reason="cancelled",
    )
    done = dispatch.Finished(partial, ())
    amount = runner.charge(rt, req, partial)
    runner.finish(rt, req, done, amount, check=False)
