"""Layer 5: the web dashboard, served by the coordinator itself.

``install(app)`` adds ``GET /`` (the single page) and ``/static/...`` (its stylesheet and
ES modules). The page is plain HTML, CSS and JavaScript modules written for QuackMesh:
no build step, no framework, no third-party files; charts and the network view are
drawn by our own code (``static/js/charts.js``, ``static/js/netview.js``). It reads the
same HTTP API as the SDK; a browser signs in with EIP-4361 (Sign-In with Ethereum) and
then carries the coordinator's session cookie instead of signing each request.

The HTML goes out with a strict Content-Security-Policy: scripts and styles only from
this origin (so no inline script or ``style`` attribute can run even if text from the
network ended up in the page), connections only back to this origin (HTTP and the
events WebSocket), no framing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_DIR", "install"]

STATIC_DIR = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self' ws: wss:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ]
)

# Assets change with the package, not by URL, so browsers revalidate them (cheap: ETag).
_ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
_PAGE_HEADERS = {
    **_ASSET_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class _Assets(StaticFiles):
    """StaticFiles that marks every asset ``nosniff`` (module scripts need a JS MIME type)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_ASSET_HEADERS)
        return response


def install(app: FastAPI) -> None:
    """Serve the dashboard from ``app``: the page at ``/``, its assets under ``/static``."""
    index = STATIC_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    app.mount("/static", _Assets(directory=STATIC_DIR), name="dashboard-static")
