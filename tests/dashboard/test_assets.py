"""The dashboard's serving and its static assets, without a browser (fast).

The browser tests (test_browser.py) show that the pages work; these pin the properties a
browser would not complain about: security headers, MIME types, no inline code, no
third-party files, no HTML built from strings, and that the wheel ships every asset.
"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import quackmesh.dashboard as dashboard
from quackmesh.dashboard import STATIC_DIR, install

ROOT = Path(__file__).resolve().parents[2]
ASSETS = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())
SCRIPTS = [p for p in ASSETS if p.suffix == ".js"]


@pytest.fixture(scope="module")
def http() -> TestClient:
    app = FastAPI()
    install(app)
    return TestClient(app)


def test_exported_names_are_sorted() -> None:
    assert dashboard.__all__ == sorted(dashboard.__all__)


def test_page_is_served_at_root_with_a_strict_csp(http: TestClient) -> None:
    res = http.get("/")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    csp = res.headers["content-security-policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self' ws: wss:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize("path", ASSETS, ids=lambda p: p.relative_to(STATIC_DIR).as_posix())
def test_every_asset_is_served_with_its_type_and_nosniff(http: TestClient, path: Path) -> None:
    res = http.get(f"/static/{path.relative_to(STATIC_DIR).as_posix()}")
    assert res.status_code == 200
    expected = {".js": "javascript", ".css": "text/css", ".html": "text/html", ".svg": "svg"}
    assert expected[path.suffix] in res.headers["content-type"]
    assert res.headers["x-content-type-options"] == "nosniff"


def test_unknown_asset_is_a_404(http: TestClient) -> None:
    assert http.get("/static/js/nope.js").status_code == 404


class _Inline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if "style" in names or any(n.startswith("on") for n in names):
            self.problems.append(f"<{tag}> has an inline style or handler")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.problems.append("<script> without src")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline script text")


def test_index_html_has_no_inline_code_or_styles() -> None:
    parser = _Inline()
    parser.feed((STATIC_DIR / "index.html").read_text())
    assert parser.problems == []


def test_no_third_party_files_or_urls() -> None:
    # The SVG namespace is an identifier, not a fetch.
    allowed = "http://www.w3.org/2000/svg"
    for path in ASSETS:
        text = path.read_text().replace(allowed, "")
        assert not re.search(r"https?://|//cdn|@import", text), path


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.relative_to(STATIC_DIR).as_posix())
def test_scripts_never_build_html_from_strings(path: Path) -> None:
    """Text from the network only ever becomes a text node (dom.js), so no markup runs."""
    text = re.sub(r"^\s*//.*$", "", path.read_text(), flags=re.MULTILINE)  # not comments
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert banned not in text, f"{path.name} uses {banned}"
    assert not re.search(r"new Function\(|setAttribute\(\s*['\"]style", text), path.name


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.relative_to(STATIC_DIR).as_posix())
def test_module_imports_resolve(path: Path) -> None:
    for target in re.findall(r'from "(\.[^"]+)"', path.read_text()):
        assert (path.parent / target).resolve().is_file(), f"{path.name} imports {target}"


def test_wheel_ships_every_asset() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["quackmesh"]
    package = STATIC_DIR.parent.parent
    for path in ASSETS:
        rel = path.relative_to(package).as_posix()
        assert any(fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs), rel
