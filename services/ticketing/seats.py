"""``SeatMap``: the named seats of one event, held all or none, then sold, released or expired.

A virtual object keyed by event id (``rock-2025-07-12``). Every hold belongs to a holder (a booking id)
and is kept by it, so each handler is idempotent by holder:

- ``Hold`` takes every requested seat or none. Seats someone else holds or bought are a clean answer
  (``seats_unavailable``, or ``sold_out`` when fewer seats are left in the whole event than requested),
  not an error. Holding again with the same holder and seats returns the same hold. Each hold schedules
  its own expiry (a delayed call to ``Expire``, kept by the engine): the seats come free when the hold
  time is up even if nobody ever comes back for them.
- ``Confirm`` turns the hold into a sale (confirming twice is harmless). A hold that expired or was
  released is *not* revived: the answer says so (``status: expired``) and the caller must not charge.
- ``Release`` frees held or sold seats; a second release frees nothing and succeeds. Releasing a holder
  that never held leaves a tombstone, so a ``Hold`` arriving late (a retried call) cannot take seats.
- ``Expire`` (called by the engine at the deadline) frees a hold that is still only held.
- ``Get`` shows capacity, free seats, held and sold seats, and every hold (who holds, for which customer).
- ``Availability`` shows what a customer choosing seats needs: the event, the price and which seats are
  taken, never by whom.

Only ``Availability`` is public. ``Hold``, ``Confirm``, ``Release`` and ``Expire`` are steps of the booking
saga (a client holding seats directly could block an event without ever booking), and ``Get`` names
every holder and customer.

The object is exclusive per event, so two customers racing for the same seats are served one after the
other: exactly one gets each seat.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

from restate import ObjectContext, ObjectSharedContext

from podium import Model, TerminalError, VirtualObject, send
from services.ticketing import catalogue
from services.ticketing.models import (
    ExpireRequest,
    HoldAnswer,
    HolderRequest,
    HoldSeatsRequest,
    ReleaseAnswer,
    SeatAvailability,
    SeatHold,
    SeatMapSummary,
    SeatMapView,
)

seat_maps = VirtualObject("SeatMap", system="ticketing")


class _State(Model):
    holds: dict[str, SeatHold] = {}


ACTIVE = ("held", "sold")


def iso(seconds: float) -> str:
    """An engine timestamp as ISO 8601 UTC (``2025-07-12T20:00:00Z``)."""
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def _load(ctx: ObjectContext | ObjectSharedContext) -> _State:
    raw = await ctx.get("state", type_hint=dict)
    return _State() if raw is None else _State.model_validate(raw)


def _save(ctx: ObjectContext, state: _State) -> None:
    ctx.set("state", state.model_dump(mode="json"))


def _taken(event: catalogue.Event, state: _State) -> dict[str, str]:
    """Seat → who has it (a holder, or ``presold``)."""
    taken = dict.fromkeys(event.presold_seats(), "presold")
    for hold in state.holds.values():
        if hold.status in ACTIVE:
            taken.update(dict.fromkeys(hold.seat_ids, hold.holder))
    return taken


@seat_maps.handler("Hold")
async def hold(ctx: ObjectContext, req: HoldSeatsRequest) -> HoldAnswer:
    event = catalogue.event(ctx.key())
    catalogue.seats(event, req.seat_ids)
    state = await _load(ctx)
    capacity = len(event.venue.seats)
    existing = state.holds.get(req.holder)
    if existing is not None:
        if existing.status not in ACTIVE:
            raise TerminalError(
                f"{req.holder} no longer holds seats of {event.id} (its hold {existing.status}); "
                "use a new booking id",
                409,
            )
        if sorted(existing.seat_ids) != sorted(req.seat_ids):
            raise TerminalError(
                f"{req.holder} already holds {', '.join(existing.seat_ids)} of {event.id}; "
                "release them before holding other seats",
                409,
            )
        available = capacity - len(_taken(event, state))
        return HoldAnswer(outcome="held", hold=existing, available=available)

    taken = _taken(event, state)
    available = capacity - len(taken)
    unavailable = [s for s in req.seat_ids if s in taken]
    if unavailable:
        if available < len(req.seat_ids):
            left = "no seats" if available == 0 else f"only {available} seat(s)"
            reason = f"sold out: {left} left for {event.id}, {len(req.seat_ids)} requested"
            outcome = "sold_out"
        else:
            reason = (
                f"seats {', '.join(unavailable)} of {event.id} are already taken; "
                f"{available} other seats are free"
            )
            outcome = "seats_unavailable"
        return HoldAnswer(outcome=outcome, unavailable=unavailable, available=available, reason=reason)

    now = await ctx.time()
    new = SeatHold(
        holder=req.holder,
        hold_id=str(ctx.uuid()),
        seat_ids=sorted(req.seat_ids, key=event.venue.order),
        status="held",
        customer_id=req.customer_id,
        held_at=iso(now),
        expires_at=iso(now + req.hold_ms / 1000),
    )
    state.holds[req.holder] = new
    _save(ctx, state)
    # The seats come free at the deadline whatever happens to the booking: a durable delayed call.
    send(
        ctx,
        expire,
        ExpireRequest(holder=req.holder, hold_id=new.hold_id),
        key=ctx.key(),
        delay=timedelta(milliseconds=req.hold_ms),
    )
    return HoldAnswer(outcome="held", hold=new, available=available - len(req.seat_ids))


@seat_maps.handler("Confirm")
async def confirm(ctx: ObjectContext, req: HolderRequest) -> SeatHold:
    """Sell the holder's seats; the answer's status says whether it worked (``sold``) or not."""
    state = await _load(ctx)
    existing = state.holds.get(req.holder)
    if existing is None:
        raise TerminalError(f"{req.holder} holds no seats of {ctx.key()}", 404)
    if existing.status == "held":
        existing.status = "sold"
        _save(ctx, state)
    return existing


@seat_maps.handler("Release")
async def release(ctx: ObjectContext, req: HolderRequest) -> ReleaseAnswer:
    state = await _load(ctx)
    existing = state.holds.get(req.holder)
    now = iso(await ctx.time())
    if existing is None:
        # Tombstone: a Hold for this holder that arrives later (a retried call) takes nothing.
        state.holds[req.holder] = SeatHold(
            holder=req.holder, hold_id="", seat_ids=[], status="released", ended_at=now
        )
        _save(ctx, state)
        return ReleaseAnswer(holder=req.holder, released=[], status="released")
    if existing.status not in ACTIVE:
        return ReleaseAnswer(holder=req.holder, released=[], status=existing.status)
    existing.status = "released"
    existing.ended_at = now
    _save(ctx, state)
    return ReleaseAnswer(holder=req.holder, released=existing.seat_ids, status="released")


@seat_maps.handler("Expire")
async def expire(ctx: ObjectContext, req: ExpireRequest) -> ReleaseAnswer | None:
    """Free a hold whose time is up, unless it was sold or released meanwhile."""
    state = await _load(ctx)
    existing = state.holds.get(req.holder)
    if existing is None or existing.hold_id != req.hold_id:
        return None
    if existing.status != "held":
        return ReleaseAnswer(holder=req.holder, released=[], status=existing.status)
    existing.status = "expired"
    existing.ended_at = iso(await ctx.time())
    _save(ctx, state)
    return ReleaseAnswer(holder=req.holder, released=existing.seat_ids, status="expired")


@seat_maps.handler("Get", kind="shared")
async def get_seat_map(ctx: ObjectSharedContext) -> SeatMapView:
    event = catalogue.event(ctx.key())
    state = await _load(ctx)
    taken = _taken(event, state)
    held = [s for s in event.venue.seats if s in taken and _status_of(state, taken[s]) == "held"]
    sold = [s for s in event.venue.seats if s in taken and s not in held]
    return SeatMapView(
        **_summary(event, taken).model_dump(), held=held, sold=sold, holds=list(state.holds.values())
    )


def _summary(event: catalogue.Event, taken: dict[str, str]) -> SeatMapSummary:
    return SeatMapSummary(
        event_id=event.id,
        title=event.show.title,
        venue=event.venue.name,
        layout=event.venue.layout,
        price=event.show.price,
        capacity=len(event.venue.seats),
        available=len(event.venue.seats) - len(taken),
    )


@seat_maps.handler("Availability", kind="shared", public="read")
async def availability(ctx: ObjectSharedContext) -> SeatAvailability:
    """What a customer sees before booking: the event, its price, and the seats that are taken."""
    event = catalogue.event(ctx.key())
    taken = _taken(event, await _load(ctx))
    return SeatAvailability(
        **_summary(event, taken).model_dump(),
        taken=[s for s in event.venue.seats if s in taken],
    )


def _status_of(state: _State, holder: str) -> str:
    hold = state.holds.get(holder)
    return "sold" if hold is None else hold.status  # presold seats have no hold
