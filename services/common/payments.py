"""``PaymentService``: charges and refunds through the card gateway, idempotent by payment id.

A virtual object keyed by payment id (the caller's idempotency key for the payment, such as
``trip-001-payment``). Its state is the payment record, so a second ``Charge`` returns the first answer
and a ``Refund`` never exceeds what was charged. The gateway call runs in ``ctx.run`` with the payment id
as idempotency key: if a crash cuts the call off, it runs again and the gateway answers from its record.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from restate import ObjectContext, ObjectSharedContext, RunOptions

from podium import Model, TerminalError, VirtualObject
from services.common.providers import PaymentGateway, ProviderError

payments = VirtualObject("PaymentService")
_RUN = RunOptions[dict](max_attempts=10, initial_retry_interval=timedelta(milliseconds=100))


class ChargeRequest(Model):
    customer_id: str = Field(min_length=1)
    amount: float = Field(gt=0, le=1_000_000)
    description: str = ""


class RefundRequest(Model):
    amount: float | None = Field(default=None, gt=0)
    """Amount to refund; the whole remaining charge when omitted."""
    reason: str = ""


class Payment(Model):
    id: str
    customer_id: str | None = None
    amount: float = 0.0
    refunded: float = 0.0
    status: str
    """``charged``, ``declined``, ``refunded``, ``partially_refunded`` or ``voided`` (refund before any
    charge: a late charge for this id is refused)."""
    charge_id: str | None = None
    reason: str | None = None


def _cents(amount: float) -> int:
    return round(amount * 100)


async def _load(ctx: ObjectContext | ObjectSharedContext) -> Payment | None:
    raw = await ctx.get("payment", type_hint=dict)
    return None if raw is None else Payment.model_validate(raw)


@payments.handler("Charge")
async def charge(ctx: ObjectContext, req: ChargeRequest) -> Payment:
    current = await _load(ctx)
    if current is not None:
        if current.status == "voided":
            raise TerminalError(f"payment {ctx.key()} was voided before it was charged", 409)
        if current.status == "declined":
            raise TerminalError(current.reason or "card declined", 402)
        return current
    gateway = PaymentGateway()

    def call_gateway() -> dict:
        try:
            return gateway.charge(
                ctx.key(),
                customer_id=req.customer_id,
                amount_cents=_cents(req.amount),
                description=req.description,
            )
        except ProviderError as exc:
            raise TerminalError(exc.message, exc.code) from exc

    try:
        answer = await ctx.run_typed("gateway charge", call_gateway, _RUN)
    except TerminalError as exc:
        declined = Payment(
            id=ctx.key(),
            customer_id=req.customer_id,
            amount=req.amount,
            status="declined",
            reason=exc.message,
        )
        ctx.set("payment", declined.model_dump(mode="json"))
        raise
    payment = Payment(
        id=ctx.key(),
        customer_id=req.customer_id,
        amount=req.amount,
        status="charged",
        charge_id=answer["chargeId"],
    )
    ctx.set("payment", payment.model_dump(mode="json"))
    return payment


@payments.handler("Refund")
async def refund(ctx: ObjectContext, req: RefundRequest) -> Payment:
    current = await _load(ctx)
    if current is None:
        voided = Payment(id=ctx.key(), status="voided", reason=req.reason or "refunded before charge")
        ctx.set("payment", voided.model_dump(mode="json"))
        return voided
    if current.status in ("declined", "voided", "refunded"):
        return current
    remaining = _cents(current.amount) - _cents(current.refunded)
    cents = remaining if req.amount is None else _cents(req.amount)
    if cents > remaining:
        raise TerminalError(
            f"refund of {cents / 100:.2f} exceeds the {remaining / 100:.2f} left on payment {ctx.key()}", 409
        )
    gateway = PaymentGateway()
    key = f"{ctx.key()}:refund:{_cents(current.refunded)}"
    charge_id = current.charge_id or ""

    def call_gateway() -> dict:
        try:
            return gateway.refund(key, charge_id=charge_id, amount_cents=cents)
        except ProviderError as exc:
            raise TerminalError(exc.message, exc.code) from exc

    await ctx.run_typed("gateway refund", call_gateway, _RUN)
    current.refunded = (_cents(current.refunded) + cents) / 100
    current.status = (
        "refunded" if _cents(current.refunded) == _cents(current.amount) else "partially_refunded"
    )
    ctx.set("payment", current.model_dump(mode="json"))
    return current


@payments.handler("Get", kind="shared")
async def get_payment(ctx: ObjectSharedContext) -> Payment:
    current = await _load(ctx)
    if current is None:
        raise TerminalError(f"no payment {ctx.key()}", 404)
    return current
