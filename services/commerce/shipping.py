"""``ShippingService``: delivery zones, slots and labels, one object per shipment (slot) id.

``CheckAvailability`` says whether the address is served; ``ReserveSlot`` books a carrier slot (refused
for the test city ``No Slots``); ``GenerateLabel`` prints the label with a tracking number, once (refused
for the test city ``No Labels``); ``CancelSlot`` frees the slot (harmless twice, tombstone for unknown
ids).

Private: the orchestrators book and cancel slots inside their sagas; a client gets the tracking number
in its order's result.
"""

from __future__ import annotations

from restate import ObjectContext, ObjectSharedContext

from podium import Model, TerminalError, VirtualObject
from services.commerce import catalogue
from services.commerce.models import Address, Item, Label, ShippingSlot

shipping = VirtualObject("ShippingService")


class AvailabilityRequest(Model):
    address: Address


class SlotRequest(Model):
    address: Address
    items: list[Item] = []


class LabelRequest(Model):
    address: Address


@shipping.handler("CheckAvailability", kind="shared")
async def check_availability(ctx: ObjectSharedContext, req: AvailabilityRequest) -> bool:
    return req.address.country.upper() in catalogue.SHIPPING_COUNTRIES


@shipping.handler("ReserveSlot")
async def reserve_slot(ctx: ObjectContext, req: SlotRequest) -> ShippingSlot:
    current = await ctx.get("slot", type_hint=dict)
    if current is not None:
        slot = ShippingSlot.model_validate(current)
        if slot.status == "cancelled":
            raise TerminalError(f"slot {ctx.key()} was cancelled; use a new id", 409)
        return slot
    if req.address.country.upper() not in catalogue.SHIPPING_COUNTRIES:
        raise TerminalError(f"no shipping to {req.address.country}", 409)
    if req.address.city == catalogue.NO_SLOTS_CITY:
        raise TerminalError(f"no delivery slot left for {req.address.city}", 409)
    carrier = "podium-express" if req.address.country.upper() == "US" else "podium-global"
    slot = ShippingSlot(slot_id=ctx.key(), carrier=carrier, status="reserved")
    ctx.set("slot", slot.model_dump(mode="json"))
    return slot


@shipping.handler("GenerateLabel")
async def generate_label(ctx: ObjectContext, req: LabelRequest) -> Label:
    current = await ctx.get("slot", type_hint=dict)
    if current is None:
        raise TerminalError(f"no slot {ctx.key()}", 404)
    slot = ShippingSlot.model_validate(current)
    if slot.status == "cancelled":
        raise TerminalError(f"slot {ctx.key()} is cancelled", 409)
    label = await ctx.get("label", type_hint=dict)
    if label is not None:
        return Label.model_validate(label)
    if req.address.city == catalogue.NO_LABELS_CITY:
        raise TerminalError(f"no shipping label can be printed for {req.address.city}", 409)
    tracking = f"PD{ctx.uuid().hex[:12].upper()}"
    new = Label(slot_id=ctx.key(), tracking_number=tracking, carrier=slot.carrier)
    ctx.set("label", new.model_dump(mode="json"))
    return new


@shipping.handler("CancelSlot")
async def cancel_slot(ctx: ObjectContext) -> None:
    current = await ctx.get("slot", type_hint=dict)
    slot = ShippingSlot(slot_id=ctx.key(), carrier="", status="cancelled")
    if current is not None:
        slot = ShippingSlot.model_validate(current).model_copy(update={"status": "cancelled"})
    ctx.set("slot", slot.model_dump(mode="json"))


@shipping.handler("Get", kind="shared")
async def get_slot(ctx: ObjectSharedContext) -> ShippingSlot:
    current = await ctx.get("slot", type_hint=dict)
    if current is None:
        raise TerminalError(f"no slot {ctx.key()}", 404)
    return ShippingSlot.model_validate(current)
