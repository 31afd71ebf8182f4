"""``FraudService``: scores a payment or a transfer and says whether it may go ahead.

Payments (``Check`` answers a plain boolean, as seed 002's client expects; ``Assess`` gives the reason):
a ``userId`` starting ``fraud-`` is blocked; an amount above :data:`AMOUNT_LIMIT` is blocked.

Transfers (``AssessTransfer``), each rule a reason to block:

- an amount above :data:`AMOUNT_LIMIT`;
- an account whose id starts with ``blocked-`` on either side;
- velocity: more than :data:`VELOCITY_LIMIT` transfers out of one account within :data:`VELOCITY_WINDOW`
  seconds (counted per transfer id in ``FraudVelocity/{account}``, so a retry is not counted twice).

Amounts follow the shared :data:`services.common.money.Amount` rule, as every door that accepts money
does. Every handler is private: the orders and transfers that need a decision ask for it, a client never.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from restate import Context, ObjectContext

from podium import Model, Service, VirtualObject, call
from services.common.money import Amount

AMOUNT_LIMIT = Decimal("10000")
BLOCKED_PREFIX = "fraud-"
BLOCKED_ACCOUNT_PREFIX = "blocked-"
VELOCITY_LIMIT = 30
VELOCITY_WINDOW = 60.0

fraud = Service("FraudService")


class FraudCheck(Model):
    user_id: str = Field(min_length=1)
    amount: Amount


class Assessment(Model):
    allowed: bool
    reason: str | None = None


def assess(req: FraudCheck) -> Assessment:
    """The rules, as a pure function."""
    if req.user_id.startswith(BLOCKED_PREFIX):
        return Assessment(allowed=False, reason=f"user {req.user_id} is blocked")
    if req.amount > AMOUNT_LIMIT:
        return Assessment(
            allowed=False, reason=f"amount {req.amount:.2f} is above the {AMOUNT_LIMIT:.2f} limit"
        )
    return Assessment(allowed=True)


@fraud.handler("Check")
async def check(ctx: Context, req: FraudCheck) -> bool:
    return assess(req).allowed


@fraud.handler("Assess")
async def assess_handler(ctx: Context, req: FraudCheck) -> Assessment:
    return assess(req)


class TransferCheck(Model):
    transfer_id: str = Field(min_length=1)
    from_account: str = Field(min_length=1)
    to_account: str = Field(min_length=1)
    amount: Amount
    day: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    """The UTC day a daily limit counts against (the checker's clock when absent); given by the caller
    so that it knows which day's usage to release if the transfer fails."""


class Decision(Model):
    allowed: bool
    actor: str
    """The service that decided."""
    reason: str | None = None
    usage_key: str | None = None
    """Set by a check that reserved something to release if the transfer fails."""


class VelocityRequest(Model):
    transfer_id: str
    window: float


velocity = VirtualObject("FraudVelocity")


@velocity.handler("Record")
async def record_velocity(ctx: ObjectContext, req: VelocityRequest) -> int:
    """Record a transfer out of this account; the count within the window, this one included."""
    now = await ctx.time()
    seen: dict[str, float] = await ctx.get("seen", type_hint=dict) or {}
    seen.setdefault(req.transfer_id, now)
    seen = {k: t for k, t in seen.items() if now - t <= req.window}
    ctx.set("seen", seen)
    return len(seen)


@fraud.handler("AssessTransfer")
async def assess_transfer(ctx: Context, req: TransferCheck) -> Decision:
    if req.amount > AMOUNT_LIMIT:
        reason = f"amount {req.amount} above the {AMOUNT_LIMIT:.2f} limit"
        return Decision(allowed=False, actor="FraudService", reason=reason)
    for account in (req.from_account, req.to_account):
        if account.startswith(BLOCKED_ACCOUNT_PREFIX):
            return Decision(allowed=False, actor="FraudService", reason=f"account {account} is blocked")
    seen = VelocityRequest(transfer_id=req.transfer_id, window=VELOCITY_WINDOW)
    count = await call(ctx, record_velocity, seen, key=req.from_account)
    if count > VELOCITY_LIMIT:
        return Decision(
            allowed=False,
            actor="FraudService",
            reason=f"velocity: {count} transfers out of {req.from_account} within {VELOCITY_WINDOW:.0f}s",
        )
    return Decision(allowed=True, actor="FraudService")
