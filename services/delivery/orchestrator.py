"""``DeliveryOrchestrator`` (seed 000 ex 3): restaurant, payment, driver and customer, coordinated.

``POST /DeliveryOrchestrator/{orderId}/PlaceOrder`` runs:

1. submit to the restaurant, which accepts or rejects at once   undo: tell the restaurant to cancel
2. charge the customer                                          undo: refund
3. assign a driver: offer to the first available driver; if it declines or does not answer within
   the ``driver_answer`` setting, withdraw and offer to the next  undo: free the driver
4. wait for the restaurant's "ready" webhook (an awakeable), with a deadline (``ready_timeout``)
5. dispatch the driver and wait for pick-up, then for delivery (awakeables resolved by the driver's
   webhooks), with deadlines (``delivery_timeout``); location updates land in ``DeliveryTracker/{orderId}``

``GetStatus`` (shared) shows each stage with its time, the driver, and the last known location.
``Cancel`` (shared) cancels the running order at any stage: the engine interrupts it at its next wait
and the saga refunds, frees the driver and tells the restaurant. A repeated ``PlaceOrder`` returns the
first result. All three are public: the customer's app places, follows and cancels its order. The
deadlines are the deployment's (:mod:`services.delivery.settings`), journaled when the order starts.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from restate import ObjectContext, ObjectSharedContext, RunOptions

from podium import (
    InvalidInput,
    Model,
    RunOnce,
    Saga,
    SagaError,
    SagaLog,
    Status,
    StatusTracker,
    TerminalError,
    VirtualObject,
    call,
    read_saga_log,
    read_status,
    with_timeout,
)
from services.common.payments import ChargeRequest, RefundRequest, charge, refund
from services.delivery import settings
from services.delivery.drivers import (
    DispatchRequest,
    DriverOrder,
    OfferRequest,
    dispatch,
    last_location,
    offer,
    release,
    withdraw,
)
from services.delivery.models import ID, DeliveryOrder, DeliveryResult, Location
from services.delivery.restaurant import OrderRef, Submission, cancel, submit

deliveries = VirtualObject("DeliveryOrchestrator", system="delivery")
SAGA = "delivery"
_VALID_ID = re.compile(ID)


class Deadlines(Model):
    """The deadlines an order was placed under, in milliseconds (journaled once, the same on replay)."""

    driver_answer_ms: int
    ready_ms: int
    delivery_ms: int


def _current_deadlines() -> Deadlines:
    def ms(wait: timedelta) -> int:
        return round(wait.total_seconds() * 1000)

    current = settings.SETTINGS
    return Deadlines(
        driver_answer_ms=ms(current.driver_answer),
        ready_ms=ms(current.ready_timeout),
        delivery_ms=ms(current.delivery_timeout),
    )


class DeliveryStatus(Status):
    driver_id: str | None = None
    location: Location | None = None
    saga: SagaLog | None = None


@deliveries.handler("PlaceOrder", public="write")
async def place_order(ctx: ObjectContext, order: DeliveryOrder) -> DeliveryResult:
    order_id = ctx.key()
    if not _VALID_ID.fullmatch(order_id):  # it names the payment and the kitchen's order
        raise InvalidInput(f"invalid request: orderId (the key): {order_id!r} must match {ID}")
    once = RunOnce(ctx, order, DeliveryResult)
    if (previous := await once.previous()) is not None:
        return previous
    ctx.set("invocation", ctx.request().id)  # lets the shared Cancel handler reach this run
    # Settings are read once and journaled: a replay after the deployment was reconfigured keeps them.
    deadlines = await ctx.run_typed("deadlines", _current_deadlines, RunOptions[Deadlines]())
    status = StatusTracker(ctx)
    payment_id = f"{order_id}-payment"
    driver: list[str] = []  # filled once a driver accepts; read by the compensation

    def result(state: str, reason: str | None = None) -> DeliveryResult:
        return once.done(
            DeliveryResult(
                order_id=order_id,
                status=state,
                driver_id=driver[0] if driver else None,
                payment_id=payment_id,
                reason=reason,
            )
        )

    try:
        async with Saga(ctx, SAGA) as saga:
            await status.update(phase="submitted", step="restaurant")
            ready_id, food_ready = ctx.awakeable(type_hint=dict)
            submission = Submission(order_id=order_id, items=order.items, ready_awakeable=ready_id)
            await saga.step(
                "restaurant",
                lambda: call(ctx, submit, submission, key=order.restaurant_id),
                compensate=lambda: call(ctx, cancel, OrderRef(order_id=order_id), key=order.restaurant_id),
            )
            await status.update(phase="accepted", progress=0.2, completed_step="restaurant")

            await saga.step(
                "payment",
                lambda: call(
                    ctx,
                    charge,
                    ChargeRequest(
                        customer_id=order.customer_id, amount=order.total, description=f"delivery {order_id}"
                    ),
                    key=payment_id,
                ),
                compensate=lambda: call(
                    ctx, refund, RefundRequest(reason="delivery cancelled"), key=payment_id
                ),
            )
            await status.update(phase="paid", progress=0.3, completed_step="payment", step="assign-driver")

            await saga.step(
                "assign-driver",
                lambda: _assign(ctx, order, order_id, driver, deadlines.driver_answer_ms),
                compensate=lambda: _free(ctx, order, order_id, driver),
            )
            await status.update(
                phase="driver-assigned",
                progress=0.5,
                completed_step="assign-driver",
                metadata={"driverId": driver[0]},
            )

            await _wait(ctx, food_ready, deadlines.ready_ms, "the restaurant to finish the food")
            await status.update(phase="food-ready", progress=0.6)

            pickup_id, picked_up = ctx.awakeable(type_hint=dict)
            delivered_id, dropped_off = ctx.awakeable(type_hint=dict)
            await call(
                ctx,
                dispatch,
                DispatchRequest(
                    driver_id=driver[0],
                    order_id=order_id,
                    pickup_awakeable=pickup_id,
                    delivered_awakeable=delivered_id,
                ),
                key=order.zone,
            )
            await _wait(ctx, picked_up, deadlines.delivery_ms, "the driver to pick up")
            await status.update(phase="picked-up", progress=0.8)
            await _wait(ctx, dropped_off, deadlines.delivery_ms, "the delivery")
    except SagaError as failure:
        if failure.cause.status_code == 409 and failure.cause.message == "cancelled":
            state = "cancelled"  # the engine's cancellation, surfaced at the step that was waiting
        elif failure.log.failed_step == "restaurant":
            state = "rejected"
        else:
            state = "failed"
        await status.fail(failure.message, phase=state)
        return result(state, failure.message)
    await status.complete(phase="delivered")
    return result("delivered")


async def _assign(
    ctx: ObjectContext, order: DeliveryOrder, order_id: str, driver: list[str], answer_ms: int
) -> str:
    """Offer the order to drivers one after the other until one accepts in time."""
    tried: list[str] = []
    while True:
        answer_id, answer = ctx.awakeable(type_hint=dict)
        try:
            offered = await call(
                ctx,
                offer,
                OfferRequest(order_id=order_id, answer_awakeable=answer_id, exclude=tried),
                key=order.zone,
            )
        except TerminalError as exc:
            if exc.status_code == 409:
                raise TerminalError(
                    f"no driver accepted order {order_id} (tried {', '.join(tried) or 'none'})", 503
                ) from exc
            raise
        tried.append(offered.driver_id)
        driver[:] = [offered.driver_id]
        timed = await with_timeout(ctx, answer, timedelta(milliseconds=answer_ms), cancel=False)
        if not timed.timed_out and isinstance(timed.value, dict) and timed.value.get("accept") is True:
            return offered.driver_id
        await call(ctx, withdraw, DriverOrder(driver_id=offered.driver_id, order_id=order_id), key=order.zone)
        driver.clear()


async def _free(ctx: ObjectContext, order: DeliveryOrder, order_id: str, driver: list[str]) -> None:
    if driver:
        await call(ctx, release, DriverOrder(driver_id=driver[0], order_id=order_id), key=order.zone)


async def _wait(ctx: ObjectContext, awakeable: Any, timeout_ms: int, what: str) -> None:
    timed = await with_timeout(ctx, awakeable, timedelta(milliseconds=timeout_ms), cancel=False)
    if timed.timed_out:
        raise TerminalError(f"timed out waiting for {what}", 504)


@deliveries.handler("GetStatus", kind="shared", public="read")
async def get_status(ctx: ObjectSharedContext) -> DeliveryStatus:
    status = await read_status(ctx)
    if status is None:
        raise TerminalError(f"no delivery {ctx.key()}", 404)
    where = await call(ctx, last_location, None, key=ctx.key())
    return DeliveryStatus(
        **status.model_dump(),
        driver_id=status.metadata.get("driverId"),
        location=where,
        saga=await read_saga_log(ctx, SAGA),
    )


class CancelAnswer(Model):
    order_id: str
    cancelled: bool
    reason: str | None = None


@deliveries.handler("Cancel", kind="shared", public="write")
async def cancel_order(ctx: ObjectSharedContext) -> CancelAnswer:
    """The customer cancels: the running order is interrupted and compensated (see GetStatus)."""
    status = await read_status(ctx)
    invocation = await ctx.get("invocation", type_hint=str)
    if status is None or invocation is None:
        raise TerminalError(f"no delivery {ctx.key()}", 404)
    if status.is_complete:
        return CancelAnswer(order_id=ctx.key(), cancelled=False, reason=f"already {status.phase}")
    ctx.cancel_invocation(invocation)
    return CancelAnswer(order_id=ctx.key(), cancelled=True)
