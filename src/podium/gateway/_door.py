"""The door: who may come in, and to which handler. Decided for each request before admission.

In order:

1. ``GET /podium/gateway/health`` is answered at once (for supervisors and load balancers); ``POST
   /auth/token`` goes to the Auth Service (client credentials for a token). Neither needs a token.
2. Every other request needs ``Authorization: Bearer <token>``, verified (:class:`TokenVerifier`); no
   token, or one that fails, is **401** with ``WWW-Authenticate: Bearer``.
3. The path must name a public handler the engine registered (:class:`RouteTable`), an edge route, or
   the gateway's stats; anything else is **404**, whether or not a private handler has that name.
4. The token's scopes must grant the one the handler declares (``<system>:<kind>``): else **403**
   (``error="insufficient_scope"``, naming the scope).
5. A body that carries something shaped like a card number (13 to 19 digits passing the Luhn check) is
   refused with **400** before it reaches the engine, whose journal would keep it: card numbers go to
   the payment vault's ``Tokenize`` edge route, and only its token goes anywhere else.

Edge routes are handlers served inside the gateway process instead of the engine, for input that must
never be journaled (a card number). A deployment lists them in ``[tool.podium] edge``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from podium.gateway._clients import AuthService
from podium.gateway._http import Request
from podium.gateway._routes import Route, RouteTable
from podium.gateway._tokens import Claims, TokenError, TokenVerifier, grants

STATS_PATH = "/podium/gateway/stats"
"""The gateway's counters (needs ``podium:read``)."""
HEALTH_PATH = "/podium/gateway/health"
"""Answered 200 to anyone, never forwarded."""
TOKEN_PATH = "/auth/token"
"""The Auth Service's token endpoint (client credentials, RFC 6749 §4.4)."""
STATS_SCOPE = "podium:read"
REALM = 'Bearer realm="podium"'

EdgeHandler = Callable[[bytes, Claims], Awaitable[tuple[int, dict[str, Any]]]]
"""An edge route's handler: the request body and the caller's claims in, a status and JSON out."""


@dataclass(frozen=True)
class EdgeRoute:
    """A handler the gateway serves itself (``POST path``), so its input never reaches the engine."""

    path: str
    """The path it answers, such as ``/PaymentService/Tokenize``."""
    scope: str
    """The scope a token needs to call it."""
    handler: EdgeHandler = field(compare=False)


def load_edge_routes(spec: str) -> list[EdgeRoute]:
    """The edge routes named by ``package.module:attribute`` (a list of :class:`EdgeRoute`)."""
    module_name, _, attribute = spec.partition(":")
    routes = getattr(importlib.import_module(module_name), attribute)
    if not all(isinstance(route, EdgeRoute) for route in routes):
        raise TypeError(f"{spec} must be a list of podium.gateway.EdgeRoute")
    return list(routes)


@dataclass(frozen=True)
class Answer:
    """Answer the request now, without forwarding it."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class Forward:
    """Admit the request and forward it, on behalf of ``subject``."""

    subject: str
    route: Route | None = None
    """The public handler it calls (for traces)."""


@dataclass(frozen=True)
class ServeEdge:
    """Serve the request with an edge route."""

    route: EdgeRoute
    claims: Claims


@dataclass(frozen=True)
class ServeStats:
    """Answer the gateway's counters."""


Decision = Answer | Forward | ServeEdge | ServeStats


class Door:
    """Decides each request: answer it at once, serve it at the edge, or forward it for a subject.

    Args:
        routes: The engine's public handlers.
        verifier: Checks access tokens.
        auth: The token endpoint; None answers 404 there.
        edge: Handlers served at the edge.
    """

    def __init__(
        self,
        routes: RouteTable,
        verifier: TokenVerifier,
        *,
        auth: AuthService | None = None,
        edge: Iterable[EdgeRoute] = (),
    ) -> None:
        self.routes = routes
        self.verifier = verifier
        self.auth = auth
        self.edge = {route.path: route for route in edge}

    async def decide(self, request: Request) -> Decision:
        """What to do with ``request`` (whose body has been read)."""
        path = request.path
        if path == HEALTH_PATH:
            return Answer(200, {"status": "ok"}) if request.method == "GET" else _method(path, "GET")
        if path == TOKEN_PATH:
            if self.auth is None:
                return Answer(404, {"message": "this gateway issues no tokens"})
            if request.method != "POST":
                return _method(path, "POST")
            answer = await self.auth.token(
                request.header("authorization"), request.header("content-type"), request.body
            )
            return Answer(answer.status, answer.body, answer.headers)
        claims = self._authenticate(request)
        if isinstance(claims, Answer):
            return claims
        if path == STATS_PATH:
            if request.method != "GET":
                return _method(path, "GET")
            return _allowed(claims, STATS_SCOPE) or ServeStats()
        edge = self.edge.get(path)
        if edge is not None:
            if request.method != "POST":
                return _method(path, "POST")
            return _allowed(claims, edge.scope) or ServeEdge(edge, claims)
        target = self.routes.match(request.method, path)
        if target is None:
            target = await self.routes.resolve(request.method, path)  # read the registry again, once
        if target is None:
            return Answer(404, {"message": f"no public handler answers {request.method} {path}"})
        refusal = _allowed(claims, target.scope)
        if refusal is not None:
            return refusal
        if request.body and carries_card_number(request.body):
            return Answer(
                400,
                {
                    "message": "the request carries what looks like a card number; card numbers are not "
                    "accepted here: tokenize the card with POST /PaymentService/Tokenize and send the token"
                },
            )
        return Forward(claims.subject, target.route)

    def _authenticate(self, request: Request) -> Claims | Answer:
        header = request.header("authorization")
        if header is None:
            return _unauthorized("this request needs Authorization: Bearer <token>", None)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("the Authorization header must be 'Bearer <token>'", "invalid_request")
        try:
            return self.verifier.verify(token.strip())
        except TokenError as exc:
            return _unauthorized(str(exc), "invalid_token")


def _unauthorized(message: str, error: str | None) -> Answer:
    challenge = REALM if error is None else f'{REALM}, error="{error}", error_description="{message}"'
    return Answer(401, {"message": message}, (("www-authenticate", challenge),))


def _allowed(claims: Claims, scope: str) -> Answer | None:
    """None if ``claims`` grant ``scope``, else the 403."""
    if grants(claims.scopes, scope):
        return None
    challenge = f'{REALM}, error="insufficient_scope", scope="{scope}"'
    return Answer(
        403,
        {"message": f"the token of {claims.subject} lacks the scope {scope}", "requiredScope": scope},
        (("www-authenticate", challenge),),
    )


def _method(path: str, allowed: str) -> Answer:
    return Answer(405, {"message": f"{path} answers {allowed} only"}, (("allow", allowed),))


_DIGITS = re.compile(rb"(?<![0-9])[2-6](?:[ -]?[0-9]){12,18}(?![0-9])")


def carries_card_number(body: bytes) -> bool:
    """Whether ``body`` holds something shaped like a payment card number.

    That is 13 to 19 digits (spaces or dashes between them allowed), the first 2 to 6 as every card
    network's are, passing the Luhn check.
    """
    for match in _DIGITS.finditer(body):
        digits = match.group().replace(b" ", b"").replace(b"-", b"").decode("ascii")
        if luhn_valid(digits):
            return True
    return False


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check, as every payment card number does."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0
