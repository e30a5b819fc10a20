"""A backend that forwards to a local OpenAI-compatible server (llama.cpp, vLLM, Ollama…).

The provider already runs the server; the node calls its ``/chat/completions``,
``/completions`` and ``/embeddings`` (OpenAI API reference) with ``temperature`` 0 and
``stream`` on, and turns the server-sent events (WHATWG HTML, "Server-sent events") into
deltas.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any, Literal

import httpx

from quackmesh.core.inference_schemas import Usage
from quackmesh.core.schemas import ModelTask
from quackmesh.inference.base import (
    DEFAULT_CONTEXT_LEN,
    Backend,
    BackendError,
    BadInput,
    ChatInput,
    CompleteInput,
    Delta,
    Finish,
    Interrupted,
    ModelInfo,
    Op,
    StopCheck,
    parse_input,
)

__all__ = ["OpenAIServerBackend"]


class OpenAIServerBackend(Backend):
    """A local OpenAI-compatible server (llama.cpp, vLLM, Ollama…) the provider runs.

    Requests go to its ``/chat/completions``, ``/completions`` or ``/embeddings`` with
    ``temperature`` 0 and ``stream`` on; its server-sent events become deltas. Such
    servers do not report token ids, so the deltas carry none and verification of these
    backends compares text. Usage comes from the server (``stream_options.include_usage``);
    a server that sends none is billed by estimate: one completion token per streamed
    piece and a prompt of ``ceil(characters / 4)`` tokens. ``context_len`` is the
    server's ``max_model_len`` from ``/models`` (vLLM) or 2048. ``api_key`` defaults to
    ``$QUACKMESH_OPENAI_API_KEY``. Embeddings are re-normalised to unit length.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        task: ModelTask = "generate",
        api_key: str | None = None,
        timeout_s: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key = api_key or os.environ.get("QUACKMESH_OPENAI_API_KEY", "")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            transport=transport,
        )
        try:
            listing = self._http.get("/models", timeout=30.0)
        except httpx.HTTPError as exc:
            self._http.close()
            raise BackendError(
                f"cannot reach the OpenAI-compatible server at {base_url}: {exc}"
            ) from exc
        context = DEFAULT_CONTEXT_LEN
        if listing.is_success:
            for entry in _json_list(listing, "data"):
                if isinstance(entry, dict) and entry.get("id") == model:
                    context = int(entry.get("max_model_len") or context)
        self.info = ModelInfo(task=task, context_len=context)
        if task == "embed":
            probe, _ = self.embed(["dimension probe"])
            self.info = ModelInfo(task=task, context_len=context, dims=len(probe[0]))

    def close(self) -> None:
        self._http.close()

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        body = {"model": self.model, "input": list(texts), "encoding_format": "float"}
        response = self._http.post("/embeddings", json=body)
        _check(response)
        rows = sorted(_json_list(response, "data"), key=lambda row: int(row.get("index", 0)))
        if len(rows) != len(texts):
            raise BackendError(f"server returned {len(rows)} embeddings for {len(texts)} texts")
        vectors = [_unit([float(x) for x in row["embedding"]]) for row in rows]
        usage = response.json().get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or sum(_estimate(t) for t in texts))
        return vectors, prompt_tokens

    def generate(
        self, op: Op, data: Mapping[str, Any], *, stop: StopCheck | None = None
    ) -> Generator[Delta, None, Finish]:
        request = parse_input(op, data)
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": 0,
            "top_p": 1,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if isinstance(request, ChatInput):
            path, chat = "/chat/completions", True
            body["messages"] = [m.model_dump() for m in request.messages]
            prompt_chars = sum(len(m.content) for m in request.messages)
        elif isinstance(request, CompleteInput):
            path, chat = "/completions", False
            body["prompt"] = request.prompt
            prompt_chars = len(request.prompt)
        else:
            raise BadInput(f"op {op!r} does not generate")
        body["max_tokens"] = request.max_tokens
        pieces = 0
        reason: Literal["stop", "length"] = "stop"
        usage: Usage | None = None
        with self._http.stream("POST", path, json=body) as response:
            if not response.is_success:
                response.read()
                _check(response)
            for event in _sse_events(response.iter_lines()):
                if "error" in event:
                    raise BackendError(f"server error: {str(event['error'])[:500]}")
                for choice in event.get("choices") or []:
                    text = _piece(choice, chat=chat)
                    if text:
                        pieces += 1
                        yield Delta(text, [])
                    if choice.get("finish_reason") == "length":
                        reason = "length"
                if event.get("usage"):
                    usage = Usage(
                        prompt_tokens=int(event["usage"].get("prompt_tokens") or 0),
                        completion_tokens=int(event["usage"].get("completion_tokens") or 0),
                    )
                why = stop() if stop is not None else None
                if why:
                    raise Interrupted(why)  # leaving the block closes the stream
        if usage is None:
            usage = Usage(prompt_tokens=math.ceil(prompt_chars / 4), completion_tokens=pieces)
        return Finish(reason, usage)


def _piece(choice: dict[str, Any], *, chat: bool) -> str:
    """The new text in one streamed choice (chat: ``delta.content``; completion: ``text``)."""
    value = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
    return value if isinstance(value, str) else ""


def _estimate(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


def _check(response: httpx.Response) -> None:
    if not response.is_success:
        raise BackendError(f"server answered HTTP {response.status_code}: {response.text[:300]}")


def _json_list(response: httpx.Response, key: str) -> list[Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise BackendError(f"server sent no JSON: {response.text[:200]}") from exc
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, list) else []


def _sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, up to ``data: [DONE]``."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].strip())
            continue
        if line.strip() or not data:
            continue  # comments, event names, ids; or a blank line with nothing pending
        payload, data = "\n".join(data), []
        if payload == "[DONE]":
            return
        yield _event(payload)
    if data and "\n".join(data) != "[DONE]":
        yield _event("\n".join(data))


def _event(payload: str) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise BackendError(f"server sent a malformed event: {payload[:200]}") from exc
    if not isinstance(value, dict):
        raise BackendError(f"server sent a non-object event: {payload[:200]}")
    return value
