"""``OrderSaga`` (seed 003, exercise 1): charge, reserve, ship, confirm, with the seed's compensations.

``POST /OrderSaga/{orderId}/Run`` takes the seed's ``OrderRequest`` (``orderId``, ``customerId``,
``items``, ``amount``) and answers the seed's ``OrderResult`` (``status``, ``paymentId``,
``reservationId``, ``shipmentId``; fields that do not apply are left out, as the seed's ``omitempty``),
plus ``reason`` and ``compensated`` when it failed and ``trackingNumber``/``confirmationEmail`` when it
completed. Steps, in the seed's order (each undo is recorded in the saga log before its action starts):

1. charge payment            undo: refund (a charge that never happened is voided)
2. reserve inventory         undo: release the stock
3. create shipment           book a carrier slot, print the label, hand the stock over (commit);
                             undo: cancel the slot
4. send confirmation email   outside the saga: a failure or a bounce is non-critical, the order completes

So inventory failing refunds the payment, and a shipment failing releases the inventory and refunds the
payment (and cancels the slot it may have booked). A failure is an answer (``"status": "failed"`` with
the reason), not an error; only a bad request is (400, naming the field).

The seed runs it as a workflow; here it is a virtual object keyed by order id, because a workflow's run
handler answers a second call with 409, while a repeated ``Run`` must return the first result: the
exclusive handler waits for the first run and answers with its result (:class:`RunOnce`); a different
request for the same order id is refused with 409. ``GetStatus`` (shared) shows progress and the saga
log at any moment. The URL is the seed's.

The seed's request carries neither an address nor an email, so both come from the customer's record "on
file"; this reference system has no customer database, so the record is derived from the customer id
(:func:`address_on_file`, :func:`email_on_file`), with prefixes as test data:

| customer id | address on file | email on file |
|---|---|---|
| any other | 1 Main St, Springfield, US 12345 | ``{customerId}@example.com`` |
| ``noslots-…`` | city ``No Slots`` (no carrier slot: the shipment fails) | as above |
| ``nolabels-…`` | city ``No Labels`` (no label: the shipment fails) | as above |
| ``bounce-…`` | as above | ``{customerId}@bounce.example.com`` (bounces) |

Ids are derived from the order id with a ``-saga`` suffix: ``{orderId}-saga-payment``,
``{orderId}-saga-reservation``, ``{orderId}-saga-shipment``, ``{orderId}-saga-confirmation`` (the email).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer
from restate import ObjectContext, ObjectSharedContext

from podium import (
    Model,
    RunOnce,
    Saga,
    SagaCompensated,
    SagaError,
    StatusTracker,
    StepStatus,
    TerminalError,
    VirtualObject,
    call,
    read_saga_log,
    read_status,
)
from services.commerce import catalogue
from services.commerce.inventory import commit as commit_stock
from services.commerce.inventory import release as release_stock
from services.commerce.inventory import reserve as reserve_stock
from services.commerce.models import Address, Item, Label, OrderStatus, StockRequest
from services.commerce.shipping import LabelRequest, SlotRequest, cancel_slot, generate_label, reserve_slot
from services.common.money import Amount
from services.common.notifications import EmailRequest, send_confirmation
from services.common.payments import ChargeRequest, RefundRequest, charge, refund
from services.common.providers import BOUNCE_DOMAIN

order_saga = VirtualObject("OrderSaga", system="commerce")
SAGA = "order-saga"

DEFAULT_ADDRESS = Address(street="1 Main St", city="Springfield", country="US", zip="12345")
"""Where every customer lives unless a test prefix says otherwise."""
NO_SLOTS_PREFIX = "noslots-"
"""Customers whose id starts with this live in ``No Slots``: no carrier slot, the shipment fails."""
NO_LABELS_PREFIX = "nolabels-"
"""Customers whose id starts with this live in ``No Labels``: the label cannot be printed."""
BOUNCE_PREFIX = "bounce-"
"""Customers whose id starts with this have their email at the bounce domain: the email bounces."""


class OrderRequest(Model):
    """Seed 003's ``OrderRequest``."""

    order_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Letters, digits, ``.``, ``_``, ``-``: it names the customer's email on file."""
    items: list[Item] = Field(min_length=1)
    amount: Amount
    """What is charged, as given: a JSON number, more than 0, at most two decimals (the payments' rule)."""


class OrderSagaResult(Model):
    """Seed 003's ``OrderResult``; ``None`` fields are left out of the JSON (the seed's ``omitempty``)."""

    status: str
    """``completed`` or ``failed``."""
    payment_id: str | None = None
    reservation_id: str | None = None
    shipment_id: str | None = None
    tracking_number: str | None = None
    confirmation_email: bool | None = None
    """Whether the confirmation was delivered (a completed order only; ``false`` never fails it)."""
    reason: str | None = None
    """Why the order failed."""
    compensated: list[str] | None = None
    """The steps undone, most recent first (a failed order only)."""

    @model_serializer(mode="wrap")
    def _omit_empty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


@dataclass(frozen=True)
class SagaIds:
    """The ids an order uses in the services it calls, all derived from the order id."""

    payment: str
    reservation: str
    shipment: str
    email: str

    @classmethod
    def of(cls, order_id: str) -> SagaIds:
        base = f"{order_id}-saga"
        return cls(f"{base}-payment", f"{base}-reservation", f"{base}-shipment", f"{base}-confirmation")


def address_on_file(customer_id: str) -> Address:
    """The customer's shipping address (see the module docs for the test prefixes)."""
    if customer_id.startswith(NO_SLOTS_PREFIX):
        return DEFAULT_ADDRESS.model_copy(update={"city": catalogue.NO_SLOTS_CITY})
    if customer_id.startswith(NO_LABELS_PREFIX):
        return DEFAULT_ADDRESS.model_copy(update={"city": catalogue.NO_LABELS_CITY})
    return DEFAULT_ADDRESS


def email_on_file(customer_id: str) -> str:
    """The customer's email address (see the module docs for the test prefix)."""
    domain = BOUNCE_DOMAIN if customer_id.startswith(BOUNCE_PREFIX) else "example.com"
    return f"{customer_id}@{domain}"


@order_saga.handler("Run", public="write")
async def run(ctx: ObjectContext, req: OrderRequest) -> OrderSagaResult:
    order_id = ctx.key()
    if req.order_id != order_id:
        raise TerminalError(
            f"orderId: {req.order_id!r} does not match the order id in the URL ({order_id!r})", 400
        )
    for n, item in enumerate(req.items):
        catalogue.price(item.sku, f"items.{n}.sku")  # an unknown SKU is refused before anything starts
    once = RunOnce(ctx, req, OrderSagaResult)
    if (previous := await once.previous()) is not None:
        return previous

    ids = SagaIds.of(order_id)
    address = address_on_file(req.customer_id)
    result = OrderSagaResult(status="failed")
    status = StatusTracker(ctx)
    await status.update(phase="started", progress=0.0)
    try:
        async with Saga(ctx, SAGA) as saga:
            await status.update(step="charge-payment")
            await saga.step(
                "charge-payment",
                lambda: call(
                    ctx,
                    charge,
                    ChargeRequest(
                        customer_id=req.customer_id, amount=req.amount, description=f"order {order_id}"
                    ),
                    key=ids.payment,
                ),
                compensate=lambda: call(
                    ctx, refund, RefundRequest(reason=f"order {order_id} failed"), key=ids.payment
                ),
                payload={"paymentId": ids.payment, "amount": float(req.amount)},
            )
            result.payment_id = ids.payment
            await status.update(phase="charged", progress=0.25, completed_step="charge-payment")

            stock = StockRequest(reservation_id=ids.reservation, items=req.items)
            await status.update(step="reserve-inventory")
            await saga.step(
                "reserve-inventory",
                lambda: call(ctx, reserve_stock, stock),
                compensate=lambda: call(ctx, release_stock, stock),
                payload={"reservationId": ids.reservation},
            )
            result.reservation_id = ids.reservation
            await status.update(phase="reserved", progress=0.5, completed_step="reserve-inventory")

            await status.update(step="create-shipment")
            label = await saga.step(
                "create-shipment",
                lambda: _ship(ctx, ids, req, address),
                compensate=lambda: call(ctx, cancel_slot, None, key=ids.shipment),
                payload={"shipmentId": ids.shipment},
            )
            result.shipment_id = ids.shipment
            result.tracking_number = label.tracking_number
            await status.update(
                phase="shipped",
                progress=0.75,
                completed_step="create-shipment",
                metadata={"trackingNumber": label.tracking_number},
            )
    except SagaError as failure:
        result.reason = failure.cause.message if isinstance(failure, SagaCompensated) else failure.message
        result.compensated = [
            s.name for s in reversed(failure.log.steps) if s.status == StepStatus.COMPENSATED
        ]
        await status.fail(failure.message)
        return once.done(result)

    await status.update(step="send-confirmation")
    result.confirmation_email = await _confirm(ctx, req, ids, result)
    result.status = "completed"
    await status.update(
        completed_step="send-confirmation", metadata={"confirmationEmail": result.confirmation_email}
    )
    await status.complete()
    return once.done(result)


async def _ship(ctx: ObjectContext, ids: SagaIds, req: OrderRequest, address: Address) -> Label:
    """Create the shipment: book a slot, print its label, and commit the reserved stock to it."""
    await call(ctx, reserve_slot, SlotRequest(address=address, items=req.items), key=ids.shipment)
    label = await call(ctx, generate_label, LabelRequest(address=address), key=ids.shipment)
    await call(ctx, commit_stock, StockRequest(reservation_id=ids.reservation, items=req.items))
    return label


async def _confirm(ctx: ObjectContext, req: OrderRequest, ids: SagaIds, result: OrderSagaResult) -> bool:
    """Send the confirmation email; non-critical: a bounce or an error is ``False``, never a failure."""
    try:
        delivery = await call(
            ctx,
            send_confirmation,
            EmailRequest(
                message_id=ids.email,
                to=email_on_file(req.customer_id),
                subject=f"Order {req.order_id} confirmed",
                body=(
                    f"Order {req.order_id}: charged {req.amount:.2f}, "
                    f"shipment {result.shipment_id}, tracking {result.tracking_number}."
                ),
            ),
        )
    except TerminalError:
        return False
    return delivery.status == "delivered"


@order_saga.handler("GetStatus", kind="shared", public="read")
async def get_status(ctx: ObjectSharedContext) -> OrderStatus:
    status = await read_status(ctx)
    if status is None:
        raise TerminalError(f"no order {ctx.key()}", 404)
    return OrderStatus(**status.model_dump(), saga=await read_saga_log(ctx, SAGA))
