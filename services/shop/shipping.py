"""``ShopShipping``: one shipment per order (virtual object keyed by order id).

``CreateShipment`` picks the carrier, prints the label and assigns a tracking number, once: a repeat
returns the same shipment. It refuses addresses no carrier serves (the test data: a country in
:data:`UNSHIPPABLE_COUNTRIES` or the zip :data:`UNSHIPPABLE_ZIP`), which makes the saga refund and
release. The carrier's side then reports through ``UpdateTracking`` (a scan: status and location) and
``ConfirmDelivery``; each appends an event to the order (``TrackingUpdated``, ``OrderDelivered``),
idempotent by the update id, so a carrier that retries a webhook records it once.

Those two are the carrier's webhooks, so they are public (``write``) and record the carrier's verified
subject (:func:`podium.caller`) as the event's actor. ``CreateShipment`` (a saga step) and ``Get`` (the
label and scans; a client sees the tracking on the order's read model) are private.
"""

from __future__ import annotations

from pydantic import Field
from restate import ObjectContext, ObjectSharedContext

from podium import Model, TerminalError, VirtualObject, call, caller
from services.shop.events import EventType
from services.shop.models import Address, RecordEvent
from services.shop.order import record

shipping = VirtualObject("ShopShipping", system="shop")

UNSHIPPABLE_COUNTRIES = frozenset({"AQ", "KP"})
"""No carrier delivers there."""
UNSHIPPABLE_ZIP = "00000"
"""A zip code that does not exist: the carrier refuses the label."""
DOMESTIC = "US"


class ShipmentRequest(Model):
    """``ShopShipping/{orderId}/CreateShipment``."""

    customer_id: str = Field(min_length=1)
    address: Address
    lines: dict[str, int] = Field(min_length=1)


class TrackingRequest(Model):
    """``ShopShipping/{orderId}/UpdateTracking``: one carrier scan."""

    update_id: str = Field(min_length=1, max_length=100)
    """The carrier's id for the scan: the same id again is recorded once."""
    status: str = Field(min_length=1, max_length=50)
    location: str = ""


class DeliveryRequest(Model):
    """``ShopShipping/{orderId}/ConfirmDelivery``."""

    signed_by: str = ""


class Shipment(Model):
    """A shipment and what the carrier said about it."""

    shipment_id: str
    order_id: str
    carrier: str
    tracking_number: str
    label_url: str
    status: str
    """``label_created``, then the carrier's scans (``in_transit``…), then ``delivered``."""
    scans: list[str] = []
    """Update ids of the carrier scans recorded, in order."""
    delivered: bool = False
    """Whether ``ConfirmDelivery`` recorded the delivery (a carrier scan saying "delivered" does not)."""


async def _load(ctx: ObjectContext | ObjectSharedContext) -> Shipment | None:
    raw = await ctx.get("shipment", type_hint=dict)
    return None if raw is None else Shipment.model_validate(raw)


def shippable(address: Address) -> str | None:
    """Why no carrier takes this address, or None if one does."""
    if address.country in UNSHIPPABLE_COUNTRIES:
        return f"cannot ship to {address.country}: no carrier serves it"
    if address.zip == UNSHIPPABLE_ZIP:
        return f"cannot ship to zip {address.zip}: the carrier refused the label"
    return None


@shipping.handler("CreateShipment")
async def create_shipment(ctx: ObjectContext, req: ShipmentRequest) -> Shipment:
    """Create the label and tracking number once per order (409 for an unshippable address)."""
    existing = await _load(ctx)
    if existing is not None:
        return existing
    if (refusal := shippable(req.address)) is not None:
        raise TerminalError(refusal, 409)
    order_id = ctx.key()
    tracking = f"SHP{ctx.uuid().hex[:12].upper()}"
    shipment = Shipment(
        shipment_id=f"{order_id}-shipment",
        order_id=order_id,
        carrier="podium-post" if req.address.country == DOMESTIC else "podium-global",
        tracking_number=tracking,
        label_url=f"https://labels.shop.example.com/{tracking}.pdf",
        status="label_created",
    )
    ctx.set("shipment", shipment.model_dump(mode="json"))
    return shipment


@shipping.handler("UpdateTracking", public="write")
async def update_tracking(ctx: ObjectContext, req: TrackingRequest) -> Shipment:
    """Record a carrier scan on the shipment and as ``TrackingUpdated`` on the order."""
    shipment = await _require(ctx)
    if req.update_id in shipment.scans:
        return shipment
    if shipment.delivered:
        raise TerminalError(f"the shipment of order {ctx.key()} was already delivered", 409)
    await call(
        ctx,
        record,
        RecordEvent(
            type=EventType.TRACKING_UPDATED,
            event_id=f"tracking-{req.update_id}",
            actor=caller(ctx),
            data={"status": req.status, "location": req.location, "trackingNumber": shipment.tracking_number},
        ),
        key=ctx.key(),
    )
    shipment.status = req.status
    shipment.scans.append(req.update_id)
    ctx.set("shipment", shipment.model_dump(mode="json"))
    return shipment


@shipping.handler("ConfirmDelivery", public="write")
async def confirm_delivery(ctx: ObjectContext, req: DeliveryRequest) -> Shipment:
    """Record the delivery on the shipment and as ``OrderDelivered`` on the order (once)."""
    shipment = await _require(ctx)
    if shipment.delivered:
        return shipment
    await call(
        ctx,
        record,
        RecordEvent(
            type=EventType.ORDER_DELIVERED,
            event_id="delivered",
            actor=caller(ctx),
            data={"signedBy": req.signed_by, "trackingNumber": shipment.tracking_number},
        ),
        key=ctx.key(),
    )
    shipment.status = "delivered"
    shipment.delivered = True
    ctx.set("shipment", shipment.model_dump(mode="json"))
    return shipment


@shipping.handler("Get", kind="shared")
async def get_shipment(ctx: ObjectSharedContext) -> Shipment:
    """The order's shipment."""
    shipment = await _load(ctx)
    if shipment is None:
        raise TerminalError(f"no shipment for order {ctx.key()}", 404)
    return shipment


async def _require(ctx: ObjectContext) -> Shipment:
    shipment = await _load(ctx)
    if shipment is None:
        raise TerminalError(f"no shipment for order {ctx.key()}", 404)
    return shipment
