"""The provisioning system's JSON (camelCase on the wire)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from podium import Model, SagaLog, Status
from services.provisioning.catalogue import Plan

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class ProvisionRequest(Model):
    """``ProvisioningOrchestrator/{tenantId}/ProvisionTenant``: the tenant id is the key."""

    name: str = Field(min_length=1, max_length=200)
    """The organisation's display name."""
    admin_email: str = Field(pattern=EMAIL_PATTERN)
    """The tenant's first administrator: owner in the database, realm admin, billing contact."""
    plan: Plan


# -- the resource services' requests and records ------------------------------------------------------


class DatabaseRequest(Model):
    name: str = Field(min_length=1, max_length=200)
    admin_email: str = Field(pattern=EMAIL_PATTERN)
    plan: Plan


class TenantDatabase(Model):
    tenant_id: str
    location: str
    """The SQLite file."""
    schema_version: int
    tables: list[str]


class BucketRequest(Model):
    plan: Plan


class Bucket(Model):
    tenant_id: str
    bucket: str
    plan: str
    quota_gb: int
    location: str
    """The bucket's folder."""


class RealmRequest(Model):
    admin_email: str = Field(pattern=EMAIL_PATTERN)


class AuthRealm(Model):
    """A realm and its admin client, never its secret.

    The provider keeps the secret's hash and writes the plaintext to ``secret_file`` only.
    """

    tenant_id: str
    realm: str
    client_id: str
    admin_email: str
    secret_version: int
    secret_file: str
    """The owner-only file (mode 0600) on the provider's host that holds the current secret."""


class IssuedSecret(Model):
    """``AuthService/{tenantId}/RotateSecret``: which secret is current and where it is, never the secret."""

    client_id: str
    secret_version: int
    secret_file: str


class BillingRequest(Model):
    plan: Plan
    billing_email: str = Field(pattern=EMAIL_PATTERN)


class BillingAccount(Model):
    tenant_id: str
    account_id: str
    plan: str
    monthly_price: float
    currency: str
    billing_email: str
    status: str


class Removal(Model):
    """What a ``Delete`` did: ``existed`` is false when there was nothing to remove."""

    tenant_id: str
    resource: str
    existed: bool


# -- the orchestrator's result and status ---------------------------------------------------------------

WelcomeEmail = Literal["delivered", "bounced", "failed"]


class Tenant(Model):
    """The answer to ``ProvisionTenant`` (every repeat of the same request gets the same one)."""

    tenant_id: str
    name: str
    plan: str
    status: Literal["provisioned", "failed"]
    database: TenantDatabase | None = None
    storage: Bucket | None = None
    auth: AuthRealm | None = None
    billing: BillingAccount | None = None
    welcome_email: WelcomeEmail | None = None
    """None when provisioning failed (no email is sent)."""
    created_at: str
    reason: str | None = None
    """Why provisioning failed, and what was removed."""


class ProvisioningStatus(Status):
    """``GetStatus``: phase, progress and steps, the saga log, and the result once there is one."""

    tenant_id: str
    result: Tenant | None = None
    saga: SagaLog | None = None
