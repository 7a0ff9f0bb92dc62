"""Headless Chromium (Debian's package, driven by Playwright) against the real Airflow stack.

The browser is the system's ``/usr/bin/chromium`` (``NURO_ML_CHROMIUM`` overrides it), never a
browser downloaded by ``playwright install``. When it is missing the tests fail, not skip:
``.ci/run`` installs the ``chromium`` package, so a missing browser is a broken environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.airflow_stack import ARTIFACTS_DIR, AirflowStack

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

CHROMIUM = Path(os.environ.get("NURO_ML_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
SCREENSHOTS = ARTIFACTS_DIR / "browser"
VIEWPORT: ViewportSize = {"width": 1400, "height": 1300}


# Package scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, which would break every later test that calls asyncio.run().
@pytest.fixture(scope="package", autouse=True)
def chromium() -> Iterator[Browser]:
    """The browser, launched once; checked before anything else starts so a missing one fails fast."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}. The browser tests use Debian's chromium package: "
            "install it with `apt-get install chromium` (.ci/run does this), or point NURO_ML_CHROMIUM "
            "at a Chromium binary.",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        pytest.fail(
            f"Playwright is not installed ({err}); run `make setup` (uv sync --all-extras)", pytrace=False
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_context(chromium: Browser) -> Iterator[BrowserContext]:
    """A fresh context (own cookies) per test."""
    context = chromium.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    try:
        yield context
    finally:
        context.close()


def login(context: BrowserContext, stack: AirflowStack, user: str) -> Page:
    """Log in through Airflow's login page, as a person would; returns the page, now on the UI."""
    page = context.new_page()
    page.goto(f"{stack.base_url}/")
    page.wait_for_url("**/auth/login**")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", stack.passwords[user])
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url)
    return page


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot to ``test-artifacts/browser/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
