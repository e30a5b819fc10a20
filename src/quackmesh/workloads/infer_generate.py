"""``infer.generate``: text generation in batch, on a model a provider node serves.

Unlike the other kinds this one does not run in the task sandbox: the model lives in the
node's serving process (``quackmesh node start --serve MODEL=BACKEND``: a local
transformers directory, or a local OpenAI-compatible server such as llama.cpp, vLLM or
Ollama). The node agent reads the prompts with :meth:`InferGenerate.check_inputs`, sends
each one to that process with :meth:`InferGenerate.generate`, and reports the assembled
result; the scheduler hands such a task only to a node that advertises ``params.model``
(rule ``model``), and honeypots of this kind go only to nodes serving the same model.

Decoding is **greedy** (temperature 0, always): an honest node serving the named weights
gives the same tokens as any other, so redundant runs, spot checks and honeypots compare
results exactly. A node serving other weights, or a quantised copy, answers other tokens
and is caught like any wrong result.

Input ``data``, one prompt per row, in input order (read as ``infer.embed`` reads texts):

* with ``params.column``: a CSV file (UTF-8, header row) or a Parquet file, and the prompt
  column's name;
* without it: a UTF-8 text file, one prompt per line.

An empty prompt is refused. ``params.mode`` is ``complete`` (each row is a raw prompt) or
``chat`` (each row is the user's message, after ``params.system`` if given).

Result (plain JSON)::

    {"model": str, "mode": "complete" | "chat", "max_tokens": int, "rows": N,
     "completions": [{"text": str, "token_ids": [int, ...],
                      "finish_reason": "stop" | "length"}, ...],
     "prompt_tokens": int, "completion_tokens": int}

``token_ids`` are empty when the backend is an OpenAI-compatible server that does not
return them; results are then compared by text.

Cost, in compute units::

    units = max(1, ceil(rows * max_tokens / 1000))

— an upper bound: every prompt may run to ``max_tokens``.

``agree()``: same model, mode, ``max_tokens`` and rows, and for every row the same text,
the same token ids and the same finish reason. Usage counts are informative only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from quackmesh.core.errors import ValidationFailed
from quackmesh.core.schemas import ModelName
from quackmesh.workloads.base import InputSummary, Workload, ceil_div
from quackmesh.workloads.compare import get_all
from quackmesh.workloads.infer_embed import EmbedInputSummary, read_texts
from quackmesh.workloads.registry import register

__all__ = [
    "MAX_PROMPT_CHARS",
    "MAX_TOKENS",
    "TOKENS_PER_UNIT",
    "Completer",
    "Completion",
    "InferGenerate",
    "InferGenerateSpec",
    "request_for",
]

MAX_TOKENS = 4096
"""The most new tokens one prompt may ask for."""
MAX_PROMPT_CHARS = 32_768
"""A prompt longer than this is refused at submission (the model's context still applies)."""
TOKENS_PER_UNIT = 1000
_FIELD = "inputs.data"


class InferGenerateSpec(BaseModel):
    """Params of ``infer.generate``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: ModelName = Field(description="the served model's name, as nodes advertise it")
    mode: Literal["complete", "chat"] = "complete"
    max_tokens: int = Field(default=128, ge=1, le=MAX_TOKENS)
    column: str | None = Field(default=None, min_length=1, description="CSV/Parquet column")
    system: str | None = Field(
        default=None, min_length=1, max_length=4000, description="chat mode: a system message"
    )


@dataclass(frozen=True)
class Completion:
    """One prompt's answer, as the serving process gave it."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


Completer = Callable[[str, dict[str, Any]], Completion]
"""``(op, input) -> Completion``: one greedy request to the serving process. ``op`` is
``complete`` or ``chat``; ``input`` is the wire input of that op. Raises on failure."""


def request_for(spec: InferGenerateSpec, prompt: str) -> tuple[str, dict[str, Any]]:
    """The serving request for one prompt: ``(op, input)``."""
    if spec.mode == "complete":
        return "complete", {"prompt": prompt, "max_tokens": spec.max_tokens}
    messages = [] if spec.system is None else [{"role": "system", "content": spec.system}]
    messages.append({"role": "user", "content": prompt})
    return "chat", {"messages": messages, "max_tokens": spec.max_tokens}


def _prompts(
    spec: InferGenerateSpec, path: Path
) -> tuple[list[str], Literal["text", "csv", "parquet"]]:
    texts, source = read_texts(path, spec.column)
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValidationFailed(f"prompt {i} is empty", field=_FIELD, row=i)
        if len(text) > MAX_PROMPT_CHARS:
            raise ValidationFailed(
                f"prompt {i} has {len(text)} characters, more than {MAX_PROMPT_CHARS}",
                field=_FIELD,
                row=i,
                max_chars=MAX_PROMPT_CHARS,
            )
    return texts, source


@register
class InferGenerate(Workload[InferGenerateSpec]):
    kind: ClassVar[str] = "infer.generate"
    spec_model: ClassVar[type[BaseModel]] = InferGenerateSpec
    description: ClassVar[str] = "Greedy text generation on a model a node serves (--serve)"

    def check_inputs(self, spec: InferGenerateSpec, inputs: Mapping[str, Path]) -> InputSummary:
        self.check_input_names(inputs)
        prompts, source = _prompts(spec, inputs["data"])
        return EmbedInputSummary(
            rows=len(prompts),
            columns=1,
            feature_names=(spec.column or "prompt",),
            format="parquet" if source == "parquet" else "csv",
            source=source,
        )

    def cost(self, spec: InferGenerateSpec, summary: InputSummary) -> int:
        return max(1, ceil_div(summary.rows * spec.max_tokens, TOKENS_PER_UNIT))

    def run(self, spec: InferGenerateSpec, inputs: Mapping[str, Path]) -> dict[str, Any]:
        raise RuntimeError(
            "infer.generate runs on a node serving the model (quackmesh node start --serve),"
            " not in the task sandbox"
        )

    def generate(
        self,
        spec: InferGenerateSpec,
        inputs: Mapping[str, Path],
        complete: Completer,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Answer every prompt with ``complete``, in order; the result of the module docs.

        ``progress(done, total)`` is called after each prompt.
        """
        self.check_input_names(inputs)
        prompts, _ = _prompts(spec, inputs["data"])
        completions: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = 0
        for i, prompt in enumerate(prompts):
            op, data = request_for(spec, prompt)
            answer = complete(op, data)
            completions.append(
                {
                    "text": answer.text,
                    "token_ids": list(answer.token_ids),
                    "finish_reason": answer.finish_reason,
                }
            )
            prompt_tokens += answer.prompt_tokens
            completion_tokens += answer.completion_tokens
            if progress is not None:
                progress(i + 1, len(prompts))
        return {
            "model": spec.model,
            "mode": spec.mode,
            "max_tokens": spec.max_tokens,
            "rows": len(prompts),
            "completions": completions,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        }

    def agree(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        keys = ("model", "mode", "max_tokens", "rows", "completions")
        ra, rb = get_all(a, keys), get_all(b, keys)
        if ra is None or rb is None:
            return False
        if any(ra[k] != rb[k] for k in ("model", "mode", "max_tokens", "rows")):
            return False
        ca, cb = ra["completions"], rb["completions"]
        if not isinstance(ca, list) or not isinstance(cb, list):
            return False
        if len(ca) != ra["rows"] or len(cb) != ra["rows"]:
            return False
        return all(_same(x, y) for x, y in zip(ca, cb, strict=True))


def _same(x: Any, y: Any) -> bool:
    """Two rows' answers are the same greedy decode."""
    if not isinstance(x, Mapping) or not isinstance(y, Mapping):
        return False
    fields = ("text", "token_ids", "finish_reason")
    rx, ry = get_all(x, fields), get_all(y, fields)
    if rx is None or ry is None:
        return False
    if not isinstance(rx["text"], str) or not isinstance(rx["token_ids"], list):
        return False
    return all(rx[k] == ry[k] for k in fields)
