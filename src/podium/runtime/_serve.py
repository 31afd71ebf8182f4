"""Serve a Restate ASGI app with hypercorn, in this process.

A deployment is served by the process that holds its port, so a signal sent to that process (by
``podium up``, a supervisor, or a crash test) reaches the server itself and not a wrapper.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from restate.server import install_shutdown_hook

from podium.runtime._process import ChildProcess, wait_until

AsgiApp = Callable[..., Any]

SERVERS = ("granian", "hypercorn")
DEFAULT_SERVER = "granian"
"""What serves a deployment process: granian (measured fastest, see docs/performance.md) or hypercorn."""


def load_app(spec: str) -> AsgiApp:
    """Import ``module:attribute`` and return the ASGI app it names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"app spec {spec!r} must look like 'package.module:attribute'")
    module = importlib.import_module(module_name)
    try:
        app: AsgiApp = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    return app


def hypercorn_config(host: str, port: int) -> Config:
    """Hypercorn settings for a Restate deployment.

    The engine keeps one HTTP/2 connection per deployment and multiplexes every invocation over it.
    Hypercorn's default closes a connection after 1,000 requests (streams), failing the invocations in
    flight on it, so the limit is lifted; idle connections are kept for minutes.
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.keep_alive_max_requests = 2**62
    config.keep_alive_timeout = 600
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.h2_max_concurrent_streams = 10_000
    return config


def with_lifespan(app: AsgiApp) -> AsgiApp:
    """Answer ASGI lifespan events, which restate-sdk's app refuses (hypercorn then logs a warning)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped


async def serve(app: AsgiApp, *, host: str, port: int, shutdown: asyncio.Event) -> None:
    """Serve ``app`` until ``shutdown`` is set."""
    await hypercorn_serve(with_lifespan(app), hypercorn_config(host, port), shutdown_trigger=shutdown.wait)


def serve_forever(app: AsgiApp, *, host: str = "127.0.0.1", port: int) -> None:
    """Serve ``app`` in this (main) thread until SIGTERM or SIGINT.

    restate-sdk installs its own SIGTERM handler on its first request, replacing any handler installed
    before it. Shutdown is therefore hooked in through the SDK's hook, which calls every registered hook,
    so SIGTERM stops the server within about a second whether or not a request has been served.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        shutdown = asyncio.Event()
        install_shutdown_hook(loop, shutdown.set, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGINT, shutdown.set)
        await serve(app, host=host, port=port, shutdown=shutdown)

    asyncio.run(main())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_health(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class ThreadedServer:
    """Serve an app on a background thread of this process (tests use it for in-process deployments)."""

    def __init__(self, app: AsgiApp, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The deployment URL to register."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start serving and wait until the health endpoint answers."""
        started = threading.Event()

        def run() -> None:
            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._shutdown = asyncio.Event()
                started.set()
                await serve(self.app, host=self.host, port=self.port, shutdown=self._shutdown)

            try:
                asyncio.run(main())
            except BaseException as exc:  # surfaced by start() and stop()
                self._error = exc
                started.set()

        self._thread = threading.Thread(target=run, name=f"podium-serve-{self.port}", daemon=True)
        self._thread.start()
        started.wait(timeout)

        def ready() -> bool:
            if self._error is not None:
                raise RuntimeError(f"server on {self.url} failed: {self._error!r}") from self._error
            return _answers_health(self.url)

        wait_until(ready, timeout=timeout, what=f"the deployment at {self.url}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._shutdown is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._shutdown.set)
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None


class DeploymentProcess:
    """A deployment served by its own process (``python -m podium serve``), as ``podium up`` runs it.

    ``server`` is ``granian`` (default; ``workers`` processes) or ``hypercorn`` (one process). Crash
    tests use it to ``kill -9`` a deployment mid-workflow (the process and its workers) and start it
    again on the same port.
    """

    def __init__(
        self,
        app_spec: str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_file: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        server: str = DEFAULT_SERVER,
        workers: int = 1,
    ) -> None:
        self.app_spec = app_spec
        self.host = host
        self.port = port or free_port(host)
        argv = [sys.executable, "-m", "podium", "serve", app_spec, "--host", host, "--port", str(self.port)]
        argv += ["--server", server, "--workers", str(workers)]
        self._process = ChildProcess(
            argv,
            log_file=log_file,
            env=env,
            cwd=cwd,
            name=f"deployment {app_spec}",
        )

    @property
    def url(self) -> str:
        """The deployment URL to register."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The serving process's id while it runs."""
        return self._process.pid

    @property
    def log_file(self) -> Path:
        """Where the process's output goes."""
        return self._process.log_file

    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process.running()

    def returncode(self) -> int | None:
        """How the process ended (negative: the signal), or None while it runs or never ran."""
        return self._process.returncode()

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it answers on its port."""
        self._process.start()

        def ready() -> bool:
            if not self._process.running():
                raise RuntimeError(
                    f"deployment {self.app_spec} exited with status {self._process.returncode()}:\n"
                    + self._process.tail()
                )
            return _answers_health(self.url)

        wait_until(ready, timeout=timeout, what=f"deployment {self.app_spec} on {self.url}")

    def stop(self, grace: float = 8.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (granian gives its workers 5 s to finish)."""
        self._process.stop(grace=grace)

    def kill(self) -> None:
        """SIGKILL the process, as a crash would."""
        self._process.kill()
