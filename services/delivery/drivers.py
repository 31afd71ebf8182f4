"""``DriverService``: a pool of drivers per zone, offers, answers, dispatch, location and delivery.

One object per zone. ``Offer`` gives an order to the first available driver not yet tried and returns
the driver's id; the driver answers through the ``Answer`` webhook, which resolves the orchestrator's
awakeable. ``Dispatch`` sends the driver to pick up; the driver's app calls ``PickedUp``, ``Location``
(forwarded to ``DeliveryTracker/{orderId}``) and ``Delivered``, which frees the driver. ``Release``
frees a driver whose order was cancelled (harmless twice).

Public: the driver app's webhooks ``Answer``, ``PickedUp``, ``Location``, ``Delivered``
(``delivery:write``) and ``AddDrivers`` (``delivery:operator``: a dispatcher staffs a zone). ``Offer``,
``Withdraw``, ``Dispatch`` and ``Release`` are the orchestrator's; ``Get`` shows the pool with the
awakeable ids and ``DeliveryTracker`` is fed by ``Location``: all private. Driver ids have the form of
:data:`~services.delivery.models.ID`, checked when they join a pool, so an offer never carries an id
that a later request would refuse.

Drivers act by themselves unless their id says otherwise (test data):

| driver id starts | behaviour |
|---|---|
| ``decliner-`` | declines every offer |
| ``sleepy-`` | never answers (the offer times out) |
| ``manual-`` | waits for the webhooks (play the driver with curl) |
| anything else | accepts, picks up, reports two locations and delivers within a second |
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field
from restate import ObjectContext, ObjectSharedContext

from podium import Model, TerminalError, VirtualObject, send
from services.delivery.models import AwakeableId, Id, Location

drivers = VirtualObject("DriverService", system="delivery")
tracker = VirtualObject("DeliveryTracker")
REACTION = timedelta(milliseconds=80)


class Driver(Model):
    id: str
    status: Literal["available", "offered", "assigned"] = "available"
    order_id: str | None = None
    answer_awakeable: str | None = None
    pickup_awakeable: str | None = None
    delivered_awakeable: str | None = None
    deliveries: int = 0


class NewDrivers(Model):
    drivers: list[Id] = Field(min_length=1, max_length=100)


class OfferRequest(Model):
    order_id: Id
    answer_awakeable: AwakeableId
    exclude: list[str] = []


class Offered(Model):
    driver_id: str


class AnswerRequest(Model):
    driver_id: Id
    order_id: Id
    accept: bool


class DriverOrder(Model):
    driver_id: Id
    order_id: Id


class DispatchRequest(DriverOrder):
    pickup_awakeable: AwakeableId
    delivered_awakeable: AwakeableId


class LocationUpdate(DriverOrder):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


async def _pool(ctx: ObjectContext | ObjectSharedContext) -> dict[str, Driver]:
    raw = await ctx.get("drivers", type_hint=dict) or {}
    return {k: Driver.model_validate(v) for k, v in raw.items()}


def _save(ctx: ObjectContext, pool: dict[str, Driver]) -> None:
    ctx.set("drivers", {k: v.model_dump(mode="json") for k, v in pool.items()})


def _driver_for(pool: dict[str, Driver], req: DriverOrder | AnswerRequest, zone: str) -> Driver:
    driver = pool.get(req.driver_id)
    if driver is None:
        raise TerminalError(f"no driver {req.driver_id} in {zone}", 404)
    if driver.order_id != req.order_id:
        raise TerminalError(f"driver {req.driver_id} has no open task for order {req.order_id}", 409)
    return driver


@drivers.handler("AddDrivers", public="operator")
async def add_drivers(ctx: ObjectContext, req: NewDrivers) -> list[Driver]:
    pool = await _pool(ctx)
    for driver_id in req.drivers:
        pool.setdefault(driver_id, Driver(id=driver_id))
    _save(ctx, pool)
    return list(pool.values())


@drivers.handler("Offer")
async def offer(ctx: ObjectContext, req: OfferRequest) -> Offered:
    pool = await _pool(ctx)
    for driver in sorted(pool.values(), key=lambda d: (d.deliveries, d.id)):
        if driver.status == "available" and driver.id not in req.exclude:
            break
    else:
        raise TerminalError(f"no driver available in {ctx.key()}", 409)
    driver.status, driver.order_id, driver.answer_awakeable = "offered", req.order_id, req.answer_awakeable
    _save(ctx, pool)
    if not driver.id.startswith(("sleepy-", "manual-")):
        accept = not driver.id.startswith("decliner-")
        answer = AnswerRequest(driver_id=driver.id, order_id=req.order_id, accept=accept)
        send(ctx, answer_offer, answer, key=ctx.key(), delay=REACTION)
    return Offered(driver_id=driver.id)


@drivers.handler("Answer", public="write")
async def answer_offer(ctx: ObjectContext, req: AnswerRequest) -> Driver:
    """The driver's webhook: accept or decline an offer (resolves the orchestrator's awakeable)."""
    pool = await _pool(ctx)
    driver = _driver_for(pool, req, ctx.key())
    if driver.status != "offered" or driver.answer_awakeable is None:
        raise TerminalError(f"the offer of order {req.order_id} to {req.driver_id} is no longer open", 409)
    ctx.resolve_awakeable(driver.answer_awakeable, {"accept": req.accept, "driverId": driver.id})
    if req.accept:
        driver.status = "assigned"
    else:
        driver.status, driver.order_id = "available", None
    driver.answer_awakeable = None
    _save(ctx, pool)
    return driver


@drivers.handler("Withdraw")
async def withdraw(ctx: ObjectContext, req: DriverOrder) -> None:
    """Take back an offer that was not answered in time (an acceptance that came too late included)."""
    pool = await _pool(ctx)
    driver = pool.get(req.driver_id)
    if driver is not None and driver.order_id == req.order_id and driver.status in ("offered", "assigned"):
        driver.status, driver.order_id, driver.answer_awakeable = "available", None, None
        _save(ctx, pool)


@drivers.handler("Dispatch")
async def dispatch(ctx: ObjectContext, req: DispatchRequest) -> Driver:
    pool = await _pool(ctx)
    driver = _driver_for(pool, req, ctx.key())
    driver.pickup_awakeable, driver.delivered_awakeable = req.pickup_awakeable, req.delivered_awakeable
    _save(ctx, pool)
    if not driver.id.startswith("manual-"):
        ref = DriverOrder(driver_id=driver.id, order_id=req.order_id)
        send(ctx, picked_up, ref, key=ctx.key(), delay=REACTION)
        for step, (lat, lon) in enumerate([(40.741, -73.990), (40.748, -73.986)], start=2):
            where = LocationUpdate(driver_id=driver.id, order_id=req.order_id, lat=lat, lon=lon)
            send(ctx, location, where, key=ctx.key(), delay=REACTION * step)
        send(ctx, delivered, ref, key=ctx.key(), delay=REACTION * 5)
    return driver


@drivers.handler("PickedUp", public="write")
async def picked_up(ctx: ObjectContext, req: DriverOrder) -> None:
    pool = await _pool(ctx)
    driver = _driver_for(pool, req, ctx.key())
    if driver.pickup_awakeable is None:
        raise TerminalError(f"order {req.order_id} was not dispatched to {req.driver_id}", 409)
    ctx.resolve_awakeable(driver.pickup_awakeable, {"driverId": driver.id})
    driver.pickup_awakeable = None
    _save(ctx, pool)


@drivers.handler("Location", public="write")
async def location(ctx: ObjectContext, req: LocationUpdate) -> None:
    pool = await _pool(ctx)
    _driver_for(pool, req, ctx.key())
    where = Location(lat=req.lat, lon=req.lon, at=await ctx.time(), driver_id=req.driver_id)
    send(ctx, track, where, key=req.order_id)


@drivers.handler("Delivered", public="write")
async def delivered(ctx: ObjectContext, req: DriverOrder) -> None:
    pool = await _pool(ctx)
    driver = _driver_for(pool, req, ctx.key())
    if driver.delivered_awakeable is None:
        raise TerminalError(f"order {req.order_id} was not dispatched to {req.driver_id}", 409)
    ctx.resolve_awakeable(driver.delivered_awakeable, {"driverId": driver.id})
    pool[driver.id] = Driver(id=driver.id, deliveries=driver.deliveries + 1)
    _save(ctx, pool)


@drivers.handler("Release")
async def release(ctx: ObjectContext, req: DriverOrder) -> None:
    """Free a driver from a cancelled order (no-op if the driver moved on)."""
    pool = await _pool(ctx)
    driver = pool.get(req.driver_id)
    if driver is not None and driver.order_id == req.order_id:
        pool[driver.id] = Driver(id=driver.id, deliveries=driver.deliveries)
        _save(ctx, pool)


@drivers.handler("Get", kind="shared")
async def get_pool(ctx: ObjectSharedContext) -> list[Driver]:
    return list((await _pool(ctx)).values())


@tracker.handler("Update")
async def track(ctx: ObjectContext, where: Location) -> None:
    ctx.set("location", where.model_dump(mode="json"))


@tracker.handler("Get", kind="shared")
async def last_location(ctx: ObjectSharedContext) -> Location | None:
    raw = await ctx.get("location", type_hint=dict)
    return None if raw is None else Location.model_validate(raw)
