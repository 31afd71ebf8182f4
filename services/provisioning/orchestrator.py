"""``ProvisioningOrchestrator``: a tenant's database, bucket, realm and billing account, all or nothing.

``POST /ProvisioningOrchestrator/{tenantId}/ProvisionTenant`` with ``{name, adminEmail, plan}``:

1. create the database and its schema     undo: drop the database
2. create the storage bucket              undo: delete the bucket (a partial one too)
3. create the auth realm and credentials  undo: delete the realm
4. open the billing account               undo: delete the account
5. send the welcome email                 outside the saga: a bounce leaves the tenant provisioned,
                                          with ``welcomeEmail: "bounced"``

Each undo is registered in the saga log before its action starts, so a crash between an action and the
next line cannot lose it; a failure runs the registered undos in reverse order (the failed step's too: a
step may have half-happened) and the result is ``status: failed`` with the reason and what was removed.

It is a virtual object keyed by tenant id rather than a Restate workflow, so that provisioning the same
tenant again returns the first result (:class:`podium.RunOnce`) instead of the engine's 409; a different
request for the same tenant id is refused with 409. ``GetStatus`` is shared: it answers while the
provisioning runs, with phase, progress, steps and the saga log. Both are public; the resource services
the saga calls are private.
"""

from __future__ import annotations

import datetime as dt

from restate import ObjectContext, ObjectSharedContext

from podium import (
    RunOnce,
    Saga,
    SagaError,
    StatusTracker,
    TerminalError,
    VirtualObject,
    read_saga_log,
    read_status,
)
from services.common.notifications import EmailRequest, send_email
from services.provisioning import catalogue
from services.provisioning.models import (
    BillingRequest,
    BucketRequest,
    DatabaseRequest,
    ProvisioningStatus,
    ProvisionRequest,
    RealmRequest,
    Tenant,
    WelcomeEmail,
)
from services.provisioning.resources import (
    create_billing_account,
    create_bucket,
    create_database,
    create_realm,
    delete_billing_account,
    delete_bucket,
    delete_database,
    delete_realm,
)

orchestrator = VirtualObject("ProvisioningOrchestrator", system="provisioning")
SAGA = "provision-tenant"


@orchestrator.handler("ProvisionTenant", public="write")
async def provision_tenant(ctx: ObjectContext, req: ProvisionRequest) -> Tenant:
    tenant_id = catalogue.tenant_id(ctx.key())  # 400 before anything is recorded
    once = RunOnce(ctx, req, Tenant)
    if (previous := await once.previous()) is not None:
        return previous

    now = dt.datetime.fromtimestamp(await ctx.time(), tz=dt.UTC)
    tenant = Tenant(
        tenant_id=tenant_id,
        name=req.name,
        plan=req.plan,
        status="failed",  # until every step has succeeded (the result is stored only at the end)
        created_at=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
    )
    status = StatusTracker(ctx)
    await status.update(
        phase="database",
        progress=0.0,
        step="create-database",
        metadata={"tenantId": tenant_id, "plan": req.plan},
    )
    payload = {"tenantId": tenant_id}
    try:
        async with Saga(ctx, SAGA) as saga:
            database = await saga.step(
                "create-database",
                lambda: ctx.object_call(
                    create_database,
                    key=tenant_id,
                    arg=DatabaseRequest(name=req.name, admin_email=req.admin_email, plan=req.plan),
                ),
                compensate=lambda: ctx.object_call(delete_database, key=tenant_id, arg=None),
                payload={**payload, "resource": "database"},
            )
            await status.update(
                phase="storage", progress=0.2, completed_step="create-database", step="create-bucket"
            )

            bucket = await saga.step(
                "create-bucket",
                lambda: ctx.object_call(create_bucket, key=tenant_id, arg=BucketRequest(plan=req.plan)),
                compensate=lambda: ctx.object_call(delete_bucket, key=tenant_id, arg=None),
                payload={**payload, "resource": "bucket"},
            )
            await status.update(
                phase="auth", progress=0.4, completed_step="create-bucket", step="create-auth-realm"
            )

            realm = await saga.step(
                "create-auth-realm",
                lambda: ctx.object_call(
                    create_realm, key=tenant_id, arg=RealmRequest(admin_email=req.admin_email)
                ),
                compensate=lambda: ctx.object_call(delete_realm, key=tenant_id, arg=None),
                payload={**payload, "resource": "realm"},
            )
            await status.update(
                phase="billing",
                progress=0.6,
                completed_step="create-auth-realm",
                step="create-billing-account",
            )

            account = await saga.step(
                "create-billing-account",
                lambda: ctx.object_call(
                    create_billing_account,
                    key=tenant_id,
                    arg=BillingRequest(plan=req.plan, billing_email=req.admin_email),
                ),
                compensate=lambda: ctx.object_call(delete_billing_account, key=tenant_id, arg=None),
                payload={**payload, "resource": "billing"},
            )
            await status.update(
                phase="welcome-email",
                progress=0.8,
                completed_step="create-billing-account",
                step="send-welcome-email",
            )
    except SagaError as failure:
        tenant.reason = failure.message
        status.status.metadata["failedStep"] = failure.log.failed_step
        await status.fail(failure.message)
        return once.done(tenant)

    tenant.status = "provisioned"
    tenant.database, tenant.storage, tenant.auth, tenant.billing = database, bucket, realm, account
    tenant.welcome_email = await _send_welcome(ctx, req, tenant)
    await status.update(
        progress=0.9, completed_step="send-welcome-email", metadata={"welcomeEmail": tenant.welcome_email}
    )
    await status.complete()
    return once.done(tenant)


async def _send_welcome(ctx: ObjectContext, req: ProvisionRequest, tenant: Tenant) -> WelcomeEmail:
    """Email the admin; a bounce or a refusal is reported, and does not undo the tenant."""
    assert tenant.auth is not None
    assert tenant.storage is not None
    body = (
        f"Welcome to Podium, {req.name}!\n"
        f"Your tenant {tenant.tenant_id} is ready on the {req.plan} plan.\n"
        f"Sign-in realm: {tenant.auth.realm}, admin client {tenant.auth.client_id} (its secret is never "
        "sent by email: your operator hands it over from the identity provider).\n"
        f"Storage: bucket {tenant.storage.bucket}, {tenant.storage.quota_gb} GB."
    )
    try:
        delivery = await ctx.service_call(
            send_email,
            EmailRequest(
                message_id=f"{tenant.tenant_id}-welcome",
                to=req.admin_email,
                subject=f"Your tenant {tenant.tenant_id} is ready",
                body=body,
            ),
        )
    except TerminalError:
        return "failed"
    return "delivered" if delivery.status == "delivered" else "bounced"


@orchestrator.handler("GetStatus", kind="shared", public="read")
async def get_status(ctx: ObjectSharedContext) -> ProvisioningStatus:
    status = await read_status(ctx)
    if status is None:
        raise TerminalError(f"no provisioning of tenant {ctx.key()}", 404)
    return ProvisioningStatus(
        **status.model_dump(),
        tenant_id=ctx.key(),
        result=await RunOnce.result_of(ctx, Tenant),
        saga=await read_saga_log(ctx, SAGA),
    )
