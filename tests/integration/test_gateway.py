"""The gateway in front of a real engine's ingress: the door (tokens, scopes, public handlers only) and
admission control.

Slow requests are ``GatewayLab/Sleep`` (a durable ``ctx.sleep``); every Sleep first ticks the counter
``GatewayCounter/{key}``, so a count of 0 proves a request never reached the engine.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field
from restate import Context, ObjectContext, ObjectSharedContext

import podium
import podium.gateway
from podium import IngressClient, IngressError, Model, Service, VirtualObject, call, caller
from podium.gateway import Claims, EdgeRoute, ServiceLimit
from podium.runtime import free_port
from podium.testing import (
    GatewayEnv,
    PodiumEnv,
    assert_eventually,
    engine_holds,
    harness_issuer,
    new_key,
    running_gateway,
)

pytestmark = pytest.mark.engine

# -- the app -----------------------------------------------------------------------------------------------

counter = VirtualObject("GatewayCounter", system="gwlab")


@counter.handler("Hit", public="write")
async def hit(ctx: ObjectContext) -> int:
    count = (await ctx.get("count", type_hint=int) or 0) + 1
    ctx.set("count", count)
    return count


@counter.handler("Count", kind="shared", public="read")
async def count(ctx: ObjectSharedContext) -> int:
    return await ctx.get("count", type_hint=int) or 0


@counter.handler("Reset")
async def reset(ctx: ObjectContext) -> int:
    """Private: only other handlers may reset a counter."""
    ctx.set("count", 1000)
    return 1000


class Nap(Model):
    key: str
    ms: int = Field(ge=0)
    pad: str = ""


class Woke(Model):
    key: str
    slept_ms: int
    pad_length: int
    headers: dict[str, str]
    caller: str


lab = Service("GatewayLab", system="gwlab")


@lab.handler("Sleep", public="write")
async def sleep(ctx: Context, nap: Nap) -> Woke:
    await call(ctx, hit, None, key=nap.key)
    if nap.ms:
        await ctx.sleep(timedelta(milliseconds=nap.ms))
    seen = {k.lower(): v for k, v in ctx.request().headers.items()}
    return Woke(key=nap.key, slept_ms=nap.ms, pad_length=len(nap.pad), headers=seen, caller=caller(ctx))


app = podium.app(services=[counter, lab])

WRITE = "gwlab:write"
READ = "gwlab:read"


@pytest.fixture
def podium_app() -> Any:
    return app


# -- helpers -----------------------------------------------------------------------------------------------


@pytest.fixture
def gateways(podium_env: PodiumEnv) -> Iterator[Callable[..., GatewayEnv]]:
    """Opens gateways (in front of the session's ingress unless told otherwise), closed after the test."""
    with ExitStack() as stack:

        def open_gateway(upstream: str | None = None, **options: Any) -> GatewayEnv:
            options.setdefault("max_in_flight", 8)
            return stack.enter_context(
                running_gateway(upstream or podium_env.ingress_url, podium_env.admin_url, **options)
            )

        yield open_gateway


def nap(key: str, ms: int = 0, **extra: Any) -> dict[str, Any]:
    return {"key": key, "ms": ms, **extra}


def hits(env: PodiumEnv, key: str) -> int:
    result: int = env.call(f"/GatewayCounter/{key}/Count")
    return result


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def post(gateway: GatewayEnv | str, body: Any, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
    """POST a Sleep through the gateway (with a write token unless one is given) or to a base URL."""
    if isinstance(gateway, str):
        return httpx.post(f"{gateway}/GatewayLab/Sleep", json=body, timeout=30, **kwargs)
    headers = {**bearer(token or gateway.token(WRITE)), **kwargs.pop("headers", {})}
    return httpx.post(f"{gateway.url}/GatewayLab/Sleep", json=body, headers=headers, timeout=30, **kwargs)


def stats(gateway: GatewayEnv) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/podium/gateway/stats", headers=bearer(gateway.token("podium:read")))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def raw_exchange(port: int, data: bytes, *, read_until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while read_until_close and (chunk := sock.recv(65536)):
            chunks.append(chunk)
        return b"".join(chunks)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def split_responses(raw: bytes) -> list[tuple[int, bytes]]:
    """Status and body of each response on a connection (framed by content-length)."""
    answers = []
    while raw:
        status, headers, rest = split_response(raw)
        length = int(headers["content-length"])
        answers.append((status, rest[:length]))
        raw = rest[length:]
    return answers


def invocations(env: PodiumEnv, key: str) -> list[dict[str, Any]]:
    return env.query(f"SELECT target, status FROM sys_invocation WHERE target LIKE '%{key}%'")


# -- the door: tokens --------------------------------------------------------------------------------------


def test_the_public_api_is_pinned() -> None:
    assert sorted(podium.gateway.__all__) == sorted(
        [
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
    )


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "podium",
        "aud": "podium-gateway",
        "sub": "mallory",
        "scope": WRITE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(claims: dict[str, Any], key: Any = None, algorithm: str = "EdDSA", kid: str | None = None) -> str:
    issuer = harness_issuer()
    return jwt.encode(
        claims,
        key if key is not None else issuer.private_key,
        algorithm=algorithm,
        headers={"kid": kid or issuer.key_id},
    )


def _unsigned(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': harness_issuer().key_id})}.{part(claims)}."


def _forged_tokens() -> dict[str, str]:
    """Tokens a client might try instead of a good one: each must be refused with 401."""
    issuer = harness_issuer()
    stranger = Ed25519PrivateKey.generate()
    public_pem = issuer.public_pem  # the public key as an HMAC secret: algorithm confusion
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    good = _signed(_claims())
    head, payload, signature = good.split(".")
    return {
        "signed by another key": _signed(_claims(), stranger, kid=issuer.key_id),
        "unknown key id": _signed(_claims(), stranger, kid="not-a-key"),
        "alg none": _unsigned(_claims()),
        "HS256 with the public key": _hs256(_claims(), public_pem, issuer.key_id),
        "RS256": jwt.encode(
            _claims(),
            rsa_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            algorithm="RS256",
            headers={"kid": issuer.key_id},
        ),
        "expired": _signed(_claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600)),
        "not valid yet": _signed(_claims(nbf=now + 3600, exp=now + 7200)),
        "wrong audience": _signed(_claims(aud="someone-else")),
        "wrong issuer": _signed(_claims(iss="evil")),
        "no expiry": _signed(_claims(exp=None)),
        "no subject": _signed(_claims(sub=None)),
        "tampered payload": f"{head}.{_part_with(payload, scope='*:*')}.{signature}",
        "garbage": "not.a.token",
    }


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 token keyed with ``secret``, made by hand: PyJWT itself refuses to use a PEM as a secret."""
    import hashlib
    import hmac

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{part(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _part_with(payload: str, **changes: Any) -> str:
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_request_without_a_token_is_401_and_never_reaches_the_engine(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key = gateways(), new_key()
    response = httpx.post(f"{gateway.url}/GatewayLab/Sleep", json=nap(key), timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="podium"'
    assert "Authorization: Bearer" in response.json()["message"]
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "token abc"):
        refused = httpx.post(
            f"{gateway.url}/GatewayLab/Sleep", json=nap(key), headers={"authorization": header}
        )
        assert refused.status_code == 401, header
        assert 'error="invalid_request"' in refused.headers["www-authenticate"]
    assert hits(podium_env, key) == 0
    assert stats(gateway)["refused"] == 4


@pytest.mark.parametrize("kind", sorted(_forged_tokens()))
def test_a_forged_expired_or_foreign_token_is_401(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv], kind: str
) -> None:
    gateway, key = gateways(), new_key()
    response = post(gateway, nap(key), token=_forged_tokens()[kind])
    assert response.status_code == 401, (kind, response.text)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["message"]
    assert hits(podium_env, key) == 0


def test_a_token_without_the_scope_is_403_naming_it(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key = gateways(), new_key()
    for scopes in ([READ], ["travel:write"], ["gwlab:operator"], []):
        response = post(gateway, nap(key), token=gateway.token(*scopes))
        assert response.status_code == 403, scopes
        assert response.json()["requiredScope"] == WRITE
        assert 'error="insufficient_scope", scope="gwlab:write"' in response.headers["www-authenticate"]
    for scopes in ([WRITE], ["gwlab:*"], ["*:write"], ["*:*"]):
        assert post(gateway, nap(new_key()), token=gateway.token(*scopes)).status_code == 200, scopes
    assert hits(podium_env, key) == 0


def test_a_valid_token_is_forwarded_with_its_subject_and_without_itself(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key = gateways(), new_key()
    token = gateway.token(WRITE, subject="alice")
    response = post(
        gateway,
        nap(key, pad="é" * 10),
        token=token,
        headers={
            "x-podium-subject": "root",  # a client cannot speak for someone else
            "X-Podium-Anything": "x",
            "x-restate-id": "forged",
            "cookie": f"session-{key}-secret",
            "x-custom": f"kept-{key}",
        },
    )
    assert response.status_code == 200, response.text
    woke = response.json()
    assert woke["caller"] == "alice"
    seen = woke["headers"]
    assert seen["x-podium-subject"] == "alice"
    assert "authorization" not in seen  # the engine would journal it
    assert "cookie" not in seen
    assert "x-podium-anything" not in seen
    assert "x-restate-id" not in seen
    assert seen["x-custom"] == f"kept-{key}"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert (woke["key"], woke["padLength"]) == (key, 10)
    # The engine keeps the headers it was sent (the search finds the one that was forwarded)...
    assert engine_holds(podium_env.admin_url, f"kept-{key}") != []
    # ... and neither the token (its signature) nor the cookie ever got there.
    assert engine_holds(podium_env.admin_url, token.rpartition(".")[2][:40]) == []
    assert engine_holds(podium_env.admin_url, f"session-{key}-secret") == []


def test_the_gateway_answers_like_the_ingress_for_handler_errors(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key = gateways(), new_key()
    bad = {"key": key, "ms": "soon"}
    direct, proxied = post(podium_env.ingress_url, bad), post(gateway, bad)
    assert proxied.status_code == direct.status_code == 400
    assert proxied.json()["message"] == direct.json()["message"]
    assert "ms" in proxied.json()["message"]
    assert proxied.headers["content-type"] == direct.headers["content-type"]
    assert set(proxied.headers) - {"connection", "x-correlation-id"} == set(direct.headers) - {"connection"}


def test_a_private_or_unknown_handler_is_404_and_starts_nothing(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key = gateways(), new_key()
    token = gateway.token("*:*")
    for path in (
        f"/GatewayCounter/{key}/Reset",  # private
        f"/GatewayCounter/{key}/Nope",  # unknown
        "/GatewayCounter/Hit",  # keyed handler without its key
        f"/GatewayCounter/{key}/x/Hit",
        f"/GatewayCount%65r/{key}/Hit",  # percent-encoded names are not names
        f"/GatewayCounter/{key}/../../GatewayCounter/{key}/Reset",
        f"/restate/awakeables/{key}/resolve",
        f"/restate/invocation/{key}/output",
        "/restate/health",
    ):
        response = httpx.post(f"{gateway.url}{path}", headers=bearer(token), timeout=10)
        assert response.status_code == 404, (path, response.text)
        assert "no public handler" in response.json()["message"]
    assert httpx.get(f"{gateway.url}/GatewayCounter/{key}/Hit", headers=bearer(token)).status_code == 404
    assert invocations(podium_env, key) == []
    assert podium_env.call_private(f"/GatewayCounter/{key}/Reset") == 1000  # it exists, privately


def test_the_engines_openapi_paths_pass_for_public_handlers_only(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key, idem = gateways(), new_key(), new_key("idem")
    write, everything = bearer(gateway.token(WRITE)), bearer(gateway.token("*:*"))
    called = httpx.post(f"{gateway.url}/restate/call/GatewayCounter/{key}/Hit", headers=write)
    assert (called.status_code, called.json()) == (200, 1)
    sent = httpx.post(
        f"{gateway.url}/restate/send/GatewayCounter/{key}/Hit", headers={**write, "idempotency-key": idem}
    )
    assert sent.status_code == 202, sent.text
    attached = httpx.get(
        f"{gateway.url}/restate/invocation/GatewayCounter/{key}/Hit/{idem}/attach", headers=write
    )
    assert (attached.status_code, attached.json()) == (200, 2)
    reader = bearer(gateway.token(READ))
    assert (
        httpx.get(
            f"{gateway.url}/restate/invocation/GatewayCounter/{key}/Hit/{idem}/output", headers=reader
        ).status_code
        == 403
    )
    for closed in (
        f"/restate/call/GatewayCounter/{key}/Reset",
        f"/restate/send/GatewayCounter/{key}/Reset",
    ):
        assert httpx.post(f"{gateway.url}{closed}", headers=everything).status_code == 404, closed
    private_result = f"/restate/invocation/GatewayCounter/{key}/Reset/{idem}/attach"
    assert httpx.get(f"{gateway.url}{private_result}", headers=everything).status_code == 404
    assert hits(podium_env, key) == 2


def test_the_ingress_client_goes_through_the_gateway_with_a_token(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key = gateways(), new_key()
    with IngressClient(gateway.url, token=gateway.token(WRITE, READ)) as client:
        assert client.call(hit, None, key=key) == 1
        assert client.call(count, None, key=key) == 1
        with pytest.raises(IngressError) as refused:
            client.call(reset, None, key=key)
    assert refused.value.status_code == 404
    with IngressClient(gateway.url) as anonymous, pytest.raises(IngressError) as unauthorized:
        anonymous.call(hit, None, key=key)
    assert unauthorized.value.status_code == 401


def test_the_route_table_follows_the_engine(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway = gateways()
    routes = gateway.gateway.door.routes.routes
    assert routes[("GatewayCounter", "Hit")].scope == WRITE
    assert routes[("GatewayCounter", "Count")].scope == READ
    assert ("GatewayCounter", "Reset") not in routes
    assert routes[("GatewayLab", "Sleep")].keyed is False


def test_health_is_open_and_stats_need_a_scope(gateways: Callable[..., GatewayEnv]) -> None:
    gateway = gateways(upstream=f"http://127.0.0.1:{free_port()}", max_in_flight=3, max_queue=5)
    assert httpx.get(f"{gateway.url}/podium/gateway/health").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/podium/gateway/stats").status_code == 401
    no_scope = httpx.get(f"{gateway.url}/podium/gateway/stats", headers=bearer(gateway.token(WRITE)))
    assert no_scope.status_code == 403
    assert stats(gateway) == {
        "inFlight": 0,
        "queued": 0,
        "maxInFlight": 3,
        "maxQueue": 5,
        "admitted": 0,
        "rejected": 0,
        "completed": 0,
        "upstreamErrors": 0,
        "abandoned": 0,
        "refused": 2,
        "services": {},
    }
    wrong = httpx.post(f"{gateway.url}/podium/gateway/stats", headers=bearer(gateway.token("*:*")))
    assert wrong.status_code == 405


def test_a_card_number_in_a_body_is_refused_before_the_engine(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key = gateways(), new_key()
    for card in ("4242424242424242", "4242 4242 4242 4242", "5555-5555-5555-4444", "378282246310005"):
        response = post(gateway, nap(key, pad=f"pay with {card} please"))
        assert response.status_code == 400, card
        assert "Tokenize" in response.json()["message"]
    assert hits(podium_env, key) == 0
    # Digits that are not a card number pass: a failed Luhn check, a timestamp, a short number.
    for pad in ("4242424242424241", "1796397378858", "12345", "order 2026-12-04"):
        assert post(gateway, nap(new_key(), pad=pad)).status_code == 200, pad


def test_an_edge_route_is_served_by_the_gateway_for_its_scope(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    seen: list[tuple[bytes, str]] = []

    async def echo(body: bytes, claims: Claims) -> tuple[int, dict[str, Any]]:
        seen.append((body, claims.subject))
        return 201, {"length": len(body)}

    gateway = gateways(edge=[EdgeRoute("/Vault/Keep", "vault:write", echo)])
    refused = httpx.post(
        f"{gateway.url}/Vault/Keep", content=b"4242424242424242", headers=bearer(gateway.token(WRITE))
    )
    assert refused.status_code == 403
    answer = httpx.post(
        f"{gateway.url}/Vault/Keep",
        content=b"4242424242424242",
        headers=bearer(gateway.token("vault:write", subject="bob")),
    )
    assert (answer.status_code, answer.json()) == (201, {"length": 16})
    assert seen == [(b"4242424242424242", "bob")]  # served at the edge, card and all: never forwarded
    assert stats(gateway)["admitted"] == 0


# -- the Auth Service: client credentials -------------------------------------------------------------------


def _token_request(gateway: GatewayEnv, client_id: str, secret: str, **form: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/auth/token",
        data={"grant_type": "client_credentials", **form},
        auth=(client_id, secret),
        timeout=30,
    )


def test_client_credentials_end_to_end(podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]) -> None:
    gateway, key = gateways(), new_key()
    secret = gateway.clients.add("shop-web", ("gwlab:write", "gwlab:read"))
    answer = _token_request(gateway, "shop-web", secret, scope="gwlab:write")
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    token = answer.json()
    assert (token["token_type"], token["expires_in"], token["scope"]) == ("Bearer", 900, "gwlab:write")
    woke = post(gateway, nap(key), token=token["access_token"])
    assert woke.status_code == 200
    assert woke.json()["caller"] == "shop-web"
    # The same with the credentials in the form instead of Basic.
    in_form = httpx.post(
        f"{gateway.url}/auth/token",
        data={"grant_type": "client_credentials", "client_id": "shop-web", "client_secret": secret},
    )
    assert in_form.status_code == 200
    assert in_form.json()["scope"] == "gwlab:write gwlab:read"
    # A client cannot ask for more than it was given.
    wider = _token_request(gateway, "shop-web", secret, scope="gwlab:operator")
    assert (wider.status_code, wider.json()["error"]) == (400, "invalid_scope")
    assert _token_request(gateway, "shop-web", secret, grant_type="password").json()["error"] == (
        "unsupported_grant_type"
    )


def test_a_wrong_secret_is_401_and_repeated_failures_lock_the_client(
    gateways: Callable[..., GatewayEnv],
) -> None:
    gateway = gateways()
    secret = gateway.clients.add("guessed", ("gwlab:read",))
    for attempt in range(4):
        wrong = _token_request(gateway, "guessed", f"guess-{attempt}")
        assert wrong.status_code == 401, attempt
        assert wrong.json()["error"] == "invalid_client"
        assert wrong.headers["www-authenticate"] == 'Basic realm="podium"'
    assert _token_request(gateway, "guessed", "guess-4").status_code == 401  # the fifth locks it
    locked = _token_request(gateway, "guessed", secret)  # even the right secret waits now
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    assert "too many wrong secrets" in locked.json()["error_description"]
    assert_eventually(
        lambda: _token_request(gateway, "guessed", secret).status_code == 200, timeout=10, interval=0.5
    )
    # Unknown ids answer like wrong secrets, and are locked the same way.
    for _ in range(5):
        assert _token_request(gateway, "nobody", "x").status_code == 401
    assert _token_request(gateway, "nobody", "x").status_code == 429
    assert _token_request(gateway, "bad id!", "x").status_code == 401


def test_a_client_secret_is_never_stored_plain(gateways: Callable[..., GatewayEnv]) -> None:
    gateway = gateways()
    secret = gateway.clients.add("stored", ("gwlab:read",))
    database: Path = gateway.clients.path
    assert secret.encode() not in database.read_bytes()
    assert b"$argon2id$" in database.read_bytes()
    assert database.stat().st_mode & 0o777 == 0o600
    rotated = gateway.clients.rotate("stored")
    assert _token_request(gateway, "stored", secret).status_code == 401
    assert _token_request(gateway, "stored", rotated).status_code == 200


# -- passing through ---------------------------------------------------------------------------------------


def test_an_idempotency_key_through_the_gateway_runs_the_handler_once(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key = gateways(), new_key()
    headers = {"idempotency-key": new_key("idem"), **bearer(gateway.token(WRITE))}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:  # one keep-alive connection
        answers = [client.post(f"/GatewayCounter/{key}/Hit", headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json() for a in answers] == [1, 1, 1]
    assert hits(podium_env, key) == 1


def test_a_chunked_request_body_is_forwarded_whole(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key = gateways(), new_key()
    payload = json.dumps(nap(key, pad="x" * 50_000)).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 7_000):
            yield payload[start : start + 7_000]

    response = httpx.post(
        f"{gateway.url}/GatewayLab/Sleep",
        content=chunks(),
        headers={"content-type": "application/json", **bearer(gateway.token(WRITE))},
        timeout=30,
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 200, response.text
    assert response.json()["padLength"] == 50_000


def test_an_invocation_is_not_reachable_by_its_id(gateways: Callable[..., GatewayEnv]) -> None:
    gateway = gateways()
    sent = httpx.post(
        f"{gateway.url}/GatewayLab/Sleep/send",
        json=nap(new_key()),
        headers={**bearer(gateway.token(WRITE)), "idempotency-key": new_key("idem")},
    )
    assert sent.status_code == 202, sent.text
    invocation = sent.json()["invocationId"]
    attach = httpx.get(
        f"{gateway.url}/restate/invocation/{invocation}/attach", headers=bearer(gateway.token("*:*"))
    )
    assert attach.status_code == 404


def test_pipelined_requests_are_answered_in_order(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key = gateways(), new_key()
    auth = f"authorization: Bearer {gateway.token(WRITE)}\r\n"
    one = f"POST /GatewayCounter/{key}/Hit HTTP/1.1\r\nhost: x\r\n{auth}content-length: 0\r\n\r\n".encode()
    last = f"POST /GatewayCounter/{key}/Hit HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n".encode()
    raw = raw_exchange(gateway.gateway.port, one + one + last)
    assert split_responses(raw) == [(200, b"1"), (200, b"2"), (200, b"3")]


# -- admission ---------------------------------------------------------------------------------------------


def test_the_excess_is_refused_at_once_and_never_reaches_the_engine(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway = gateways(max_in_flight=2, max_queue=0, retry_after=1.5)
    slow_ms = 2_000
    keys = [new_key() for _ in range(3)]
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(post, gateway, nap(k, slow_ms)) for k in keys[:2]]
        assert_eventually(lambda: stats(gateway)["inFlight"] == 2, message="two requests in flight")
        started = time.monotonic()
        refused = post(gateway, nap(keys[2], 0))
        elapsed = time.monotonic() - started
        assert [f.result().status_code for f in slow] == [200, 200]
    assert refused.status_code == 503
    assert elapsed < slow_ms / 1000 / 2  # well under the slow handler's duration
    assert refused.headers["retry-after"] == "2"  # whole seconds, rounded up
    body = refused.json()
    assert body["message"].startswith("overloaded:")
    assert "try again after 2 s" in body["message"]
    assert (body["inFlight"], body["limit"]) == (2, 2)
    assert [hits(podium_env, k) for k in keys] == [1, 1, 0]
    counters = stats(gateway)
    assert {k: counters[k] for k in ("admitted", "rejected", "completed", "upstreamErrors", "inFlight")} == {
        "admitted": 2,
        "rejected": 1,
        "completed": 2,
        "upstreamErrors": 0,
        "inFlight": 0,
    }
    assert (counters["maxInFlight"], counters["maxQueue"], counters["queued"]) == (2, 0, 0)


def test_a_service_with_slots_of_its_own_is_refused_alone_and_never_takes_the_shared_ones(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway = gateways(max_in_flight=1, service_limits={"GatewayLab": ServiceLimit(max_in_flight=2)})
    keys = [new_key() for _ in range(3)]
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(post, gateway, nap(k, 2_000)) for k in keys[:2]]
        assert_eventually(lambda: stats(gateway)["inFlight"] == 2, message="two naps in flight")
        counters = stats(gateway)
        refused = post(gateway, nap(keys[2], 0))
        # The shared slot is free: another service is served while GatewayLab's own slots are full.
        other = new_key()
        hit = httpx.post(
            f"{gateway.url}/GatewayCounter/{other}/Hit", headers=bearer(gateway.token(WRITE)), timeout=30
        )
        assert [f.result().status_code for f in slow] == [200, 200]  # two at once: more than 1 shared
    assert refused.status_code == 503
    assert refused.json()["message"].startswith("overloaded: all 2 slots of GatewayLab are in use")
    assert (refused.json()["inFlight"], refused.json()["limit"]) == (2, 2)
    assert hit.status_code == 200
    assert [hits(podium_env, k) for k in keys] == [1, 1, 0]
    assert counters["services"] == {
        "GatewayLab": {"inFlight": 2, "queued": 0, "maxInFlight": 2, "maxQueue": 0}
    }
    assert (counters["maxInFlight"], counters["inFlight"]) == (1, 2)  # the shared limit; all in flight


def test_a_service_limit_is_parsed_with_a_clear_error() -> None:
    assert ServiceLimit.parse("ShopOrder=32/16") == ("ShopOrder", ServiceLimit(32, 16))
    assert ServiceLimit.parse("ShopOrder=8") == ("ShopOrder", ServiceLimit(8, 0))
    for bad in ("ShopOrder", "=8", "ShopOrder=0", "ShopOrder=8/-1", "ShopOrder=x"):
        with pytest.raises(ValueError, match="expected Service=IN_FLIGHT"):
            ServiceLimit.parse(bad)


def test_a_queued_request_proceeds_when_a_slot_frees(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway = gateways(max_in_flight=1, max_queue=1, queue_timeout=15)
    first, second = new_key(), new_key()
    finished: dict[str, float] = {}

    def timed(key: str, ms: int) -> httpx.Response:
        response = post(gateway, nap(key, ms))
        finished[key] = time.monotonic()
        return response

    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(timed, first, 800)
        assert_eventually(lambda: stats(gateway)["inFlight"] == 1, message="the first in flight")
        queued = pool.submit(timed, second, 0)
        assert_eventually(lambda: stats(gateway)["queued"] == 1, message="the second queued")
        assert hits(podium_env, second) == 0  # waiting at the gateway, not in the engine
        assert (slow.result().status_code, queued.result().status_code) == (200, 200)
    assert finished[second] >= finished[first]
    assert hits(podium_env, second) == 1
    assert stats(gateway)["rejected"] == 0


def test_a_request_that_waits_too_long_in_the_queue_is_refused(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway = gateways(max_in_flight=1, max_queue=4, queue_timeout=0.3)
    late = new_key()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post, gateway, nap(new_key(), 1_500))
        assert_eventually(lambda: stats(gateway)["inFlight"] == 1, message="one request in flight")
        started = time.monotonic()
        refused = post(gateway, nap(late, 0))
        elapsed = time.monotonic() - started
        assert slow.result().status_code == 200
    assert refused.status_code == 503
    assert 0.2 < elapsed < 1.2
    assert "no slot freed up within 0.3 s" in refused.json()["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert hits(podium_env, late) == 0


def test_a_client_that_goes_away_frees_its_queue_place_but_its_slot_only_when_the_engine_answers(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway = gateways(max_in_flight=1, max_queue=1, queue_timeout=30)
    slow = nap(new_key(), 2_000)
    idempotency_key = new_key("idem")
    body = json.dumps(slow).encode()
    request = (
        f"POST /GatewayLab/Sleep HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {gateway.token(WRITE)}\r\n"
        f"idempotency-key: {idempotency_key}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    port = gateway.gateway.port
    with socket.create_connection(("127.0.0.1", port)) as in_flight:
        in_flight.sendall(request)
        assert_eventually(lambda: stats(gateway)["inFlight"] == 1, message="one request in flight")
        with socket.create_connection(("127.0.0.1", port)) as waiting:
            waiting.sendall(request)
            assert_eventually(lambda: stats(gateway)["queued"] == 1, message="one request queued")
        assert_eventually(lambda: stats(gateway)["queued"] == 0, message="the queue place freed")
    left = time.monotonic()
    assert_eventually(lambda: stats(gateway)["abandoned"] == 1, message="the client counted as gone")
    # Its invocation still runs in the engine, so its slot stays taken until the engine answers.
    assert stats(gateway)["inFlight"] == 1
    assert_eventually(lambda: stats(gateway)["inFlight"] == 0, timeout=10, message="the slot freed")
    assert time.monotonic() - left > 0.5
    assert post(gateway, nap(new_key(), 0)).status_code == 200
    counters = stats(gateway)
    assert (counters["admitted"], counters["abandoned"], counters["completed"], counters["rejected"]) == (
        2,
        1,
        2,
        0,
    )
    assert hits(podium_env, slow["key"]) == 1  # the abandoned request ran once, the queued one never


# -- refusals and errors of the gateway's own -------------------------------------------------------------


def test_an_oversized_body_is_refused_with_413(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway = gateways(max_body=1024)
    big = json.dumps(nap(new_key(), pad="x" * 2048)).encode()
    response = httpx.post(f"{gateway.url}/GatewayLab/Sleep", content=big, timeout=10)
    assert response.status_code == 413
    assert "over the limit of 1024 bytes" in response.json()["message"]
    chunked = httpx.post(f"{gateway.url}/GatewayLab/Sleep", content=iter([big[:1000], big[1000:]]))
    assert chunked.status_code == 413
    # With Expect: 100-continue the refusal comes before the body is sent.
    raw = raw_exchange(
        gateway.gateway.port,
        b"POST /GatewayLab/Sleep HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5000\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert stats(gateway)["admitted"] == 0


def test_expect_100_continue_is_answered_then_the_body_forwarded(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway, key = gateways(), new_key()
    body = json.dumps(nap(key)).encode()
    with socket.create_connection(("127.0.0.1", gateway.gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /GatewayLab/Sleep HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\nconnection: close\r\n"
            + f"authorization: Bearer {gateway.token(WRITE)}\r\n".encode()
            + f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    status, _, answer = split_response(raw)
    assert status == 200
    assert json.loads(answer)["key"] == key


SMUGGLING = {
    "not http": (b"NONSENSE\r\n\r\n", 400),
    "header without a colon": (b"GET /x HTTP/1.1\r\nbad header\r\n\r\n", 400),
    "length not a number": (b"POST /x HTTP/1.1\r\ncontent-length: ten\r\n\r\n", 400),
    "length and chunked": (
        b"POST /x HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
        400,
    ),
    "two lengths": (b"POST /x HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd", 400),
    "the same length twice": (b"POST /x HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc", 400),
    "a list of lengths": (b"POST /x HTTP/1.1\r\ncontent-length: 3, 4\r\n\r\nabcd", 400),
    "a signed length": (b"POST /x HTTP/1.1\r\ncontent-length: +3\r\n\r\nabc", 400),
    "bad chunk": (b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", 400),
    "chunk without its CRLF": (
        b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
        400,
    ),
    "gzip then chunked": (b"POST /x HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    "chunked then gzip": (b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    "bare LF line endings": (b"POST /x HTTP/1.1\nhost: x\ncontent-length: 0\n\n", 400),
    "bare LF inside the head": (b"POST /x HTTP/1.1\r\nhost: x\nx-a: b\r\ncontent-length: 0\r\n\r\n", 400),
    "bare CR in a value": (b"POST /x HTTP/1.1\r\nx-a: b\rc\r\ncontent-length: 0\r\n\r\n", 400),
    "NUL in a value": (b"POST /x HTTP/1.1\r\nx-a: b\x00c\r\ncontent-length: 0\r\n\r\n", 400),
    "control character in a value": (b"POST /x HTTP/1.1\r\nx-a: b\x01c\r\ncontent-length: 0\r\n\r\n", 400),
    "space before the colon": (b"POST /x HTTP/1.1\r\ncontent-length : 0\r\n\r\n", 400),
    "folded header": (b"POST /x HTTP/1.1\r\nx-a: b\r\n c\r\ncontent-length: 0\r\n\r\n", 400),
    "absolute target": (b"POST http://evil/x HTTP/1.1\r\ncontent-length: 0\r\n\r\n", 400),
    "upgrade": (b"GET /x HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n", 501),
    "connect": (b"CONNECT evil:443 HTTP/1.1\r\nhost: evil\r\n\r\n", 501),
    "http/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    "http/1.2": (b"GET /x HTTP/1.2\r\n\r\n", 400),
    "oversized head": (b"GET /x HTTP/1.1\r\n" + b"x-a: " + b"b" * 70_000 + b"\r\n\r\n", 431),
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_a_malformed_or_ambiguous_request_is_refused_and_never_forwarded(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv], case: str
) -> None:
    gateway = gateways()
    request_bytes, status = SMUGGLING[case]
    # Each request carries a good token and a second request smuggled behind it: neither may pass.
    key = new_key()
    auth = f"authorization: Bearer {gateway.token('*:*')}\r\n".encode()
    first, _, rest = request_bytes.partition(b"\n")
    smuggled = f"POST /GatewayCounter/{key}/Hit HTTP/1.1\r\nhost: x\r\n".encode() + auth + b"\r\n"
    raw = raw_exchange(gateway.gateway.port, first + b"\n" + auth + rest + smuggled)
    answered, headers, body = split_response(raw)
    assert answered == status, (case, raw[:300])
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert json.loads(body[: int(headers["content-length"])])["message"]
    assert stats(gateway)["admitted"] == 0
    assert hits(podium_env, key) == 0


def test_a_good_request_smuggled_nothing_passes_the_same_checks(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    """The control for the case above: the same shape, well framed, is two requests answered in turn."""
    gateway, key = gateways(), new_key()
    auth = f"authorization: Bearer {gateway.token('*:*')}\r\n".encode()
    one = f"POST /GatewayCounter/{key}/Hit HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n".encode() + auth
    two = f"POST /GatewayCounter/{key}/Hit HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".encode() + auth
    assert split_responses(raw_exchange(gateway.gateway.port, one + b"\r\n" + two + b"\r\n")) == [
        (200, b"1"),
        (200, b"2"),
    ]


def test_an_upstream_that_is_down_answers_502(gateways: Callable[..., GatewayEnv]) -> None:
    gateway = gateways(upstream=f"http://127.0.0.1:{free_port()}")
    response = post(gateway, nap("k"))
    assert response.status_code == 502
    assert "could not connect to the upstream" in response.json()["message"]
    counters = stats(gateway)
    assert (counters["admitted"], counters["upstreamErrors"], counters["inFlight"]) == (1, 1, 0)


def test_an_upstream_that_closes_mid_answer_answers_502(gateways: Callable[..., GatewayEnv]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def half_an_answer() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")

        threading.Thread(target=half_an_answer, daemon=True).start()
        gateway = gateways(upstream=f"http://127.0.0.1:{listener.getsockname()[1]}")
        response = post(gateway, nap("k"))
    assert response.status_code == 502
    assert "closed the connection in the middle of its answer" in response.json()["message"]
    assert stats(gateway)["upstreamErrors"] == 1


def test_an_upstream_that_does_not_answer_in_time_answers_504(
    podium_env: PodiumEnv, gateways: Callable[..., GatewayEnv]
) -> None:
    gateway = gateways(upstream_timeout=0.3)
    slow, headers = nap(new_key(), 800), {"idempotency-key": new_key("idem")}
    response = post(gateway, slow, headers=headers)
    assert response.status_code == 504
    assert "did not answer within 0.3 s" in response.json()["message"]
    assert stats(gateway)["inFlight"] == 0
    assert post(podium_env.ingress_url, slow, headers=headers).is_success  # the invocation carried on


# -- the command -------------------------------------------------------------------------------------------


def test_the_command_serves_until_sigterm(podium_env: PodiumEnv, tmp_path: Path) -> None:
    port = free_port()
    key = harness_issuer()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "podium.gateway", "--upstream", podium_env.ingress_url),
            *("--admin-url", podium_env.admin_url, "--issuer-key", str(key.path)),
            *("--clients", str(tmp_path / "auth" / "clients.db")),
            *("--port", str(port), "--max-in-flight", "4", "--max-queue", "2", "--queue-timeout", "0.5"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/podium/gateway/health").status_code == 200
            except httpx.HTTPError:
                return False

        assert_eventually(up, timeout=15, message="the gateway command to listen")
        token = podium.gateway.TokenIssuer(key).issue("cli-test", ["*:*"], timedelta(minutes=5))
        answer = httpx.post(f"{url}/GatewayLab/Sleep", json=nap(new_key()), headers=bearer(token), timeout=30)
        assert answer.status_code == 200, answer.text
        assert httpx.post(f"{url}/GatewayLab/Sleep", json=nap(new_key())).status_code == 401
        assert httpx.post(f"{url}/auth/token", data={"grant_type": "client_credentials"}).status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        process.kill()
        output = process.communicate()[0].decode()
    assert "gateway on" in output
