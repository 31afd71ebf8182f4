"""``FulfillmentOrchestrator`` (seed 000, exercise 1): order fulfilment, one step after the other.

Seed 002 already owns the name ``OrderOrchestrator`` (``CompleteOrder``, ``GetOrderStatus``), so seed
000's orchestrator is called ``FulfillmentOrchestrator``. It coordinates the same commerce services
(``InventoryService``/``StockLevel``, ``WarehouseService``, ``ShippingService``) and the shared
``PaymentService`` and ``NotificationService``; it adds no service of its own.

``POST /FulfillmentOrchestrator/{orderId}/FulfillOrder``, in the seed's order (each undo is recorded in
the saga log before its action starts):

1. check inventory availability       short: the order ends ``failed`` before anything is held
2. reserve inventory                  undo: release the stock (held or already picked)
3. charge the customer                undo: refund (a charge that never happened is voided)
4. create the warehouse pick ticket   picking commits the stock; undone by the release above
5. create the shipping label          reserve a carrier slot (undo: cancel it), print the label
6. send the tracking email            after the saga: a bounce never undoes a shipped order

So a failed payment releases the inventory, and a failed shipment (no slot, no label) cancels the slot,
refunds the payment and releases the stock. The object is keyed by order id and its handler is
exclusive: a repeated ``FulfillOrder`` waits for the first and returns its result (:class:`RunOnce`), a
different request for the same order id is refused with 409. ``GetStatus`` (shared) shows progress and
the saga log at any moment.

Every id the services see is derived from the order id with a ``-fulfillment`` suffix, so a retried or
replayed order addresses the same records and never collides with another orchestrator's order of the
same id: stock holder and pick ticket ``{orderId}-fulfillment``, payment ``{orderId}-fulfillment-payment``,
shipment (slot) ``{orderId}-fulfillment-shipment``, email ``{orderId}-fulfillment-tracking``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pydantic import Field, TypeAdapter, ValidationError
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
from services.commerce.inventory import check as check_stock
from services.commerce.inventory import release as release_stock
from services.commerce.inventory import reserve as reserve_stock
from services.commerce.models import Address, CheckRequest, Item, OrderStatus, StockRequest
from services.commerce.shipping import LabelRequest, SlotRequest, cancel_slot, generate_label, reserve_slot
from services.commerce.warehouse import PickRequest, pick_items
from services.common.money import Amount
from services.common.notifications import EmailRequest, send_email
from services.common.payments import ChargeRequest, PaymentMethod, RefundRequest, charge, refund

fulfillment = VirtualObject("FulfillmentOrchestrator", system="commerce")
SAGA = "fulfil-order"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class FulfillmentRequest(Model):
    order_id: str | None = None
    """Optional; when given it must be the order id of the URL."""
    customer_id: str = Field(min_length=1)
    customer_email: str = Field(pattern=EMAIL_PATTERN)
    items: list[Item] = Field(min_length=1)
    shipping_address: Address
    payment_method: PaymentMethod = "card-visa"


class FulfillmentResult(Model):
    order_id: str
    status: str
    """``completed`` or ``failed``."""
    amount: float
    """What the customer is charged: the catalogue price of every line."""
    reservation_id: str | None = None
    payment_id: str | None = None
    pick_ticket: str | None = None
    shipment_id: str | None = None
    tracking_number: str | None = None
    carrier: str | None = None
    tracking_email: str | None = None
    """``delivered``, ``bounced`` or ``failed`` (never fatal); absent when the order failed."""
    reason: str | None = None
    """Why the order failed."""
    compensated: list[str] = []
    """The saga steps that were undone, most recent first."""


@dataclass(frozen=True)
class FulfillmentIds:
    """The ids an order uses in the services it calls, all derived from the order id."""

    reservation: str
    payment: str
    shipment: str
    email: str

    @classmethod
    def of(cls, order_id: str) -> FulfillmentIds:
        base = f"{order_id}-fulfillment"
        return cls(base, f"{base}-payment", f"{base}-shipment", f"{base}-tracking")


_AMOUNT = TypeAdapter(Amount)
"""The payments' rule for an amount (``ChargeRequest.amount``), checked here before anything starts."""


def order_amount(items: list[Item]) -> Decimal:
    """The catalogue price of an order; an unknown SKU or a total no payment can take is a 400."""
    total = sum(
        (catalogue.price(i.sku, f"items.{n}.sku") * i.quantity for n, i in enumerate(items)), Decimal(0)
    )
    try:
        amount: Decimal = _AMOUNT.validate_python(total)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise TerminalError(
            f"items: the order comes to {total:.2f}, which no payment can take: {problem}", 400
        ) from exc
    return amount


@fulfillment.handler("FulfillOrder", public="write")
async def fulfill_order(ctx: ObjectContext, req: FulfillmentRequest) -> FulfillmentResult:
    order_id = ctx.key()
    if req.order_id is not None and req.order_id != order_id:
        raise TerminalError(
            f"orderId: {req.order_id!r} does not match the order id in the URL ({order_id!r})", 400
        )
    req = req.model_copy(update={"order_id": order_id})  # with or without orderId: the same request
    amount = order_amount(req.items)  # a bad SKU is refused before anything starts
    once = RunOnce(ctx, req, FulfillmentResult)
    if (previous := await once.previous()) is not None:
        return previous

    ids = FulfillmentIds.of(order_id)
    result = FulfillmentResult(order_id=order_id, status="failed", amount=float(amount))
    status = StatusTracker(ctx)
    await status.update(phase="started", progress=0.0, metadata={"amount": float(amount)})

    await status.update(step="check-inventory")
    availability = await call(ctx, check_stock, CheckRequest(items=req.items))
    if not availability.available:
        result.reason = f"out of stock: {', '.join(availability.missing)}"
        await status.fail(result.reason)
        return once.done(result)
    await status.update(phase="inventory-checked", progress=0.15, completed_step="check-inventory")

    try:
        async with Saga(ctx, SAGA) as saga:
            stock = StockRequest(reservation_id=ids.reservation, items=req.items)
            await status.update(step="reserve-inventory")
            await saga.step(
                "reserve-inventory",
                lambda: call(ctx, reserve_stock, stock),
                compensate=lambda: call(ctx, release_stock, stock),
                payload={"reservationId": ids.reservation},
            )
            result.reservation_id = ids.reservation
            await status.update(phase="inventory-reserved", progress=0.3, completed_step="reserve-inventory")

            await status.update(step="charge-payment")
            payment = await saga.step(
                "charge-payment",
                lambda: call(
                    ctx,
                    charge,
                    ChargeRequest(
                        customer_id=req.customer_id,
                        amount=amount,
                        description=f"order {order_id}",
                        method=req.payment_method,
                    ),
                    key=ids.payment,
                ),
                compensate=lambda: call(
                    ctx, refund, RefundRequest(reason=f"order {order_id} failed"), key=ids.payment
                ),
                payload={"paymentId": ids.payment, "amount": float(amount)},
            )
            result.payment_id = payment.id
            await status.update(phase="charged", progress=0.5, completed_step="charge-payment")

            await status.update(step="create-pick-ticket")
            pick = await saga.step(  # no undo of its own: releasing the stock puts it back on the shelf
                "create-pick-ticket",
                lambda: call(ctx, pick_items, PickRequest(items=req.items), key=ids.reservation),
                payload={"reservationId": ids.reservation},
            )
            result.pick_ticket = pick.pick_ticket
            await status.update(phase="picked", progress=0.65, completed_step="create-pick-ticket")

            await status.update(step="create-shipping-label")
            await saga.step(
                "reserve-shipping-slot",
                lambda: call(
                    ctx,
                    reserve_slot,
                    SlotRequest(address=req.shipping_address, items=req.items),
                    key=ids.shipment,
                ),
                compensate=lambda: call(ctx, cancel_slot, None, key=ids.shipment),
                payload={"shipmentId": ids.shipment},
            )
            result.shipment_id = ids.shipment
            label = await saga.step(  # a label is void once its slot is cancelled
                "create-shipping-label",
                lambda: call(
                    ctx, generate_label, LabelRequest(address=req.shipping_address), key=ids.shipment
                ),
                payload={"shipmentId": ids.shipment},
            )
            result.tracking_number, result.carrier = label.tracking_number, label.carrier
            await status.update(
                phase="shipped",
                progress=0.85,
                completed_step="create-shipping-label",
                metadata={"trackingNumber": label.tracking_number},
            )
    except SagaError as failure:
        result.reason = failure.cause.message if isinstance(failure, SagaCompensated) else failure.message
        result.compensated = [
            s.name for s in reversed(failure.log.steps) if s.status == StepStatus.COMPENSATED
        ]
        await status.fail(failure.message)
        return once.done(result)

    await status.update(step="send-tracking-email")
    result.tracking_email = await _send_tracking_email(ctx, req, ids, result)
    result.status = "completed"
    await status.update(
        completed_step="send-tracking-email", metadata={"trackingEmail": result.tracking_email}
    )
    await status.complete()
    return once.done(result)


async def _send_tracking_email(
    ctx: ObjectContext, req: FulfillmentRequest, ids: FulfillmentIds, result: FulfillmentResult
) -> str:
    """Email the tracking number: ``delivered``, ``bounced`` or ``failed``, never an exception."""
    try:
        delivery = await call(
            ctx,
            send_email,
            EmailRequest(
                message_id=ids.email,
                to=req.customer_email,
                subject=f"Your order {result.order_id} has shipped",
                body=(
                    f"Order {result.order_id} is on its way with {result.carrier}.\n"
                    f"Tracking number: {result.tracking_number}.\nCharged {result.amount:.2f}."
                ),
            ),
        )
    except TerminalError:
        return "failed"
    return delivery.status


@fulfillment.handler("GetStatus", kind="shared", public="read")
async def get_status(ctx: ObjectSharedContext) -> OrderStatus:
    status = await read_status(ctx)
    if status is None:
        raise TerminalError(f"no order {ctx.key()}", 404)
    return OrderStatus(**status.model_dump(), saga=await read_saga_log(ctx, SAGA))
