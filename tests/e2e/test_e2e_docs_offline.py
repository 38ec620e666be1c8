"""/docs and /redoc render in a real browser with every other host unreachable (issue 12).

Headless Chromium (Debian's package, never a downloaded browser) driven by
Playwright loads each page from a live server. Every request to a host other
than the server is recorded and aborted, and the browser's resolver maps every
other name to nothing, so a page that still needs a CDN shows up both as a
recorded request and as a page without operations.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from app.testing import RunningServer, running_server
from tests._tools import require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")


@pytest.fixture(scope="module")
def server(artifact_path: Path) -> Iterator[RunningServer]:
    with running_server(artifact_path) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = require_tool("chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--no-sandbox"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def operations(server: RunningServer) -> dict[str, str]:
    """operationId -> path of every documented operation."""
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/openapi.json", timeout=10) as response:
        document = json.load(response)
    return {
        operation["operationId"]: path
        for path, methods in document["paths"].items()
        for operation in methods.values()
    }


def _load(
    browser: Any, server: RunningServer, path: str, ready: str
) -> tuple[Any, list[str], list[str]]:
    """Open ``path`` and wait for ``ready`` (a selector the rendered page has); return the
    page, the foreign requests it tried and its console errors."""
    page = browser.new_page()
    foreign: list[str] = []
    errors: list[str] = []

    def only_this_host(route: Any) -> None:
        if urlsplit(route.request.url).netloc == f"127.0.0.1:{server.port}":
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_host)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{server.url}{path}", wait_until="networkidle")
    page.wait_for_selector(ready, timeout=20_000)
    return page, foreign, errors


def _attribute(page: Any, selector: str, name: str) -> list[str]:
    """Attribute ``name`` of every element ``selector`` matches ('' where it has none)."""
    return [element.get_attribute(name) or "" for element in page.query_selector_all(selector)]


def test_swagger_ui_lists_every_operation_offline(
    browser: Any, server: RunningServer, operations: dict[str, str]
) -> None:
    page, foreign, errors = _load(browser, server, "/docs", ".opblock")
    shown = set(_attribute(page, ".opblock-summary-path", "data-path"))
    assert foreign == [], f"/docs tried to reach other hosts: {foreign}"
    assert set(operations.values()) <= shown, set(operations.values()) - shown
    assert page.query_selector(".swagger-ui .info .title") is not None
    assert not [e for e in errors if "Failed to load" in e], errors
    page.close()


def test_redoc_lists_every_operation_offline(
    browser: Any, server: RunningServer, operations: dict[str, str]
) -> None:
    operation = "[data-section-id*='operation/']"
    page, foreign, _ = _load(browser, server, "/redoc", operation)
    sections = {
        section.rsplit("operation/", 1)[-1]
        for section in _attribute(page, operation, "data-section-id")
    }
    assert foreign == [], f"/redoc tried to reach other hosts: {foreign}"
    assert set(operations) <= sections, set(operations) - sections
    page.close()
