"""Serve a deployment with granian (Rust HTTP/2 server, ASGI), one or more worker processes.

``podium serve --server granian`` replaces itself (``exec``) with granian's command line, so the
process that holds the port keeps the pid its parent started; granian then forks the workers, each
importing the app through :func:`make_app`. Measured on a 2-core machine (docs/performance.md), granian
needs about a quarter less CPU per invocation than hypercorn, whose HTTP/2 is pure Python, and two
workers remove the single-core ceiling of one Python process.

Shutdown: restate-sdk replaces a worker's SIGTERM handler on its first request, so granian's own
handler would never run and the worker would refuse to stop. :func:`make_app` hooks SIGTERM through
the SDK's ``install_shutdown_hook`` first and turns it into SIGINT, which granian's worker still
handles gracefully.

Crashes: granian replaces a worker that exits unexpectedly (``--respawn-failed-workers``), so a killed
worker never takes the deployment down; ``podium up``'s supervisor sees the replacement in the master's
children and logs it. Granian itself gives up (the master exits with status 1) when a worker it replaced
less than 5.5 s ago dies again; the supervisor then restarts the whole deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any, NoReturn

from restate.server import install_shutdown_hook

from podium._telemetry import METRICS_DIR_ENV, prepare_metrics_dir
from podium.runtime._serve import AsgiApp, load_app

APP_SPEC_ENV = "PODIUM_APP_SPEC"
"""The ``module:attribute`` of the app a granian worker serves."""


def make_app() -> AsgiApp:
    """The app named by ``$PODIUM_APP_SPEC``, with SIGTERM turned into a graceful worker stop."""
    app = load_app(os.environ[APP_SPEC_ENV])
    hooked = False

    def interrupt() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal hooked
        if not hooked:
            hooked = True
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                install_shutdown_hook(asyncio.get_running_loop(), interrupt, signal.SIGTERM)
        await app(scope, receive, send)

    return wrapped


def granian_argv(app_spec: str, *, host: str, port: int, workers: int) -> list[str]:
    """The granian command line that serves ``app_spec`` as a Restate deployment."""
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asginl",  # restate-sdk's app refuses ASGI lifespan events
        "--http",
        "auto",  # HTTP/2 with prior knowledge (the engine) and HTTP/1.1 (health checks)
        "--factory",
        f"{__name__}:make_app",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-ws",
        "--loop",
        "uvloop",
        # The engine multiplexes every invocation over a few connections: no stream cap in practice.
        "--http2-max-concurrent-streams",
        "100000",
        "--workers-kill-timeout",
        "5",
        "--respawn-failed-workers",
        "--log-level",
        "warning",
    ]


def exec_granian(app_spec: str, *, host: str, port: int, workers: int) -> NoReturn:
    """Replace this process with granian serving ``app_spec`` (never returns)."""
    load_app(app_spec)  # fail here, with a clear message, if the spec is wrong
    os.environ[APP_SPEC_ENV] = app_spec
    metrics = os.environ.get(METRICS_DIR_ENV, "").strip()
    if metrics:
        # The deployment starts as a whole (first start, or a restart by the supervisor): counts start
        # over. A worker granian replaces does not come through here, so its files keep their counts.
        prepare_metrics_dir(metrics)
    argv = granian_argv(app_spec, host=host, port=port, workers=workers)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
