"""The event stream: ``GET /v1/events`` pages it, ``/v1/events/ws`` streams it live.

WebSocket protocol: connect with the same query filters as the page endpoint
(``job``, ``node``, ``address``, ``type``) and ``after=ID`` to resume; the server sends text
frames ``{"events": [...]}`` in increasing id order — the backlog after ``ID`` first, then
live events. After a disconnect, reconnect with ``after=<last id received>``: no gaps, no
duplicates. Without ``after`` the stream starts with the next event. Bad filters close
the socket with code 1008 and the reason; a subscriber too slow to keep up is closed with
1013 and should reconnect.

Who is watching decides what they see (``events.service.public_view``): a signed
handshake (the SDK signs ``GET /v1/events/ws?...`` like any request) or, from a browser,
the session cookie — accepted only when the ``Origin`` is this server's, so another site
cannot open a socket with a visitor's cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from quackmesh.coordinator.auth.sessions import COOKIE
from quackmesh.coordinator.deps import (
    OptionalViewer,
    RuntimeDep,
    get_optional_viewer,
)
from quackmesh.coordinator.events.hub import EventHub, Subscriber
from quackmesh.coordinator.events.service import (
    event_dict,
    list_events,
    parse_filter,
    public_view,
)
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.errors import QuackMeshError

router = APIRouter(prefix="/v1/events", tags=["events"])

POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
KNOWN_PARAMS = frozenset({"after", "job", "node", "address", "type"})


@router.get("")
def list_page(
    rt: RuntimeDep,
    viewer: OptionalViewer,
    after: int = Query(default=0, ge=0),
    limit: int = Query(default=200, ge=1, le=1000),
    job: str | None = Query(default=None, max_length=32),
    node: str | None = Query(default=None, max_length=42),
    address: str | None = Query(default=None, max_length=42),
    type: str | None = Query(default=None, max_length=1000),
) -> list[dict[str, Any]]:
    """Events after id ``after`` in id order, as the caller may see them.

    Signed out you get the public projection; signed in, your own events whole.
    ``address`` selects your own events (403 for anyone else's); ``type`` is a comma list
    of exact types or prefixes such as ``job.*``.
    """
    flt = parse_filter(viewer=viewer, job=job, node=node, address=address, type_=type)
    with rt.reads() as session:
        rows = list_events(session, after=after, limit=limit, flt=flt)
        return [public_view(event_dict(e), viewer) for e in rows]


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin")
    host = ws.headers.get("host")
    if origin is None or host is None:
        return origin is None  # non-browser clients send no Origin
    return origin.split("://", 1)[-1] == host


async def _viewer(ws: WebSocket, rt: Runtime) -> str | None:
    if COOKIE in ws.cookies and not _same_origin(ws):
        raise PermissionError("cross-origin WebSocket with a session cookie")
    return await get_optional_viewer(ws, rt)


@router.websocket("/ws")
async def stream(ws: WebSocket, rt: RuntimeDep) -> None:
    params = ws.query_params
    try:
        unknown = sorted(set(params.keys()) - KNOWN_PARAMS)
        if unknown:
            raise ValueError(f"unknown query parameter {unknown[0]!r}")
        if any(len(params.getlist(k)) > 1 for k in params):
            raise ValueError("each query parameter may appear once")
        raw_after = params.get("after")
        if raw_after is not None and (not raw_after.isdigit() or len(raw_after) > 18):
            raise ValueError("after: must be a non-negative integer event id")
        viewer = await _viewer(ws, rt)
        flt = parse_filter(
            viewer=viewer,
            job=params.get("job"),
            node=params.get("node"),
            address=params.get("address"),
            type_=params.get("type"),
        )
    except (QuackMeshError, ValueError, PermissionError) as exc:
        await ws.close(code=POLICY_VIOLATION, reason=str(exc)[:120])
        return
    await ws.accept()
    hub = rt.hub
    sub, frontier = hub.subscribe(viewer, flt)
    try:
        if raw_after is not None and int(raw_after) < frontier:
            frames = await asyncio.to_thread(
                hub.backlog, viewer=viewer, flt=flt, after=int(raw_after), upto=frontier
            )
            for backlog_frame in frames:
                await ws.send_text(backlog_frame)
        receiver = asyncio.create_task(_drain(ws, hub, sub))
        try:
            while True:
                live = await sub.queue.get()
                if live is None:  # the client left, it overflowed, or we are shutting down
                    if not receiver.done():
                        code = TRY_AGAIN_LATER if sub.overflowed else 1001
                        await ws.close(code=code, reason="reconnect with after=<last id>")
                    return
                await ws.send_text(live)
        finally:
            receiver.cancel()
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client closed mid-send
    finally:
        hub.unsubscribe(sub)
        if ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close()


async def _drain(ws: WebSocket, hub: EventHub, sub: Subscriber) -> None:
    """Read (and ignore) what the client sends, so a close is noticed at once."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
    hub.close(sub)
