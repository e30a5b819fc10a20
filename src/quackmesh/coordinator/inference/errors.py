"""Errors of the OpenAI-compatible gateway, answered in OpenAI's shape, not problem+json.

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}`` (the official SDK
turns it into ``APIStatusError`` subclasses by status), so the gateway routes use
:class:`OpenAIRoute`, which maps every error raised while handling them — this module's
:class:`GatewayError`, request validation, the domain errors of
:mod:`quackmesh.core.errors` — to that shape. The node-facing and key endpoints keep the
coordinator's problem+json handler::

    GatewayError
    ├── 400 invalid_request_error   (unsupported_value, context_length_exceeded, …)
    ├── 401 invalid_request_error   invalid_api_key / missing_api_key
    ├── 402 insufficient_quota      insufficient_quota
    ├── 404 invalid_request_error   model_not_found
    ├── 429 requests                rate_limit_exceeded
    ├── 502 server_error            upstream_error   (every node that tried failed)
    └── 503 server_error            no_node_available
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError

from quackmesh.core.errors import (
    AuthError,
    InsufficientBalance,
    NotFound,
    QuackMeshError,
    RateLimited,
)

__all__ = [
    "GatewayError",
    "OpenAIRoute",
    "bad_request",
    "from_domain",
    "from_validation",
    "no_node",
    "openai_error_body",
]

log = logging.getLogger("quackmesh.coordinator.inference")


def openai_error_body(
    message: str, *, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class GatewayError(Exception):
    """An error answered to an OpenAI client (``status`` plus OpenAI's four fields)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type_
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def with_headers(self, headers: dict[str, str]) -> GatewayError:
        self.headers.update(headers)
        return self

    def body(self) -> dict[str, Any]:
        return openai_error_body(self.message, type_=self.type, code=self.code, param=self.param)

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(
            self.body(), status_code=self.status, headers={**self.headers, **(headers or {})}
        )


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(message, status=400, param=param, code=code)


def no_node(model: str, detail: str = "") -> GatewayError:
    message = f"no node serving {model!r} is available right now"
    return GatewayError(
        f"{message}: {detail}" if detail else message,
        status=503,
        type_="server_error",
        code="no_node_available",
    )


def from_domain(exc: QuackMeshError) -> GatewayError:
    """A domain error raised under a gateway route, in OpenAI's terms."""
    if isinstance(exc, InsufficientBalance):
        return GatewayError(
            f"{exc.detail}; add DUCK to the key's wallet",
            status=402,
            type_="insufficient_quota",
            code="insufficient_quota",
        )
    if isinstance(exc, RateLimited):
        return GatewayError(
            exc.detail,
            status=429,
            type_="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, AuthError):
        return GatewayError(exc.detail, status=401, code="invalid_api_key")
    if isinstance(exc, NotFound):
        return GatewayError(exc.detail, status=404, code=exc.code)
    if exc.status < 500:
        return GatewayError(exc.detail, status=400, code=exc.code, param=exc.context.get("field"))
    return GatewayError(exc.detail, status=exc.status, type_="server_error", code=exc.code)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or None


def from_validation(exc: RequestValidationError) -> GatewayError:
    """The first validation error, phrased as OpenAI phrases it."""
    errors = list(exc.errors())
    if not errors:
        return bad_request("invalid request body")
    err = errors[0]
    loc = tuple(err.get("loc", ()))
    param = _param(loc)
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}", param=param)
    if kind == "json_invalid":
        return bad_request(
            "We could not parse the JSON body of your request. The body must be JSON.",
            code="invalid_json",
        )
    if kind == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param=param)
    return bad_request(f"Invalid value for '{param}': {err.get('msg', 'invalid')}", param=param)


class OpenAIRoute(APIRoute):
    """An ``APIRoute`` whose errors are answered in OpenAI's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handle(request)
            except GatewayError as exc:
                return exc.response()
            except RequestValidationError as exc:
                return from_validation(exc).response()
            except ValidationError as exc:  # a model built while handling the request
                return from_validation(RequestValidationError(exc.errors())).response()
            except QuackMeshError as exc:
                return from_domain(exc).response()
            except Exception:
                log.exception("gateway error")
                return GatewayError(
                    "the coordinator hit an unexpected error; see its log",
                    status=500,
                    type_="server_error",
                    code="internal_error",
                ).response()

        return route
