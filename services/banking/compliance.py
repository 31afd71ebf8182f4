"""``ComplianceService``: regulatory checks on a transfer (``Check``), and the release of its usage.

Rules, each a reason to refuse:

- a sanctioned party: an account whose id starts with ``sanctioned-`` on either side;
- a daily limit of :data:`DAILY_LIMIT` out of one account per day (UTC); the amount is reserved under
  the transfer id and released if the transfer fails (``Release``).

Every handler is private: the checks are steps of a transfer, and ``Check`` reserves against the day's
limit, so a client calling it directly could use up another account's allowance.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field
from restate import Context, ObjectContext

from podium import Model, Service, VirtualObject, call
from services.common.fraud import Decision, TransferCheck
from services.common.money import cents, units

DAILY_LIMIT_CENTS = 5_000_000
SANCTIONED_PREFIX = "sanctioned-"


class Usage(Model):
    transfer_id: str
    amount_cents: int = Field(ge=0)
    limit_cents: int


class UsageRef(Model):
    transfer_id: str


limits = VirtualObject("ComplianceLimits", system="banking")


@limits.handler("Reserve")
async def reserve_usage(ctx: ObjectContext, req: Usage) -> bool:
    """Reserve the amount against the day's limit (idempotent per transfer id)."""
    used: dict[str, int] = await ctx.get("used", type_hint=dict) or {}
    if req.transfer_id in used:
        return True
    if sum(used.values()) + req.amount_cents > req.limit_cents:
        return False
    used[req.transfer_id] = req.amount_cents
    ctx.set("used", used)
    return True


@limits.handler("Release")
async def release_usage(ctx: ObjectContext, req: UsageRef) -> None:
    used: dict[str, int] = await ctx.get("used", type_hint=dict) or {}
    if used.pop(req.transfer_id, None) is not None:
        ctx.set("used", used)


compliance = Service("ComplianceService", system="banking")


def _day_key(account: str, now: float) -> str:
    return f"{account}:{dt.datetime.fromtimestamp(now, tz=dt.UTC).date().isoformat()}"


@compliance.handler("Check")
async def check(ctx: Context, req: TransferCheck) -> Decision:
    for account in (req.from_account, req.to_account):
        if account.startswith(SANCTIONED_PREFIX):
            return Decision(
                allowed=False, actor="ComplianceService", reason=f"{account} is a sanctioned party"
            )
    key = f"{req.from_account}:{req.day}" if req.day else _day_key(req.from_account, await ctx.time())
    usage = Usage(transfer_id=req.transfer_id, amount_cents=cents(req.amount), limit_cents=DAILY_LIMIT_CENTS)
    if not await call(ctx, reserve_usage, usage, key=key):
        limit = units(DAILY_LIMIT_CENTS)
        return Decision(
            allowed=False, actor="ComplianceService", reason=f"daily limit of {limit:.2f} exceeded"
        )
    return Decision(allowed=True, actor="ComplianceService", usage_key=key)


class ReleaseRequest(Model):
    transfer_id: str = Field(min_length=1)
    usage_key: str = Field(min_length=1)
    """The ``usageKey`` of the ``Check`` decision."""


@compliance.handler("Release")
async def release(ctx: Context, req: ReleaseRequest) -> None:
    await call(ctx, release_usage, UsageRef(transfer_id=req.transfer_id), key=req.usage_key)
