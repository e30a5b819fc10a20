"""Wire schemas of the inference marketplace (issue 6), shared by coordinator, node and SDK.

Two sides:

* **Serving nodes** advertise the models they serve (:class:`ServedModel`, in
  ``NodeRegister.models``) and pull work from the coordinator, so a node behind NAT can
  serve: ``POST /v1/inference/lease`` (signed by the node; long-poll) answers an
  :class:`InferenceWork` or ``null``. The node then streams its answer back in one
  ``POST /v1/inference/{id}/stream`` whose body is newline-delimited JSON, one
  :class:`InferenceChunk` per line, authorised by ``Authorization: Bearer <work.token>``
  (a capability handed out only in the signed lease, so a streaming body needs no
  signature over its hash). The last line is a ``done`` or an ``error`` chunk.
* **Callers** use the OpenAI-compatible gateway (``/v1/models``, ``/v1/embeddings``,
  ``/v1/chat/completions``, ``/v1/completions``) with an API key bound to a wallet
  (``POST /v1/keys``, signed by that wallet). Those bodies follow OpenAI's API, not these
  models; the gateway normalises them into :class:`InferenceWork` ``input``.

Prices are ``int`` micro-DUCK: per 1,000 tokens (prompt and completion) for ``generate``
models, per input text for ``embed`` models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from quackmesh.core.schemas import (
    MODEL_NAME_PATTERN,
    ModelName,
    ModelTask,
    ServedModel,
    _Wire,
)

__all__ = [
    "MODEL_NAME_PATTERN",
    "ApiKeyCreate",
    "ApiKeyCreatedPublic",
    "ApiKeyListPublic",
    "ApiKeyPublic",
    "ChatMessage",
    "InferenceChunk",
    "InferenceLease",
    "InferenceWork",
    "ModelName",
    "ModelTask",
    "ServedModel",
    "Usage",
]


class ChatMessage(_Wire):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str = Field(max_length=1_000_000)


class InferenceLease(_Wire):
    """A serving node asks for work on the models it serves (``wait_s``: long-poll)."""

    models: list[ModelName] = Field(min_length=1, max_length=64)
    wait_s: float = Field(default=20.0, ge=0, le=60)


class InferenceWork(_Wire):
    """One request for a node to answer.

    ``op``/``input``:

    * ``embed``: ``{"texts": [str, ...]}``; answer with one ``done`` chunk carrying
      ``embeddings`` (unit-normalised vectors, in input order).
    * ``chat``: ``{"messages": [{"role", "content"}, ...], "max_tokens": int}``;
    * ``complete``: ``{"prompt": str, "max_tokens": int}``; answer both with ``delta``
      chunks (the new text and its token ids, in order) and a final ``done`` chunk.

    Decoding is greedy (``temperature`` 0): the same request gives the same tokens on
    every honest node serving the same model, which is what verification compares.
    """

    id: str
    token: str = Field(description="capability for POST /v1/inference/{id}/stream")
    model: ModelName
    op: Literal["embed", "chat", "complete"]
    input: dict[str, Any]
    stream: bool = False
    deadline_s: float = Field(description="seconds the node has for the whole answer")


class Usage(_Wire):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(default=0, ge=0)


class InferenceChunk(_Wire):
    """One line of a node's answer stream."""

    type: Literal["delta", "done", "error"]
    text: str = ""
    token_ids: list[int] = Field(default_factory=list)
    embeddings: list[list[float]] | None = None
    finish_reason: Literal["stop", "length"] | None = None
    usage: Usage | None = None
    message: str = Field(default="", max_length=2000, description="error chunks: what failed")


class ApiKeyCreate(_Wire):
    name: str = Field(default="", max_length=64)


class ApiKeyPublic(_Wire):
    id: str
    name: str
    prefix: str = Field(description="the key's first characters, to recognise it")
    address: str
    created_at: float
    last_used_at: float | None = None
    revoked: bool = False


class ApiKeyCreatedPublic(ApiKeyPublic):
    key: str = Field(description="shown once: sk-qm-…; send as `Authorization: Bearer`")


class ApiKeyListPublic(_Wire):
    keys: list[ApiKeyPublic]
