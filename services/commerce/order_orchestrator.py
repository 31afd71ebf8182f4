"""``OrderOrchestrator`` (seed 002): every orchestration pattern in one order flow.

``POST /OrderOrchestrator/{orderId}/CompleteOrder`` with the seed's ``Order``; the five phases:

1. **validation**, fan-out fail-fast: stock, payment method, shipping zone and fraud checked at once;
   any "no" answers 400 ``order validation failed: ...`` (nothing was held, the order can be retried).
2. **reservation**, under the saga: stock (undo: release) and a shipping slot (undo: cancel).
3. **payment**, racing two providers with the primary preferred: the backup starts only if the primary
   has not answered within 100 ms, or failed; the first success wins; the loser is cancelled and
   refunded by key, so it can never keep a charge (undo of the phase: refund both).
4. **fulfilment**, fan-out fail-fast: warehouse pick, shipping label, invoice (undo: void the invoice; the
   pick is undone by the stock release, the label by the slot cancellation).
5. **notifications**, best effort: email, SMS and push at once; failures are counted, never fatal.

Status is updated after each phase (0.2, 0.4, 0.6, 0.8, 1.0) and ``GetOrderStatus`` (shared) answers
at any moment with the status record and the saga log. The object is keyed by order id: a repeated
``CompleteOrder`` returns the first result (see :class:`podium.RunOnce`).

``CompleteOrder`` (``commerce:write``) and ``GetOrderStatus`` (``commerce:read``) are public; every
service they call is private. The order's ``total`` follows the payments' ``Amount`` rule at the door,
so the charge of phase 3 can never be refused for its amount after stock and a slot are held.
"""

from __future__ import annotations

from datetime import timedelta

from restate import ObjectContext, ObjectSharedContext, wait_completed

from podium import (
    FanOutError,
    RaceError,
    RunOnce,
    Saga,
    SagaError,
    StatusTracker,
    TerminalError,
    VirtualObject,
    call,
    fan_out,
    fan_out_fail,
    race,
    read_saga_log,
    read_status,
)
from services.commerce.billing import InvoiceRequest, generate_invoice, void_invoice
from services.commerce.inventory import check as check_stock
from services.commerce.inventory import release as release_stock
from services.commerce.inventory import reserve as reserve_stock
from services.commerce.models import (
    CheckRequest,
    Fulfillment,
    Notifications,
    Order,
    OrderResult,
    OrderStatus,
    PaymentInfo,
    StockRequest,
)
from services.commerce.shipping import (
    AvailabilityRequest,
    LabelRequest,
    SlotRequest,
    cancel_slot,
    check_availability,
    generate_label,
    reserve_slot,
)
from services.commerce.warehouse import PickRequest, pick_items
from services.common.fraud import FraudCheck
from services.common.fraud import check as check_fraud
from services.common.notifications import (
    EmailRequest,
    PushRequest,
    SmsRequest,
    send_email,
    send_push,
    send_sms,
)
from services.common.payments import ChargeRequest, Payment, RefundRequest, ValidateRequest, charge, refund
from services.common.payments import validate_method as validate_payment_method

orders = VirtualObject("OrderOrchestrator", system="commerce")
SAGA = "order-saga"
HEDGE_DELAY = timedelta(milliseconds=100)
"""How long the primary payment provider has before the backup is started too."""


@orders.handler("CompleteOrder", public="write")
async def complete_order(ctx: ObjectContext, order: Order) -> OrderResult:
    if order.id != ctx.key():
        raise TerminalError(f"id: {order.id!r} does not match the order id in the URL ({ctx.key()!r})", 400)
    once = RunOnce(ctx, order, OrderResult)
    if (previous := await once.previous()) is not None:
        return previous
    status = StatusTracker(ctx)
    await status.update(phase="started", progress=0.0)

    await _validate(ctx, order)  # raises 400 before anything is held
    await status.update(phase="validation", progress=0.2, completed_step="validation")

    try:
        async with Saga(ctx, SAGA) as saga:
            stock = StockRequest(reservation_id=order.id, items=order.items)
            await saga.step(
                "reserve-inventory",
                lambda: call(ctx, reserve_stock, stock),
                compensate=lambda: call(ctx, release_stock, stock),
                payload={"reservationId": order.id},
            )
            slot_id = f"{order.id}-slot"
            await saga.step(
                "reserve-shipping",
                lambda: call(
                    ctx,
                    reserve_slot,
                    SlotRequest(address=order.shipping_address, items=order.items),
                    key=slot_id,
                ),
                compensate=lambda: call(ctx, cancel_slot, None, key=slot_id),
                payload={"slotId": slot_id},
            )
            await status.update(phase="reservation", progress=0.4, completed_step="reservation")

            keys = [f"{order.id}-payment-primary", f"{order.id}-payment-backup"]
            payment = await saga.step(
                "payment",
                lambda: _pay(ctx, order, keys),
                compensate=lambda: _refund_all(ctx, keys),
                payload={"paymentIds": keys, "amount": float(order.total)},
            )
            await status.update(phase="payment", progress=0.6, completed_step="payment")

            fulfillment = await saga.step(
                "fulfillment",
                lambda: _fulfil(ctx, order, slot_id),
                compensate=lambda: call(ctx, void_invoice, None, key=order.id),
                payload={"invoiceFor": order.id},
            )
            await status.update(phase="fulfillment", progress=0.8, completed_step="fulfillment")
    except SagaError as failure:
        await status.fail(failure.message)
        return once.done(OrderResult(order_id=order.id, status="failed", reason=failure.message))

    notifications = await _notify(ctx, order, fulfillment)
    await status.update(
        completed_step="notifications",
        metadata={"notificationsSent": notifications.sent, "notificationsFailed": notifications.failed},
    )
    await status.complete()
    return once.done(
        OrderResult(
            order_id=order.id,
            status="completed",
            payment=payment,
            fulfillment=fulfillment,
            notifications=notifications,
        )
    )


async def _validate(ctx: ObjectContext, order: Order) -> None:
    """Phase 1: four checks at once; the first failure cancels the rest."""
    names = ["inventory", "payment method", "shipping", "fraud"]
    try:
        answers = await fan_out_fail(
            [
                call(ctx, check_stock, CheckRequest(items=order.items)),
                call(
                    ctx, validate_payment_method, ValidateRequest(method=order.payment_method), key=order.id
                ),
                call(
                    ctx,
                    check_availability,
                    AvailabilityRequest(address=order.shipping_address),
                    key=f"{order.id}-slot",
                ),
                call(ctx, check_fraud, FraudCheck(user_id=order.user_id, amount=order.total)),
            ]
        )
    except FanOutError as exc:
        # A check that answered "bad request" is the caller's mistake; one that broke is ours.
        status = exc.status_code if exc.status_code >= 500 else 400
        raise TerminalError(f"order validation failed: {exc.message}", status) from exc
    stock, method, shipping, fraud = answers
    failed = [
        name for name, ok in zip(names, [stock.available, method, shipping, fraud], strict=True) if not ok
    ]
    if failed:
        detail = f" (out of stock: {', '.join(stock.missing)})" if stock.missing else ""
        raise TerminalError(f"order validation failed: {', '.join(failed)}{detail}", 400)


async def _pay(ctx: ObjectContext, order: Order, keys: list[str]) -> PaymentInfo:
    """Phase 3: race the primary provider against the backup, preferring the primary."""

    def charge_with(provider: str, key: str) -> object:
        request = ChargeRequest(
            customer_id=order.user_id,
            amount=order.total,
            description=f"order {order.id}",
            method=order.payment_method,
            provider=provider,
        )
        return call(ctx, charge, request, key=key)

    primary = charge_with("primary", keys[0])
    hedge = ctx.sleep(HEDGE_DELAY, name="hedge")
    done, _ = await wait_completed(primary, hedge)  # type: ignore[arg-type]
    contenders = [primary]
    if any(f is primary for f in done):
        try:
            return _payment_info(await primary)  # type: ignore[misc]
        except TerminalError:
            contenders = []  # the primary failed fast: only the backup is left
    contenders.append(charge_with("backup", keys[1]))
    try:
        winner = await race(contenders)  # type: ignore[arg-type]
    except RaceError as exc:
        raise TerminalError(f"payment failed: {exc.message}", 402) from exc
    result: Payment = winner.value
    # Every other payment id is refunded by key: a cancelled charge may still have gone through, and
    # both providers may have succeeded (on a replay their answers arrive together). A refund of an id
    # that was never charged voids it, so a late charge is refused.
    for key in keys:
        if key != result.id:
            await call(ctx, refund, RefundRequest(reason="lost the payment race"), key=key)
    return _payment_info(result)


async def _refund_all(ctx: ObjectContext, keys: list[str]) -> None:
    """Refund every payment id at once; raise if any refund failed (the saga then retries it)."""
    result = await fan_out([call(ctx, refund, RefundRequest(reason="order failed"), key=k) for k in keys])
    result.values()


def _payment_info(payment: Payment) -> PaymentInfo:
    return PaymentInfo(
        id=payment.id, provider=payment.provider or "primary", amount=payment.amount, status=payment.status
    )


async def _fulfil(ctx: ObjectContext, order: Order, slot_id: str) -> Fulfillment:
    """Phase 4: pick, label and invoice at once; all must succeed."""
    pick, label, invoice = await fan_out_fail(
        [
            call(ctx, pick_items, PickRequest(items=order.items), key=order.id),
            call(ctx, generate_label, LabelRequest(address=order.shipping_address), key=slot_id),
            call(ctx, generate_invoice, InvoiceRequest(items=order.items, total=order.total), key=order.id),
        ]
    )
    return Fulfillment(pick=pick, label=label, invoice=invoice)


async def _notify(ctx: ObjectContext, order: Order, fulfillment: Fulfillment) -> Notifications:
    """Phase 5: email, SMS and push at once; a failure is logged and counted, never fatal."""
    tracking = fulfillment.label.tracking_number
    sends = [
        call(
            ctx,
            send_email,
            EmailRequest(
                message_id=f"{order.id}-email",
                to=order.user_email,
                subject="Order Confirmed",
                body=f"Order {order.id}: total {order.total:.2f}, tracking {tracking}.",
            ),
        )
    ]
    if order.user_phone:
        sends.append(
            call(
                ctx,
                send_sms,
                SmsRequest(
                    message_id=f"{order.id}-sms",
                    to=order.user_phone,
                    text=f"Order {order.id} confirmed, tracking {tracking}",
                ),
            )
        )
    sends.append(
        call(
            ctx,
            send_push,
            PushRequest(
                message_id=f"{order.id}-push",
                user_id=order.user_id,
                title="Order Confirmed",
                body="Your order has been confirmed",
            ),
        )
    )
    result = await fan_out(sends)
    errors = [
        e.message if e else ("bounced" if r is not None and r.status == "bounced" else None)
        for r, e in zip(result.results, result.errors, strict=True)
    ]
    failed = sum(1 for e in errors if e)
    return Notifications(sent=len(errors) - failed, failed=failed, errors=errors)


@orders.handler("GetOrderStatus", kind="shared", public="read")
async def get_order_status(ctx: ObjectSharedContext) -> OrderStatus:
    status = await read_status(ctx)
    if status is None:
        raise TerminalError(f"no order {ctx.key()}", 404)
    return OrderStatus(**status.model_dump(), saga=await read_saga_log(ctx, SAGA))
