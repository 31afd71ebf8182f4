"""``FlightService`` and ``HotelService``: reservations that hold real inventory until confirmed or cancelled.

Both are virtual objects keyed by reservation id with the same life: ``reserved → confirmed | cancelled``.

- ``Reserve`` holds seats (rooms) in the inventory and returns the reservation; reserving again with the
  same id returns the same reservation; reserving a cancelled id is refused (409).
- ``Confirm`` turns the hold into a sale; confirming twice is harmless; confirming a cancelled
  reservation is refused (409).
- ``Cancel`` releases what is held or sold; cancelling twice is a no-op. Cancelling an id that was never
  reserved leaves a tombstone, so a ``Reserve`` that arrives late (a retried call) cannot hold anything.
- ``Get`` returns the reservation (404 if there is none).

Every handler is private: only ``TripOrchestrator``'s saga reserves, confirms and cancels, and a client
sees its reservations inside the booking (``GetBooking``). The inventory objects are private too: their
``Get`` lists every holder of a flight or a city, other customers' reservations included.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from restate import ObjectContext, ObjectSharedContext

from podium import TerminalError, VirtualObject
from services.common.inventory import HolderRequest, HoldRequest, Inventory, inventory_object
from services.travel import catalogue
from services.travel.models import FlightRequest, FlightReservation, HotelRequest, HotelReservation


@dataclass(frozen=True)
class Quote:
    """What a reservation takes from the inventory, and the record it becomes."""

    inventory_key: str
    units: int
    slots: list[str]
    record: BaseModel


@dataclass(frozen=True)
class ReservationService:
    """A reservation object and its handlers, for typed calls."""

    service: VirtualObject
    inventory: Inventory
    reserve: Callable[..., Any]
    confirm: Callable[..., Any]
    cancel: Callable[..., Any]
    get: Callable[..., Any]


def reservation_object(
    name: str,
    inventory: Inventory,
    request_model: type[BaseModel],
    record_model: type[BaseModel],
    quote: Callable[[str, Any], Quote],
    refuse_confirmation: Callable[[Any], str | None] = lambda record: None,
) -> ReservationService:
    """Build a reservation object named ``name`` over ``inventory``.

    Args:
        quote: Given the reservation id and the request, what to hold and the record to keep; raises
            ``TerminalError(400)`` for requests outside the catalogue.
        refuse_confirmation: The reason the provider refuses to confirm ``record``, or None.
    """
    obj = VirtualObject(name)

    async def load(ctx: ObjectContext | ObjectSharedContext) -> dict[str, Any] | None:
        return await ctx.get("reservation", type_hint=dict)

    def save(ctx: ObjectContext, record: BaseModel, inventory_key: str) -> None:
        ctx.set("reservation", {"record": record.model_dump(mode="json"), "inventoryKey": inventory_key})

    async def reserve(ctx: ObjectContext, req: Any) -> Any:
        state = await load(ctx)
        if state is not None:
            if state["record"] is None:
                raise TerminalError(f"reservation {ctx.key()} was cancelled; use a new id", 409)
            record = record_model.model_validate(state["record"])
            if record.status == "cancelled":  # type: ignore[attr-defined]
                raise TerminalError(f"reservation {ctx.key()} was cancelled; use a new id", 409)
            return record
        q = quote(ctx.key(), req)
        await ctx.object_call(
            inventory.hold,
            key=q.inventory_key,
            arg=HoldRequest(holder=ctx.key(), units=q.units, slots=q.slots),
        )
        save(ctx, q.record, q.inventory_key)
        return q.record

    async def confirm(ctx: ObjectContext) -> Any:
        state = await load(ctx)
        if state is None:
            raise TerminalError(f"no reservation {ctx.key()}", 404)
        if state["record"] is None:
            raise TerminalError(f"reservation {ctx.key()} is cancelled and cannot be confirmed", 409)
        record = record_model.model_validate(state["record"])
        status = record.status  # type: ignore[attr-defined]
        if status == "cancelled":
            raise TerminalError(f"reservation {ctx.key()} is cancelled and cannot be confirmed", 409)
        if status == "confirmed":
            return record
        refusal = refuse_confirmation(record)
        if refusal:
            raise TerminalError(f"reservation {ctx.key()} refused: {refusal}", 409)
        await ctx.object_call(
            inventory.commit, key=state["inventoryKey"], arg=HolderRequest(holder=ctx.key())
        )
        record = record.model_copy(update={"status": "confirmed"})
        save(ctx, record, state["inventoryKey"])
        return record

    async def cancel(ctx: ObjectContext) -> None:
        state = await load(ctx)
        if state is None:
            ctx.set("reservation", {"record": None, "inventoryKey": None})
            return
        if state["record"] is None:
            return
        record = record_model.model_validate(state["record"])
        if record.status == "cancelled":  # type: ignore[attr-defined]
            return
        await ctx.object_call(
            inventory.release, key=state["inventoryKey"], arg=HolderRequest(holder=ctx.key())
        )
        save(ctx, record.model_copy(update={"status": "cancelled"}), state["inventoryKey"])

    async def get(ctx: ObjectSharedContext) -> Any:
        state = await load(ctx)
        if state is None or state["record"] is None:
            raise TerminalError(f"no reservation {ctx.key()}", 404)
        return record_model.model_validate(state["record"])

    # Annotations are set here because the models are parameters; validation and serialisation read them.
    reserve.__annotations__ = {"ctx": ObjectContext, "req": request_model, "return": record_model}
    confirm.__annotations__ = {"ctx": ObjectContext, "return": record_model}
    get.__annotations__ = {"ctx": ObjectSharedContext, "return": record_model}
    return ReservationService(
        service=obj,
        inventory=inventory,
        reserve=obj.handler("Reserve")(reserve),
        confirm=obj.handler("Confirm")(confirm),
        cancel=obj.handler("Cancel")(cancel),
        get=obj.handler("Get", kind="shared")(get),
    )


def _quote_flight(reservation_id: str, req: FlightRequest) -> Quote:
    origin = catalogue.airport(req.from_, "flight.from")
    destination = catalogue.airport(req.to, "flight.to")
    price = round(catalogue.seat_price(origin, destination) * req.passengers, 2)
    record = FlightReservation(
        id=reservation_id,
        from_=origin,
        to=destination,
        date=req.date,
        passengers=req.passengers,
        price=price,
        status="reserved",
    )
    return Quote(f"{origin}-{destination}-{req.date.isoformat()}", req.passengers, ["*"], record)


def _quote_hotel(reservation_id: str, req: HotelRequest) -> Quote:
    hotel = catalogue.hotel(req.city)
    nights = (req.check_out - req.check_in).days
    rooms = math.ceil(req.guests / catalogue.ROOM_CAPACITY)
    record = HotelReservation(
        id=reservation_id,
        hotel=hotel.name,
        city=req.city,
        check_in=req.check_in,
        check_out=req.check_out,
        rooms=rooms,
        price=round(hotel.nightly_rate * nights * rooms, 2),
        status="reserved",
    )
    slots = [(req.check_in + dt.timedelta(days=n)).isoformat() for n in range(nights)]
    return Quote(req.city, rooms, slots, record)


def _hotel_refusal(record: HotelReservation) -> str | None:
    if catalogue.hotel(record.city).confirms:
        return None
    return f"{record.hotel} did not honour the hold"


flights = reservation_object(
    "FlightService",
    inventory_object("FlightInventory", catalogue.flight_capacity, unit="seats"),
    FlightRequest,
    FlightReservation,
    _quote_flight,
)
hotels = reservation_object(
    "HotelService",
    inventory_object("HotelInventory", catalogue.hotel_capacity, unit="rooms"),
    HotelRequest,
    HotelReservation,
    _quote_hotel,
    _hotel_refusal,
)
