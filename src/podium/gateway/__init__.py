"""The public door: an HTTP/1.1 reverse proxy in front of the Restate ingress, with auth and admission.

Every request needs an access token (a JWT the gateway verifies) whose scopes grant the public handler
it calls; private handlers, unknown paths and the engine's own endpoints are not reachable through it.
Offered more load than the engine and services can take, an unbounded stack piles every request into
the Python services and its goodput collapses, so the gateway also forwards at most ``max_in_flight``
requests at once, lets a few more wait briefly in a FIFO queue, and answers the rest at once with
``503`` and ``Retry-After`` without forwarding them::

    from podium.gateway import Door, Gateway, RouteTable, TokenVerifier

    door = Door(RouteTable("http://127.0.0.1:9070"), TokenVerifier({key.key_id: key.public_key}))
    Gateway("http://127.0.0.1:8080", door=door, port=8000, max_in_flight=96).serve_forever()

or ``python -m podium.gateway --upstream http://127.0.0.1:8080 --admin-url http://127.0.0.1:9070
--issuer-key .podium/keys/token-issuer.pem --port 8000 --max-in-flight 96`` (``podium up`` runs that).
``GET /podium/gateway/stats`` answers the counters (:class:`GatewayStats`); ``POST /auth/token`` issues
tokens to registered clients (:class:`AuthService`). See docs/gateway.md and docs/security.md.
"""

from podium.gateway._clients import CLIENTS_FILE, TOKEN_TTL, AuthService, Client, ClientStore
from podium.gateway._door import (
    HEALTH_PATH,
    STATS_PATH,
    TOKEN_PATH,
    Door,
    EdgeRoute,
    carries_card_number,
    load_edge_routes,
    luhn_valid,
)
from podium.gateway._proxy import Gateway, GatewayStats, ServiceLimit
from podium.gateway._routes import RouteTable
from podium.gateway._tokens import (
    AUDIENCE,
    ISSUER,
    MAX_TTL,
    Claims,
    TokenError,
    TokenIssuer,
    TokenVerifier,
    grants,
    parse_scopes,
)

__all__ = [
    "AUDIENCE",
    "CLIENTS_FILE",
    "HEALTH_PATH",
    "ISSUER",
    "MAX_TTL",
    "STATS_PATH",
    "TOKEN_PATH",
    "TOKEN_TTL",
    "AuthService",
    "Claims",
    "Client",
    "ClientStore",
    "Door",
    "EdgeRoute",
    "Gateway",
    "GatewayStats",
    "RouteTable",
    "ServiceLimit",
    "TokenError",
    "TokenIssuer",
    "TokenVerifier",
    "carries_card_number",
    "grants",
    "load_edge_routes",
    "luhn_valid",
    "parse_scopes",
]
