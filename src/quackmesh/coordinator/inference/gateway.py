"""The OpenAI-compatible routes: ``/v1/models``, ``/v1/embeddings``,
``/v1/chat/completions`` and ``/v1/completions`` (shapes: the OpenAI API reference).

Callers authenticate with ``Authorization: Bearer sk-qm-…`` (an API key of the wallet
that pays); ``/v1/models`` is public. Every error is answered in OpenAI's shape (see
:mod:`.errors`). A request is validated, its model resolved to the online, staked nodes
serving it, and its maximum cost reserved before any node sees it; answers carry
``X-QuackMesh-Request-Id`` and ``X-QuackMesh-Price`` (micro-DUCK charged; a stream has it
in its last chunk and ``X-QuackMesh-Max-Price``, the reservation, as a header).

The price cap: a request may run on any of the ``inference_max_attempts`` cheapest
eligible nodes (so failover has somewhere to go), and reserves at the highest of their
prices; costlier nodes are not used for it. Token counts are bracketed as in
:mod:`.metering`: input over the model's ``context_len`` by the lower bound is refused
here, and the node enforces the exact limit.
"""

from __future__ import annotations

import re
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from quackmesh.coordinator.deps import RuntimeDep
from quackmesh.coordinator.inference import dispatch, runner
from quackmesh.coordinator.inference.broker import price_for
from quackmesh.coordinator.inference.directory import ServingNode
from quackmesh.coordinator.inference.errors import GatewayError, OpenAIRoute, bad_request
from quackmesh.coordinator.inference.keys import KEY_PREFIX, KeyInfo, hash_key, lookup_key
from quackmesh.coordinator.inference.metering import PromptSize, generate_cost, prompt_size
from quackmesh.coordinator.inference.openai_schemas import (
    ChatCompletionCreate,
    CompletionCreate,
    EmbeddingCreate,
    MessageIn,
    chat_completion,
    embedding_list,
    text_completion,
    unsupported,
    usage_dict,
)
from quackmesh.coordinator.inference.sse import sse_stream
from quackmesh.coordinator.inference.verify import Meter
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.ids import new_id
from quackmesh.core.inference_schemas import MODEL_NAME_PATTERN, ChatMessage
from quackmesh.core.schemas import ModelTask, ServedModel

__all__ = ["PRICE", "REQUEST_ID", "ApiCaller", "Caller", "api_caller", "router"]

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])
_MODEL_RE = re.compile(MODEL_NAME_PATTERN)
REQUEST_ID = "X-QuackMesh-Request-Id"
PRICE = "X-QuackMesh-Price"


# --- the caller --------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    address: str
    key_id: str


def _lookup(rt: Runtime, key: str) -> KeyInfo | None:
    with rt.reads() as session:
        return lookup_key(session, key)


async def api_caller(request: Request, rt: RuntimeDep) -> Caller:
    """The wallet behind ``Authorization: Bearer sk-qm-…`` (401 without a live key)."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise GatewayError(
            "You didn't provide an API key. Send `Authorization: Bearer sk-qm-…`; "
            "create one with `quackmesh keys create`.",
            status=401,
            code="missing_api_key",
        )
    info: KeyInfo | None = None
    if key.startswith(KEY_PREFIX) and len(key) <= 128:
        digest = hash_key(key)
        hit, info = rt.inference.keys.get(digest, ttl=rt.settings.inference_key_cache_s)
        if not hit:
            info = await run_in_threadpool(_lookup, rt, key)
            rt.inference.keys.put(digest, info)
    if info is None or info.revoked:
        shown = key[:10] + "…" if len(key) > 10 else key
        raise GatewayError(
            f"Incorrect API key provided: {shown}" + (" (revoked)" if info is not None else ""),
            status=401,
            code="invalid_api_key",
        )
    rt.inference.limiter.hit(info.address)
    return Caller(address=info.address, key_id=info.id)


ApiCaller = Annotated[Caller, Depends(api_caller)]


# --- models ------------------------------------------------------------------------------


def _not_found(model: str) -> GatewayError:
    return GatewayError(
        f"The model `{model}` does not exist or no node serves it now.",
        status=404,
        param="model",
        code="model_not_found",
    )


def _served(
    rt: Runtime, nodes: dict[str, ServingNode], model: str, payer: str | None
) -> list[ServingNode]:
    s = rt.settings
    return [
        n
        for n in nodes.values()
        if model in n.models and n.eligible(min_stake=s.min_stake, payer=payer)
    ]


async def _resolve(
    rt: Runtime, model: str, *, payer: str, task: ModelTask, arrived: float
) -> tuple[ServedModel, list[ServingNode]]:
    """The model as served and the eligible nodes serving it (404 / 400 / 503)."""
    if not _MODEL_RE.match(model):
        raise _not_found(model)
    directory = rt.inference.directory
    nodes = await directory.current(rt.ledger, rt.reads, max_age=rt.settings.inference_directory_s)
    candidates = _served(rt, nodes, model, payer)
    if not candidates:  # maybe it registered a moment ago
        nodes = await directory.fresh(rt.ledger, rt.reads, since=arrived)
        candidates = _served(rt, nodes, model, payer)
    if not candidates:
        if any(model in n.models for n in nodes.values()):
            raise GatewayError(
                f"no node serving {model!r} is available to you now (staked, online, not "
                "rented by someone else)",
                status=503,
                type_="server_error",
                code="no_node_available",
            )
        raise _not_found(model)
    cheapest = min(candidates, key=lambda n: (price_for(n, model), n.address))
    served = cheapest.models[model]
    if served.task != task:
        endpoint = "/v1/embeddings" if served.task == "embed" else "/v1/chat/completions"
        raise bad_request(
            f"{model!r} is a{'n' if served.task == 'embed' else ''} {served.task} model; "
            f"use {endpoint}",
            param="model",
            code="model_not_supported",
        )
    context = max(n.models[model].context_len for n in candidates)
    return served.model_copy(update={"context_len": context}), candidates


def _cap(rt: Runtime, model: str, candidates: list[ServingNode]) -> int:
    prices = sorted(price_for(n, model) for n in candidates)
    return prices[min(rt.settings.inference_max_attempts, len(prices)) - 1]


@router.get("/v1/models")
async def list_models(rt: RuntimeDep) -> dict[str, Any]:
    """Models served by online, staked nodes (public)."""
    nodes = await rt.inference.directory.current(
        rt.ledger, rt.reads, max_age=rt.settings.inference_directory_s
    )
    created: dict[str, float] = {}
    for node in nodes.values():
        if node.eligible(min_stake=rt.settings.min_stake, payer=None):
            for name in node.models:
                created[name] = min(created.get(name, node.registered_at), node.registered_at)
    return {"object": "list", "data": [_model(n, created[n]) for n in sorted(created)]}


def _model(name: str, created: float) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(created), "owned_by": "quackmesh"}


@router.get("/v1/models/{model:path}")
async def read_model(model: str, rt: RuntimeDep) -> dict[str, Any]:
    listed = await list_models(rt)
    for entry in listed["data"]:
        if entry["id"] == model:
            return dict(entry)
    raise _not_found(model)


# --- requests -----------------------------------------------------------------------------


def _accept(
    rt: Runtime,
    caller: Caller,
    *,
    model: str,
    op: dispatch.Op,
    input_: dict[str, Any],
    stream: bool,
    candidates: list[ServingNode],
    meter: Meter,
) -> runner.Accepted:
    cap = _cap(rt, model, candidates)
    tokens = meter.prompt.high + meter.max_tokens
    reserve = cap * meter.texts if meter.embed else generate_cost(cap, tokens)
    spec = dispatch.Spec(
        model=model,
        op=op,
        input=input_,
        stream=stream,
        payer=caller.address,
        price_cap=cap,
        candidates=frozenset(n.address for n in candidates),
        texts=meter.texts,
    )
    return runner.Accepted(
        request_id=new_id("inf"),
        address=caller.address,
        key_id=caller.key_id if rt.inference.keys.touch_due(caller.key_id) else None,
        spec=spec,
        meter=meter,
        reserve=reserve,
    )


def _max_tokens(asked: int | None, prompt: PromptSize, context: int, *, rt: Runtime) -> int:
    room = context - prompt.low
    if asked is None:
        if room < 1:
            raise _too_long(context, prompt.low, 1)
        return min(rt.settings.inference_default_max_tokens, room)
    if prompt.low + asked > context:
        raise _too_long(context, prompt.low, asked)
    return asked


def _too_long(context: int, prompt: int, completion: int) -> GatewayError:
    return bad_request(
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"at least {prompt + completion} tokens ({prompt} in the prompt, {completion} for the "
        "completion). Please reduce the prompt or max_tokens.",
        param="messages",
        code="context_length_exceeded",
    )


def _message_text(i: int, message: MessageIn) -> str:
    content = message.content
    if content is None:
        raise bad_request(f"messages[{i}].content is required", param=f"messages.{i}.content")
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise bad_request(
                f"messages[{i}].content[{j}]: only text parts are supported",
                param=f"messages.{i}.content",
                code="unsupported_value",
            )
        parts.append(part["text"])
    return "".join(parts)


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionCreate, caller: ApiCaller, rt: RuntimeDep
) -> Response:
    arrived = time.monotonic()
    unsupported(body)
    texts = [_message_text(i, m) for i, m in enumerate(body.messages)]
    if not any(t.strip() for t in texts):
        raise bad_request("messages hold no text", param="messages")
    messages = [
        ChatMessage(role=m.role, content=t).model_dump()
        for m, t in zip(body.messages, texts, strict=True)
    ]
    served, candidates = await _resolve(
        rt, body.model, payer=caller.address, task="generate", arrived=arrived
    )
    prompt = prompt_size(texts, messages=len(texts))
    asked = body.max_completion_tokens or body.max_tokens
    max_tokens = _max_tokens(asked, prompt, served.context_len, rt=rt)
    meter = Meter(embed=False, prompt=prompt, max_tokens=max_tokens, texts=0)
    req = _accept(
        rt,
        caller,
        model=body.model,
        op="chat",
        input_={"messages": messages, "max_tokens": max_tokens},
        stream=bool(body.stream),
        candidates=candidates,
        meter=meter,
    )
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _generate(rt, req, chat=True, include_usage=include_usage)


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionCreate, caller: ApiCaller, rt: RuntimeDep) -> Response:
    arrived = time.monotonic()
    unsupported(body)
    prompt_text = body.prompt
    if isinstance(prompt_text, list):
        if len(prompt_text) != 1 or not isinstance(prompt_text[0], str):
            raise bad_request(
                "prompt must be one string (token arrays and batches are not supported)",
                param="prompt",
                code="unsupported_value",
            )
        prompt_text = prompt_text[0]
    if not prompt_text.strip():
        raise bad_request("prompt is empty", param="prompt")
    served, candidates = await _resolve(
        rt, body.model, payer=caller.address, task="generate", arrived=arrived
    )
    prompt = prompt_size([prompt_text])
    max_tokens = _max_tokens(body.max_tokens, prompt, served.context_len, rt=rt)
    meter = Meter(embed=False, prompt=prompt, max_tokens=max_tokens, texts=0)
    req = _accept(
        rt,
        caller,
        model=body.model,
        op="complete",
        input_={"prompt": prompt_text, "max_tokens": max_tokens},
        stream=bool(body.stream),
        candidates=candidates,
        meter=meter,
    )
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _generate(rt, req, chat=False, include_usage=include_usage)


def _headers(req: runner.Accepted, price: int | None = None) -> dict[str, str]:
    headers = {REQUEST_ID: req.request_id}
    if price is not None:
        headers[PRICE] = str(price)
    return headers


async def _last(rt: Runtime, req: runner.Accepted) -> dispatch.Event:
    """Run to the end with no deltas wanted; the last event (``Finished`` or ``Failed``)."""
    result: dispatch.Event = dispatch.Failed("no_node", "")
    async with aclosing(dispatch.run(rt, req.spec, incremental=False)) as events:
        async for event in events:
            result = event
    return result


def _refuse(rt: Runtime, req: runner.Accepted, failed: dispatch.Failed) -> GatewayError:
    runner.abort(rt, req, error=failed.message, failures=failed.failures)
    return runner.failed_error(req.spec.model, failed).with_headers(_headers(req))


async def _complete(rt: Runtime, req: runner.Accepted) -> dispatch.Finished:
    """Reserve and run to the end; a failure refunds and raises the caller's error."""
    result = await runner.reserved(rt, req, _last(rt, req))
    if isinstance(result, dispatch.Finished):
        return result
    failed = result if isinstance(result, dispatch.Failed) else dispatch.Failed("upstream", "")
    raise _refuse(rt, req, failed)


async def _generate(
    rt: Runtime, req: runner.Accepted, *, chat: bool, include_usage: bool
) -> Response:
    if not req.spec.stream:
        done = await _complete(rt, req)
        amount = runner.charge(rt, req, done.output)
        runner.finish(rt, req, done, amount)
        build = chat_completion if chat else text_completion
        body = build(
            id_=f"{'chatcmpl' if chat else 'cmpl'}-{req.request_id}",
            created=int(time.time()),
            model=req.spec.model,
            text=done.output.text,
            finish=done.output.finish_reason,
            usage=usage_dict(amount.prompt_tokens, amount.completion_tokens),
        )
        return JSONResponse(body, headers=_headers(req, amount.amount))
    events = dispatch.run(rt, req.spec, incremental=True)
    try:
        first = await runner.reserved(rt, req, anext(events))
    except BaseException:
        await events.aclose()
        raise
    if isinstance(first, dispatch.Failed):
        await events.aclose()
        raise _refuse(rt, req, first)
    stream = sse_stream(rt, req, events, first, chat=chat, include_usage=include_usage)
    headers = {
        **_headers(req),
        "X-QuackMesh-Max-Price": str(req.reserve),
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@router.post("/v1/embeddings", response_model=None)
async def embeddings(body: EmbeddingCreate, caller: ApiCaller, rt: RuntimeDep) -> Response:
    arrived = time.monotonic()
    raw = [body.input] if isinstance(body.input, str) else list(body.input)
    if not raw:
        raise bad_request("input is empty", param="input")
    if not all(isinstance(t, str) for t in raw):
        raise bad_request(
            "input must be text (token arrays are not supported)",
            param="input",
            code="unsupported_value",
        )
    texts: list[str] = [t for t in raw if isinstance(t, str)]
    if any(not t.strip() for t in texts):
        raise bad_request("input holds an empty string", param="input")
    if len(texts) > rt.settings.inference_max_inputs:
        raise bad_request(
            f"input holds {len(texts)} texts; at most {rt.settings.inference_max_inputs}",
            param="input",
        )
    served, candidates = await _resolve(
        rt, body.model, payer=caller.address, task="embed", arrived=arrived
    )
    if body.dimensions is not None and body.dimensions != served.dims:
        raise bad_request(
            f"dimensions: {body.model!r} makes {served.dims}-dimensional embeddings",
            param="dimensions",
            code="unsupported_value",
        )
    for i, text in enumerate(texts):
        low = prompt_size([text]).low
        if low > served.context_len:
            raise bad_request(
                f"input[{i}] has at least {low} tokens; this model's maximum context length "
                f"is {served.context_len} tokens",
                param="input",
                code="context_length_exceeded",
            )
    meter = Meter(embed=True, prompt=prompt_size(texts), max_tokens=0, texts=len(texts))
    req = _accept(
        rt,
        caller,
        model=body.model,
        op="embed",
        input_={"texts": texts},
        stream=False,
        candidates=candidates,
        meter=meter,
    )
    done = await _complete(rt, req)
    amount = runner.charge(rt, req, done.output)
    runner.finish(rt, req, done, amount)
    result = embedding_list(
        model=body.model,
        vectors=done.output.embeddings or [],
        encoding=body.encoding_format,
        prompt_tokens=amount.prompt_tokens,
    )
    return JSONResponse(result, headers=_headers(req, amount.amount))
