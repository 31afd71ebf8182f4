"""``WarehouseService``: picks an order's reserved stock, once per reservation id.

Picking commits the stock reservation (the units leave the shelf). A line with SKU ``SKU-DAMAGED``
cannot be picked (409): the order's saga then refunds and releases everything.

Private: picking is a step of the orchestrators' sagas.
"""

from __future__ import annotations

from pydantic import Field
from restate import ObjectContext

from podium import Model, TerminalError, VirtualObject, call
from services.commerce import catalogue
from services.commerce.inventory import commit
from services.commerce.models import Item, Pick, StockRequest

warehouse = VirtualObject("WarehouseService")


class PickRequest(Model):
    items: list[Item] = Field(min_length=1)


@warehouse.handler("PickItems")
async def pick_items(ctx: ObjectContext, req: PickRequest) -> Pick:
    done = await ctx.get("pick", type_hint=dict)
    if done is not None:
        return Pick.model_validate(done)
    damaged = [i.sku for i in req.items if i.sku == catalogue.DAMAGED_SKU]
    if damaged:
        raise TerminalError(f"cannot pick {', '.join(damaged)} for {ctx.key()}: stock is damaged", 409)
    await call(ctx, commit, StockRequest(reservation_id=ctx.key(), items=req.items))
    pick = Pick(reservation_id=ctx.key(), pick_ticket=f"PT-{ctx.uuid().hex[:10].upper()}", items=req.items)
    ctx.set("pick", pick.model_dump(mode="json"))
    return pick
