"""The inference backend contract: requests, results, errors and the :class:`Backend` ABC.

A backend is a loaded model. :class:`Backend` has two hooks, :meth:`~Backend.embed` and
:meth:`~Backend.generate`, and one concrete driver, :meth:`Backend.answer`, which
validates a request's ``input`` (:func:`parse_input`), runs the hook its op needs and
turns the result into the :class:`~quackmesh.core.inference_schemas.InferenceChunk` lines
of the wire protocol: ``delta`` chunks then ``done`` — or a single ``error`` chunk for any
failure, which is answered rather than raised. Generation is greedy, so every honest
node with the same weights produces the same tokens.

Errors::

    QuackMeshError
    └── BackendError        a backend cannot load or run (its message goes in the error chunk)
        ├── BadInput        the request's input does not fit the op or the model
        └── Interrupted     cancelled or past its deadline while running
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quackmesh.core.errors import QuackMeshError
from quackmesh.core.inference_schemas import ChatMessage, InferenceChunk, ServedModel, Usage
from quackmesh.core.schemas import ModelTask

__all__ = [
    "DEFAULT_CONTEXT_LEN",
    "DEFAULT_MAX_TOKENS",
    "MAX_EMBED_TEXTS",
    "PLAIN_CHAT_TEMPLATE",
    "Backend",
    "BackendError",
    "BadInput",
    "ChatInput",
    "CompleteInput",
    "Delta",
    "EmbedInput",
    "Finish",
    "Interrupted",
    "ModelInfo",
    "Op",
    "StopCheck",
    "error_chunk",
    "parse_input",
    "render_plain_chat",
]

DEFAULT_MAX_TOKENS = 256  # when a generate request names no max_tokens
MAX_EMBED_TEXTS = 2048  # texts in one embed request
PLAIN_CHAT_TEMPLATE = "one 'role: content' line per message, then 'assistant:'"
DEFAULT_CONTEXT_LEN = 2048  # when a model does not say

Op = Literal["embed", "chat", "complete"]
StopCheck = Callable[[], str | None]  # returns why to stop now, or None to go on


class BackendError(QuackMeshError):
    code, title = "backend_error", "Inference backend failed"


class BadInput(BackendError):
    code, title = "bad_inference_input", "Inference input does not fit"


class Interrupted(BackendError):
    code, title = "inference_interrupted", "Inference stopped before it finished"


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded backend can do; ``context_len`` counts tokens in and out."""

    task: ModelTask
    context_len: int
    dims: int | None = None  # embedding size (embed models)


class Delta(NamedTuple):
    """New text and the token ids it came from (empty for servers that hide them)."""

    text: str
    token_ids: list[int]


@dataclass(frozen=True)
class Finish:
    reason: Literal["stop", "length"]
    usage: Usage


# --- requests ------------------------------------------------------------------------
class _Input(BaseModel):
    # Lenient about extra keys (a newer gateway may add some), strict about the ones read.
    model_config = ConfigDict(extra="ignore", frozen=True)


class EmbedInput(_Input):
    texts: list[str] = Field(min_length=1, max_length=MAX_EMBED_TEXTS)


class ChatInput(_Input):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1, le=1_048_576)


class CompleteInput(_Input):
    prompt: str
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1, le=1_048_576)


_INPUTS: dict[str, type[_Input]] = {
    "embed": EmbedInput,
    "chat": ChatInput,
    "complete": CompleteInput,
}


def parse_input(op: str, data: Mapping[str, Any]) -> _Input:
    """``input`` of an :class:`InferenceWork` as its op's model; :class:`BadInput` if not."""
    model = _INPUTS.get(op)
    if model is None:
        raise BadInput(f"unknown op {op!r}; expected embed, chat or complete")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        raise BadInput(f"{op} input: {where}: {first['msg']}") from exc


def render_plain_chat(messages: Sequence[ChatMessage]) -> str:
    """The chat prompt for models without a chat template (:data:`PLAIN_CHAT_TEMPLATE`):
    ``"system: You are terse.\nuser: Hello\nassistant:"``."""
    return "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"


# --- backends ------------------------------------------------------------------------
class Backend(ABC):
    """A loaded model. Subclasses load in ``__init__`` and set :attr:`info`.

    ``stop`` (in :meth:`generate` and :meth:`answer`) is called between tokens; when it
    returns a reason the run ends with :class:`Interrupted` — a cancel or a deadline.
    """

    info: ModelInfo

    def served_model(self, *, name: str, price: int) -> ServedModel:
        """How a node advertises this model in ``NodeRegister.models``."""
        return ServedModel(
            name=name,
            task=self.info.task,
            price=price,
            context_len=self.info.context_len,
            dims=self.info.dims,
        )

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Unit-norm vectors for ``texts`` (in order) and the prompt tokens they took."""
        raise BadInput("this model generates text; it does not embed")

    def generate(
        self, op: Op, data: Mapping[str, Any], *, stop: StopCheck | None = None
    ) -> Generator[Delta, None, Finish]:
        """Greedy-decode a ``chat`` or ``complete`` request, yielding :class:`Delta` as the
        tokens come; returns (``StopIteration.value``) the finish reason and usage."""
        raise BadInput("this model embeds text; it does not generate")

    @abstractmethod
    def close(self) -> None:
        """Free what the backend holds (connections; memory goes with the process)."""

    def answer(
        self, op: str, data: Mapping[str, Any], *, stop: StopCheck | None = None
    ) -> Iterator[InferenceChunk]:
        """The wire answer to one request: ``delta`` chunks, then ``done`` — or ``error``."""
        try:
            if op == "embed":
                if self.info.task != "embed":
                    raise BadInput("this model generates text; it does not embed")
                request = parse_input(op, data)
                if not isinstance(request, EmbedInput):  # pragma: no cover - parse_input's map
                    raise BadInput("embed input must hold texts")
                vectors, prompt_tokens = self.embed(request.texts)
                yield InferenceChunk(
                    type="done", embeddings=vectors, usage=Usage(prompt_tokens=prompt_tokens)
                )
                return
            if op not in ("chat", "complete"):
                raise BadInput(f"unknown op {op!r}; expected embed, chat or complete")
            if self.info.task != "generate":
                raise BadInput("this model embeds text; it does not generate")
            run = self.generate("chat" if op == "chat" else "complete", data, stop=stop)
            while True:
                try:
                    delta = next(run)
                except StopIteration as end:
                    finish: Finish = end.value
                    break
                yield InferenceChunk(type="delta", text=delta.text, token_ids=delta.token_ids)
            yield InferenceChunk(type="done", finish_reason=finish.reason, usage=finish.usage)
        except Exception as exc:  # every failure is answered, never raised into the stream
            yield error_chunk(exc)


def error_chunk(exc: BaseException) -> InferenceChunk:
    """An ``error`` chunk naming ``exc`` (its own message for our errors, else its type)."""
    message = exc.detail if isinstance(exc, QuackMeshError) else f"{type(exc).__name__}: {exc}"
    return InferenceChunk(type="error", message=message[:2000])
