"""``InventoryService``: stock per SKU, checked and reserved all or nothing for an order.

Stock lives in ``StockLevel`` objects, one per SKU (a finite inventory: holds are keyed by reservation
id, so holding twice is harmless and releasing twice is a no-op). ``InventoryService`` is the stateless
front: ``Reserve`` holds every line of an order at once and, if one SKU is short, releases the others
before failing (a small saga); ``Commit`` turns holds into sales (the warehouse picked them);
``Release`` gives everything back, sold or held.

Both services are private: only the orchestrators' sagas hold and release stock, and ``StockLevel``'s
``Get`` lists every order that holds a SKU.
"""

from __future__ import annotations

from collections import Counter

from restate import Context

from podium import Saga, SagaError, Service, TerminalError, call, fan_out_fail
from services.commerce import catalogue
from services.commerce.models import Availability, CheckRequest, Item, Reservation, StockRequest
from services.common.inventory import HolderRequest, HoldRequest, inventory_object

stock = inventory_object("StockLevel", catalogue.stock, unit="units")
inventory = Service("InventoryService")


def _lines(items: list[Item]) -> dict[str, int]:
    """Quantities per SKU (an order may list a SKU twice); unknown SKUs are the caller's mistake."""
    totals: Counter[str] = Counter()
    for item in items:
        catalogue.price(item.sku)
        totals[item.sku] += item.quantity
    return dict(sorted(totals.items()))


@inventory.handler("Check")
async def check(ctx: Context, req: CheckRequest) -> Availability:
    lines = _lines(req.items)
    levels = await fan_out_fail([call(ctx, stock.get, None, key=sku) for sku in lines])
    missing = [
        sku
        for (sku, wanted), level in zip(lines.items(), levels, strict=True)
        if level.available.get("*", level.capacity) < wanted
    ]
    return Availability(available=not missing, missing=missing)


@inventory.handler("Reserve")
async def reserve(ctx: Context, req: StockRequest) -> Reservation:
    lines = _lines(req.items)
    holder = HolderRequest(holder=req.reservation_id)
    try:
        async with Saga(ctx, f"reserve {req.reservation_id}") as saga:
            await saga.parallel(
                *(
                    saga.define(
                        sku,
                        lambda sku=sku, units=units: call(
                            ctx, stock.hold, HoldRequest(holder=req.reservation_id, units=units), key=sku
                        ),
                        compensate=lambda sku=sku: call(ctx, stock.release, holder, key=sku),
                    )
                    for sku, units in lines.items()
                )
            )
    except SagaError as exc:
        raise TerminalError(f"cannot reserve stock: {exc.cause.message}", 409) from exc
    return Reservation(reservation_id=req.reservation_id, items=req.items, status="reserved")


@inventory.handler("Commit")
async def commit(ctx: Context, req: StockRequest) -> Reservation:
    holder = HolderRequest(holder=req.reservation_id)
    await fan_out_fail([call(ctx, stock.commit, holder, key=sku) for sku in _lines(req.items)])
    return Reservation(reservation_id=req.reservation_id, items=req.items, status="committed")


@inventory.handler("Release")
async def release(ctx: Context, req: StockRequest) -> Reservation:
    holder = HolderRequest(holder=req.reservation_id)
    await fan_out_fail([call(ctx, stock.release, holder, key=sku) for sku in _lines(req.items)])
    return Reservation(reservation_id=req.reservation_id, items=req.items, status="released")
