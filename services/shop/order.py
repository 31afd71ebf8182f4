"""``ShopOrder``: the event-sourced order aggregate, one virtual object per order id.

**The stream.** The object's state is its events, one key per event (``event:<n>``): appending writes one
key, never the whole stream, and the stream's length is read from the keys themselves (one listing of
the object's keys, no counter to write beside every event). Every :data:`SNAPSHOT_EVERY` events the
folded state is written beside them (``snapshot``), so a command loads the last snapshot and folds only
the events after it; :func:`~services.shop.events.fold` is the one fold, and replaying the snapshot's
tail gives the state the full replay gives (tested).

**Commands** are exclusive handlers, so appends to one order are serialised and sequence numbers have no
gaps. The checkout (``Place``), ``Cancel`` and ``Refund`` are in :mod:`services.shop.checkout`; here are
``Record`` (a carrier's scan or delivery, from ``ShopShipping``'s webhooks; private: only they append,
naming the actor they verified; idempotent by ``eventId``), the reads ``GetStatus``, ``GetSaga`` and
``Events`` (public, ``read``) and ``Replay`` (public, ``operator``: rebuild the order's read models from
the stream).

**Publication.** Each command publishes what it appended once, when it ends (:meth:`Order.publish`), to
every subscriber of :data:`~services.shop.subscriptions.SUBSCRIPTIONS` whose event types it contains: one
durable one-way message per subscriber. The aggregate keeps each subscriber's position (the key ``sent``,
one entry per subscriber, read only by orders that have published before): a batch holds every event since
that subscriber's previous batch, so each subscriber sees its orders' streams whole and in order, and
deduplicates by sequence number.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from restate import ObjectContext, ObjectSharedContext

from podium import SagaLog, TerminalError, VirtualObject, call, read_saga_log, send
from services.shop import settings
from services.shop.events import (
    FINISHED,
    PROGRESS,
    Event,
    EventType,
    IllegalTransition,
    OrderState,
    Published,
    apply,
    fold,
    new_event,
)
from services.shop.models import LiveStatus, RecordEvent
from services.shop.projections import OrderView, rebuild
from services.shop.subscriptions import SUBSCRIPTIONS

orders = VirtualObject(
    "ShopOrder",
    system="shop",
    journal_retention=settings.SETTINGS.order_retention,
    idempotency_retention=settings.SETTINGS.order_retention,
)

SAGA = "checkout"
"""The checkout saga's name (its log is kept in the order's state)."""
ACTOR = "ShopOrder"
"""The actor of the events the checkout and the cancellation record themselves."""
SNAPSHOT_EVERY = 8
"""Events between snapshots of the folded state."""


# -- the stream ------------------------------------------------------------------------------------------


async def load_state(ctx: ObjectContext | ObjectSharedContext) -> OrderState:
    """The order as of its last event: the last snapshot, and the events after it folded onto it."""
    return (await _Stream.load(ctx)).state


async def load_events(ctx: ObjectContext | ObjectSharedContext) -> list[Event]:
    """The whole stream, oldest first (empty for an order never placed)."""
    keys = await ctx.state_keys()
    return await _events(ctx, 1, _length(keys))


class _Stream:
    """What a command reads first: the order's keys (they give the stream's length) and its state."""

    def __init__(self, keys: set[str], state: OrderState) -> None:
        self.keys = keys
        self.state = state

    @classmethod
    async def load(cls, ctx: ObjectContext | ObjectSharedContext) -> _Stream:
        keys = set(await ctx.state_keys())
        state = OrderState()
        if "snapshot" in keys:
            state = OrderState.model_validate(await ctx.get("snapshot", type_hint=dict))
        return cls(keys, fold(await _events(ctx, state.version + 1, _length(keys)), state))


def _length(keys: Iterable[str]) -> int:
    """The last sequence number among the state's keys (0 for an order never placed)."""
    return max((int(key[6:]) for key in keys if key.startswith("event:")), default=0)


async def _events(ctx: ObjectContext | ObjectSharedContext, first: int, last: int) -> list[Event]:
    found = []
    for sequence in range(first, last + 1):
        raw = await ctx.get(f"event:{sequence}", type_hint=dict)
        if raw is None:
            raise TerminalError(f"order {ctx.key()}: event {sequence} is missing from the stream", 500)
        found.append(Event.model_validate(raw))
    return found


class Order:
    """One command's view of the aggregate: the state, and the events this command appended."""

    def __init__(self, ctx: ObjectContext, state: OrderState, *, published: bool = False) -> None:
        self.ctx = ctx
        self.state = state
        self.appended: list[Event] = []
        self._published = published

    @classmethod
    async def load(cls, ctx: ObjectContext) -> Order:
        """The order as stored."""
        stream = await _Stream.load(ctx)
        return cls(ctx, stream.state, published="sent" in stream.keys)

    async def append(
        self, event_type: EventType, data: dict[str, Any], *, actor: str = ACTOR, event_id: str | None = None
    ) -> OrderState:
        """Append one event, stamped with the engine's clock; 409 if the order's state does not allow it."""
        try:
            event = new_event(
                self.state,
                event_type,
                event_id=event_id or event_type.value,
                at=await self.ctx.time(),
                actor=actor,
                data=data,
            )
        except IllegalTransition as exc:
            raise TerminalError(f"order {self.ctx.key()}: {exc}", 409) from exc
        return self.add(event)

    def add(self, event: Event) -> OrderState:
        """Write a ready event to the stream (and a snapshot when one is due)."""
        self.state = apply(self.state, event)
        self.ctx.set(f"event:{event.sequence}", event.model_dump(mode="json"))
        if event.sequence % SNAPSHOT_EVERY == 0:
            self.ctx.set("snapshot", self.state.model_dump(mode="json"))
        self.appended.append(event)
        return self.state

    async def publish(self) -> None:
        """Send what this command appended to each subscriber of its types, with what it missed before."""
        if not self.appended:
            return
        # An order that never published has sent nothing to anyone: no need to read the positions.
        positions: dict[str, int] = (
            (await self.ctx.get("sent", type_hint=dict) or {}) if self._published else {}
        )
        first_new = self.appended[0].sequence
        for subscription in SUBSCRIPTIONS:
            position = positions.get(subscription.name, 0)
            # The events this command appended are at hand; only older ones a subscriber missed are read.
            missed = await _events(self.ctx, position + 1, first_new - 1) if position + 1 < first_new else []
            batch = (
                [*missed, *self.appended]
                if position < first_new
                else self.appended[position - first_new + 1 :]
            )
            if not any(e.type in subscription.types for e in batch):
                continue  # nothing it wants yet: it gets these with the next batch it does want
            send(
                self.ctx,
                subscription.handler,
                Published(events=batch, order=self.state),
                key=subscription.key(self.state),
            )
            positions[subscription.name] = self.state.version
            self._published = True
        if self._published:
            self.ctx.set("sent", positions)


# -- handlers ----------------------------------------------------------------------------------------------


@orders.handler("Record")
async def record(ctx: ObjectContext, req: RecordEvent) -> OrderState:
    """Append one event if the order's state allows it (409 if not); idempotent by ``eventId``."""
    order = await Order.load(ctx)
    if not order.state.version:
        raise TerminalError(f"no order {ctx.key()}", 404)
    if req.event_id in order.state.event_ids:
        return order.state
    if req.type == EventType.ORDER_PLACED:
        raise TerminalError("type: OrderPlaced is recorded by Place, not by Record", 400)
    # ``req.data`` already holds what the fold needs for its type (checked by ``RecordEvent``).
    await order.append(req.type, req.data, actor=req.actor, event_id=req.event_id)
    await order.publish()
    return order.state


@orders.handler("GetStatus", kind="shared", public="read")
async def get_status(ctx: ObjectSharedContext) -> LiveStatus:
    """Phase, progress and next step, folded from the events so far, with the saga's log."""
    state = await load_state(ctx)
    if not state.version:
        raise TerminalError(f"no order {ctx.key()}", 404)
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
        saga=await read_saga_log(ctx, SAGA),
    )


@orders.handler("GetSaga", kind="shared", public="read")
async def get_saga(ctx: ObjectSharedContext) -> SagaLog | None:
    """The checkout saga's log: steps, compensations, dead letters (null before the order is placed)."""
    return await read_saga_log(ctx, SAGA)


@orders.handler("Events", kind="shared", public="read")
async def get_events(ctx: ObjectSharedContext) -> list[Event]:
    """The event store: the order's stream, oldest first."""
    return await load_events(ctx)


@orders.handler("Replay", public="operator")
async def replay(ctx: ObjectContext) -> OrderView:
    """Rebuild every read model of this order from the event store; returns the rebuilt summary.

    Exclusive, so no event is appended (and published) while the rebuild runs: a rebuild can never
    overwrite an event the read models received after the stream it was built from.
    """
    events = await load_events(ctx)
    if not events:
        raise TerminalError(f"no order {ctx.key()}", 404)
    return await call(ctx, rebuild, Published(events=events, order=fold(events)))
