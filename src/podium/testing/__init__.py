"""A Docker-free test harness: a real restate-server on free ports, your app served in-process.

The pytest plugin (:mod:`podium.testing.plugin`, loaded automatically when podium is installed) gives:

- ``podium_engine`` (session): a real engine in a temporary directory, on free loopback ports; or, with
  ``--podium-ingress-url`` and ``--podium-admin-url``, an engine that is already running.
- ``podium_env``: the app returned by your ``podium_app`` fixture, served in-process on a free port and
  registered, as a :class:`PodiumEnv` with an HTTP client on the ingress.
- ``podium_private_engine`` (module): an engine of the module's own, for tests that kill or restart it;
  with :func:`process_env` to serve an app in a process that can be killed with SIGKILL.

Isolate tests with fresh keys (:func:`new_key`) rather than teardown. Poll with :func:`assert_eventually`;
never sleep.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from podium.runtime import (
    DeploymentProcess,
    Engine,
    EngineConfig,
    ThreadedServer,
    free_port,
    register_deployment,
)
from podium.runtime._serve import AsgiApp

T = TypeVar("T")


ALWAYS_REPLAY: dict[str, str] = {"RESTATE_WORKER__INVOKER__INACTIVITY_TIMEOUT": "0s"}
"""Engine environment that suspends an invocation at every await, so each step resumes by replaying the
journal: ``running_engine(env=ALWAYS_REPLAY)``. It finds code that is not deterministic on replay."""


def new_key(prefix: str = "t") -> str:
    """A fresh key (``prefix-<uuid>``) that isolates a test from every other."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_engine_config(data_dir: Path, **overrides: Any) -> EngineConfig:
    """Engine settings for tests: free ports, small memory, and the given data directory."""
    settings: dict[str, Any] = {
        "data_dir": data_dir,
        "ingress_port": free_port(),
        "admin_port": free_port(),
        "node_port": free_port(),
        "rocksdb_memory": "256 MiB",
        "query_engine_memory": "64 MiB",
    }
    settings.update(overrides)
    return EngineConfig(**settings)


test_engine_config.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


@contextmanager
def running_engine(data_dir: Path | None = None, **overrides: Any) -> Iterator[Engine]:
    """Start a throwaway engine (temporary directory unless given) and stop it afterwards."""
    with tempfile.TemporaryDirectory(prefix="podium-engine-") as tmp:
        engine = Engine(test_engine_config(data_dir or Path(tmp), **overrides))
        engine.start()
        try:
            yield engine
        finally:
            engine.stop()


@dataclass
class PodiumEnv:
    """What a test talks to: the engine's URLs and an HTTP client on the ingress."""

    ingress_url: str
    """Base URL of the ingress."""
    admin_url: str
    """Base URL of the admin API."""
    deployment_url: str
    """Where the app under test is served."""
    client: httpx.Client = field(repr=False)
    """Client with ``base_url`` set to the ingress."""

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        """POST ``body`` as JSON to an ingress path such as ``/TripOrchestrator/t-1/BookTrip``."""
        if body is None:
            return self.client.post(path, **kwargs)
        return self.client.post(path, json=body, **kwargs)

    def call(self, path: str, body: Any = None) -> Any:
        """POST and return the JSON answer, failing the test with the engine's message on an error."""
        response = self.post(path, body)
        if not response.is_success:
            raise AssertionError(f"POST {path} answered {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def send(self, path: str, body: Any = None, *, idempotency_key: str | None = None) -> str:
        """Fire-and-forget ``path`` (``/send``) and return the invocation id."""
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        response = self.client.post(f"{path}/send", json=body, headers=headers)
        if not response.is_success:
            raise AssertionError(f"send {path} answered {response.status_code}: {response.text}")
        invocation_id: str = response.json()["invocationId"]
        return invocation_id

    def cancel(self, invocation_id: str) -> None:
        """Cancel an invocation through the admin API (its sagas compensate)."""
        response = httpx.delete(f"{self.admin_url}/invocations/{invocation_id}?mode=cancel", timeout=10)
        if response.status_code not in (200, 202):
            raise AssertionError(f"cancel {invocation_id} answered {response.status_code}: {response.text}")


@contextmanager
def process_env(
    engine: Engine, app_spec: str, *, log_file: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[PodiumEnv, DeploymentProcess]]:
    """Serve ``app_spec`` in a process of its own, register it with ``engine``, and yield both.

    For tests that ``kill -9`` a deployment (``process.kill(); process.start()`` restarts it on the same
    port) or restart the engine. ``PODIUM_DATA_DIR`` is passed on, so the process shares the test's
    data; ``env`` adds to it.
    """
    environment = {k: v for k, v in os.environ.items() if k == "PODIUM_DATA_DIR"}
    environment.update(env or {})
    process = DeploymentProcess(app_spec, log_file=log_file, env=environment)
    process.start()
    try:
        engine.register(process.url)
        with httpx.Client(base_url=engine.ingress_url, timeout=60.0) as client:
            yield PodiumEnv(engine.ingress_url, engine.admin_url, process.url, client), process
    finally:
        process.stop()


def assert_eventually(
    check: Callable[[], T],
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Call ``check`` until it returns without raising AssertionError and its result is truthy.

    Returns the first truthy result; on timeout re-raises the last AssertionError (or fails with
    ``message``), so the failure says what was last seen.
    """
    deadline = time.monotonic() + timeout
    last: AssertionError | None = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = None
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            if last is not None:
                raise last
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Deployer:
    """Serves apps in-process and registers them with one engine, once per app."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._servers: dict[int, ThreadedServer] = {}

    def deploy(self, app: AsgiApp) -> str:
        """Serve ``app`` on a free port (first time only), register it, and return its URL."""
        server = self._servers.get(id(app))
        if server is None:
            server = ThreadedServer(app)
            server.start()
            register_deployment(self.admin_url, server.url)
            self._servers[id(app)] = server
        return server.url

    def close(self) -> None:
        """Stop every server."""
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


def engine_from_environment() -> tuple[str, str] | None:
    """Ingress and admin URLs of an external engine from ``PODIUM_TEST_INGRESS_URL``/``..._ADMIN_URL``."""
    ingress, admin = os.environ.get("PODIUM_TEST_INGRESS_URL"), os.environ.get("PODIUM_TEST_ADMIN_URL")
    if ingress and admin:
        return ingress, admin
    return None


__all__ = [
    "ALWAYS_REPLAY",
    "Deployer",
    "PodiumEnv",
    "assert_eventually",
    "engine_from_environment",
    "new_key",
    "process_env",
    "running_engine",
    "test_engine_config",
]
