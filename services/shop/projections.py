"""The read side (CQRS): read models fed by the order's events, in SQL, answering queries only.

The aggregate publishes each command's events once (``ShopReadModels/Apply``, one durable message per
command: the whole checkout is one batch). The read models live in the shop's ``orders`` store
(:mod:`services.shop.db`), and each batch is applied in one transaction:

- ``events``: every event once, keyed by (order id, sequence number): a redelivered event is ignored
  (counted as a duplicate), and ``projected_at`` records when it was applied (the read side's lag is
  ``projected_at`` minus the event's time; the benchmark reports it);
- ``orders``: each order's summary, the fold of its stream's events without gaps: an event that arrives
  before its predecessor is kept but waits (listed as ``pending``) until the gap fills, so a read model
  never applies events out of order; the fold is :func:`services.shop.events.fold`, the aggregate's own;
- the customer's order list is the ``orders`` rows of one customer, and the audit trail is the
  ``events`` rows of one order (time, actor, correlation id, what happened), so all of them change in the
  same transaction and cannot disagree.

Queries: ``ShopOrderView/{orderId}/Get``, ``ShopCustomerOrders/{customerId}/List`` and
``ShopAudit/{orderId}/Entries`` (public, ``read``), which read the store only, never the aggregate.
``Apply`` and ``Rebuild`` are private: fed by the aggregate alone, so no client can write a read model
the event store does not back. A batch whose events cannot be folded is refused (409, the engine does not
retry it) and changes nothing; a batch mixing orders is a 400. An order's customer is the one its
stored ``OrderPlaced`` names: a redelivered event is ignored whatever it says.
``Rebuild`` (called by the aggregate's ``Replay``) replaces an order's rows with its full stream.

The store commits without an fsync of its own (``durable=False`` in :mod:`services.shop.db`): it is
derived data, and the event store it is rebuilt from is the engine's.
"""

from __future__ import annotations

import json
import sqlite3
import time

from pydantic import Field
from restate import Context, ObjectSharedContext

from podium import Model, Service, TerminalError, VirtualObject
from services.shop import settings
from services.shop.db import reading, transaction
from services.shop.events import Event, EventType, IllegalTransition, Published, fold
from services.shop.models import OrderSummary

read_models = Service(
    "ShopReadModels", system="shop", journal_retention=settings.SETTINGS.participant_retention
)
order_view = VirtualObject("ShopOrderView", system="shop")
customer_orders = VirtualObject("ShopCustomerOrders", system="shop")
audit = VirtualObject("ShopAudit", system="shop")

STORE = "orders"
SCHEMA = """
create table if not exists events (
    order_id text not null, sequence integer not null, type text not null, event_id text not null,
    at text not null, actor text not null, correlation_id text not null, data text not null,
    projected_at real not null,
    primary key (order_id, sequence)
);
create table if not exists orders (
    order_id text primary key, customer_id text not null, placed_at text, version integer not null,
    summary text not null, duplicates integer not null default 0
);
create index if not exists orders_of_customer on orders (customer_id, placed_at, order_id);
"""


class OrderView(OrderSummary):
    """``ShopOrderView/{orderId}/Get``: the summary, plus how the read model is doing."""

    pending: list[int] = []
    """Sequence numbers that arrived early and wait for a gap to fill."""
    duplicates_ignored: int = 0
    """Redeliveries ignored since the read model was (re)built."""


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


class Applied(Model):
    """What one ``Apply`` did."""

    order_id: str
    version: int = Field(ge=0)
    """The last sequence number the read models reflect."""
    applied: int
    duplicates: int


# -- writing ----------------------------------------------------------------------------------------------


def _one_order(batch: Published) -> str:
    order_ids = {e.order_id for e in batch.events}
    if len(order_ids) != 1 or batch.order.order_id not in ("", *order_ids):
        raise TerminalError(f"events: a batch holds the events of one order, not {sorted(order_ids)}", 400)
    return order_ids.pop()


def _store(db: sqlite3.Connection, order_id: str, events: list[Event]) -> tuple[int, int]:
    """Insert the events (once each) and refresh the order's summary; returns (applied, duplicates)."""
    now = time.time()
    duplicates = 0
    for e in events:
        inserted = db.execute(
            "insert or ignore into events values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                e.order_id,
                e.sequence,
                e.type.value,
                e.event_id,
                e.at,
                e.actor,
                e.correlation_id,
                json.dumps(e.data),
                now,
            ),
        ).rowcount
        duplicates += 1 - inserted
    stream = _stream(db, order_id)
    try:
        state = fold(without_gaps(stream))
    except IllegalTransition as exc:
        raise TerminalError(f"events of {order_id} refused: {exc}", 409) from exc
    row = db.execute("select version from orders where order_id = ?", (order_id,)).fetchone()
    before = 0 if row is None else int(row[0])
    if state.version:
        db.execute(
            "insert into orders values (?, ?, ?, ?, ?, ?) on conflict (order_id) do update set "
            "customer_id = excluded.customer_id, placed_at = excluded.placed_at, version = excluded.version, "
            "summary = excluded.summary, duplicates = orders.duplicates + excluded.duplicates",
            (
                order_id,
                state.customer_id,
                state.placed_at,
                state.version,
                OrderSummary.of(state).model_dump_json(by_alias=True),
                duplicates,
            ),
        )
    return state.version - before, duplicates


def _stream(db: sqlite3.Connection, order_id: str) -> list[Event]:
    rows = db.execute(
        "select sequence, type, event_id, at, actor, correlation_id, data from events "
        "where order_id = ? order by sequence",
        (order_id,),
    ).fetchall()
    return [
        Event(
            order_id=order_id,
            sequence=seq,
            type=EventType(kind),
            event_id=event_id,
            at=at,
            actor=actor,
            correlation_id=correlation,
            data=json.loads(data),
        )
        for seq, kind, event_id, at, actor, correlation, data in rows
    ]


def without_gaps(stream: list[Event]) -> list[Event]:
    """The events from sequence 1 up to the first gap."""
    ready = []
    for e in stream:
        if e.sequence != len(ready) + 1:
            break
        ready.append(e)
    return ready


@read_models.handler("Apply")
async def apply_events(ctx: Context, batch: Published) -> Applied:
    """Apply one order's new events to every read model, in one transaction (idempotent)."""
    order_id = _one_order(batch)

    def write() -> Applied:
        with transaction(STORE, SCHEMA, durable=False) as db:
            applied, duplicates = _store(db, order_id, batch.events)
            version = db.execute("select version from orders where order_id = ?", (order_id,)).fetchone()
        return Applied(
            order_id=order_id,
            version=0 if version is None else version[0],
            applied=applied,
            duplicates=duplicates,
        )

    return await ctx.run_typed("apply", write)


@read_models.handler("Rebuild")
async def rebuild(ctx: Context, batch: Published) -> OrderView:
    """Replace an order's rows in every read model with the fold of its full stream."""
    order_id = _one_order(batch)

    def write() -> OrderView:
        with transaction(STORE, SCHEMA, durable=False) as db:
            db.execute("delete from events where order_id = ?", (order_id,))
            db.execute("delete from orders where order_id = ?", (order_id,))
            _store(db, order_id, batch.events)
            found = _view(db, order_id)
        if found is None:
            raise TerminalError(f"no events of {order_id} could be applied", 409)
        return found

    return await ctx.run_typed("rebuild", write)


# -- reading ----------------------------------------------------------------------------------------------
# Queries read the store directly: they journal nothing else, so a replay has nothing to agree with.


def _view(db: sqlite3.Connection, order_id: str) -> OrderView | None:
    row = db.execute(
        "select summary, version, duplicates from orders where order_id = ?", (order_id,)
    ).fetchone()
    if row is None:
        return None
    summary, version, duplicates = row
    pending = [
        seq
        for (seq,) in db.execute(
            "select sequence from events where order_id = ? and sequence > ? order by sequence",
            (order_id, version),
        )
    ]
    return OrderView(
        **OrderSummary.model_validate_json(summary).model_dump(),
        pending=pending,
        duplicates_ignored=duplicates,
    )


@order_view.handler("Get", kind="shared", public="read")
async def get_view(ctx: ObjectSharedContext) -> OrderView:
    """The order's summary, from the read model only."""
    with reading(STORE, SCHEMA) as db:
        found = _view(db, ctx.key())
    if found is None:
        raise TerminalError(f"no order {ctx.key()} in the read model", 404)
    return found


@customer_orders.handler("List", kind="shared", public="read")
async def list_orders(ctx: ObjectSharedContext) -> list[OrderSummary]:
    """The customer's orders, oldest first, from the read model only."""
    with reading(STORE, SCHEMA) as db:
        rows = db.execute(
            "select summary from orders where customer_id = ? order by placed_at, order_id", (ctx.key(),)
        ).fetchall()
    return [OrderSummary.model_validate_json(summary) for (summary,) in rows]


@audit.handler("Entries", kind="shared", public="read")
async def entries(ctx: ObjectSharedContext) -> AuditTrail:
    """The order's audit trail, oldest first (the events the read model has applied)."""
    with reading(STORE, SCHEMA) as db:
        row = db.execute("select version, duplicates from orders where order_id = ?", (ctx.key(),)).fetchone()
        stream = _stream(db, ctx.key())
    version, duplicates = (0, 0) if row is None else row
    trail = [
        AuditEntry(
            sequence=e.sequence,
            at=e.at,
            operation=e.type,
            actor=e.actor,
            correlation_id=e.correlation_id,
            detail=describe(e),
        )
        for e in stream
        if e.sequence <= version
    ]
    return AuditTrail(order_id=ctx.key(), entries=trail, version=version, duplicates_ignored=duplicates)


def describe(event: Event) -> str:
    """One line saying what happened, for people reading the trail.

    Never fails: a read that raised here would hide the whole trail.
    """
    try:
        return _describe(event)
    except (KeyError, TypeError, ValueError):
        return ", ".join(f"{k}={v}" for k, v in sorted(event.data.items()))


def _describe(event: Event) -> str:
    data = event.data
    if data.get("reason"):
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
