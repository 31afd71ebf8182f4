"""``FraudService``: scores a payment or transfer and says whether it may go ahead.

Rules (test data): a ``userId`` starting ``fraud-`` is blocked; an amount above :data:`AMOUNT_LIMIT` is
blocked. ``Check`` answers a plain boolean, as seed 002's client expects; ``Assess`` gives the reason.
"""

from __future__ import annotations

from pydantic import Field
from restate import Context

from podium import Model, Service

AMOUNT_LIMIT = 10_000.0
BLOCKED_PREFIX = "fraud-"

fraud = Service("FraudService")


class FraudCheck(Model):
    user_id: str = Field(min_length=1)
    amount: float = Field(ge=0)


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
