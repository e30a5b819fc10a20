"""OpenAI's request bodies (as the gateway accepts them) and response objects.

Requests follow the OpenAI API reference for ``/v1/chat/completions``,
``/v1/completions`` and ``/v1/embeddings``. An argument OpenAI does not define is refused
("Unrecognized request argument supplied", as OpenAI words it); one it defines but
QuackMesh cannot honour is refused by :func:`unsupported` with the argument named, never
silently ignored. Decoding is greedy — the same request gives the same tokens on every
honest node, which is how answers are verified — so ``temperature`` must be 0 or absent
(``top_p`` then changes nothing and is accepted). ``seed``, ``user``, ``metadata``,
``store`` and ``service_tier`` are accepted and ignored: they do not change the answer.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from quackmesh.coordinator.inference.errors import GatewayError, bad_request

__all__ = [
    "ChatCompletionCreate",
    "CompletionCreate",
    "EmbeddingCreate",
    "MessageIn",
    "StreamOptions",
    "chat_chunk",
    "chat_completion",
    "embedding_list",
    "text_completion",
    "text_completion_chunk",
    "unsupported",
    "usage_dict",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, tool_call_id …: no effect here

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Generation(_Body):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    user: str | None = None


class ChatCompletionCreate(_Generation):
    messages: list[MessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None


class CompletionCreate(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]]
    best_of: int | None = Field(default=None, ge=1)
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = None


class EmbeddingCreate(_Body):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


def _refuse(param: str, why: str) -> GatewayError:
    return bad_request(f"'{param}' {why}", param=param, code="unsupported_value")


def unsupported(body: _Generation) -> None:
    """Refuse arguments QuackMesh cannot honour (``GatewayError`` 400, the argument named)."""
    if body.temperature not in (None, 0):
        raise _refuse(
            "temperature",
            "must be 0 or omitted: QuackMesh decodes greedily, so that every honest node "
            "gives the same answer and answers can be verified",
        )
    if body.n not in (None, 1):
        raise _refuse("n", "must be 1: greedy decoding gives one answer")
    if body.stop:
        raise _refuse("stop", "is not supported yet")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name) not in (None, 0):
            raise _refuse(name, "must be 0 or omitted")
    if body.logit_bias:
        raise _refuse("logit_bias", "is not supported")
    if isinstance(body, ChatCompletionCreate):
        if body.logprobs or body.top_logprobs:
            raise _refuse("logprobs", "is not supported")
        if body.tools or body.tool_choice not in (None, "none"):
            raise _refuse("tools", "(function calling) is not supported")
        if body.response_format and body.response_format.get("type", "text") != "text":
            raise _refuse("response_format", "must be text")
    if isinstance(body, CompletionCreate):
        if body.best_of not in (None, 1):
            raise _refuse("best_of", "must be 1")
        if body.echo:
            raise _refuse("echo", "is not supported")
        if body.suffix:
            raise _refuse("suffix", "is not supported")
        if body.logprobs:
            raise _refuse("logprobs", "is not supported")


# --- responses ------------------------------------------------------------------------


def usage_dict(prompt: int, completion: int | None = None) -> dict[str, int]:
    if completion is None:  # embeddings
        return {"prompt_tokens": prompt, "total_tokens": prompt}
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat_completion(
    *, id_: str, created: int, model: str, text: str, finish: str | None, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish or "stop",
            }
        ],
        "usage": usage,
    }


def chat_chunk(
    *,
    id_: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` is the usage-only chunk (no choices)."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage,
    }


def text_completion(
    *, id_: str, created: int, model: str, text: str, finish: str | None, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {"text": text, "index": 0, "logprobs": None, "finish_reason": finish or "stop"}
        ],
        "usage": usage,
    }


def text_completion_chunk(
    *,
    id_: str,
    created: int,
    model: str,
    text: str | None,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    choices = (
        []
        if text is None
        else [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]
    )
    return {
        "id": id_,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage,
    }


def embedding_list(
    *, model: str, vectors: list[list[float]], encoding: str, prompt_tokens: int
) -> dict[str, Any]:
    """OpenAI's embeddings list; ``base64`` is little-endian float32 (what the SDK asks
    for by default and decodes)."""
    data: list[dict[str, Any]] = []
    for i, vector in enumerate(vectors):
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": model, "usage": usage_dict(prompt_tokens)}
