"""``Billing`` (seed 002's name): one invoice per order id; voiding is harmless twice.

Private: only ``OrderOrchestrator``'s fulfilment issues and voids invoices.

Seed 000's tenant-provisioning ``BillingService`` (billing accounts) is a different service, in
``services/provisioning``.
"""

from __future__ import annotations

from pydantic import Field
from restate import ObjectContext, ObjectSharedContext

from podium import Model, TerminalError, VirtualObject
from services.commerce.models import Invoice, Item
from services.common.money import Amount

billing = VirtualObject("Billing")


class InvoiceRequest(Model):
    items: list[Item] = Field(min_length=1)
    total: Amount


@billing.handler("GenerateInvoice")
async def generate_invoice(ctx: ObjectContext, req: InvoiceRequest) -> Invoice:
    current = await ctx.get("invoice", type_hint=dict)
    if current is not None:
        return Invoice.model_validate(current)
    invoice = Invoice(
        invoice_id=f"INV-{ctx.uuid().hex[:10].upper()}", order_id=ctx.key(), total=float(req.total)
    )
    ctx.set("invoice", invoice.model_dump(mode="json"))
    ctx.set("status", "issued")
    return invoice


@billing.handler("VoidInvoice")
async def void_invoice(ctx: ObjectContext) -> None:
    ctx.set("status", "void")


@billing.handler("Get", kind="shared")
async def get_invoice(ctx: ObjectSharedContext) -> dict[str, object]:
    current = await ctx.get("invoice", type_hint=dict)
    if current is None:
        raise TerminalError(f"no invoice for {ctx.key()}", 404)
    return {**current, "status": await ctx.get("status", type_hint=str)}
