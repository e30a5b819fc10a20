"""One place that maps errors to RFC 9457 ``application/problem+json`` responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from quackmesh.core.errors import QuackMeshError, RateLimited, ValidationFailed

__all__ = ["PROBLEM_JSON", "install_problem_handlers", "problem_response"]

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("quackmesh.coordinator")


def problem_response(exc: QuackMeshError, request: Request | None = None) -> JSONResponse:
    body = exc.to_problem()
    if request is not None:
        body.setdefault("instance", request.url.path)
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(body, status_code=exc.status, media_type=PROBLEM_JSON, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(QuackMeshError)
    async def _domain(request: Request, exc: QuackMeshError) -> JSONResponse:
        if exc.status >= 500:
            log.error("domain error", extra={"code": exc.code, "detail": exc.detail})
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                "message": err.get("msg", ""),
            }
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return problem_response(ValidationFailed(detail, errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {
            "type": "about:blank",
            "title": str(exc.detail),
            "status": exc.status_code,
            "code": "http_error",
            "detail": str(exc.detail),
            "instance": request.url.path,
        }
        return JSONResponse(
            body, status_code=exc.status_code, media_type=PROBLEM_JSON, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        body = {
            "type": "/problems/internal_error",
            "title": "Internal error",
            "status": 500,
            "code": "internal_error",
            "detail": "the coordinator hit an unexpected error; see its log",
            "instance": request.url.path,
        }
        return JSONResponse(body, status_code=500, media_type=PROBLEM_JSON)
