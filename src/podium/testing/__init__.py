"""A Docker-free test harness: a real restate-server on free ports, your app served in-process.

The pytest plugin (:mod:`podium.testing.plugin`, loaded automatically when podium is installed) gives:

- ``podium_engine`` (session): a real engine in a temporary directory, on free loopback ports; or, with
  ``--podium-ingress-url`` and ``--podium-admin-url``, an engine that is already running.
- ``podium_env``: the app returned by your ``podium_app`` fixture, served in-process on a free port and
  registered, as a :class:`PodiumEnv` with an HTTP client on the ingress.
- ``podium_private_engine`` (module): an engine of the module's own, for tests that kill or restart it;
  with :func:`process_env` to serve an app in a process that can be killed with SIGKILL.

Every engine the harness starts signs its requests with the harness's request-identity key
(:func:`harness_identity`), whose public half is put in ``PODIUM_IDENTITY_KEYS`` before any test module
is imported, so apps built with :func:`podium.app` verify it, as they do under ``podium up``.

Private handlers cannot be called through the ingress. Tests reach them the way other handlers do, from
inside the engine: :meth:`PodiumEnv.call_private` goes through ``PodiumTestDoor``, a service the harness
registers with its own engines only (never with ``podium up``).

The public door is there too: :func:`running_gateway` (or the ``podium_gateway`` fixture) runs the
gateway in front of an engine, with its token verification, scopes and route table, and signs tokens
for tests with the harness's issuer key (:meth:`GatewayEnv.token`).

Isolate tests with fresh keys (:func:`new_key`) rather than teardown. Poll with :func:`assert_eventually`;
never sleep.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import restate
from restate.serde import BytesSerde

from podium._app import IDENTITY_KEYS_ENV
from podium.gateway import (
    AuthService,
    ClientStore,
    Door,
    EdgeRoute,
    Gateway,
    RouteTable,
    TokenIssuer,
    TokenVerifier,
)
from podium.runtime import (
    REQUEST_IDENTITY_FILE,
    TOKEN_ISSUER_FILE,
    DeploymentProcess,
    Engine,
    EngineConfig,
    KeyPair,
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


@functools.cache
def harness_identity() -> KeyPair:
    """The request-identity key pair of this process's engines, made once, in a temporary folder.

    Its public half goes into ``PODIUM_IDENTITY_KEYS`` at once, so apps made afterwards with
    :func:`podium.app` (in this process, or in deployment processes it starts) verify its signatures.
    """
    folder = Path(tempfile.mkdtemp(prefix="podium-identity-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    pair = KeyPair.create(folder / REQUEST_IDENTITY_FILE)
    os.environ[IDENTITY_KEYS_ENV] = pair.restate_public_key
    return pair


@functools.cache
def harness_issuer() -> KeyPair:
    """The token issuer key of this process's gateways, made once, in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="podium-issuer-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return KeyPair.create(folder / TOKEN_ISSUER_FILE)


def test_engine_config(data_dir: Path, **overrides: Any) -> EngineConfig:
    """Engine settings for tests: free ports, small memory, signed requests, the given data directory."""
    settings: dict[str, Any] = {
        "data_dir": data_dir,
        "ingress_port": free_port(),
        "admin_port": free_port(),
        "node_port": free_port(),
        "rocksdb_memory": "256 MiB",
        "query_engine_memory": "64 MiB",
        "request_identity_key": harness_identity().path,
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

    def post_private(self, path: str, body: Any = None) -> httpx.Response:
        """POST to a private handler through the harness's door, from inside the engine.

        ``path`` is the handler's ingress path (``/AccountService/a-1/Credit``); the answer is the
        handler's, or its error with the same status and message.
        """
        request = door_request(path, body)
        response = self.client.post(f"/{DOOR}/Call", json=request)
        if response.status_code == 404 and DOOR in response.text:  # first use on this engine
            register_door(self.admin_url)
            response = self.client.post(f"/{DOOR}/Call", json=request)
        return response

    def call_private(self, path: str, body: Any = None) -> Any:
        """:meth:`post_private` and return the JSON answer, failing the test on an error."""
        response = self.post_private(path, body)
        if not response.is_success:
            raise AssertionError(f"POST {path} (private) answered {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of ``sql`` on the engine's introspection tables (see :func:`query`)."""
        return query(self.admin_url, sql)

    def assert_private(self, path: str, body: Any = None) -> None:
        """Assert the ingress refuses ``path`` as a private handler (400 "not public").

        The request goes on a connection of its own: the ingress answers it without reading its body and
        may close the connection afterwards, which the shared client would otherwise trip over.
        """
        content = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"content-type": "application/json"}
        response = httpx.post(f"{self.ingress_url}{path}", content=content, headers=headers, timeout=30)
        assert response.status_code == 400, f"POST {path} answered {response.status_code}: {response.text}"
        assert "not public" in response.json()["message"], response.text

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


DOOR = "PodiumTestDoor"
"""The harness's service for calling private handlers from inside the engine (its own engines only)."""

_door = restate.Service(DOOR)


@_door.handler("Call", output_serde=BytesSerde())
async def _door_call(ctx: restate.Context, request: dict[str, Any]) -> bytes:
    """Call ``request["handler"]`` of ``request["service"]`` (``key`` for objects) with ``body``."""
    body = request.get("body")
    arg = b"" if body is None else json.dumps(body).encode()
    return await ctx.generic_call(request["service"], request["handler"], arg, key=request.get("key"))


def door_request(path: str, body: Any) -> dict[str, Any]:
    """The door's request for an ingress path such as ``/Service/key/Handler``."""
    parts = path.strip("/").split("/")
    if len(parts) == 2:
        return {"service": parts[0], "handler": parts[1], "body": body}
    if len(parts) == 3:
        return {"service": parts[0], "key": parts[1], "handler": parts[2], "body": body}
    raise ValueError(f"{path!r} is not /Service/Handler or /Service/key/Handler")


@functools.cache
def _door_server() -> ThreadedServer:
    server = ThreadedServer(
        restate.app(services=[_door], identity_keys=[harness_identity().restate_public_key])
    )
    server.start()
    atexit.register(server.stop)
    return server


def register_door(admin_url: str) -> None:
    """Register the door with the engine at ``admin_url``."""
    register_deployment(admin_url, _door_server().url)


def query(admin_url: str, sql: str, *, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Rows of ``sql`` on the engine's introspection tables (``sys_invocation``, ``sys_journal``, ``state``).

    Right after a start the engine may not know its partitions' leaders yet; that answer is retried.
    """
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.post(
            f"{admin_url}/query", json={"query": sql}, headers={"accept": "application/json"}, timeout=30
        )
        if response.is_success:
            rows: list[dict[str, Any]] = response.json()["rows"]
            return rows
        if "lookup for partition" not in response.text or time.monotonic() > deadline:
            raise AssertionError(f"query answered {response.status_code}: {response.text}\n{sql}")
        time.sleep(0.2)


def engine_holds(admin_url: str, text: str) -> list[str]:
    """Where the engine keeps ``text`` (letters, digits, ``_-.:`` only): tables and ids, none if nowhere.

    Searched as text and as bytes (journal entries and state values are stored as bytes, which a text
    search would not see): every state value, every journal entry (requests, answers, calls, headers),
    every durable promise and every invocation's result.
    """
    if not text or not all(c.isalnum() or c in "_-.:" for c in text):
        raise ValueError("search for letters, digits and _-.: only (it goes into SQL)")
    needle = text.encode().hex()
    searches = {
        "state": f"SELECT service_name || '/' || service_key || ' ' || key AS at FROM state "
        f"WHERE value_utf8 LIKE '%{text}%' OR encode(value, 'hex') LIKE '%{needle}%'",
        "sys_journal": f"SELECT id || ' #' || CAST(index AS VARCHAR) AS at FROM sys_journal "
        f"WHERE encode(raw, 'hex') LIKE '%{needle}%' OR entry_json LIKE '%{text}%'",
        "sys_journal_events": f"SELECT id AS at FROM sys_journal_events WHERE event_json LIKE '%{text}%'",
        "sys_promise": f"SELECT service_name || '/' || service_key || ' ' || key AS at FROM sys_promise "
        f"WHERE completion_success_value_utf8 LIKE '%{text}%' OR completion_failure LIKE '%{text}%'",
        "sys_invocation": f"SELECT id AS at FROM sys_invocation WHERE completion_result LIKE '%{text}%' "
        f"OR completion_failure LIKE '%{text}%' OR last_failure LIKE '%{text}%'",
    }
    found = []
    for table, sql in searches.items():
        found += [f"{table}: {row['at']}" for row in query(admin_url, sql)]
    return found


STUCK_STATES = ("backing-off", "paused")
"""Invocation statuses that need a person: retrying after failures, or stopped after the last retry."""


def stuck_invocations(admin_url: str) -> list[dict[str, Any]]:
    """Invocations the engine is retrying or has paused, with their last failure."""
    states = ", ".join(f"'{state}'" for state in STUCK_STATES)
    return query(
        admin_url,
        "SELECT id, target, status, retry_count, last_failure FROM sys_invocation "
        f"WHERE status IN ({states}) ORDER BY created_at",
    )


@dataclass
class GatewayEnv:
    """A running gateway and what a test needs to call through it."""

    url: str
    """Base URL of the gateway."""
    gateway: Gateway = field(repr=False)
    """The gateway itself (its counters: ``gateway.stats()``)."""
    issuer: TokenIssuer = field(repr=False)
    """Signs tokens the gateway accepts."""
    clients: ClientStore = field(repr=False)
    """The Auth Service's client store (register clients with ``clients.add``)."""

    def token(
        self, *scopes: str, subject: str = "test-client", ttl: timedelta = timedelta(minutes=10)
    ) -> str:
        """A token for ``subject`` with ``scopes`` (``travel:write``...), signed by the harness issuer."""
        return self.issuer.issue(subject, scopes, ttl)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        token: str | None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> httpx.Response:
        """POST ``body`` as JSON to ``path`` through the gateway, with ``token`` as the bearer (or none)."""
        sent = dict(headers or {})
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        content = None if body is None else json.dumps(body).encode()
        if content is not None:
            sent.setdefault("content-type", "application/json")
        return httpx.post(f"{self.url}{path}", content=content, headers=sent, timeout=timeout)


@contextmanager
def running_gateway(
    ingress_url: str,
    admin_url: str,
    *,
    edge: Iterable[EdgeRoute] = (),
    max_in_flight: int = 64,
    **limits: Any,
) -> Iterator[GatewayEnv]:
    """Run the gateway on a free port, on a thread of its own, in front of an engine; stop it after.

    Tokens are verified with the harness issuer's key; the Auth Service's client store lives in a
    temporary folder. ``limits`` go to :class:`~podium.gateway.Gateway`.
    """
    issuer = TokenIssuer(harness_issuer())
    with tempfile.TemporaryDirectory(prefix="podium-gateway-") as folder:
        clients = ClientStore(Path(folder) / "clients.db")
        door = Door(
            RouteTable(admin_url),
            TokenVerifier({issuer.key.key_id: issuer.key.public_key}),
            auth=AuthService(clients, issuer),
            edge=edge,
        )
        gateway = Gateway(ingress_url, door=door, port=free_port(), max_in_flight=max_in_flight, **limits)
        started = threading.Event()
        loop = asyncio.new_event_loop()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(gateway.start())
            except BaseException as exc:  # reported by the caller
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(gateway.stop(grace=2.0))
            loop.close()

        thread = threading.Thread(target=run, name="podium-gateway", daemon=True)
        thread.start()
        started.wait(30)
        if failure:
            raise RuntimeError(f"the gateway did not start: {failure[0]!r}") from failure[0]
        try:
            yield GatewayEnv(gateway.url, gateway, issuer, clients)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)


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
    "DOOR",
    "Deployer",
    "GatewayEnv",
    "PodiumEnv",
    "assert_eventually",
    "engine_from_environment",
    "engine_holds",
    "harness_identity",
    "harness_issuer",
    "new_key",
    "process_env",
    "query",
    "running_engine",
    "running_gateway",
    "stuck_invocations",
    "test_engine_config",
]
