"""The dashboard in front of the session engine, with the systems its tests drive, and a real browser.

The browser is Debian's Chromium (installed by ``make install``), driven by Playwright; Playwright's own
browser download is not used. Screenshots go to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright

from podium.dashboard import DashboardConfig, create_app
from podium.gateway import TokenIssuer, TokenVerifier
from podium.runtime import ThreadedServer
from podium.testing import Deployer, PodiumEnv, harness_issuer
from podium.testing.plugin import EngineHandle

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class DashboardEnv:
    """A dashboard on a free port and the systems behind it."""

    url: str
    engine: PodiumEnv
    issuer: TokenIssuer

    def token(self, *scopes: str, subject: str = "ops-test") -> str:
        return self.issuer.issue(subject, scopes or ("dashboard:operator",), timedelta(minutes=15))

    def sign_in_link(self, path: str = "/") -> str:
        joiner = "&" if "?" in path else "?"
        return f"{self.url}{path}{joiner}token={self.token()}"


@pytest.fixture(scope="session")
def dashboard(podium_engine: EngineHandle, podium_deployer: Deployer) -> Iterator[DashboardEnv]:
    # Imported here: the apps read the engine's request-identity key when they are built.
    from tests.integration.lab import app as lab
    from tests.systems.apps import insurance, travel

    for app in (lab, travel, insurance):
        podium_deployer.deploy(app)
    issuer = TokenIssuer(harness_issuer())
    config = DashboardConfig(
        admin_url=podium_engine.admin_url,
        ingress_url=podium_engine.ingress_url,
        verifier=TokenVerifier({issuer.key.key_id: issuer.key.public_key}),
    )
    server = ThreadedServer(create_app(config))
    server.start()
    import httpx

    with httpx.Client(base_url=podium_engine.ingress_url, timeout=60) as client:
        engine = PodiumEnv(podium_engine.ingress_url, podium_engine.admin_url, "", client)
        try:
            yield DashboardEnv(server.url, engine, issuer)
        finally:
            server.stop()


def browse(scenario: Coroutine[Any, Any, None]) -> None:
    """Run a browser scenario on a thread of its own, and raise what it raised.

    Playwright drives its driver with greenlets; on Python 3.11 that leaves the thread's recursion
    accounting off, and every module compiled on that thread afterwards fails ("AST constructor
    recursion depth mismatch"). A thread per scenario keeps the test session's own thread clean.
    """
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(scenario)
        except BaseException as exc:  # re-raised on the test's thread
            failures.append(exc)

    thread = threading.Thread(target=run, name="browser")
    thread.start()
    thread.join()
    if failures:
        raise failures[0]


@contextlib.asynccontextmanager
async def signed_in(dashboard: DashboardEnv) -> AsyncIterator[Page]:
    """A browser page that opened the sign-in link, so it holds the session cookie.

    Playwright's async API, in a scenario run by :func:`browse`.
    """
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is missing: `make install` installs it (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            await page.goto(dashboard.sign_in_link())
            yield page
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def keep_marker(page: Page) -> None:
    """Mark the page's window: the mark is gone if the page is ever reloaded or left."""
    await page.evaluate("window.__podiumMarker = 'not reloaded'")


async def was_not_reloaded(page: Page) -> bool:
    marker: Any = await page.evaluate("window.__podiumMarker")
    return bool(marker == "not reloaded")
