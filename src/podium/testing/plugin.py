"""pytest plugin: a real restate-server per test session, with no Docker.

Fixtures: ``podium_engine`` (session), ``podium_deployer`` (session), ``podium_env`` (needs a
``podium_app`` fixture that returns the ASGI app under test), ``podium_gateway`` (session: the public door
in front of the session engine). Options:

- ``--podium-ingress-url URL --podium-admin-url URL``: use an engine that is already running
  (also read from ``PODIUM_TEST_INGRESS_URL`` / ``PODIUM_TEST_ADMIN_URL``);
- ``--podium-follow-logs``: stream the engine's log to stderr while tests run.

When a test that used the engine fails, the tail of the engine's log is attached to its report.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.runtime import Engine
from podium.testing import (
    Deployer,
    GatewayEnv,
    PodiumEnv,
    engine_from_environment,
    harness_identity,
    running_gateway,
    stuck_invocations,
    test_engine_config,
)

_LOG_KEY = pytest.StashKey[Path]()
_STUCK_KEY = pytest.StashKey[list[dict[str, Any]]]()


@dataclass(frozen=True)
class EngineHandle:
    """The session's engine: its URLs, and the process when the harness started it."""

    ingress_url: str
    admin_url: str
    engine: Engine | None
    log_file: Path | None


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the plugin's command-line options."""
    group = parser.getgroup("podium", "podium test harness")
    group.addoption("--podium-ingress-url", default=None, help="Use a running engine's ingress URL.")
    group.addoption("--podium-admin-url", default=None, help="Use a running engine's admin URL.")
    group.addoption(
        "--podium-follow-logs", action="store_true", help="Stream the engine's log to stderr while tests run."
    )


# The request-identity key is made when pytest loads this plugin, before it imports any conftest or test
# module: those build their apps (podium.app) at import, and an app reads the key then.
harness_identity()


def _follow(path: Path, stop: threading.Event) -> None:
    with path.open("rb") as handle:
        while not stop.is_set():
            line = handle.readline()
            if line:
                sys.stderr.write("[restate] " + line.decode("utf-8", "replace"))
            else:
                stop.wait(0.2)


@pytest.fixture(scope="session")
def podium_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineHandle]:
    """A real restate-server for the whole session (or the external one given by options)."""
    ingress = request.config.getoption("--podium-ingress-url")
    admin = request.config.getoption("--podium-admin-url")
    external = (ingress, admin) if ingress and admin else engine_from_environment()
    if external is not None:
        yield EngineHandle(ingress_url=external[0], admin_url=external[1], engine=None, log_file=None)
        return
    engine = Engine(test_engine_config(tmp_path_factory.mktemp("podium-engine")))
    engine.start()
    request.config.stash[_LOG_KEY] = engine.log_file
    stop = threading.Event()
    if request.config.getoption("--podium-follow-logs"):
        threading.Thread(target=_follow, args=(engine.log_file, stop), daemon=True).start()
    try:
        yield EngineHandle(engine.ingress_url, engine.admin_url, engine, engine.log_file)
        # What the engine still retries or has paused needs a look even when every test passed.
        request.config.stash[_STUCK_KEY] = stuck_invocations(engine.admin_url)
    finally:
        stop.set()
        engine.stop()


@pytest.fixture(scope="session")
def podium_gateway(podium_engine: EngineHandle) -> Iterator[GatewayEnv]:
    """The gateway in front of the session engine: tokens, scopes, public handlers only."""
    with running_gateway(podium_engine.ingress_url, podium_engine.admin_url) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def podium_private_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An engine for this module alone (crash tests kill and restart it without disturbing others)."""
    engine = Engine(test_engine_config(tmp_path_factory.mktemp("podium-private-engine")))
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def podium_deployer(podium_engine: EngineHandle) -> Iterator[Deployer]:
    """Serves each app under test once per session and registers it with the engine."""
    deployer = Deployer(podium_engine.admin_url)
    try:
        yield deployer
    finally:
        deployer.close()


@pytest.fixture(scope="session")
def podium_client(podium_engine: EngineHandle) -> Iterator[httpx.Client]:
    """An HTTP client on the ingress, shared by the session."""
    with httpx.Client(base_url=podium_engine.ingress_url, timeout=60.0) as client:
        yield client


@pytest.fixture
def podium_app() -> Any:
    """Override this fixture to return the ASGI app under test (``restate.app(services=[...])``)."""
    raise pytest.UsageError("define a `podium_app` fixture that returns the ASGI app under test")


@pytest.fixture
def podium_env(
    podium_engine: EngineHandle, podium_deployer: Deployer, podium_client: httpx.Client, podium_app: Any
) -> PodiumEnv:
    """The app under test, served and registered, with a client on the ingress."""
    url = podium_deployer.deploy(podium_app)
    return PodiumEnv(
        ingress_url=podium_engine.ingress_url,
        admin_url=podium_engine.admin_url,
        deployment_url=url,
        client=podium_client,
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """List the session engine's invocations that were backing off or paused when the tests ended."""
    stuck = config.stash.get(_STUCK_KEY, [])
    if not stuck:
        return
    terminalreporter.section("invocations left backing off or paused on the session engine")
    for row in stuck:
        failure = (row.get("last_failure") or "").splitlines()[0][:160] if row.get("last_failure") else ""
        terminalreporter.write_line(
            f"{row['status']:<12} {row['target']}  retries={row['retry_count']}  {failure}"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Attach the tail of the engine log to the report of a failed test that used the engine."""
    report = yield
    log = item.config.stash.get(_LOG_KEY, None)
    if report.failed and log is not None and "podium_engine" in getattr(item, "fixturenames", ()):
        try:
            tail = log.read_bytes()[-20_000:].decode("utf-8", "replace").splitlines()[-80:]
        except OSError:
            tail = []
        report.sections.append(("restate-server log (last 80 lines)", "\n".join(tail)))
    return report
