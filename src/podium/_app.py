"""A deployment's ASGI app that serves only requests the engine signed.

The engine signs every request it sends to a deployment (restate-server's request identity); the app
verifies the signature with the engine's public key before it looks at the request, so a deployment's
port that anyone on the machine can reach still runs nothing for them (401). The keys come from
``PODIUM_IDENTITY_KEYS`` (``publickeyv1_…``, comma-separated during a rotation), which ``podium up`` and
the test harness set. Without one the app refuses every request but its health check: closed by default.

Building the app also configures the process's logging when the environment asks for it
(``PODIUM_LOG_FORMAT``, see :mod:`podium._logging`), so each granian worker that imports the app logs
JSON lines with the others; without that variable logging is left as the process has it. Likewise for
traces: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, each worker exports its spans over OTLP gRPC (see
:mod:`podium._telemetry`); without it nothing is set up.

The app answers ``GET /metrics`` (Prometheus's text format) without a signature, as it answers
``/health``: counts, never data. With ``PROMETHEUS_MULTIPROC_DIR`` set, a scrape of any worker sees every
worker's counts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, cast

import restate
from restate.server import LifeSpanNotImplemented

from podium._logging import configure_from_env
from podium._services import _Podium
from podium._telemetry import configure_tracing_from_env, with_metrics

IDENTITY_KEYS_ENV = "PODIUM_IDENTITY_KEYS"
"""Environment variable with the engine's request-identity public keys, comma-separated."""

_NO_KEYS = (
    b"this deployment serves only requests signed by its engine, and it has no key to check them with: "
    b"set " + IDENTITY_KEYS_ENV.encode() + b" to the engine's request-identity public key "
    b"(podium up and the test harness do), or pass identity_keys to podium.app()\n"
)


def identity_keys_from_env() -> list[str]:
    """The request-identity public keys in ``PODIUM_IDENTITY_KEYS``."""
    return [key.strip() for key in os.environ.get(IDENTITY_KEYS_ENV, "").split(",") if key.strip()]


ServiceDefinition = restate.Service | restate.VirtualObject | restate.Workflow | _Podium
"""What a deployment serves: a (podium or restate) service, virtual object or workflow."""


def app(
    services: Iterable[ServiceDefinition],
    *,
    identity_keys: Sequence[str] | None = None,
) -> Any:
    """The ASGI app serving ``services`` to an engine that signs its requests.

    With ``PODIUM_LOG_FORMAT`` set (``json`` or ``text``), it also configures this process's logging
    (:func:`podium.configure_logging`, with ``PODIUM_SYSTEM`` and ``PODIUM_LOG_LEVEL``); with
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, its tracing (:func:`podium.configure_tracing`, the service
    named ``OTEL_SERVICE_NAME``, else ``PODIUM_SYSTEM``). ``GET /metrics`` is answered with the process's
    Prometheus metrics (every worker's, with ``PROMETHEUS_MULTIPROC_DIR``), no signature needed.

    Args:
        services: The services, virtual objects and workflows of the deployment.
        identity_keys: The engine's public keys (``publickeyv1_…``); ``PODIUM_IDENTITY_KEYS`` when None.
            With none at all, every request but ``/health`` is answered 401.

    Raises:
        ValueError: ``PODIUM_LOG_FORMAT`` or ``PODIUM_LOG_LEVEL`` has a value that means nothing.
    """
    keys = list(identity_keys) if identity_keys is not None else identity_keys_from_env()
    services = list(services)
    systems = [getattr(service, "system", None) for service in services]
    configure_from_env(systems)
    configure_tracing_from_env(systems)
    # podium's classes are restate's (a list that mixes them is typed by their common base, _Podium)
    served = cast(list[restate.Service | restate.VirtualObject | restate.Workflow], services)
    if not keys:
        return with_metrics(_refuse)
    return with_metrics(restate.app(services=served, identity_keys=keys))


async def _refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer the health check, and refuse everything else with 401 and the reason."""
    if scope["type"] != "http":
        raise LifeSpanNotImplemented()  # as restate's app does: servers carry on without lifespan events
    healthy = str(scope.get("path", "")).rstrip("/").endswith("/health")
    status, body = (200, b"") if healthy else (401, _NO_KEYS)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
