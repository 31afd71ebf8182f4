"""``DatabaseService``, ``StorageService``, ``AuthService`` and ``BillingService`` (billing accounts).

Each is a virtual object keyed by tenant id, so a tenant's ``Create`` and ``Delete`` never run at the same
time (a compensation queued behind a create that is still running waits for it). Every file-system effect
runs inside ``ctx.run_typed`` and is idempotent by tenant id (:mod:`services.provisioning.stores`):

- ``Create`` makes the resource, or returns the one that exists;
- ``Delete`` removes it; deleting what is not there is fine (``existed: false``);
- ``Get`` (shared) reads it from disk; 404 if there is none.

The seed names this billing service ``BillingService``; seed 002's order invoices use the name
``Billing`` (``services/commerce/billing.py``), so the two never collide on one engine.

Every handler is private (steps of the provisioning saga, and reads of what it made), except
``AuthService/{tenantId}/RotateSecret``, an operator's action. No handler ever takes or returns a client
secret: the realm store makes it inside its ``ctx.run`` and writes it to an owner-only file, so it never
reaches the engine's journal or state (see :mod:`services.provisioning.stores`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from restate import ObjectContext, ObjectSharedContext, RunOptions

from podium import TerminalError, VirtualObject
from services.provisioning import catalogue, stores
from services.provisioning.models import (
    AuthRealm,
    BillingAccount,
    BillingRequest,
    Bucket,
    BucketRequest,
    DatabaseRequest,
    IssuedSecret,
    RealmRequest,
    Removal,
    TenantDatabase,
)

_RUN: RunOptions[Any] = RunOptions(max_attempts=5, initial_retry_interval=timedelta(milliseconds=100))


def _provider(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a store function; its refusals are terminal (a retry gets the same answer)."""
    try:
        return fn(*args)
    except stores.StoreError as exc:
        raise TerminalError(exc.message, exc.code) from exc


async def _run(
    ctx: ObjectContext | ObjectSharedContext, name: str, fn: Callable[..., Any], *args: Any
) -> Any:
    return await ctx.run_typed(name, _provider, _RUN, fn, *args)


def _found(ctx: ObjectSharedContext, what: str, record: Any) -> Any:
    if record is None:
        raise TerminalError(f"no {what} for tenant {ctx.key()}", 404)
    return record


# -- database ------------------------------------------------------------------------------------------

databases = VirtualObject("DatabaseService", system="provisioning")


@databases.handler("Create")
async def create_database(ctx: ObjectContext, req: DatabaseRequest) -> TenantDatabase:
    tenant_id = catalogue.tenant_id(ctx.key())
    found = await _run(
        ctx, "create database", stores.create_database, tenant_id, req.name, req.admin_email, req.plan
    )
    return TenantDatabase.model_validate(found)


@databases.handler("Delete")
async def delete_database(ctx: ObjectContext) -> Removal:
    tenant_id = catalogue.tenant_id(ctx.key())
    existed = await _run(ctx, "drop database", stores.delete_database, tenant_id)
    return Removal(tenant_id=tenant_id, resource="database", existed=existed)


@databases.handler("Get", kind="shared")
async def get_database(ctx: ObjectSharedContext) -> TenantDatabase:
    tenant_id = catalogue.tenant_id(ctx.key())
    found = await _run(ctx, "inspect database", stores.database_info, tenant_id)
    return TenantDatabase.model_validate(_found(ctx, "database", found))


# -- storage -------------------------------------------------------------------------------------------

buckets = VirtualObject("StorageService", system="provisioning")


@buckets.handler("Create")
async def create_bucket(ctx: ObjectContext, req: BucketRequest) -> Bucket:
    tenant_id = catalogue.tenant_id(ctx.key())
    found = await _run(ctx, "create bucket", stores.create_bucket, tenant_id, req.plan)
    return Bucket.model_validate(found)


@buckets.handler("Delete")
async def delete_bucket(ctx: ObjectContext) -> Removal:
    tenant_id = catalogue.tenant_id(ctx.key())
    existed = await _run(ctx, "delete bucket", stores.delete_bucket, tenant_id)
    return Removal(tenant_id=tenant_id, resource="bucket", existed=existed)


@buckets.handler("Get", kind="shared")
async def get_bucket(ctx: ObjectSharedContext) -> Bucket:
    tenant_id = catalogue.tenant_id(ctx.key())
    found = await _run(ctx, "inspect bucket", stores.bucket_info, tenant_id)
    return Bucket.model_validate(_found(ctx, "bucket", found))


# -- auth ----------------------------------------------------------------------------------------------

realms = VirtualObject("AuthService", system="provisioning")


@realms.handler("Create")
async def create_realm(ctx: ObjectContext, req: RealmRequest) -> AuthRealm:
    tenant_id = catalogue.tenant_id(ctx.key())
    found = await _run(ctx, "create realm", stores.create_realm, tenant_id, req.admin_email)
    return AuthRealm.model_validate(found)


@realms.handler("RotateSecret", public="operator")
async def rotate_secret(ctx: ObjectContext) -> IssuedSecret:
    """Replace the admin client's secret: the new one is in the secret file, never in the answer."""
    tenant_id = catalogue.tenant_id(ctx.key())
    rotation_id = str(ctx.uuid())  # the same on a rerun: a cut-off rotation is not repeated
    issued = await _run(ctx, "rotate secret", stores.rotate_secret, tenant_id, rotation_id)
    return IssuedSecret.model_validate(issued)


@realms.handler("Delete")
async def delete_realm(ctx: ObjectContext) -> Removal:
    tenant_id = catalogue.tenant_id(ctx.key())
    existed = await _run(ctx, "delete realm", stores.delete_realm, tenant_id)
    return Removal(tenant_id=tenant_id, resource="realm", existed=existed)


@realms.handler("Get", kind="shared")
async def get_realm(ctx: ObjectSharedContext) -> AuthRealm:
    tenant_id = catalogue.tenant_id(ctx.key())
    found = await _run(ctx, "inspect realm", stores.realm_info, tenant_id)
    return AuthRealm.model_validate(_found(ctx, "realm", found))


# -- billing -------------------------------------------------------------------------------------------

billing = VirtualObject("BillingService", system="provisioning")


@billing.handler("Create")
async def create_billing_account(ctx: ObjectContext, req: BillingRequest) -> BillingAccount:
    tenant_id = catalogue.tenant_id(ctx.key())
    found = await _run(
        ctx, "open billing account", stores.create_billing_account, tenant_id, req.plan, req.billing_email
    )
    return BillingAccount.model_validate(found)


@billing.handler("Delete")
async def delete_billing_account(ctx: ObjectContext) -> Removal:
    tenant_id = catalogue.tenant_id(ctx.key())
    existed = await _run(ctx, "close billing account", stores.delete_billing_account, tenant_id)
    return Removal(tenant_id=tenant_id, resource="billing", existed=existed)


@billing.handler("Get", kind="shared")
async def get_billing_account(ctx: ObjectSharedContext) -> BillingAccount:
    tenant_id = catalogue.tenant_id(ctx.key())
    found = await _run(ctx, "inspect billing account", stores.billing_info, tenant_id)
    return BillingAccount.model_validate(_found(ctx, "billing account", found))
