"""The risk calculator page in a real browser: Debian's Chromium driven by Playwright.

Playwright's Python package drives ``/usr/bin/chromium`` (``executable_path``);
no browser is ever downloaded. Screenshots go to ``build/``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.schemas import PATIENT_EXAMPLE
from app.testing import REPO_ROOT, running_server
from tests._tools import require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "page-test-key-0123456789abcdef"
BUILD = REPO_ROOT / "build"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = require_tool("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


def _api(url: str, key: str | None = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    request = urllib.request.Request(
        url, data=json.dumps(body or PATIENT_EXAMPLE).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def test_the_page_shows_the_apis_probability_and_the_fields_error(
    browser: Any, artifact_path: Path, tmp_path: Path
) -> None:
    BUILD.mkdir(exist_ok=True)
    requests: list[str] = []
    with running_server(artifact_path, log_dir=tmp_path) as server:
        page = browser.new_page(viewport={"width": 360, "height": 800})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(server.url + "/")
        assert page.get_by_text("Not a medical device").is_visible()
        # Every feature has a labelled control holding the example patient.
        for name, value in PATIENT_EXAMPLE.items():
            assert float(page.locator(f"#f-{name}").input_value()) == float(value)
            assert page.locator(f"label[for=f-{name}]").count() == 1
        page.keyboard.press("Tab")  # keyboard: reach and press the button without a mouse
        page.locator("button[type=submit]").focus()
        page.keyboard.press("Enter")
        page.locator("#chart").wait_for()
        api = _api(server.url + "/predict/explain")
        shown = page.locator("#probability")
        assert float(shown.get_attribute("data-value") or "nan") == api["probability"]
        assert shown.inner_text() == f"{api['probability']:.4f}"
        assert page.locator("#chart rect").count() == 13
        lower, upper = api["risk_interval"]["lower"], api["risk_interval"]["upper"]
        assert (
            f"{lower * 100:.1f} % to {upper * 100:.1f} %" in page.locator("#interval").inner_text()
        )
        # No horizontal scrolling at 360 px.
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.screenshot(path=str(BUILD / "calculator.png"), full_page=True)

        page.fill("#f-serum_cholesterol", "2400")
        page.locator("button[type=submit]").click()
        error = page.locator("#err-serum_cholesterol")
        error.wait_for(state="visible")
        assert "700" in error.inner_text()  # the API's own message, with the allowed range
        assert page.locator("#f-serum_cholesterol").get_attribute("aria-invalid") == "true"
        page.screenshot(path=str(BUILD / "calculator-error.png"), full_page=True)

        # "not measured" sends null: the model averages over thal, whose bar is exactly 0.
        page.fill("#f-serum_cholesterol", "245")
        page.check("#nm-thal")
        page.locator("button[type=submit]").click()
        page.locator("#chart text", has_text="thal = not measured: +0.0 pts").wait_for()
        api = _api(server.url + "/predict/explain", body={**PATIENT_EXAMPLE, "thal": None})
        assert api["missing_features"] == ["thal"]
        assert (
            float(page.locator("#probability").get_attribute("data-value") or "nan")
            == (api["probability"])
        )
    assert all(url.startswith(server.url) for url in requests), requests


def test_with_an_api_key_the_page_loads_and_asks_for_it(
    browser: Any, artifact_path: Path, tmp_path: Path
) -> None:
    with running_server(artifact_path, log_dir=tmp_path, env={"HEART_API_KEY": KEY}) as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        key_box = page.locator("#apikey")
        assert key_box.is_visible()
        page.locator("button[type=submit]").click()
        page.locator("#err-apikey").wait_for(state="visible")
        key_box.fill(KEY)
        page.locator("button[type=submit]").click()
        page.locator("#chart").wait_for()
        api = _api(server.url + "/predict/explain", KEY)
        assert (
            float(page.locator("#probability").get_attribute("data-value") or "nan")
            == (api["probability"])
        )
        stored = page.evaluate("[localStorage.length, sessionStorage.length, document.cookie]")
        assert stored == [0, 0, ""]
