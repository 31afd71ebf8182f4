"""A finite inventory of units per slot, held and then committed or released: seats, rooms, stock.

:func:`inventory_object` builds a virtual object keyed by resource (a flight on a date, a hotel, a SKU).
Each hold takes ``units`` in every one of its ``slots`` (the nights of a hotel stay; a single slot for a
flight) all or nothing. Holds are keyed by the holder's id, so holding twice is harmless and releasing
twice is a no-op. Because the object is exclusive per key, two customers racing for the last units are
served one after the other: exactly one gets them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import Field
from restate import ObjectContext, ObjectSharedContext

from podium import Model, TerminalError, VirtualObject


class HoldRequest(Model):
    holder: str = Field(min_length=1)
    """Who holds: a reservation id. Holding again with the same id returns the existing hold."""
    units: int = Field(gt=0)
    slots: list[str] = Field(default=["*"], min_length=1)


class HolderRequest(Model):
    holder: str = Field(min_length=1)


class Hold(Model):
    holder: str
    units: int
    slots: list[str]
    status: str
    """``held`` or ``committed``."""


class Availability(Model):
    resource: str
    capacity: int
    available: dict[str, int]
    """Units free per slot that has any hold (slots not listed have full capacity)."""
    holds: list[Hold]


class _State(Model):
    holds: dict[str, Hold] = {}


@dataclass(frozen=True)
class Inventory:
    """An inventory object and its handlers, for typed calls (``ctx.object_call(inv.hold, ...)``)."""

    service: VirtualObject
    hold: Callable[[ObjectContext, HoldRequest], Awaitable[Hold]]
    commit: Callable[[ObjectContext, HolderRequest], Awaitable[Hold]]
    release: Callable[[ObjectContext, HolderRequest], Awaitable[None]]
    get: Callable[[ObjectSharedContext], Awaitable[Availability]]


def inventory_object(name: str, capacity_of: Callable[[str], int], unit: str = "units") -> Inventory:
    """A virtual object ``name`` whose key is a resource and whose capacity per slot is ``capacity_of(key)``.

    Args:
        name: The object's name on the wire.
        capacity_of: Capacity per slot of a resource key; raise ``TerminalError`` for unknown keys.
        unit: What a unit is called in error messages ("seats", "rooms").
    """
    obj = VirtualObject(name)

    async def load(ctx: ObjectContext | ObjectSharedContext) -> _State:
        raw = await ctx.get("state", type_hint=dict)
        return _State() if raw is None else _State.model_validate(raw)

    def used(state: _State, slot: str) -> int:
        return sum(h.units for h in state.holds.values() if slot in h.slots)

    @obj.handler("Hold")
    async def hold(ctx: ObjectContext, req: HoldRequest) -> Hold:
        state = await load(ctx)
        existing = state.holds.get(req.holder)
        if existing is not None:
            return existing
        capacity = capacity_of(ctx.key())
        for slot in req.slots:
            free = capacity - used(state, slot)
            if free < req.units:
                where = ctx.key() if slot == "*" else f"{ctx.key()} on {slot}"
                raise TerminalError(f"sold out: {free} of {capacity} {unit} left for {where}", 409)
        new = Hold(holder=req.holder, units=req.units, slots=req.slots, status="held")
        state.holds[req.holder] = new
        ctx.set("state", state.model_dump(mode="json"))
        return new

    @obj.handler("Commit")
    async def commit(ctx: ObjectContext, req: HolderRequest) -> Hold:
        state = await load(ctx)
        existing = state.holds.get(req.holder)
        if existing is None:
            raise TerminalError(f"{req.holder} holds nothing on {ctx.key()}", 409)
        if existing.status != "committed":
            existing.status = "committed"
            ctx.set("state", state.model_dump(mode="json"))
        return existing

    @obj.handler("Release")
    async def release(ctx: ObjectContext, req: HolderRequest) -> None:
        state = await load(ctx)
        if state.holds.pop(req.holder, None) is not None:
            ctx.set("state", state.model_dump(mode="json"))

    @obj.handler("Get", kind="shared")
    async def get(ctx: ObjectSharedContext) -> Availability:
        state = await load(ctx)
        capacity = capacity_of(ctx.key())
        slots = sorted({s for h in state.holds.values() for s in h.slots})
        return Availability(
            resource=ctx.key(),
            capacity=capacity,
            available={s: capacity - used(state, s) for s in slots},
            holds=list(state.holds.values()),
        )

    return Inventory(service=obj, hold=hold, commit=commit, release=release, get=get)
