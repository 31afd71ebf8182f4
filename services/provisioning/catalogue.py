"""What can be provisioned: tenant ids, plans, and the test data that makes a step fail.

| test data | what happens |
|---|---|
| tenant id ending ``-nodb`` | the database cluster has no capacity: creating the database fails (503) |
| tenant id ending ``-nostorage`` | the bucket folder is made, then the storage quota is refused (507) |
| tenant id ending ``-noauth`` | the identity provider refuses the realm (502) |
| plan ``enterprise-invalid`` | accepted by the API, rejected by billing: no price is configured (422) |
| tenant id starting ``slow-`` | each create step takes 2 s after its effect (the crash tests' window) |
| ``adminEmail`` at ``bounce.example.com`` | the welcome email bounces; the tenant stays provisioned |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from podium import TerminalError

TENANT_ID = r"^[a-z][a-z0-9-]{2,62}$"
"""Tenant ids name files, folders and buckets: 3 to 63 lower-case letters, digits and dashes, starting
with a letter (a DNS label, as bucket names are)."""
_VALID_TENANT = re.compile(TENANT_ID)

NO_DATABASE_SUFFIX = "-nodb"
NO_STORAGE_SUFFIX = "-nostorage"
NO_AUTH_SUFFIX = "-noauth"
UNBILLABLE_PLAN = "enterprise-invalid"
SLOW_PREFIX = "slow-"
SLOW_SECONDS = 2.0
"""How long a ``slow-`` tenant's create step blocks after its effect, inside ``ctx.run``."""

Plan = Literal["free", "starter", "pro", "enterprise", "enterprise-invalid"]
"""Plans the API accepts (``enterprise-invalid`` is test data: billing rejects it)."""


@dataclass(frozen=True)
class PlanTerms:
    storage_gb: int
    """The bucket's quota."""
    monthly_price_cents: int | None
    """None: the billing provider has no price for the plan and rejects it."""


PLANS: dict[str, PlanTerms] = {
    "free": PlanTerms(storage_gb=1, monthly_price_cents=0),
    "starter": PlanTerms(storage_gb=10, monthly_price_cents=2_900),
    "pro": PlanTerms(storage_gb=100, monthly_price_cents=9_900),
    "enterprise": PlanTerms(storage_gb=1_000, monthly_price_cents=49_900),
    UNBILLABLE_PLAN: PlanTerms(storage_gb=1_000, monthly_price_cents=None),
}


def is_valid_tenant_id(tenant_id: str) -> bool:
    """Whether ``tenant_id`` may name a tenant's resources."""
    return _VALID_TENANT.fullmatch(tenant_id) is not None


def tenant_id(key: str) -> str:
    """Check a tenant id taken from an object key.

    Raises:
        TerminalError: 400 naming the key when it is not a valid tenant id.
    """
    if not is_valid_tenant_id(key):
        raise TerminalError(
            f"tenantId (the key): {key!r} must be 3 to 63 lower-case letters, digits or dashes, "
            "starting with a letter",
            400,
        )
    return key
