"""``/docs`` (Swagger UI) and ``/redoc`` served from files inside the installed package.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, the favicon from
fastapi.tiangolo.com and ReDoc's fonts from Google: on a network without
internet access (many hospital networks) they render blank. These pages use
the same FastAPI HTML generators pointed at the copies shipped by the
``fastapi-offline`` package (swagger-ui-dist 5 and redoc 2 bundles, MIT
licensed like their upstreams; versions in the README), with Google fonts and
Swagger UI's online validator badge switched off, so no request leaves the host.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypedDict

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

ASSETS_URL: Final[str] = "/docs-assets"
ASSETS_DIR: Final[Path] = Path(fastapi_offline.__file__).parent / "static"
DOCS_URL: Final[str] = "/docs"
REDOC_URL: Final[str] = "/redoc"
OAUTH2_REDIRECT_URL: Final[str] = "/docs/oauth2-redirect"
#: Every path these pages add: the middleware's route labels and the docs tests use them.
PATHS: Final[frozenset[str]] = frozenset({DOCS_URL, REDOC_URL, OAUTH2_REDIRECT_URL})
#: The pages may load nothing from other hosts. ReDoc's bundle still links its
#: "API docs by Redocly" logo from cdn.redoc.ly; this policy stops the browser from
#: even trying. Inline script and style are the generators' own; blob: is ReDoc's
#: search worker.
CONTENT_SECURITY_POLICY: Final[str] = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
)


class _Document(TypedDict):
    openapi_url: str
    title: str


def add_offline_docs(app: FastAPI) -> None:
    """Add the pages to an app created with ``docs_url=None, redoc_url=None``."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with docs_url=None and redoc_url=None")
    if not (ASSETS_DIR / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"the documentation assets are missing from {ASSETS_DIR}")
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    def document(root: str, viewer: str) -> _Document:
        """What both pages are given: the document's URL and a title naming the viewer."""
        return _Document(openapi_url=f"{root}{openapi_url}", title=f"{app.title} - {viewer}")

    def swagger_ui(root: str) -> HTMLResponse:
        assets = f"{root}{ASSETS_URL}"
        return get_swagger_ui_html(
            **document(root, "Swagger UI"),
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            # The validator badge would fetch from validator.swagger.io.
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    def redoc(root: str) -> HTMLResponse:
        assets = f"{root}{ASSETS_URL}"
        return get_redoc_html(
            **document(root, "ReDoc"),
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )

    for path, render in ((DOCS_URL, swagger_ui), (REDOC_URL, redoc)):
        app.add_api_route(path, _self_contained(render), include_in_schema=False)

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def _self_contained(
    render: Callable[[str], HTMLResponse],
) -> Callable[[Request], Awaitable[HTMLResponse]]:
    """A page handler: ``render`` for the request's root path (behind a proxy prefix),
    with the policy that keeps the page from loading anything from another host."""

    async def page(request: Request) -> HTMLResponse:
        response = render(request.scope.get("root_path", ""))
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    return page
