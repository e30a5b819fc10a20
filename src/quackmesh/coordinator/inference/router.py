"""Inference endpoints that are not OpenAI's: API keys, and the serving nodes' side.

* ``POST /v1/keys`` · ``GET /v1/keys`` · ``DELETE /v1/keys/{id}`` — signed by the wallet
  the keys spend from;
* ``POST /v1/inference/lease`` — a serving node's long-poll (signed), answered with an
  :class:`InferenceWork` or ``null``;
* ``POST /v1/inference/{id}/stream`` — the node's answer, newline-delimited
  :class:`InferenceChunk` lines in one request body, authorised by the work's token. Each
  line reaches the waiting request as it arrives. The node should open this request as
  soon as it takes the work (a streamed body), since not opening it within
  ``inference_pickup_s`` hands the work to another node. A ``409 lease_lost`` answer (also
  mid-body) means the work is no longer wanted: stop.

Errors here are problem+json, like the rest of the node and wallet API.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from quackmesh.coordinator.db.models import Node
from quackmesh.coordinator.deps import ReadSigner, RuntimeDep, Signer, SubmitSigner
from quackmesh.coordinator.inference.broker import Attempt, StreamEnd
from quackmesh.coordinator.inference.directory import ServingNode
from quackmesh.coordinator.inference.keys import create_key, key_public, list_keys, revoke_key
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.errors import (
    AuthError,
    Conflict,
    LeaseLost,
    NodeNotFound,
    NotFound,
    PayloadTooLarge,
    ValidationFailed,
)
from quackmesh.core.inference_schemas import (
    ApiKeyCreate,
    ApiKeyCreatedPublic,
    ApiKeyListPublic,
    ApiKeyPublic,
    InferenceChunk,
    InferenceLease,
    InferenceWork,
)
from quackmesh.core.schemas import NodeStatus

__all__ = ["router"]

router = APIRouter()


# --- API keys ----------------------------------------------------------------------------


@router.post("/v1/keys", response_model=ApiKeyCreatedPublic, status_code=201, tags=["keys"])
def create(body: ApiKeyCreate, signer: SubmitSigner, rt: RuntimeDep) -> ApiKeyCreatedPublic:
    """A new gateway API key for the signing wallet. The key is in this answer only."""
    with rt.sessions.begin() as session:
        row, key = create_key(
            session,
            address=signer,
            name=body.name,
            now=time.time(),
            max_active=rt.settings.inference_max_keys,
        )
        public = key_public(row)
    return ApiKeyCreatedPublic(**public.model_dump(), key=key)


@router.get("/v1/keys", response_model=ApiKeyListPublic, tags=["keys"])
def list_my_keys(signer: ReadSigner, rt: RuntimeDep) -> ApiKeyListPublic:
    """The signing wallet's keys, newest first (revoked ones included; never the key)."""
    with rt.reads() as session:
        return ApiKeyListPublic(keys=[key_public(k) for k in list_keys(session, address=signer)])


@router.delete("/v1/keys/{key_id}", response_model=ApiKeyPublic, tags=["keys"])
def revoke(key_id: str, signer: SubmitSigner, rt: RuntimeDep) -> ApiKeyPublic:
    """Revoke one of the signing wallet's keys; the gateway refuses it from now on."""
    with rt.sessions.begin() as session:
        public = key_public(revoke_key(session, key_id=key_id, address=signer, now=time.time()))
    rt.inference.keys.forget(key_id)
    return public


# --- serving nodes -----------------------------------------------------------------------


def _registered_models(rt: Runtime, address: str) -> set[str]:
    with rt.reads() as session:
        node = session.get(Node, address)
        if node is None:
            raise NodeNotFound(f"node {address} is not registered; register first", address=address)
        return {str(m.get("name")) for m in node.models or []}


async def _disconnected(request: Request) -> None:
    """Completes when the long-polling node hangs up (the body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _serving_node(rt: Runtime, address: str, models: list[str]) -> ServingNode | None:
    """The node as the directory knows it; ``None`` while it may not serve (offline,
    understaked). 404 if never registered, 422 for models it did not advertise."""
    arrived = time.monotonic()
    directory = rt.inference.directory
    nodes = await directory.current(rt.ledger, rt.reads, max_age=rt.settings.inference_directory_s)
    node = nodes.get(address)
    if node is None or any(m not in node.models for m in models):
        nodes = await directory.fresh(rt.ledger, rt.reads, since=arrived)
        node = nodes.get(address)
    advertised = set(node.models) if node is not None else None
    if advertised is None:
        advertised = await run_in_threadpool(_registered_models, rt, address)
    unknown = sorted(set(models) - advertised)
    if unknown:
        raise ValidationFailed(
            f"models not advertised at registration: {', '.join(unknown)}; register them "
            "in NodeRegister.models (with their price) first",
            field="models",
            unknown=unknown,
        )
    if node is None or node.stake < rt.settings.min_stake:
        return None
    return node


def _null() -> Response:
    return Response(b"null", media_type="application/json")


@router.post("/v1/inference/lease", response_model=InferenceWork | None, tags=["inference"])
async def lease(body: InferenceLease, signer: Signer, rt: RuntimeDep, request: Request) -> Response:
    """Long-poll for an inference request on ``models`` (``null`` after ``wait_s``)."""
    if rt.liveness.status(signer) == NodeStatus.DRAINING:
        return _null()
    node = await _serving_node(rt, signer, list(body.models))
    if node is None:  # offline or under the minimum stake: nothing for it, as for tasks
        await asyncio.sleep(body.wait_s)
        return _null()
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        attempt = await rt.inference.broker.lease(node, body.models, wait_s=body.wait_s, gone=gone)
    finally:
        gone.cancel()
    if attempt is None:
        return _null()
    # Serialised here, not re-validated by FastAPI: this answer is on the request's path.
    return Response(attempt.work.model_dump_json(), media_type="application/json")


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _attach(rt: Runtime, work_id: str, token: str) -> Attempt:
    broker = rt.inference.broker
    attempt = broker.attempt(work_id)
    if attempt is None:
        if broker.was_closed(work_id):
            raise LeaseLost(
                f"work {work_id} is no longer wanted (answered, timed out or cancelled)",
                work_id=work_id,
            )
        raise NotFound(f"no work {work_id} is waiting for an answer", work_id=work_id)
    if not token or not hmac.compare_digest(token.encode(), attempt.work.token.encode()):
        raise AuthError("the stream needs `Authorization: Bearer <work.token>`", work_id=work_id)
    if attempt.streaming:
        raise Conflict(f"an answer stream for {work_id} is already open", work_id=work_id)
    return attempt


@router.post("/v1/inference/{work_id}/stream", tags=["inference"])
async def stream(work_id: str, request: Request, rt: RuntimeDep) -> dict[str, Any]:
    """Feed a node's NDJSON answer to the waiting request, line by line."""
    attempt = _attach(rt, work_id, _bearer(request))
    attempt.streaming = True
    attempt.opened.set()
    s = rt.settings
    reader = _LineReader(attempt, max_bytes=s.inference_max_stream_bytes)
    pieces = request.stream().__aiter__()
    try:
        while True:
            if attempt.closed and not reader.terminal:
                raise LeaseLost(f"work {work_id} is no longer wanted; stop", work_id=work_id)
            wait = (s.inference_first_chunk_s if reader.lines == 0 else s.inference_stall_s) + 1
            try:
                async with asyncio.timeout(wait):
                    piece = await anext(pieces)
            except StopAsyncIteration:
                break
            except TimeoutError:
                reader.end("stream stalled")
                raise LeaseLost(f"work {work_id}: the stream stalled", work_id=work_id) from None
            reader.feed(piece)
        reader.finish()
    except ClientDisconnect:
        reader.end("stream connection closed")
    except BaseException:
        reader.end("stream failed")
        raise
    return {"work_id": work_id, "lines": reader.lines}


class _LineReader:
    """Splits the body into lines and hands each, validated, to the attempt's queue."""

    def __init__(self, attempt: Attempt, *, max_bytes: int) -> None:
        self.attempt = attempt
        self.max_bytes = max_bytes
        self.size = 0
        self.lines = 0
        self.terminal = False
        self._buffer = bytearray()

    def end(self, reason: str) -> None:
        if not self.terminal:
            self.terminal = True
            self.attempt.chunks.put_nowait(StreamEnd(reason))

    def feed(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > self.max_bytes:
            self.end(f"answer stream over {self.max_bytes} bytes")
            raise PayloadTooLarge(
                f"answer stream over {self.max_bytes} bytes", limit=self.max_bytes
            )
        self._buffer += piece
        while (newline := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            self._line(line)

    def finish(self) -> None:
        if self._buffer.strip():
            self._line(bytes(self._buffer))
        self._buffer.clear()
        self.end("stream ended without a done line")

    def _line(self, line: bytes) -> None:
        if self.terminal or not line.strip():
            return  # after done/error nothing counts
        try:
            chunk = InferenceChunk.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            why = f"line {self.lines + 1} is not an InferenceChunk: {where} {first.get('msg')}"
            self.end(why)
            raise ValidationFailed(why, field="body", line=self.lines + 1) from None
        self.lines += 1
        self.attempt.chunks.put_nowait(chunk)
        if chunk.type in ("done", "error"):
            self.terminal = True
