"""A deployment's ASGI app that serves only requests the engine signed.

The engine signs every request it sends to a deployment (restate-server's request identity); the app
verifies the signature with the engine's public key before it looks at the request, so a deployment's
port that anyone on the machine can reach still runs nothing for them (401). The keys come from
``PODIUM_IDENTITY_KEYS`` (``publickeyv1_…``, comma-separated during a rotation), which ``podium up`` and
the test harness set. Without one the app refuses every request but its health check: closed by default.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, cast

import restate
from restate.server import LifeSpanNotImplemented

from podium._services import _Podium

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

    Args:
        services: The services, virtual objects and workflows of the deployment.
        identity_keys: The engine's public keys (``publickeyv1_…``); ``PODIUM_IDENTITY_KEYS`` when None.
            With none at all, every request but ``/health`` is answered 401.
    """
    keys = list(identity_keys) if identity_keys is not None else identity_keys_from_env()
    # podium's classes are restate's (a list that mixes them is typed by their common base, _Podium)
    served = cast(list[restate.Service | restate.VirtualObject | restate.Workflow], list(services))
    if not keys:
        return _refuse
    return restate.app(services=served, identity_keys=keys)


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
