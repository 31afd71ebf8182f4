"""The checkout saga (``ShopOrder/{orderId}/Place``), and the commands that undo or adjust it.

The aggregate *is* the checkout: ``Place`` validates the order, records ``OrderPlaced`` and runs the
seed's Order Saga in the same exclusive invocation, appending each outcome to the order's own stream as
it happens (:class:`~services.shop.order.Order`). An order costs one invocation of its own, one per
participant (the payment method check, the stock, the charge, the label) and one message per subscriber
of its events: no second object holding the saga, no call per event appended (docs/performance.md has
the counts before and after).

**The saga** (:class:`Checkout`), under the deadline of :data:`services.shop.settings.SETTINGS`:

1. check the payment method (``PaymentService/Validate``): refused → ``PaymentFailed``;
2. reserve stock for every line at once (``ShopInventory/Reserve``, all or nothing):
   ``InventoryReserved`` or ``InventoryReservationFailed``; undo: ``Release``, ``InventoryReleased``;
3. charge the total once (``PaymentService/{orderId}-payment/Charge``): ``PaymentProcessed`` or
   ``PaymentFailed``; undo: refund what is left, ``PaymentRefunded``;
4. create the shipment (``ShopShipping/{orderId}/CreateShipment``, which picks the carrier and falls
   back to another): ``ShipmentCreated`` or ``ShippingFailed``; undo (only when the step itself did not
   finish in time or failed): ``ShopShipping/Withdraw`` voids a label made after the deadline;

then ``OrderCompleted``, or ``OrderCancelled`` with the reason after the compensations. Every started
step is compensated (:data:`~podium.COMPENSATE_ALL`), failed ones too: a charge cut off by the deadline
may still land at the gateway, and its refund (which asks the gateway by the payment id) finds it or
voids the id so that it can never land later; a reservation cut off the same way is released, and the
inventory refuses to hold stock for an order it released. Undoing a step that did nothing records no
event.

**After checkout.** ``Cancel`` (the customer, before the carrier has the parcel): voids the label,
refunds what is left, releases the stock, ``OrderCancelled``; it waits behind a running checkout (the
object is exclusive) and then cancels what the checkout did. ``Refund`` (an operator): a partial or full
refund of a completed or delivered order, once per ``refundId``.

Public: ``Place``, ``Cancel`` (``write``), ``Refund`` (``operator``).
"""

from __future__ import annotations

from typing import Any

from restate import ObjectContext

from podium import COMPENSATE_ALL, Saga, SagaCompensated, TerminalError, call, caller, correlation_id
from services.common.payments import (
    ChargeRequest,
    RefundRequest,
    ValidateRequest,
    charge,
    refund,
    validate_method,
)
from services.shop import settings
from services.shop.events import FINISHED, EventType, OrderStatus
from services.shop.inventory import ReleaseOrder, ReserveOrder, release, reserve
from services.shop.models import CancelOrder, OrderSummary, PlaceOrder, RefundOrder
from services.shop.order import ACTOR, SAGA, Order, orders
from services.shop.shipping import (
    CancelShipment,
    ShipmentRequest,
    cancel_shipment,
    create_shipment,
    withdraw,
)


@orders.handler("Place", public="write")
async def place(ctx: ObjectContext, req: PlaceOrder) -> OrderSummary:
    """Place an order and run it to ``completed`` or ``cancelled``; a repeat returns the first answer."""
    if req.order_id is not None and req.order_id != ctx.key():
        raise TerminalError(f"orderId: {req.order_id!r} does not match the order id in the URL", 400)
    order = await Order.load(ctx)
    fingerprint = req.fingerprint()
    if order.state.version:
        if order.state.fingerprint != fingerprint:
            raise TerminalError(f"order {ctx.key()} was already placed with a different request", 409)
        if order.state.status in FINISHED or order.state.status == OrderStatus.CANCELLING:
            return OrderSummary.of(order.state)
        # Only a checkout that ended in a dead letter leaves an order half-way without an answer.
        raise TerminalError(f"order {ctx.key()} stopped at {order.state.status}: see GetStatus", 409)
    # The events of one order share the correlation id of the request that placed it.
    order.state = order.state.model_copy(
        update={"order_id": ctx.key(), "correlation_id": req.correlation_id or correlation_id(ctx)}
    )
    await order.append(
        EventType.ORDER_PLACED, _placed_data(req, fingerprint), actor=caller(ctx), event_id="placed"
    )
    await Checkout(order, req).run()
    await order.publish()
    return OrderSummary.of(order.state)


@orders.handler("Cancel", public="write")
async def cancel(ctx: ObjectContext, req: CancelOrder) -> OrderSummary:
    """Cancel an order before the carrier has it: void the label, refund, release, ``OrderCancelled``."""
    order = await Order.load(ctx)
    state = order.state
    if not state.version:
        raise TerminalError(f"no order {ctx.key()}", 404)
    if state.status == OrderStatus.CANCELLED:
        return OrderSummary.of(state)
    if state.status != OrderStatus.COMPLETED or state.tracking:
        shipped = "the carrier already has it" if state.tracking else f"it is {state.status}"
        raise TerminalError(f"order {ctx.key()} cannot be cancelled: {shipped}", 409)
    # The carrier decides first: once it has scanned the parcel, the label cannot be voided.
    await call(ctx, cancel_shipment, CancelShipment(reason=req.reason), key=ctx.key())
    await order.append(EventType.CANCELLATION_REQUESTED, {"reason": req.reason}, actor=caller(ctx))
    await order.append(EventType.SHIPMENT_CANCELLED, {"shipmentId": state.shipment_id})
    steps = Checkout(order, None)
    await steps.refund()
    await steps.release()
    await order.append(EventType.ORDER_CANCELLED, {"reason": order.state.reason})
    await order.publish()
    return OrderSummary.of(order.state)


@orders.handler("Refund", public="operator")
async def refund_order(ctx: ObjectContext, req: RefundOrder) -> OrderSummary:
    """Refund part or all of what is left of a completed or delivered order, once per ``refundId``."""
    order = await Order.load(ctx)
    state = order.state
    if not state.version:
        raise TerminalError(f"no order {ctx.key()}", 404)
    event_id = f"refund-{req.refund_id}"
    if event_id in state.event_ids:
        return OrderSummary.of(state)
    if state.status not in (OrderStatus.COMPLETED, OrderStatus.DELIVERED):
        raise TerminalError(f"order {ctx.key()} cannot be refunded: it is {state.status}", 409)
    left = round(state.charged - state.refunded, 2)
    if req.amount > left:
        raise TerminalError(f"amount: {req.amount:.2f} is more than the {left:.2f} left to refund", 409)
    reason = req.reason or f"shop order {ctx.key()}: refund {req.refund_id}"
    payment = await call(ctx, refund, RefundRequest(amount=req.amount, reason=reason), key=state.payment_id)
    given = round(payment.refunded - state.refunded, 2)
    data = {"paymentId": state.payment_id, "amount": given, "refundId": req.refund_id, "by": caller(ctx)}
    await order.append(EventType.PAYMENT_REFUNDED, data, actor=caller(ctx), event_id=event_id)
    await order.publish()
    return OrderSummary.of(order.state)


# -- the checkout saga -------------------------------------------------------------------------------------


class Checkout:
    """The saga's actions and compensations for one order; each appends its outcome to the stream."""

    def __init__(self, order: Order, req: PlaceOrder | None) -> None:
        self.order = order
        self.ctx = order.ctx
        self.req = req
        self.order_id = order.ctx.key()
        self.payment_id = f"{self.order_id}-payment"

    async def run(self) -> None:
        """The saga: every outcome recorded, then ``OrderCompleted`` or ``OrderCancelled``."""
        assert self.req is not None
        req = self.req
        try:
            async with Saga(
                self.ctx, SAGA, strategy=COMPENSATE_ALL, timeout=settings.SETTINGS.checkout_deadline
            ) as saga:
                await self._step(
                    saga.step(
                        "validate-payment",
                        lambda: call(
                            self.ctx,
                            validate_method,
                            ValidateRequest(method=req.payment_method),
                            key=self.payment_id,
                        ),
                    ),
                    EventType.PAYMENT_FAILED,
                    valid=True,
                )
                reservation = await self._step(
                    saga.step(
                        "reserve-inventory",
                        lambda: call(
                            self.ctx,
                            reserve,
                            ReserveOrder(order_id=self.order_id, lines=req.lines, actor=ACTOR),
                        ),
                        compensate=self.release,
                        payload={"lines": req.lines},
                    ),
                    EventType.INVENTORY_RESERVATION_FAILED,
                )
                await self.order.append(EventType.INVENTORY_RESERVED, {"lines": reservation.lines})
                charge_request = ChargeRequest(
                    customer_id=req.customer_id,
                    amount=req.total,
                    description=f"shop order {self.order_id}",
                    method=req.payment_method,
                )
                payment = await self._step(
                    saga.step(
                        "process-payment",
                        lambda: call(self.ctx, charge, charge_request, key=self.payment_id),
                        compensate=self.refund,
                        payload={"paymentId": self.payment_id, "amount": req.total},
                    ),
                    EventType.PAYMENT_FAILED,
                )
                await self.order.append(
                    EventType.PAYMENT_PROCESSED,
                    {"paymentId": self.payment_id, "chargeId": payment.charge_id, "amount": payment.amount},
                )
                shipment_request = ShipmentRequest(
                    customer_id=req.customer_id, address=req.shipping_address, lines=req.lines
                )
                shipment = await self._step(
                    saga.step(
                        "create-shipment",
                        lambda: call(self.ctx, create_shipment, shipment_request, key=self.order_id),
                        compensate=self.withdraw_shipment,
                        payload={"orderId": self.order_id},
                    ),
                    EventType.SHIPPING_FAILED,
                )
                await self.order.append(
                    EventType.SHIPMENT_CREATED,
                    {
                        "shipmentId": shipment.shipment_id,
                        "trackingNumber": shipment.tracking_number,
                        "carrier": shipment.carrier,
                        "labelUrl": shipment.label_url,
                    },
                )
        except SagaCompensated as failure:
            await self.order.append(EventType.ORDER_CANCELLED, {"reason": failure.cause.message})
            return
        await self.order.append(EventType.ORDER_COMPLETED, {"total": req.total})

    async def _step(self, step: Any, failed: EventType, *, valid: bool = False) -> Any:
        """Await a saga step; on failure record ``failed`` with the reason, then let the saga compensate."""
        try:
            answer = await step
        except TerminalError as exc:
            await self.order.append(failed, {"reason": exc.message})
            raise
        if valid and answer is not True:
            assert self.req is not None
            reason = f"payment method {self.req.payment_method} was refused: expired or unknown"
            await self.order.append(failed, {"reason": reason})
            raise TerminalError(reason, 402)
        return answer

    async def withdraw_shipment(self) -> None:
        """Undo ``create_shipment`` cut off or failed: void a label the carrier made all the same.

        The order never recorded that label (its answer came too late), so no event is appended: the
        carrier's record of the order's label key holds the void.
        """
        reason = f"shop order {self.order_id}: the checkout gave up"
        await call(self.ctx, withdraw, CancelShipment(reason=reason), key=self.order_id)

    async def release(self) -> None:
        """Undo ``reserve``: give every unit back (``InventoryReleased`` when there was something to give)."""
        given = await call(self.ctx, release, ReleaseOrder(order_id=self.order_id, actor=ACTOR))
        if given.lines:
            await self.order.append(EventType.INVENTORY_RELEASED, {"lines": given.lines})

    async def refund(self) -> None:
        """Undo ``charge``: refund what is left of it (``PaymentRefunded`` when money went back)."""
        reason = f"shop order {self.order_id} cancelled"
        before = self.order.state.refunded
        payment = await call(self.ctx, refund, RefundRequest(reason=reason), key=self.payment_id)
        given = round(payment.refunded - before, 2)
        if given > 0:
            await self.order.append(
                EventType.PAYMENT_REFUNDED, {"paymentId": self.payment_id, "amount": given}
            )


def _placed_data(req: PlaceOrder, fingerprint: str) -> dict[str, Any]:
    """What ``OrderPlaced`` carries: the request as placed, plus what the fold needs from it."""
    order = req.model_dump(mode="json")
    return {
        "customerId": order["customerId"],
        "email": order["email"],
        "items": order["items"],
        "shippingAddress": order["shippingAddress"],
        "paymentMethod": order["paymentMethod"],
        "total": req.total,
        "lines": req.lines,
        "fingerprint": fingerprint,
    }
