"""The tenants' resources, real on this machine under ``$PODIUM_DATA_DIR/tenants/`` (default ``.podium``).

| resource | where |
|---|---|
| tenant database | ``databases/<tenantId>.db``: a SQLite file with the tenant schema (:data:`TABLES`) |
| storage bucket | ``buckets/<tenantId>/``: ``bucket.json`` (name, plan, quota) and an ``objects/`` folder |
| auth realm, credentials | ``realms.db``, table ``realms``: realm, client id, Argon2id hash of the secret |
| admin client secret | ``secrets/<tenantId>.json``: the plaintext, in an owner-only file (mode 0600) |
| billing account | ``billing.db``, table ``accounts``: account id, plan, monthly price, status |
| provider request log | ``operations.db``, table ``operations``: every create and delete, with its outcome |

These functions stand in for the cloud APIs a real control plane calls (RDS, S3, Keycloak, Stripe). Each is
idempotent by tenant id, because a ``ctx.run`` cut off by a crash runs again:

- a create that finds its resource returns it (outcome ``existed``), never a second one;
- a delete of what is not there succeeds (outcome ``absent``).

Every call is logged in ``operations.db`` (outcomes ``created``, ``existed``, ``deleted``, ``absent``,
``failed``), so tests can count what each provider was asked and what it did. Failures are triggered
by test data (see :mod:`services.provisioning.catalogue`) and raise :class:`StoreError`.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from services.common import sqlite
from services.provisioning import catalogue

TABLES = ["audit_log", "projects", "schema_migrations", "tenant", "users"]
"""The tables of every tenant database (schema version 1)."""
SCHEMA_VERSION = 1
_TENANT_SCHEMA = """
create table if not exists schema_migrations (version integer primary key, applied_at real not null);
create table if not exists tenant (
    id text primary key, name text not null, plan text not null, created_at real not null
);
create table if not exists users (
    id integer primary key autoincrement, email text not null unique, role text not null,
    created_at real not null
);
create table if not exists projects (
    id integer primary key autoincrement, name text not null unique, created_at real not null
);
create table if not exists audit_log (
    id integer primary key autoincrement, at real not null, actor text not null, action text not null
);
"""
_AUTH_SCHEMA = """
create table if not exists realms (
    tenant_id text primary key, realm text not null unique, client_id text not null unique,
    admin_email text not null, secret_hash text not null, secret_version integer not null,
    rotation_id text, created_at real not null, rotated_at real
);
"""
_BILLING_SCHEMA = """
create table if not exists accounts (
    tenant_id text primary key, account_id text not null unique, plan text not null,
    monthly_price_cents integer not null, currency text not null, billing_email text not null,
    status text not null, created_at real not null
);
"""
_OPERATIONS_SCHEMA = """
create table if not exists operations (
    id integer primary key autoincrement, tenant_id text not null, resource text not null,
    action text not null, outcome text not null, at real not null
);
"""


class StoreError(Exception):
    """A provider refused a request for a reason a retry will not change (test data, bad id)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def root() -> Path:
    """Where every tenant resource lives: ``$PODIUM_DATA_DIR/tenants``."""
    return Path(os.environ.get("PODIUM_DATA_DIR", ".podium")) / "tenants"


def _checked(tenant_id: str) -> str:
    # Tenant ids become file names: never let one escape the folder (``..``, ``/``).
    if not catalogue.is_valid_tenant_id(tenant_id):
        raise StoreError(f"tenantId: {tenant_id!r} is not a valid tenant id", 400)
    return tenant_id


def _slow(tenant_id: str) -> None:
    if tenant_id.startswith(catalogue.SLOW_PREFIX):
        time.sleep(catalogue.SLOW_SECONDS)


@contextmanager
def _tx(path: Path, schema: str) -> Iterator[sqlite3.Connection]:
    """One immediate transaction on a shared SQLite store (several processes may write it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as db:
        db.execute("pragma journal_mode=wal")
        db.execute("pragma synchronous=full")
        db.executescript(schema)
        with sqlite.immediate(db):
            yield db


def _log(tenant_id: str, resource: str, action: str, outcome: str) -> None:
    with _tx(root() / "operations.db", _OPERATIONS_SCHEMA) as db:
        db.execute(
            "insert into operations (tenant_id, resource, action, outcome, at) values (?, ?, ?, ?, ?)",
            (tenant_id, resource, action, outcome, time.time()),
        )


def operations(tenant_id: str, resource: str | None = None, action: str | None = None) -> list[str]:
    """What the providers were asked for a tenant, oldest first, as ``resource action outcome``.

    For example ``bucket create created``; optionally for one resource and action.
    """
    query, args = "select resource, action, outcome from operations where tenant_id = ?", [tenant_id]
    if resource is not None:
        query += " and resource = ?"
        args.append(resource)
    if action is not None:
        query += " and action = ?"
        args.append(action)
    with _tx(root() / "operations.db", _OPERATIONS_SCHEMA) as db:
        rows = db.execute(query + " order by id", args).fetchall()
    return [" ".join(row) for row in rows]


# -- databases -----------------------------------------------------------------------------------------


def database_path(tenant_id: str) -> Path:
    """The tenant's SQLite database file."""
    return root() / "databases" / f"{_checked(tenant_id)}.db"


def _database_files(tenant_id: str) -> list[Path]:
    path = database_path(tenant_id)
    return [path, *(path.with_name(path.name + suffix) for suffix in ("-journal", "-wal", "-shm"))]


def create_database(tenant_id: str, name: str, admin_email: str, plan: str) -> dict[str, Any]:
    """Create the tenant's database with its schema, its tenant row and its owner (idempotent)."""
    path = database_path(tenant_id)
    if tenant_id.endswith(catalogue.NO_DATABASE_SUFFIX):
        _log(tenant_id, "database", "create", "failed")
        raise StoreError(f"database cluster has no capacity for tenant {tenant_id}", 503)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as db:
        db.execute("begin immediate")
        try:
            for statement in _TENANT_SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            created = (
                db.execute(
                    "insert or ignore into tenant (id, name, plan, created_at) values (?, ?, ?, ?)",
                    (tenant_id, name, plan, now),
                ).rowcount
                == 1
            )
            if created:
                db.execute(
                    "insert into schema_migrations (version, applied_at) values (?, ?)", (SCHEMA_VERSION, now)
                )
                db.execute(
                    "insert into users (email, role, created_at) values (?, 'owner', ?)", (admin_email, now)
                )
                db.execute(
                    "insert into audit_log (at, actor, action) values (?, 'provisioning', ?)",
                    (now, f"tenant {tenant_id} created on plan {plan}"),
                )
        except BaseException:
            db.execute("rollback")
            raise
        db.execute("commit")
    _log(tenant_id, "database", "create", "created" if created else "existed")
    _slow(tenant_id)
    found = database_info(tenant_id)
    assert found is not None
    return found


def database_info(tenant_id: str) -> dict[str, Any] | None:
    """The tenant database's location, tables and schema version; None if there is none."""
    path = database_path(tenant_id)
    if not path.exists():
        return None
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        tables = [
            row[0]
            for row in db.execute(
                "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' "
                "order by name"
            )
        ]
        version = 0
        if "schema_migrations" in tables:
            version = db.execute("select coalesce(max(version), 0) from schema_migrations").fetchone()[0]
    return {"tenantId": tenant_id, "location": str(path), "schemaVersion": version, "tables": tables}


def delete_database(tenant_id: str) -> bool:
    """Drop the tenant's database (the file and any SQLite side files); False if there was none."""
    existed = False
    for file in _database_files(tenant_id):
        if file.exists():
            existed = True
            file.unlink(missing_ok=True)
    _log(tenant_id, "database", "delete", "deleted" if existed else "absent")
    return existed


# -- buckets -------------------------------------------------------------------------------------------


def bucket_path(tenant_id: str) -> Path:
    """The tenant's bucket: a folder."""
    return root() / "buckets" / _checked(tenant_id)


def create_bucket(tenant_id: str, plan: str) -> dict[str, Any]:
    """Create the tenant's bucket with its quota (idempotent).

    The folder is made before the quota is assigned, so a refused quota (``-nostorage``) leaves a partial
    bucket behind: the saga's compensation, registered before this step, removes it.
    """
    folder = bucket_path(tenant_id)
    marker = folder / "bucket.json"
    if marker.exists():
        config: dict[str, Any] = json.loads(marker.read_text())
        _log(tenant_id, "bucket", "create", "existed")
    else:
        (folder / "objects").mkdir(parents=True, exist_ok=True)
        quota = catalogue.PLANS[plan].storage_gb
        if tenant_id.endswith(catalogue.NO_STORAGE_SUFFIX):
            _log(tenant_id, "bucket", "create", "failed")
            raise StoreError(
                f"storage quota exhausted: cannot assign {quota} GB to bucket tenant-{tenant_id}", 507
            )
        config = {
            "bucket": f"tenant-{tenant_id}",
            "tenantId": tenant_id,
            "plan": plan,
            "quotaGb": quota,
            "createdAt": time.time(),
        }
        temporary = folder / "bucket.json.tmp"
        temporary.write_text(json.dumps(config, indent=2))
        temporary.replace(marker)  # atomic: a crash leaves no bucket.json or a whole one
        _log(tenant_id, "bucket", "create", "created")
    _slow(tenant_id)
    return {**config, "location": str(folder)}


def bucket_info(tenant_id: str) -> dict[str, Any] | None:
    """The bucket's configuration and location; None if there is no (complete) bucket."""
    folder = bucket_path(tenant_id)
    marker = folder / "bucket.json"
    if not marker.exists():
        return None
    config: dict[str, Any] = json.loads(marker.read_text())
    return {**config, "location": str(folder)}


def delete_bucket(tenant_id: str) -> bool:
    """Remove the bucket and everything in it, complete or not; False if there was nothing."""
    folder = bucket_path(tenant_id)
    existed = folder.exists()
    if existed:
        shutil.rmtree(folder)
    _log(tenant_id, "bucket", "delete", "deleted" if existed else "absent")
    return existed


# -- auth ----------------------------------------------------------------------------------------------
#
# The realm store plays the tenant's identity provider (Keycloak, say). A client secret is made here, inside
# the provider, and leaves it only as an owner-only file: the plaintext is never returned, so it never
# reaches the engine's journal or state (a ctx.run's result is journaled). The store keeps an Argon2id hash,
# and checks secrets itself (:func:`verify_secret`), as a provider's token endpoint does.

_HASHER = PasswordHasher()
"""Argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile)."""


def auth_path() -> Path:
    """The realm store (every tenant's realm and the hash of its admin client's secret)."""
    return root() / "realms.db"


def secrets_path() -> Path:
    """The folder of the admin clients' secret files (owner-only: mode 0700, each file 0600)."""
    return root() / "secrets"


def secret_file(tenant_id: str) -> Path:
    """Where the tenant admin client's current secret is: ``secrets/<tenantId>.json``, mode 0600."""
    return secrets_path() / f"{_checked(tenant_id)}.json"


def _deliver_secret(tenant_id: str, client_id: str, version: int) -> str:
    """Make a fresh secret, write it to the tenant's secret file (mode 0600, atomically); return its hash.

    The file is written before the hash is committed: a crash in between leaves a file whose secret the
    store does not know, and the step's rerun writes both again. The plaintext is returned to nobody.
    """
    secret = secrets.token_urlsafe(32)
    folder = secrets_path()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    content = json.dumps(
        {"tenantId": tenant_id, "clientId": client_id, "clientSecret": secret, "secretVersion": version},
        indent=2,
    )
    target = secret_file(tenant_id)
    temporary = target.with_name(target.name + ".tmp")
    temporary.unlink(missing_ok=True)  # a leftover of a cut-off write: its secret was never committed
    # Created with 0600 (O_EXCL: never through a file someone else made), so no moment exists in which the
    # secret is readable by others; replace() keeps the mode.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(target)
    return _HASHER.hash(secret)


def _realm(row: tuple[Any, ...]) -> dict[str, Any]:
    tenant_id, realm, client_id, admin_email, version, created_at, rotated_at = row
    return {
        "tenantId": tenant_id,
        "realm": realm,
        "clientId": client_id,
        "adminEmail": admin_email,
        "secretVersion": version,
        "secretFile": str(secret_file(tenant_id)),
        "createdAt": created_at,
        "rotatedAt": rotated_at,
    }


_REALM_COLUMNS = "tenant_id, realm, client_id, admin_email, secret_version, created_at, rotated_at"


def create_realm(tenant_id: str, admin_email: str) -> dict[str, Any]:
    """Create the tenant's realm with an admin client (idempotent); its secret goes to its file only.

    Returns the realm with the path of the secret file, never the secret.
    """
    _checked(tenant_id)
    if tenant_id.endswith(catalogue.NO_AUTH_SUFFIX):
        _log(tenant_id, "realm", "create", "failed")
        raise StoreError(f"identity provider refused to create realm tenant-{tenant_id}", 502)
    with _tx(auth_path(), _AUTH_SCHEMA) as db:
        row = db.execute(f"select {_REALM_COLUMNS} from realms where tenant_id = ?", (tenant_id,)).fetchone()
        created = row is None
        if created:
            client_id = f"cli_{secrets.token_hex(8)}"
            hashed = _deliver_secret(tenant_id, client_id, 1)
            db.execute(
                "insert into realms (tenant_id, realm, client_id, admin_email, secret_hash, secret_version,"
                " created_at) values (?, ?, ?, ?, ?, 1, ?)",
                (tenant_id, f"tenant-{tenant_id}", client_id, admin_email, hashed, time.time()),
            )
            row = db.execute(
                f"select {_REALM_COLUMNS} from realms where tenant_id = ?", (tenant_id,)
            ).fetchone()
    _log(tenant_id, "realm", "create", "created" if created else "existed")
    _slow(tenant_id)
    return _realm(row)


def realm_info(tenant_id: str) -> dict[str, Any] | None:
    """The realm (never its secret or hash); None if there is none."""
    _checked(tenant_id)
    with _tx(auth_path(), _AUTH_SCHEMA) as db:
        row = db.execute(f"select {_REALM_COLUMNS} from realms where tenant_id = ?", (tenant_id,)).fetchone()
    return None if row is None else _realm(row)


def rotate_secret(tenant_id: str, rotation_id: str) -> dict[str, Any]:
    """Replace the admin client's secret with a new one, written to its file; once per ``rotation_id``.

    A rotation cut off by a crash runs again with the same id and finds itself done, so one request
    rotates once. Returns the client id, the new version and the file's path, never the secret.
    """
    _checked(tenant_id)
    with _tx(auth_path(), _AUTH_SCHEMA) as db:
        row = db.execute(
            "select client_id, secret_version, rotation_id from realms where tenant_id = ?", (tenant_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no realm for tenant {tenant_id}", 404)
        client_id, version, last_rotation = row
        if last_rotation != rotation_id:
            version += 1
            hashed = _deliver_secret(tenant_id, client_id, version)
            db.execute(
                "update realms set secret_hash = ?, secret_version = ?, rotation_id = ?, rotated_at = ?"
                " where tenant_id = ?",
                (hashed, version, rotation_id, time.time(), tenant_id),
            )
    return {"clientId": client_id, "secretVersion": version, "secretFile": str(secret_file(tenant_id))}


def verify_secret(tenant_id: str, client_id: str, secret: str) -> bool:
    """Whether ``client_id`` and ``secret`` are the tenant's current admin credentials.

    The provider's own check (what its token endpoint runs); any text is an answer, never an error: both
    are compared as UTF-8 bytes (``hmac.compare_digest`` refuses a ``str`` with non-ASCII characters), so
    a non-ASCII id is simply not the client. Lone surrogates, which JSON can carry, are kept as they are.
    """
    _checked(tenant_id)
    with _tx(auth_path(), _AUTH_SCHEMA) as db:
        row = db.execute(
            "select client_id, secret_hash from realms where tenant_id = ?", (tenant_id,)
        ).fetchone()
    if row is None or not hmac.compare_digest(row[0].encode(), _utf8(client_id)):
        return False
    try:
        return _HASHER.verify(row[1], _utf8(secret))
    except VerificationError:  # a wrong secret (VerifyMismatchError is one)
        return False


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def delete_realm(tenant_id: str) -> bool:
    """Remove the realm, its credentials and its secret file; False if there was no realm."""
    _checked(tenant_id)
    with _tx(auth_path(), _AUTH_SCHEMA) as db:
        existed = db.execute("delete from realms where tenant_id = ?", (tenant_id,)).rowcount == 1
        secret_file(tenant_id).unlink(missing_ok=True)
    _log(tenant_id, "realm", "delete", "deleted" if existed else "absent")
    return existed


# -- billing -------------------------------------------------------------------------------------------


def billing_path() -> Path:
    """The billing store (every tenant's account)."""
    return root() / "billing.db"


_ACCOUNT_COLUMNS = "tenant_id, account_id, plan, monthly_price_cents, currency, billing_email, status"


def _account(row: tuple[Any, ...]) -> dict[str, Any]:
    tenant_id, account_id, plan, cents, currency, email, status = row
    return {
        "tenantId": tenant_id,
        "accountId": account_id,
        "plan": plan,
        "monthlyPrice": cents / 100,
        "currency": currency,
        "billingEmail": email,
        "status": status,
    }


def create_billing_account(tenant_id: str, plan: str, billing_email: str) -> dict[str, Any]:
    """Open the tenant's billing account on ``plan`` (idempotent)."""
    _checked(tenant_id)
    price = catalogue.PLANS[plan].monthly_price_cents
    if price is None:
        _log(tenant_id, "billing", "create", "failed")
        raise StoreError(f"billing rejected plan {plan!r}: no price is configured for it", 422)
    with _tx(billing_path(), _BILLING_SCHEMA) as db:
        created = (
            db.execute(
                "insert or ignore into accounts (tenant_id, account_id, plan, monthly_price_cents, currency,"
                " billing_email, status, created_at) values (?, ?, ?, ?, 'USD', ?, 'active', ?)",
                (tenant_id, f"acct_{secrets.token_hex(8)}", plan, price, billing_email, time.time()),
            ).rowcount
            == 1
        )
        row = db.execute(
            f"select {_ACCOUNT_COLUMNS} from accounts where tenant_id = ?", (tenant_id,)
        ).fetchone()
    _log(tenant_id, "billing", "create", "created" if created else "existed")
    _slow(tenant_id)
    return _account(row)


def billing_info(tenant_id: str) -> dict[str, Any] | None:
    """The tenant's billing account; None if there is none."""
    _checked(tenant_id)
    with _tx(billing_path(), _BILLING_SCHEMA) as db:
        row = db.execute(
            f"select {_ACCOUNT_COLUMNS} from accounts where tenant_id = ?", (tenant_id,)
        ).fetchone()
    return None if row is None else _account(row)


def delete_billing_account(tenant_id: str) -> bool:
    """Remove the tenant's billing account; False if there was none."""
    _checked(tenant_id)
    with _tx(billing_path(), _BILLING_SCHEMA) as db:
        existed = db.execute("delete from accounts where tenant_id = ?", (tenant_id,)).rowcount == 1
    _log(tenant_id, "billing", "delete", "deleted" if existed else "absent")
    return existed
