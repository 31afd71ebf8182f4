"""Which requests the gateway forwards, and the scope each needs: the engine's own registry.

The gateway reads the services the engine has registered from its admin API (``GET /services``): for
each handler, whether it is public, and for a public one its kind of call (handler metadata
``podium.access``) and its system (service metadata ``podium.system``). A request is forwarded only to a
public handler, with the scope ``<system>:<kind>``; anything else is answered 404 without saying whether
a private handler of that name exists. The table is read at start and again every few seconds, and at
once (at most every second) when a request names a handler the gateway does not know yet.

Forwarded paths, and nothing else:

- ``POST /<Service>/<handler>`` and ``POST /<Service>/<key>/<handler>``, each optionally ``…/send``
  (a one-way call answering the invocation id), and the same as ``POST /restate/call/…`` and
  ``POST /restate/send/…`` (the paths of the engine's OpenAPI);
- ``GET /restate/invocation/<Service>/[<key>/]<handler>/<idempotency key>/attach`` and ``…/output``: the
  result of a call made with that idempotency key, for whoever may make the call;
- ``GET /restate/workflow/<Workflow>/<key>/attach`` and ``…/output`` for a workflow whose run handler is
  public: the caller needs its ``read`` scope.

Everything else the ingress answers (invocations by id, awakeables, its health) stays behind it.

Service and handler names must be plain identifiers (no percent-encoding), so the gateway and the
ingress cannot read one path two ways.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("podium.gateway")

ACCESS_METADATA = "podium.access"
SYSTEM_METADATA = "podium.system"


@dataclass(frozen=True)
class Route:
    """A public handler as the engine registered it."""

    service: str
    handler: str
    keyed: bool
    """Whether its path carries a key (virtual objects and workflows)."""
    scope: str
    """``<system>:<kind>`` a token needs to call it."""
    workflow_run: bool = False
    """Whether it is a workflow's run handler (its result can be attached to with the read scope)."""


@dataclass(frozen=True)
class Target:
    """What a request path resolves to: the route and the scope the call needs."""

    route: Route
    scope: str


def _is_name(text: str) -> bool:
    """A plain ASCII identifier: what a service or handler name is, and no percent-encoding of one."""
    return text.isidentifier() and text.isascii()


class RouteTable:
    """The public handlers the engine knows, refreshed from its admin API.

    Args:
        admin_url: The engine's admin API (loopback).
        refresh: Seconds between two reads of the registry.
    """

    def __init__(self, admin_url: str, *, refresh: float = 5.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.refresh_every = refresh
        self._routes: dict[tuple[str, str], Route] = {}
        self._targets: dict[tuple[str, str], Target] = {}
        self._readers: dict[str, Target] = {}
        self._loaded_at = -1e9
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        self._background: asyncio.Task[None] | None = None

    @property
    def routes(self) -> dict[tuple[str, str], Route]:
        """Public handlers by ``(service, handler)``."""
        return self._routes

    def load(self, services: list[dict[str, Any]]) -> None:
        """Replace the table with the public handlers of ``services`` (the admin API's answer)."""
        routes: dict[tuple[str, str], Route] = {}
        for service in services:
            if not service.get("public", True):
                continue
            system = (service.get("metadata") or {}).get(SYSTEM_METADATA)
            keyed = service.get("ty") != "Service"
            for handler in service.get("handlers", []):
                access = (handler.get("metadata") or {}).get(ACCESS_METADATA)
                if not handler.get("public", True) or not system or not access:
                    continue  # private, or public without a declared scope (not a podium handler)
                routes[(service["name"], handler["name"])] = Route(
                    service["name"],
                    handler["name"],
                    keyed,
                    f"{system}:{access}",
                    workflow_run=service.get("ty") == "Workflow" and handler.get("ty") == "Workflow",
                )
        self._routes = routes
        self._targets = {name: Target(route, route.scope) for name, route in routes.items()}
        self._readers = {
            route.service: Target(route, f"{route.scope.partition(':')[0]}:read")
            for route in routes.values()
            if route.workflow_run
        }
        self._loaded_at = time.monotonic()

    async def refresh(self, *, force: bool = False) -> None:
        """Read the registry again if it is stale (or, with ``force``, if it was not read this second)."""
        age = time.monotonic() - self._loaded_at
        if age < (1.0 if force else self.refresh_every):
            return
        async with self._lock:
            if time.monotonic() - self._loaded_at < (1.0 if force else self.refresh_every):
                return
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=5.0)
            try:
                answer = await self._client.get(f"{self.admin_url}/services")
                answer.raise_for_status()
                self.load(answer.json()["services"])
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                self._loaded_at = time.monotonic()  # keep the old table; try again later
                log.warning("cannot read the engine's services from %s: %s", self.admin_url, exc)

    async def close(self) -> None:
        """Close the admin API client."""
        if self._background is not None:
            self._background.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def match(self, method: str, path: str) -> Target | None:
        """The public handler ``path`` calls with ``method`` as the table knows it now (no waiting).

        A table older than the refresh interval is read again in the background.
        """
        if time.monotonic() - self._loaded_at > self.refresh_every and (
            self._background is None or self._background.done()
        ):
            self._background = asyncio.get_running_loop().create_task(self.refresh())
        parts = path[1:].split("/")
        if parts[0] != "restate":
            if method == "POST":
                return self._call(parts[:-1] if parts[-1] == "send" else parts)
            return None
        kind = parts[1] if len(parts) > 1 else ""
        if kind in ("call", "send") and method == "POST":
            return self._call(parts[2:])
        if method != "GET" or parts[-1] not in ("attach", "output"):
            return None
        if kind == "invocation" and len(parts) in (6, 7) and parts[-2]:
            # /restate/invocation/<Service>/[<key>/]<handler>/<idempotency key>/attach: that call's result
            return self._call(parts[2:-2])
        if kind == "workflow" and len(parts) == 5 and parts[3]:
            # /restate/workflow/<Workflow>/<key>/attach: the run's result, for its readers
            return self._readers.get(parts[2])
        return None

    def _call(self, parts: list[str]) -> Target | None:
        """The target of ``<Service>/<handler>`` or ``<Service>/<key>/<handler>``, if public."""
        count = len(parts)
        if count not in (2, 3):
            return None
        target = self._targets.get((parts[0], parts[-1]))
        if target is None or target.route.keyed != (count == 3) or (count == 3 and not parts[1]):
            return None
        return target

    async def resolve(self, method: str, path: str) -> Target | None:
        """:meth:`match`, reading the registry again first when the path names no known handler."""
        target = self.match(method, path)
        if target is None and _looks_like_a_call(path):
            await self.refresh(force=True)  # maybe registered since the last read
            target = self.match(method, path)
        return target


def _looks_like_a_call(path: str) -> bool:
    parts = path.strip("/").split("/")
    return 2 <= len(parts) <= 4 and parts[0] != "restate" and _is_name(parts[0]) and _is_name(parts[-1])
