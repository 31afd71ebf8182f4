"""The Auth Service: API clients and the OAuth 2.0 client-credentials grant (RFC 6749 §4.4).

Operators register clients with ``podium clients add`` (an operator action, on the machine that holds
the data directory): a client has an id, the scopes it may ask for, and a secret that is shown once and
stored only as an Argon2id hash (argon2-cffi). A client trades its id and secret for an access token
at the gateway's ``POST /auth/token``.

It is served by the gateway, not by a Restate handler, on purpose: the engine journals every
invocation's input, so a secret sent to a handler would be written to the journal. Here the secret is
checked in the gateway's memory and never goes further.

Guessing is slowed down: each wrong secret counts against the client id, and from the fifth failure in a
row the id is locked for a time that doubles with each further failure (1 s, 2 s, 4 s ... at most 15
minutes); a locked id is refused without its secret being looked at. The counters of registered clients
are kept in the store, so a restart does not reset them; unknown ids are counted in memory. An unknown
id costs the same Argon2 work as a known one, so timing does not tell which ids exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from podium.gateway._tokens import TokenIssuer, grants, parse_scopes

CLIENTS_FILE = "clients.db"
"""The client store, under ``<data dir>/auth/``."""
TOKEN_TTL = timedelta(minutes=15)
"""Life of a token issued to a client."""
FREE_FAILURES = 4
"""Wrong secrets in a row before an id is locked."""
MAX_LOCK = timedelta(minutes=15)
_SCHEMA = """
create table if not exists clients (
    client_id text primary key,
    secret_hash text not null,
    scopes text not null,
    created real not null
);
create table if not exists failures (
    client_id text primary key,
    count integer not null,
    locked_until real not null
);
"""
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_client_id(client_id: str) -> str:
    """``client_id`` if it is 1 to 64 of ``A-Z a-z 0-9 - _ .``.

    Raises:
        ValueError: Otherwise, saying why.
    """
    if not 1 <= len(client_id) <= 64 or not set(client_id) <= _ID_CHARS:
        raise ValueError("a client id is 1 to 64 letters, digits, '-', '_' or '.'")
    return client_id


@dataclass(frozen=True)
class Client:
    """A registered API client (never its secret)."""

    client_id: str
    scopes: tuple[str, ...]
    """What its tokens may carry."""
    created: float


class ClientStore:
    """Registered clients in an owner-only SQLite file.

    Args:
        path: The database file; its folder is created with mode 0700 and the file with 0600.
        hasher: Argon2 parameters (argon2-cffi's defaults: Argon2id, 64 MiB, 3 passes).
    """

    def __init__(self, path: Path, *, hasher: PasswordHasher | None = None) -> None:
        self.path = path
        self.hasher = hasher or PasswordHasher()
        self._dummy = self.hasher.hash(secrets.token_urlsafe(32))
        self._unknown: OrderedDict[str, tuple[int, float]] = OrderedDict()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.executescript(_SCHEMA)
            yield db
        finally:
            db.close()

    def add(self, client_id: str, scopes: tuple[str, ...]) -> str:
        """Register a client; returns its secret, which is not kept and cannot be shown again.

        Raises:
            ValueError: A bad id or scope, or an id that is taken.
        """
        check_client_id(client_id)
        if not scopes:
            raise ValueError("a client needs at least one scope")
        secret = secrets.token_urlsafe(32)
        with self._db() as db:
            try:
                db.execute(
                    "insert into clients values (?, ?, ?, ?)",
                    (client_id, self.hasher.hash(secret), " ".join(parse_scopes(scopes)), time.time()),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"client {client_id!r} already exists") from None
        return secret

    def rotate(self, client_id: str) -> str:
        """Give a client a new secret (the old one stops working at once); returns it.

        Raises:
            KeyError: No such client.
        """
        secret = secrets.token_urlsafe(32)
        with self._db() as db:
            changed = db.execute(
                "update clients set secret_hash = ? where client_id = ?",
                (self.hasher.hash(secret), client_id),
            ).rowcount
            db.execute("delete from failures where client_id = ?", (client_id,))
        if not changed:
            raise KeyError(client_id)
        return secret

    def remove(self, client_id: str) -> bool:
        """Forget a client; True if it existed. Tokens it already holds last until they expire."""
        with self._db() as db:
            db.execute("delete from failures where client_id = ?", (client_id,))
            return db.execute("delete from clients where client_id = ?", (client_id,)).rowcount > 0

    def clients(self) -> list[Client]:
        """Every registered client."""
        with self._db() as db:
            rows = db.execute("select client_id, scopes, created from clients order by client_id").fetchall()
        return [Client(row[0], tuple(row[1].split()), row[2]) for row in rows]

    def authenticate(self, client_id: str, secret: str) -> Client:
        """The client if ``secret`` is its secret and it is not locked. Slow on purpose (Argon2).

        Raises:
            Locked: Too many failures in a row: try again after ``retry_after`` seconds.
            BadCredentials: Unknown id or wrong secret (the two are not told apart).
        """
        now = time.time()
        with self._db() as db:
            row = db.execute(
                "select secret_hash, scopes, created from clients where client_id = ?", (client_id,)
            ).fetchone()
            failures = db.execute(
                "select count, locked_until from failures where client_id = ?", (client_id,)
            ).fetchone()
        if row is None:
            failures = self._unknown.get(client_id)
        if failures is not None and failures[1] > now:
            raise Locked(failures[1] - now)
        try:
            self.hasher.verify(row[0] if row is not None else self._dummy, secret)
            ok = row is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            self._failed(client_id, known=row is not None, now=now)
            raise BadCredentials()
        if failures is not None:
            with self._db() as db:
                db.execute("delete from failures where client_id = ?", (client_id,))
        return Client(client_id, tuple(row[1].split()), row[2])

    def _failed(self, client_id: str, *, known: bool, now: float) -> None:
        if known:
            with self._db() as db:
                found = db.execute("select count from failures where client_id = ?", (client_id,)).fetchone()
                count = (found[0] if found else 0) + 1
                db.execute(
                    "insert or replace into failures values (?, ?, ?)", (client_id, count, now + _lock(count))
                )
            return
        count = self._unknown.pop(client_id, (0, 0.0))[0] + 1
        self._unknown[client_id] = (count, now + _lock(count))
        while len(self._unknown) > 10_000:
            self._unknown.popitem(last=False)


def _lock(failures: int) -> float:
    """Seconds an id is locked after ``failures`` wrong secrets in a row."""
    if failures <= FREE_FAILURES:
        return 0.0
    return float(min(2 ** (failures - FREE_FAILURES - 1), MAX_LOCK.total_seconds()))


class BadCredentials(Exception):
    """Unknown client id or wrong secret."""


class Locked(Exception):
    """The client id is locked after too many wrong secrets."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"locked for {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class TokenAnswer:
    """What the token endpoint answers: a status, a JSON body and extra headers."""

    status: int
    body: dict[str, object]
    headers: tuple[tuple[str, str], ...] = ()


class AuthService:
    """The token endpoint: client credentials in, a signed access token out.

    Args:
        store: The registered clients.
        issuer: Signs the tokens.
        ttl: Life of each token.
    """

    def __init__(self, store: ClientStore, issuer: TokenIssuer, *, ttl: timedelta = TOKEN_TTL) -> None:
        self.store = store
        self.issuer = issuer
        self.ttl = ttl

    async def token(self, authorization: str | None, content_type: str | None, body: bytes) -> TokenAnswer:
        """Answer ``POST /auth/token`` (``application/x-www-form-urlencoded``, RFC 6749 §4.4.2).

        The client authenticates with HTTP Basic (``client_id:client_secret``) or with ``client_id``
        and ``client_secret`` in the form; ``scope`` is optional and may only narrow what the client
        was registered with.
        """
        if (content_type or "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            return _error(400, "invalid_request", "send the form as application/x-www-form-urlencoded")
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body)))
        except (UnicodeDecodeError, ValueError):
            return _error(400, "invalid_request", "the body is not a valid form")
        if form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        credentials = _basic(authorization) if authorization else None
        if authorization and credentials is None:
            return _error(401, "invalid_client", "the Authorization header is not valid HTTP Basic")
        if credentials is not None and ("client_secret" in form or "client_id" in form):
            return _error(400, "invalid_request", "authenticate with Basic or with the form, not both")
        client_id, secret = credentials or (form.get("client_id", ""), form.get("client_secret", ""))
        try:
            check_client_id(client_id)
        except ValueError as exc:
            return _error(401, "invalid_client", f"client_id: {exc}")
        if not secret:
            return _error(401, "invalid_client", "client_secret is missing")
        try:
            client = await asyncio.get_running_loop().run_in_executor(
                None, self.store.authenticate, client_id, secret
            )
        except Locked as exc:
            wait = max(1, round(exc.retry_after))
            return _error(
                429,
                "invalid_client",
                f"too many wrong secrets: try again in {wait} s",
                (("retry-after", str(wait)),),
            )
        except BadCredentials:
            return _error(401, "invalid_client", "unknown client or wrong secret")
        try:
            asked = parse_scopes(form["scope"]) if form.get("scope") else client.scopes
        except ValueError as exc:
            return _error(400, "invalid_scope", str(exc))
        refused = [scope for scope in asked if not grants(client.scopes, scope)]
        if refused:
            return _error(400, "invalid_scope", f"client {client_id} may not ask for {' '.join(refused)}")
        token = self.issuer.issue(client_id, asked, self.ttl)
        return TokenAnswer(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": int(self.ttl.total_seconds()),
                "scope": " ".join(asked),
            },
            (("cache-control", "no-store"),),
        )


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    return (client_id, secret) if colon else None


def _error(
    status: int, error: str, description: str, headers: tuple[tuple[str, str], ...] = ()
) -> TokenAnswer:
    extra = headers
    if status == 401:
        extra = (*headers, ("www-authenticate", 'Basic realm="podium"'))
    return TokenAnswer(
        status, {"error": error, "error_description": description}, (*extra, ("cache-control", "no-store"))
    )
