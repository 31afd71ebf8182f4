"""``ShopOrder/{orderId}/Place`` and the saga behind it, ``ShopOrderSaga`` (the seed's Order Saga).

``Place`` is a *shared* handler of the aggregate: it validates the request (400 naming the field) and
calls ``ShopOrderSaga/{orderId}/Run`` with the verified subject of its caller (:func:`podium.caller`),
who becomes the actor of ``OrderPlaced``. ``Run`` is an exclusive handler of a separate object that
holds the saga's log; it is private, like every handler the saga calls. The split keeps the aggregate's
state to its events alone, and keeps the aggregate free while the saga runs (the saga's ``Record``
commands to the aggregate would otherwise wait behind ``Place``).

The saga follows the seed's state diagram; every outcome is recorded as an event on the aggregate by
the step itself, before the saga moves on or compensates:

1. reserve inventory (``ShopStock/{sku}/Reserve`` per SKU): ``InventoryReserved``, or
   ``InventoryReservationFailed``; undo: release every SKU, ``InventoryReleased``.
2. process payment (``PaymentService/{orderId}-payment/Charge``): ``PaymentProcessed``, or
   ``PaymentFailed``; undo: refund, ``PaymentRefunded``.
3. create shipment (``ShopShipping/{orderId}/CreateShipment``): ``ShipmentCreated``, or
   ``ShippingFailed``; no undo (the last step).

then ``OrderCompleted``, or ``OrderCancelled`` after the compensations. Only completed steps are
compensated (``COMPENSATE_COMPLETED``): a reservation that fails releases its own partial holds, and a
declined card has nothing to refund, which is what the diagram says. The customer is told either way,
on the channels they chose (a one-way send to ``ShopNotifier``, so a notification never holds up or
fails the order).

A repeat of the same request returns the first answer (:class:`~podium.RunOnce`); a different request
for the same order id is 409.
"""

from __future__ import annotations

from typing import Any

from restate import ObjectContext, ObjectSharedContext

from podium import (
    COMPENSATE_COMPLETED,
    RunOnce,
    Saga,
    SagaCompensated,
    SagaLog,
    TerminalError,
    VirtualObject,
    call,
    caller,
    fan_out,
    fan_out_fail,
    read_saga_log,
    send,
)
from services.common.payments import ChargeRequest, RefundRequest, charge, refund
from services.shop.customers import Notification, notify
from services.shop.events import FINISHED, PROGRESS, EventType, OrderState, OrderStatus, fold
from services.shop.inventory import ReleaseRequest, ReserveRequest
from services.shop.inventory import release as release_stock
from services.shop.inventory import reserve as reserve_stock
from services.shop.models import Checkout, LiveStatus, OpenOrder, OrderSummary, PlaceOrder, RecordEvent
from services.shop.order import load_events, open_order, orders, record
from services.shop.shipping import ShipmentRequest, create_shipment

order_saga = VirtualObject("ShopOrderSaga", system="shop")
SAGA = "checkout"
ACTOR = "ShopOrderSaga"


@orders.handler("Place", kind="shared", public="write")
async def place(ctx: ObjectSharedContext, req: PlaceOrder) -> OrderSummary:
    """Place an order and run it to ``completed`` or ``cancelled``; a repeat returns the first answer."""
    if req.order_id is not None and req.order_id != ctx.key():
        raise TerminalError(f"orderId: {req.order_id!r} does not match the order id in the URL", 400)
    return await call(ctx, run, Checkout(order=req, placed_by=caller(ctx)), key=ctx.key())


@orders.handler("GetStatus", kind="shared", public="read")
async def get_status(ctx: ObjectSharedContext) -> LiveStatus:
    """Phase, progress and next step, folded from the events so far, with the saga's log."""
    events = await load_events(ctx)
    if not events:
        raise TerminalError(f"no order {ctx.key()}", 404)
    state = fold(events)
    progress, step = PROGRESS[state.status]
    return LiveStatus(
        order_id=ctx.key(),
        phase=state.status,
        progress=progress,
        current_step=step,
        completed_steps=state.completed_steps,
        is_complete=state.status in FINISHED,
        reason=state.reason,
        updated_at=state.updated_at,
        version=state.version,
        saga=await call(ctx, get_saga, None, key=ctx.key()),
    )


@order_saga.handler("GetSaga", kind="shared")
async def get_saga(ctx: ObjectSharedContext) -> SagaLog | None:
    """The saga's log: steps, compensations, dead letters (null before the saga starts)."""
    return await read_saga_log(ctx, SAGA)


@order_saga.handler("Run")
async def run(ctx: ObjectContext, checkout: Checkout) -> OrderSummary:
    """Record the order, run the saga, record how it ended; a repeat returns the first answer."""
    order_id, req = ctx.key(), checkout.order
    # The same order again is a repeat whoever sends it: only its content identifies it.
    once = RunOnce(ctx, req.model_copy(update={"order_id": None, "correlation_id": None}), OrderSummary)
    if (previous := await once.previous()) is not None:
        return previous
    correlation_id = req.correlation_id or f"corr-{ctx.uuid().hex[:16]}"
    opening = OpenOrder(order=req, correlation_id=correlation_id, actor=checkout.placed_by)
    opened = await call(ctx, open_order, opening, key=order_id)
    if opened.status != OrderStatus.PLACED:
        # Only an earlier run that ended in a dead letter leaves an order half-way without an answer.
        raise TerminalError(f"order {order_id} stopped at {opened.status}: see GetStatus", 409)
    steps = Steps(ctx, order_id, req)
    try:
        async with Saga(ctx, SAGA, strategy=COMPENSATE_COMPLETED) as saga:
            await saga.step(
                "reserve-inventory", steps.reserve, compensate=steps.release, payload={"lines": req.lines}
            )
            await saga.step(
                "process-payment",
                steps.charge,
                compensate=steps.refund,
                payload={"paymentId": steps.payment_id, "amount": req.total},
            )
            await saga.step("create-shipment", steps.ship, payload={"orderId": order_id})
    except SagaCompensated as failure:
        final = await steps.record(EventType.ORDER_CANCELLED, {"reason": failure.cause.message})
        steps.tell(
            "cancelled", f"Order {order_id} cancelled", f"We could not complete it: {failure.cause.message}."
        )
        return once.done(OrderSummary.of(final))
    final = await steps.record(EventType.ORDER_COMPLETED, {"total": req.total})
    steps.tell(
        "confirmed",
        f"Order {order_id} confirmed",
        f"Charged {req.total:.2f}; {final.carrier} tracking number {final.tracking_number}.",
    )
    return once.done(OrderSummary.of(final))


class Steps:
    """The saga's actions and compensations for one order; each records its outcome as an event."""

    def __init__(self, ctx: ObjectContext, order_id: str, req: PlaceOrder) -> None:
        self.ctx = ctx
        self.order_id = order_id
        self.req = req
        self.payment_id = f"{order_id}-payment"

    async def record(self, event_type: EventType, data: dict[str, Any]) -> OrderState:
        """Append one event to the order (idempotent: the event id is the type, once per order)."""
        event = RecordEvent(type=event_type, event_id=event_type.value, actor=ACTOR, data=data)
        return await call(self.ctx, record, event, key=self.order_id)

    async def reserve(self) -> None:
        """Reserve every SKU at once; if one is short, release the others and fail."""
        lines = self.req.lines
        outcome = await fan_out(
            [
                call(self.ctx, reserve_stock, ReserveRequest(order_id=self.order_id, quantity=units), key=sku)
                for sku, units in lines.items()
            ]
        )
        if outcome.failed:
            await self._release_stock()
            reason = "; ".join(e.message for e in outcome.errors if e is not None)
            await self.record(EventType.INVENTORY_RESERVATION_FAILED, {"reason": reason})
            raise TerminalError(reason, 409)
        await self.record(EventType.INVENTORY_RESERVED, {"lines": lines})

    async def release(self) -> None:
        """Compensation of ``reserve``: give every unit back."""
        await self._release_stock()
        await self.record(EventType.INVENTORY_RELEASED, {"lines": self.req.lines})

    async def _release_stock(self) -> None:
        release = ReleaseRequest(order_id=self.order_id)
        await fan_out_fail([call(self.ctx, release_stock, release, key=sku) for sku in self.req.lines])

    async def charge(self) -> None:
        """Charge the order's total once (the payment id is the gateway's idempotency key)."""
        request = ChargeRequest(
            customer_id=self.req.customer_id,
            amount=self.req.total,
            description=f"shop order {self.order_id}",
            method=self.req.payment_method,
        )
        try:
            payment = await call(self.ctx, charge, request, key=self.payment_id)
        except TerminalError as exc:
            await self.record(EventType.PAYMENT_FAILED, {"reason": exc.message, "paymentId": self.payment_id})
            raise
        data = {"paymentId": self.payment_id, "chargeId": payment.charge_id, "amount": payment.amount}
        await self.record(EventType.PAYMENT_PROCESSED, data)

    async def refund(self) -> None:
        """Compensation of ``charge``: refund what is left of it."""
        reason = f"shop order {self.order_id} could not ship"
        payment = await call(self.ctx, refund, RefundRequest(reason=reason), key=self.payment_id)
        await self.record(
            EventType.PAYMENT_REFUNDED, {"paymentId": self.payment_id, "amount": payment.refunded}
        )

    async def ship(self) -> None:
        """Create the shipment (label and tracking number), once per order."""
        request = ShipmentRequest(
            customer_id=self.req.customer_id, address=self.req.shipping_address, lines=self.req.lines
        )
        try:
            shipment = await call(self.ctx, create_shipment, request, key=self.order_id)
        except TerminalError as exc:
            await self.record(EventType.SHIPPING_FAILED, {"reason": exc.message})
            raise
        data = {
            "shipmentId": shipment.shipment_id,
            "trackingNumber": shipment.tracking_number,
            "carrier": shipment.carrier,
            "labelUrl": shipment.label_url,
        }
        await self.record(EventType.SHIPMENT_CREATED, data)

    def tell(self, kind: str, subject: str, body: str) -> None:
        """Notify the customer on their channels (one-way: never holds up or fails the order)."""
        message = Notification(
            customer_id=self.req.customer_id,
            message_id=f"{self.order_id}-{kind}",
            email=self.req.email,
            subject=subject,
            body=body,
        )
        send(self.ctx, notify, message)
