"""Access tokens: JWTs signed with the issuer's Ed25519 key (EdDSA), verified by the gateway.

A token names its subject (``sub``), what it may do (``scope``: space-separated ``<system>:<kind>``
scopes, RFC 8693 style), who issued it and for whom (``iss``, ``aud``), and when it is good (``iat``,
``nbf``, ``exp``). Verification is PyJWT's, with the algorithm pinned to EdDSA, so ``none``, HMAC with
the public key as a secret (algorithm confusion) and RSA tokens are refused whatever their header says.

A scope is ``<system>:<kind>`` with kind ``read``, ``write`` or ``operator``; either half may be ``*``
(``travel:*`` is every kind of call to the travel system, ``*:read`` every read). A handler's required
scope comes from its declaration (``public="write"`` on a service with ``system="travel"``), so the
grants are configured in one place: the code, and the README table generated from it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from podium._caller import INTERNAL_CALLER
from podium.runtime import KeyPair

ALGORITHM = "EdDSA"
"""The only signature algorithm issued or accepted."""
ISSUER = "podium"
"""``iss`` of the tokens ``podium up``'s issuer signs."""
AUDIENCE = "podium-gateway"
"""``aud`` the gateway requires."""
MAX_TTL = timedelta(days=1)
"""Longest life a token may be issued with (so a retired issuer key can be dropped a day later)."""
_KINDS = ("read", "write", "operator", "*")


class TokenError(Exception):
    """A token that cannot be accepted: missing, malformed, forged, expired, or for someone else."""


def parse_scopes(text: str | Iterable[str]) -> tuple[str, ...]:
    """Scopes from a space-separated string (or several), each checked to be ``<system>:<kind>``.

    Raises:
        ValueError: A scope that is not ``<system>:<kind>`` with a known kind.
    """
    parts = text.split() if isinstance(text, str) else [p for item in text for p in item.split()]
    scopes: list[str] = []
    for part in parts:
        system, colon, kind = part.partition(":")
        if not colon or not system or kind not in _KINDS or not _is_name(system):
            raise ValueError(
                f"scope {part!r} is not <system>:<kind> with kind one of read, write, operator or *"
            )
        if part not in scopes:
            scopes.append(part)
    return tuple(scopes)


def _is_name(system: str) -> bool:
    return system == "*" or system.replace("-", "").replace("_", "").isalnum()


def grants(scopes: Iterable[str], required: str) -> bool:
    """Whether ``scopes`` include ``required`` (``<system>:<kind>``), wildcards counted."""
    held = scopes if isinstance(scopes, (tuple, frozenset, set)) else tuple(scopes)
    if required in held:
        return True
    system, _, kind = required.partition(":")
    return f"{system}:*" in held or f"*:{kind}" in held or "*:*" in held


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    subject: str
    """``sub``: who the caller is (a client id, a person)."""
    scopes: tuple[str, ...]
    """``scope``: what the caller may do."""
    expires_at: float
    """``exp``, seconds since the epoch."""
    token_id: str
    """``jti``."""


class TokenIssuer:
    """Signs access tokens with the issuer's private key.

    Args:
        key: The issuer's key pair (``<data dir>/keys/token-issuer.pem`` under ``podium up``).
        issuer: ``iss`` of the tokens.
        audience: ``aud`` of the tokens.
    """

    def __init__(self, key: KeyPair, *, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.key = key
        self.issuer = issuer
        self.audience = audience

    def issue(self, subject: str, scopes: Iterable[str], ttl: timedelta) -> str:
        """A token for ``subject`` with ``scopes``, good from now for ``ttl`` (at most a day).

        Raises:
            ValueError: An empty subject, a bad scope, or a ttl that is not positive or over a day.
        """
        if not subject or not subject.isprintable() or len(subject) > 200:
            raise ValueError("subject must be 1 to 200 printable characters")
        if subject == INTERNAL_CALLER:
            raise ValueError(
                f"subject {INTERNAL_CALLER!r} is what handlers call the trusted doors; pick another"
            )
        if ttl <= timedelta(0) or ttl > MAX_TTL:
            raise ValueError(f"ttl must be positive and at most {MAX_TTL}")
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "scope": " ".join(parse_scopes(scopes)),
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl.total_seconds()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            claims,
            self.key.private_key,
            algorithm=ALGORITHM,
            headers={"kid": self.key.key_id, "typ": "at+jwt"},
        )


class TokenVerifier:
    """Verifies access tokens against the issuer's public keys, remembering the ones it verified.

    A client sends the same token with every request until it expires, so a verified token is kept (up
    to ``cache_size`` of them) with its claims and checked again only against the clock; signature
    verification happens once per token, not once per request.

    Args:
        keys: Public keys by key id (``kid``): the current issuer key, and retired ones still trusted.
        issuer: Required ``iss``.
        audience: Required ``aud``.
        leeway: Clock skew tolerated on ``exp`` and ``nbf``.
        cache_size: Verified tokens remembered.
    """

    def __init__(
        self,
        keys: Mapping[str, Ed25519PublicKey],
        *,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        leeway: timedelta = timedelta(seconds=5),
        cache_size: int = 4096,
    ) -> None:
        if not keys:
            raise ValueError("a token verifier needs at least one public key")
        self.keys = dict(keys)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._leeway = leeway.total_seconds()
        self.cache_size = cache_size
        self._verified: dict[str, Claims] = {}

    def verify(self, token: str) -> Claims:
        """The claims of ``token`` once its signature, issuer, audience and times check out.

        Raises:
            TokenError: Why it is refused, in words a client can act on.
        """
        claims = self._verified.get(token)
        if claims is not None:
            if time.time() >= claims.expires_at + self._leeway:
                del self._verified[token]
                raise TokenError("the token has expired")
            return claims
        claims = self._decode(token)
        if len(self._verified) >= self.cache_size:
            del self._verified[next(iter(self._verified))]  # the one verified longest ago
        self._verified[token] = claims
        return claims

    def _decode(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"the token is malformed: {exc}") from None
        key = self.keys.get(str(header.get("kid", "")))
        if key is None:
            raise TokenError("the token was not signed by a key this gateway trusts")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenError("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("the token is from another issuer") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError(f"the token must be signed with {ALGORITHM}") from None
        except jwt.InvalidSignatureError:
            raise TokenError("the token's signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"the token is invalid: {exc}") from None
        scope = payload.get("scope", "")
        try:
            scopes = parse_scopes(scope) if isinstance(scope, str) else ()
        except ValueError as exc:
            raise TokenError(f"the token's scope is invalid: {exc}") from None
        subject = payload["sub"]
        if not isinstance(subject, str) or not subject or not subject.isprintable():
            raise TokenError("the token has no subject")
        if subject == INTERNAL_CALLER:  # handlers would take it for the trusted doors
            raise TokenError(f"the token's subject may not be {INTERNAL_CALLER!r}")
        return Claims(subject, scopes, float(payload["exp"]), str(payload.get("jti", "")))
