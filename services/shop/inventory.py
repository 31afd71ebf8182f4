"""``ShopStock``: finite stock per SKU (one virtual object per SKU), reserved and released per order.

``Reserve`` takes units for an order and ``Release`` gives them back; both are idempotent by order id
(a hold is kept under ``hold:<orderId>``, so reserving twice returns the first hold and releasing twice
is a no-op). Every handler is private: only the checkout saga holds and releases stock, and the stock
level is the shop's own business, not a client's. The object is exclusive per SKU: two orders racing
for the last units are served one after the other and exactly one gets them. A hold of a completed
order is the sale: there is no warehouse step in this system.

Starting stock comes from the SKU's name (test data, see the README): ``SOLDOUT-…`` has none,
``LIMITED-<n>-…`` has ``n`` units, ``UNLIMITED-…`` has a billion, anything else 1,000.

Low stock: when a reservation takes the available units below the SKU's threshold (a fifth of its
starting stock), one email goes to :data:`STOCK_ALERTS_EMAIL` through the shared ``NotificationService``;
it is sent once per crossing (the object remembers it is low until releases lift it back to the
threshold). The message id names the SKU and the crossing number, so a retried send is one email.
"""

from __future__ import annotations

import re

from pydantic import Field
from restate import ObjectContext, ObjectSharedContext

from podium import Model, TerminalError, VirtualObject, send
from services.common.notifications import EmailRequest, send_email

stock = VirtualObject("ShopStock", system="shop")

STOCK_ALERTS_EMAIL = "stock-alerts@shop.example.com"
"""Where low-stock alerts go."""
DEFAULT_STOCK = 1_000
UNLIMITED_STOCK = 1_000_000_000
_LIMITED = re.compile(r"^LIMITED-(\d{1,9})-")


def starting_stock(sku: str) -> int:
    """Units a SKU starts with (see the module docs for the test data)."""
    if sku.startswith("SOLDOUT-"):
        return 0
    if sku.startswith("UNLIMITED-"):
        return UNLIMITED_STOCK
    if match := _LIMITED.match(sku):
        return int(match.group(1))
    return DEFAULT_STOCK


def low_stock_threshold(initial: int) -> int:
    """Available units below this are low (a fifth of the starting stock, at least one)."""
    return max(1, initial // 5)


class ReserveRequest(Model):
    """``ShopStock/{sku}/Reserve``."""

    order_id: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class ReleaseRequest(Model):
    """``ShopStock/{sku}/Release``."""

    order_id: str = Field(min_length=1)


class StockHold(Model):
    """Units held by one order."""

    sku: str
    order_id: str
    quantity: int
    status: str
    """``reserved`` or ``released``."""


class StockLevel(Model):
    """``ShopStock/{sku}/Get`` and the object's state."""

    sku: str
    initial: int
    available: int
    reserved: int = 0
    threshold: int
    low: bool = False
    """Below the threshold since the last crossing."""
    low_stock_alerts: int = 0
    """Crossings so far (one email each)."""


async def _level(ctx: ObjectContext | ObjectSharedContext) -> StockLevel:
    raw = await ctx.get("level", type_hint=dict)
    if raw is not None:
        return StockLevel.model_validate(raw)
    initial = starting_stock(ctx.key())
    return StockLevel(
        sku=ctx.key(), initial=initial, available=initial, threshold=low_stock_threshold(initial)
    )


@stock.handler("Reserve")
async def reserve(ctx: ObjectContext, req: ReserveRequest) -> StockHold:
    """Hold ``quantity`` units for the order, or 409 when there are not enough."""
    held = await ctx.get(f"hold:{req.order_id}", type_hint=int)
    if held is not None:
        if held != req.quantity:
            raise TerminalError(f"order {req.order_id} already holds {held} of {ctx.key()}", 409)
        return StockHold(sku=ctx.key(), order_id=req.order_id, quantity=held, status="reserved")
    level = await _level(ctx)
    if level.available < req.quantity:
        raise TerminalError(
            f"out of stock: {ctx.key()} has {level.available} available, {req.quantity} wanted", 409
        )
    level.available -= req.quantity
    level.reserved += req.quantity
    if level.available < level.threshold and not level.low:
        level.low = True
        level.low_stock_alerts += 1
        _alert(ctx, level)
    ctx.set(f"hold:{req.order_id}", req.quantity)
    ctx.set("level", level.model_dump(mode="json"))
    return StockHold(sku=ctx.key(), order_id=req.order_id, quantity=req.quantity, status="reserved")


@stock.handler("Release")
async def release(ctx: ObjectContext, req: ReleaseRequest) -> StockHold:
    """Give the order's units back (nothing to give back is fine)."""
    held = await ctx.get(f"hold:{req.order_id}", type_hint=int)
    if held is None:
        return StockHold(sku=ctx.key(), order_id=req.order_id, quantity=0, status="released")
    level = await _level(ctx)
    level.available += held
    level.reserved -= held
    if level.available >= level.threshold:
        level.low = False  # re-armed: the next crossing alerts again
    ctx.clear(f"hold:{req.order_id}")
    ctx.set("level", level.model_dump(mode="json"))
    return StockHold(sku=ctx.key(), order_id=req.order_id, quantity=held, status="released")


@stock.handler("Get", kind="shared")
async def get_level(ctx: ObjectSharedContext) -> StockLevel:
    """Stock of one SKU."""
    return await _level(ctx)


def _alert(ctx: ObjectContext, level: StockLevel) -> None:
    """Email the low-stock alert (a one-way send: the reservation never waits for the mail)."""
    send(
        ctx,
        send_email,
        EmailRequest(
            message_id=f"low-stock-{level.sku}-{level.low_stock_alerts}",
            to=STOCK_ALERTS_EMAIL,
            subject=f"Low stock: {level.sku}",
            body=f"{level.sku}: {level.available} of {level.initial} units left "
            f"(threshold {level.threshold}).",
        ),
    )
