"""``ShopOrder``: the event-sourced order aggregate, one virtual object per order id.

Its only state is ``events``, the order's append-only stream of :class:`~services.shop.events.Event`
(the seed's Cosmos DB event store). The current state is never stored: every command folds the stream
(:func:`~services.shop.events.fold`), checks the command against it, and appends one event. Commands:

- ``Open``: record ``OrderPlaced`` once; the same order again is a no-op, a different one for the same
  id is 409.
- ``Record``: append one saga outcome, tracking update or delivery; an event the state does not allow is
  409 (an illegal transition); the same ``eventId`` again returns the order unchanged (idempotent).

Both are exclusive handlers, so appends to one order are serialised and sequence numbers have no gaps.
Both are private: only the saga and the carrier webhooks append, each naming the actor it verified, so
no client can write an event (or an actor) of its own choosing into the store. After each append the
event is published to the projections with durable one-way messages
(:func:`~services.shop.projections.publish`). ``Events`` reads the stream (public, ``read``);
``Replay`` rebuilds every projection of the order from it (public, ``operator``: a repair a person
decides on). ``Place`` and ``GetStatus`` are in :mod:`services.shop.checkout`.
"""

from __future__ import annotations

from typing import Any

from restate import ObjectContext, ObjectSharedContext

from podium import TerminalError, VirtualObject
from services.shop.events import Event, EventType, IllegalTransition, OrderState, fold, iso, new_event
from services.shop.models import OpenOrder, RecordEvent
from services.shop.projections import OrderView, publish, rebuild_all

orders = VirtualObject("ShopOrder", system="shop")


async def load_events(ctx: ObjectContext | ObjectSharedContext) -> list[Event]:
    """The order's stream, oldest first (empty for an order never placed)."""
    return [Event.model_validate(e) for e in await ctx.get("events", type_hint=list) or []]


async def _append(ctx: ObjectContext, events: list[Event], state: OrderState, event: Event) -> OrderState:
    """Append ``event`` to the stream, publish it, and return the state after it."""
    after = fold([event], state)
    ctx.set("events", [e.model_dump(mode="json") for e in [*events, event]])
    publish(ctx, event, after.customer_id)
    return after


@orders.handler("Open")
async def open_order(ctx: ObjectContext, req: OpenOrder) -> OrderState:
    """Record ``OrderPlaced`` if the order is new; return the order's current state."""
    events = await load_events(ctx)
    state = fold(events)
    order = req.order
    fingerprint = order.fingerprint()
    if events:
        if state.fingerprint != fingerprint:
            raise TerminalError(f"order {ctx.key()} was already placed with a different request", 409)
        return state
    placed = Event(
        order_id=ctx.key(),
        sequence=1,
        type=EventType.ORDER_PLACED,
        event_id="placed",
        at=iso(await ctx.time()),
        actor=req.actor,
        correlation_id=req.correlation_id,
        data=_placed_data(order.model_dump(mode="json"), order.total, order.lines, fingerprint),
    )
    return await _append(ctx, events, state, placed)


@orders.handler("Record")
async def record(ctx: ObjectContext, req: RecordEvent) -> OrderState:
    """Append one event if the order's state allows it (409 if not); idempotent by ``eventId``."""
    events = await load_events(ctx)
    if not events:
        raise TerminalError(f"no order {ctx.key()}", 404)
    state = fold(events)
    if any(e.event_id == req.event_id for e in events):
        return state
    if req.type == EventType.ORDER_PLACED:
        raise TerminalError("type: OrderPlaced is recorded by Place, not by Record", 400)
    # ``req.data`` already holds what the fold needs for its type (checked by ``RecordEvent``).
    try:
        event = new_event(
            state, req.type, event_id=req.event_id, at=await ctx.time(), actor=req.actor, data=req.data
        )
    except IllegalTransition as exc:
        raise TerminalError(f"order {ctx.key()}: {exc}", 409) from exc
    return await _append(ctx, events, state, event)


@orders.handler("Events", kind="shared", public="read")
async def get_events(ctx: ObjectSharedContext) -> list[Event]:
    """The event store: the order's stream, oldest first."""
    return await load_events(ctx)


@orders.handler("Replay", public="operator")
async def replay(ctx: ObjectContext) -> OrderView:
    """Rebuild every projection of this order from the event store; returns the rebuilt summary.

    Exclusive, so no event is appended (and published) while the rebuild is sent: a rebuild can never
    overwrite an event the projections received after the stream it was built from.
    """
    events = await load_events(ctx)
    if not events:
        raise TerminalError(f"no order {ctx.key()}", 404)
    return await rebuild_all(ctx, ctx.key(), fold(events).customer_id, events)


def _placed_data(
    order: dict[str, Any], total: float, lines: dict[str, int], fingerprint: str
) -> dict[str, Any]:
    """What ``OrderPlaced`` carries: the request as placed, plus what the fold needs from it."""
    return {
        "customerId": order["customerId"],
        "email": order["email"],
        "items": order["items"],
        "shippingAddress": order["shippingAddress"],
        "paymentMethod": order["paymentMethod"],
        "total": total,
        "lines": lines,
        "fingerprint": fingerprint,
    }
