"""CLI commands on the OpenAI-compatible gateway: ``quackmesh infer embed`` and
``quackmesh chat``.

They speak the same HTTP API the official ``openai`` client does (``/v1/embeddings``,
``/v1/chat/completions`` with server-sent events), with an API key from ``--key`` or
``QUACKMESH_API_KEY`` (``quackmesh keys create`` makes one)::

    export QUACKMESH_API_KEY=sk-qm-...
    quackmesh infer embed "a duck swims" "a duck is swimming"
    quackmesh chat tiny                      # interactive, streamed; /exit or Ctrl-D ends
    quackmesh chat tiny --message "hello"    # one answer, streamed, then exit
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

import httpx
import typer

from quackmesh.cli.common import DEFAULT_COORDINATOR, console, die, err_console, print_json
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.cli.infer import app as infer_app
from quackmesh.core.money import format_duck

__all__ = ["Gateway", "GatewayFailed", "chat", "embed"]

KEY_ENV = "QUACKMESH_API_KEY"
PRICE_HEADER = "X-QuackMesh-Price"

CoordOpt = Annotated[
    str, typer.Option("--coordinator", "-c", help="coordinator URL \\[env QUACKMESH_COORDINATOR]")
]
KeyOpt = Annotated[
    str | None, typer.Option("--key", help="gateway API key \\[env QUACKMESH_API_KEY]")
]


class GatewayFailed(Exception):
    """An OpenAI-style error answer: ``status``, ``code`` and the message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Reply:
    """One streamed chat answer as it arrived."""

    text: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    price: int | None = None
    finish_reason: str | None = None


class Gateway:
    """A minimal client of the gateway (the CLI needs no ``openai`` package)."""

    def __init__(self, url: str, key: str, *, timeout: float = 300.0) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            error = response.json()["error"]
            raise GatewayFailed(response.status_code, str(error.get("code")), error["message"])
        except (ValueError, KeyError, TypeError):
            raise GatewayFailed(response.status_code, "http", response.text[:300]) from None

    def embeddings(self, texts: list[str], *, model: str) -> tuple[list[list[float]], int | None]:
        response = self._http.post("/v1/embeddings", json={"model": model, "input": texts})
        self._raise(response)
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        price = response.headers.get(PRICE_HEADER)
        return [d["embedding"] for d in data], int(price) if price else None

    def chat(
        self, messages: list[dict[str, str]], *, model: str, max_tokens: int
    ) -> Iterator[str | Reply]:
        """Yield each text delta as it streams in, then the whole :class:`Reply`."""
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        reply = Reply()
        with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code >= 400:
                response.read()
                self._raise(response)
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if "error" in chunk:
                    error = chunk["error"]
                    raise GatewayFailed(502, str(error.get("code")), str(error.get("message")))
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content") or ""
                    if delta:
                        reply.text += delta
                        yield delta
                    reply.finish_reason = choice.get("finish_reason") or reply.finish_reason
                if chunk.get("usage"):
                    reply.usage = dict(chunk["usage"])
                extra = chunk.get("quackmesh") or {}
                if isinstance(extra, dict) and "price" in extra:
                    reply.price = int(extra["price"])
        yield reply


def _key(key: str | None) -> str:
    key = key or os.environ.get(KEY_ENV)
    if not key:
        die(
            f"no API key: pass --key or set {KEY_ENV} (make one with `quackmesh keys create`)",
            ExitCode.USAGE,
        )
    return key


def _fail(exc: GatewayFailed | httpx.HTTPError) -> None:
    if isinstance(exc, httpx.HTTPError):
        die(f"the gateway could not be reached: {exc}", ExitCode.UNREACHABLE)
    code = ExitCode.INSUFFICIENT_BALANCE if exc.status == 402 else ExitCode.REJECTED
    die(f"{exc} ({exc.code}, HTTP {exc.status})", code)


def _cosine(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


@infer_app.command("embed")
def embed(
    texts: Annotated[list[str], typer.Argument(help="texts to embed")],
    model: Annotated[str, typer.Option("--model", "-m", help="embedding model")] = "minilm",
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    key: KeyOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the vectors as JSON")] = False,
) -> None:
    """Embed TEXTS through the gateway; prints their dimensions, cosine similarities and
    the price (or, with --json, the vectors)."""
    try:
        with Gateway(coordinator, _key(key)) as gateway:
            vectors, price = gateway.embeddings(list(texts), model=model)
    except (GatewayFailed, httpx.HTTPError) as exc:
        _fail(exc)
        return
    if json_out:
        print_json({"model": model, "embeddings": vectors, "price": price})
        return
    console.print(
        f"{len(vectors)} vector(s) of {len(vectors[0]) if vectors else 0} dimensions from "
        f"{model}; paid {format_duck(price) if price is not None else 'unknown'}"
    )
    if len(vectors) > 1:
        for i, a in enumerate(vectors):
            row = "  ".join(f"{_cosine(a, b):+.3f}" for b in vectors)
            console.print(f"  [{i}] {row}  {texts[i][:40]!r}", highlight=False)


def chat(
    model: Annotated[str, typer.Argument(help="a model served on the network (`/v1/models`)")],
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="ask once and exit (no prompt)")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="a system message")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 256,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    key: KeyOpt = None,
) -> None:
    """Chat with MODEL, streamed token by token (greedy decoding). Interactive unless
    --message is given; /exit or Ctrl-D ends; each answer shows its tokens and price."""
    api_key = _key(key)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    interactive = message is None
    total = 0
    with Gateway(coordinator, api_key) as gateway:
        while True:
            if interactive:
                try:
                    text = input("you> ")
                except EOFError:
                    break
                if text.strip() in ("/exit", "/quit"):
                    break
                if not text.strip():
                    continue
            else:
                text = message or ""
            history.append({"role": "user", "content": text})
            if interactive:
                sys.stdout.write(f"{model}> ")
            reply = Reply()
            try:
                for item in gateway.chat(history, model=model, max_tokens=max_tokens):
                    if isinstance(item, Reply):
                        reply = item
                    else:
                        sys.stdout.write(item)
                        sys.stdout.flush()
            except (GatewayFailed, httpx.HTTPError) as exc:
                sys.stdout.write("\n")
                _fail(exc)
            sys.stdout.write("\n")
            history.append({"role": "assistant", "content": reply.text})
            total += reply.price or 0
            tokens = reply.usage.get("completion_tokens", 0)
            err_console.print(
                f"[dim]{tokens} tokens, {reply.finish_reason or '?'}; paid "
                f"{format_duck(reply.price) if reply.price is not None else 'unknown'}[/]",
                highlight=False,
            )
            if not interactive:
                break
    if interactive:
        err_console.print(f"[dim]paid {format_duck(total)} in all[/]", highlight=False)
