"""What the network-fault tests serve: the systems in one deployment, the shared services in another.

``systems`` serves banking, travel and the shop (their orchestrators, accounts, inventories, stock,
shipping, read models), plus ``ChaosCheckout`` below; the shared ``common`` deployment (payments, mail,
fraud: ``services.common.app:app``) is served in a process of its own and registered through the test's
faulty proxy. Every call an orchestrator makes to a participant of ``common`` then crosses the faulty
network, while the orchestrators themselves stay reachable: the partition is between a saga and its
participants, as when a shared service's host drops off the network.

``ChaosCheckout`` is the smallest saga with a **deadline** over the real payment service: charge (undo:
refund by the payment id), then email a receipt, within :data:`CHECKOUT_DEADLINE`. The reference systems'
own sagas have no deadline (a trip, a transfer and an order wait for their participants as long as the
engine's retry policy lasts, about four minutes), so the case "a partition lasts past the saga's
deadline" needs one that has.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field
from restate import ObjectContext, ObjectSharedContext

import podium
from podium import Model, Saga, SagaError, SagaLog, VirtualObject, call, read_saga_log
from services.banking.app import SERVICES as BANKING
from services.common.money import Amount
from services.common.notifications import EmailRequest, send_email
from services.common.payments import ChargeRequest, RefundRequest, charge, refund
from services.shop.app import SERVICES as SHOP
from services.travel.app import SERVICES as TRAVEL

CHECKOUT_DEADLINE = timedelta(seconds=3)
"""How long a checkout's steps may take before it gives up and compensates."""

checkouts = VirtualObject("ChaosCheckout", system="chaos")


class CheckoutRequest(Model):
    customer_id: str = Field(min_length=1)
    amount: Amount
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class CheckoutResult(Model):
    status: Literal["paid", "failed"]
    reason: str | None = None


@checkouts.handler("Run", public="write")
async def run_checkout(ctx: ObjectContext, req: CheckoutRequest) -> CheckoutResult:
    """Charge and send a receipt before the deadline; past it, refund whatever was charged."""
    payment_id = f"{ctx.key()}-payment"
    try:
        async with Saga(ctx, "checkout", timeout=CHECKOUT_DEADLINE) as saga:
            await saga.step(
                "charge",
                lambda: call(
                    ctx,
                    charge,
                    ChargeRequest(customer_id=req.customer_id, amount=req.amount, description=ctx.key()),
                    key=payment_id,
                ),
                compensate=lambda: call(ctx, refund, RefundRequest(reason="checkout failed"), key=payment_id),
                payload={"paymentId": payment_id},
            )
            await saga.step(
                "receipt",
                lambda: call(
                    ctx,
                    send_email,
                    EmailRequest(message_id=f"{ctx.key()}-receipt", to=req.email, subject="Your receipt"),
                ),
            )
    except SagaError as failure:
        return CheckoutResult(status="failed", reason=failure.message)
    return CheckoutResult(status="paid")


@checkouts.handler("Log", kind="shared", public="read")
async def checkout_log(ctx: ObjectSharedContext) -> SagaLog | None:
    """The checkout's saga log (``compensating`` once its deadline has passed)."""
    return await read_saga_log(ctx, "checkout")


systems = podium.app(services=[*BANKING, *TRAVEL, *SHOP, checkouts])
"""Banking, travel, the shop and the checkout: everything but the shared services of ``common``."""
