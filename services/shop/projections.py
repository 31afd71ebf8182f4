"""The read side (CQRS): projections fed by the order's events, answering queries only.

Each event the aggregate appends is sent to every subscriber here with a durable one-way message
(:func:`publish`), which stands in for the seed's service bus. Three projections:

- ``ShopOrderView/{orderId}``: the order's summary.
- ``ShopCustomerOrders/{customerId}``: the customer's orders, newest last.
- ``ShopAudit/{orderId}``: the audit trail: every operation with its time, actor and correlation id.

A delivery is offered to a :class:`~services.shop.events.Cursor` per order stream first: a sequence
number already applied (or already waiting) is a duplicate and changes nothing; one that arrives before
its predecessor waits until the gap fills. So a redelivered or reordered message never double-applies or
applies out of order. ``Rebuild`` replaces a projection with the fold of the full stream (the aggregate's
``Replay`` reads the event store and calls it). Queries (``Get``, ``List``, ``Entries``) read only the
projection's own state, never the aggregate.

Only the queries are public (``read``). ``Apply`` and ``Rebuild`` are private: they are fed by the
aggregate alone, so no client can write a read model that the event store does not back. An event whose
data cannot be folded is refused at the door (:class:`~services.shop.events.Event` checks it, 400), and
an order delivered to another customer's list is a 400 too: a bad event ends its delivery with an error
the engine does not retry, and changes nothing.
"""

from __future__ import annotations

from pydantic import Field
from restate import Context, ObjectContext, ObjectSharedContext

from podium import Model, TerminalError, VirtualObject, call, send
from services.shop.events import Cursor, Event, EventType, IllegalTransition, OrderState, fold, offer
from services.shop.models import OrderSummary

order_view = VirtualObject("ShopOrderView", system="shop")
customer_orders = VirtualObject("ShopCustomerOrders", system="shop")
audit = VirtualObject("ShopAudit", system="shop")


class Stream(Model):
    """One order's stream as a projection has seen it."""

    cursor: Cursor = Cursor()
    order: OrderState | None = None


class OrderView(OrderSummary):
    """``ShopOrderView/{orderId}/Get``: the summary, plus how the projection is doing."""

    pending: list[int] = []
    """Sequence numbers that arrived early and wait for a gap to fill."""
    duplicates_ignored: int = 0
    """Redeliveries ignored since the projection was (re)built."""


class RebuildStream(Model):
    """``ShopCustomerOrders/{customerId}/Rebuild``: one order's full stream."""

    order_id: str = Field(min_length=1)
    events: list[Event]


class AuditEntry(Model):
    """One operation on an order."""

    sequence: int
    at: str
    """Engine clock, ISO 8601 UTC."""
    operation: EventType
    actor: str
    correlation_id: str
    detail: str


class AuditTrail(Model):
    """``ShopAudit/{orderId}/Entries``."""

    order_id: str
    entries: list[AuditEntry]
    version: int
    duplicates_ignored: int


class AuditState(Model):
    """The trail and its cursor (the object's state)."""

    cursor: Cursor = Cursor()
    entries: list[AuditEntry] = []


def advance(stream: Stream, event: Event) -> Stream:
    """Offer ``event`` to the stream's cursor and fold whatever is ready (pure).

    Raises:
        TerminalError: 409 if the events do not make a legal history (the delivery is refused).
    """
    cursor, ready = offer(stream.cursor, event)
    try:
        order = fold(ready, stream.order) if ready else stream.order
    except IllegalTransition as exc:
        raise TerminalError(f"event {event.sequence} of {event.order_id} refused: {exc}", 409) from exc
    return Stream(cursor=cursor, order=order)


def rebuilt(order_id: str, events: list[Event]) -> Stream:
    """A fresh stream with every event of ``order_id`` applied (pure)."""
    stream = Stream()
    for event in events:
        _check_order(order_id, event)
        stream = advance(stream, event)
    return stream


def _check_order(order_id: str, event: Event) -> None:
    if event.order_id != order_id:
        raise TerminalError(f"orderId: event of {event.order_id!r} sent to the stream of {order_id!r}", 400)


def _view(stream: Stream) -> OrderView:
    if stream.order is None:
        raise TerminalError("no events applied yet", 404)
    return OrderView(
        **OrderSummary.of(stream.order).model_dump(),
        pending=sorted(stream.cursor.pending),
        duplicates_ignored=stream.cursor.duplicates,
    )


# -- ShopOrderView -----------------------------------------------------------------------------------


async def _load_stream(ctx: ObjectContext | ObjectSharedContext) -> Stream:
    raw = await ctx.get("stream", type_hint=dict)
    return Stream() if raw is None else Stream.model_validate(raw)


@order_view.handler("Apply")
async def apply_to_view(ctx: ObjectContext, event: Event) -> None:
    """Apply one delivered event (deduplicated, in sequence order)."""
    _check_order(ctx.key(), event)
    stream = advance(await _load_stream(ctx), event)
    ctx.set("stream", stream.model_dump(mode="json"))


@order_view.handler("Get", kind="shared", public="read")
async def get_view(ctx: ObjectSharedContext) -> OrderView:
    """The order's summary, from the read model only."""
    stream = await _load_stream(ctx)
    if stream.order is None:
        raise TerminalError(f"no order {ctx.key()} in the read model", 404)
    return _view(stream)


@order_view.handler("Rebuild")
async def rebuild_view(ctx: ObjectContext, events: list[Event]) -> OrderView:
    """Replace the summary with the fold of the order's full stream."""
    stream = rebuilt(ctx.key(), events)
    ctx.set("stream", stream.model_dump(mode="json"))
    return _view(stream)


# -- ShopCustomerOrders ------------------------------------------------------------------------------


async def _load_streams(ctx: ObjectContext | ObjectSharedContext) -> dict[str, Stream]:
    raw = await ctx.get("orders", type_hint=dict) or {}
    return {order_id: Stream.model_validate(s) for order_id, s in raw.items()}


def _save_streams(ctx: ObjectContext, streams: dict[str, Stream]) -> None:
    ctx.set("orders", {order_id: s.model_dump(mode="json") for order_id, s in streams.items()})


def _check_customer(customer_id: str, stream: Stream) -> Stream:
    """``stream`` if its order is ``customer_id``'s (or not placed yet), else 400."""
    if stream.order is not None and stream.order.customer_id != customer_id:
        raise TerminalError(
            f"data.customerId: order {stream.order.order_id} of {stream.order.customer_id!r} "
            f"sent to the list of {customer_id!r}",
            400,
        )
    return stream


@customer_orders.handler("Apply")
async def apply_to_customer(ctx: ObjectContext, event: Event) -> None:
    """Apply one delivered event to the customer's list (deduplicated per order, in sequence order)."""
    streams = await _load_streams(ctx)
    streams[event.order_id] = _check_customer(
        ctx.key(), advance(streams.get(event.order_id, Stream()), event)
    )
    _save_streams(ctx, streams)


@customer_orders.handler("List", kind="shared", public="read")
async def list_orders(ctx: ObjectSharedContext) -> list[OrderSummary]:
    """The customer's orders, oldest first, from the read model only."""
    streams = await _load_streams(ctx)
    orders = [OrderSummary.of(s.order) for s in streams.values() if s.order is not None]
    return sorted(orders, key=lambda o: (o.placed_at or "", o.order_id))


@customer_orders.handler("Rebuild")
async def rebuild_customer(ctx: ObjectContext, req: RebuildStream) -> list[OrderSummary]:
    """Replace one order of the list with the fold of its full stream."""
    streams = await _load_streams(ctx)
    streams[req.order_id] = _check_customer(ctx.key(), rebuilt(req.order_id, req.events))
    _save_streams(ctx, streams)
    return [OrderSummary.of(s.order) for s in streams.values() if s.order is not None]


# -- ShopAudit ---------------------------------------------------------------------------------------


def describe(event: Event) -> str:
    """One line saying what happened, for people reading the trail.

    Never fails: a projection that raised here would be retried by the engine forever.
    """
    try:
        return _describe(event)
    except (KeyError, TypeError, ValueError):
        return ", ".join(f"{k}={v}" for k, v in sorted(event.data.items()))


def _describe(event: Event) -> str:
    data = event.data
    if "reason" in data:
        return str(data["reason"])
    match event.type:
        case EventType.ORDER_PLACED:
            return f"customer {data['customerId']} ordered {data['lines']} for {data['total']:.2f}"
        case EventType.PAYMENT_PROCESSED | EventType.PAYMENT_REFUNDED:
            return f"payment {data['paymentId']}: {data['amount']:.2f}"
        case EventType.SHIPMENT_CREATED:
            return f"{data['carrier']} label, tracking {data['trackingNumber']}"
        case EventType.TRACKING_UPDATED:
            return f"{data['status']} {data.get('location', '')}".strip()
    return ", ".join(f"{k}={v}" for k, v in sorted(data.items()))


def audited(state: AuditState, event: Event) -> AuditState:
    """Offer ``event`` to the trail and append whatever is ready (pure)."""
    cursor, ready = offer(state.cursor, event)
    entries = state.entries + [
        AuditEntry(
            sequence=e.sequence,
            at=e.at,
            operation=e.type,
            actor=e.actor,
            correlation_id=e.correlation_id,
            detail=describe(e),
        )
        for e in ready
    ]
    return AuditState(cursor=cursor, entries=entries)


async def _load_audit(ctx: ObjectContext | ObjectSharedContext) -> AuditState:
    raw = await ctx.get("audit", type_hint=dict)
    return AuditState() if raw is None else AuditState.model_validate(raw)


def _trail(order_id: str, state: AuditState) -> AuditTrail:
    return AuditTrail(
        order_id=order_id,
        entries=state.entries,
        version=state.cursor.version,
        duplicates_ignored=state.cursor.duplicates,
    )


@audit.handler("Apply")
async def apply_to_audit(ctx: ObjectContext, event: Event) -> None:
    """Record one delivered event (deduplicated, in sequence order)."""
    _check_order(ctx.key(), event)
    ctx.set("audit", audited(await _load_audit(ctx), event).model_dump(mode="json"))


@audit.handler("Entries", kind="shared", public="read")
async def entries(ctx: ObjectSharedContext) -> AuditTrail:
    """The order's audit trail, oldest first."""
    return _trail(ctx.key(), await _load_audit(ctx))


@audit.handler("Rebuild")
async def rebuild_audit(ctx: ObjectContext, events: list[Event]) -> AuditTrail:
    """Replace the trail with one entry per event of the full stream."""
    state = AuditState()
    for event in events:
        _check_order(ctx.key(), event)
        state = audited(state, event)
    ctx.set("audit", state.model_dump(mode="json"))
    return _trail(ctx.key(), state)


# -- publication -------------------------------------------------------------------------------------


def publish(ctx: Context, event: Event, customer_id: str) -> None:
    """Send ``event`` to every subscriber: durable one-way messages, journaled, so sent exactly once."""
    send(ctx, apply_to_view, event, key=event.order_id)
    send(ctx, apply_to_customer, event, key=customer_id)
    send(ctx, apply_to_audit, event, key=event.order_id)


async def rebuild_all(ctx: Context, order_id: str, customer_id: str, events: list[Event]) -> OrderView:
    """Rebuild every projection of this order from ``events`` and return the rebuilt summary."""
    view = call(ctx, rebuild_view, events, key=order_id)
    listed = call(ctx, rebuild_customer, RebuildStream(order_id=order_id, events=events), key=customer_id)
    trail = call(ctx, rebuild_audit, events, key=order_id)
    await listed
    await trail
    return await view
