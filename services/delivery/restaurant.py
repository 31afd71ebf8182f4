"""``RestaurantService``: one object per restaurant; it accepts or rejects orders and says when food is ready.

``Submit`` (private: the orchestrator's) answers at once (accepted, or 409 with the reason) and keeps the
order with the awakeable id the orchestrator waits on. The kitchen signals ready with the ``Ready``
webhook, the one public handler (``delivery:write``: the restaurant's system really calls it), which
resolves that awakeable; restaurants not marked ``manual-`` do it by themselves after their preparation
time (a delayed, durable send). A ``Ready`` for an id that is not an order id is a 400, for an order the
restaurant does not have a 404: never a retry. ``Cancel`` (private) tells the kitchen to stop; a
``Ready`` after a cancel does nothing. ``Get`` (private) shows the kitchen's view, awakeable id included.

Test data: a restaurant id starting ``closed-`` rejects every order; a dish named ``sold-out`` is
rejected; restaurant ids starting ``manual-`` wait for the ``Ready`` webhook (play the kitchen).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from restate import ObjectContext, ObjectSharedContext

from podium import Model, TerminalError, VirtualObject, send
from services.delivery.models import AwakeableId, Dish, Id

restaurants = VirtualObject("RestaurantService", system="delivery")
PREPARATION = timedelta(milliseconds=300)
"""How long an automatic kitchen takes."""


class Submission(Model):
    order_id: Id
    items: list[Dish] = Field(min_length=1)
    ready_awakeable: AwakeableId
    """Resolved by ``Ready``: an id of another form could never be resolved, so it is refused here."""


class OrderRef(Model):
    order_id: Id


class KitchenOrder(Model):
    order_id: str
    status: str
    """``accepted``, ``ready``, ``cancelled``."""
    ready_awakeable: str


async def _orders(ctx: ObjectContext | ObjectSharedContext) -> dict[str, KitchenOrder]:
    raw = await ctx.get("orders", type_hint=dict) or {}
    return {k: KitchenOrder.model_validate(v) for k, v in raw.items()}


def _save(ctx: ObjectContext, orders: dict[str, KitchenOrder]) -> None:
    ctx.set("orders", {k: v.model_dump(mode="json") for k, v in orders.items()})


@restaurants.handler("Submit")
async def submit(ctx: ObjectContext, req: Submission) -> KitchenOrder:
    orders = await _orders(ctx)
    if req.order_id in orders:
        return orders[req.order_id]
    if ctx.key().startswith("closed-"):
        raise TerminalError(f"restaurant {ctx.key()} is closed", 409)
    unavailable = [d.name for d in req.items if d.name == "sold-out"]
    if unavailable:
        raise TerminalError(f"restaurant {ctx.key()} cannot make: {', '.join(unavailable)}", 409)
    order = KitchenOrder(order_id=req.order_id, status="accepted", ready_awakeable=req.ready_awakeable)
    orders[req.order_id] = order
    _save(ctx, orders)
    if not ctx.key().startswith("manual-"):
        send(ctx, ready, OrderRef(order_id=req.order_id), key=ctx.key(), delay=PREPARATION)
    return order


@restaurants.handler("Ready", public="write")
async def ready(ctx: ObjectContext, req: OrderRef) -> KitchenOrder:
    """The kitchen's webhook: the food is ready (resolves the orchestrator's awakeable, once)."""
    orders = await _orders(ctx)
    order = orders.get(req.order_id)
    if order is None:
        raise TerminalError(f"restaurant {ctx.key()} has no order {req.order_id}", 404)
    if order.status == "accepted":
        order.status = "ready"
        _save(ctx, orders)
        ctx.resolve_awakeable(order.ready_awakeable, {"orderId": req.order_id})
    return order


@restaurants.handler("Cancel")
async def cancel(ctx: ObjectContext, req: OrderRef) -> None:
    orders = await _orders(ctx)
    order = orders.get(req.order_id)
    if order is not None and order.status != "cancelled":
        order.status = "cancelled"
        _save(ctx, orders)


@restaurants.handler("Get", kind="shared")
async def get_order(ctx: ObjectSharedContext, req: OrderRef) -> KitchenOrder:
    order = (await _orders(ctx)).get(req.order_id)
    if order is None:
        raise TerminalError(f"restaurant {ctx.key()} has no order {req.order_id}", 404)
    return order
