"""``TicketService``: issued tickets, one virtual object per ticket id, as a gate scanner would look them up.

- ``Issue`` records the ticket as ``valid``; issuing the same ticket again returns it. A ticket id used
  for another booking or seat, or one voided before it was issued, is refused (409).
- ``Void`` marks it ``void``; voiding twice is a no-op, and voiding an id never issued leaves a tombstone
  so a late ``Issue`` (a retried call) cannot bring it to life.
- ``Get`` returns the ticket (404 if there is none).

``Get`` is public: a gate scanner (an outside party) checks tickets with it. ``Issue`` and ``Void`` are
private steps of the booking saga: a client must never mint or void a ticket.

Ticket ids are made by the booking saga from the engine's deterministic ``ctx.uuid()`` (``TKT-`` and 16
hex digits): unique, unguessable, and the same when the saga is replayed after a crash.
"""

from __future__ import annotations

from restate import ObjectContext, ObjectSharedContext

from podium import TerminalError, VirtualObject
from services.ticketing.models import IssueRequest, Ticket
from services.ticketing.seats import iso

tickets = VirtualObject("TicketService", system="ticketing")


@tickets.handler("Issue")
async def issue(ctx: ObjectContext, req: IssueRequest) -> Ticket:
    raw = await ctx.get("ticket", type_hint=dict)
    if raw is not None:
        existing = Ticket.model_validate(raw)
        if existing.status == "void":
            raise TerminalError(f"ticket {ctx.key()} was voided", 409)
        if (existing.booking_id, existing.event_id, existing.seat_id) != (
            req.booking_id,
            req.event_id,
            req.seat_id,
        ):
            raise TerminalError(f"ticket {ctx.key()} was issued for another seat", 409)
        return existing
    ticket = Ticket(
        ticket_id=ctx.key(),
        booking_id=req.booking_id,
        event_id=req.event_id,
        seat_id=req.seat_id,
        customer_id=req.customer_id,
        status="valid",
        issued_at=iso(await ctx.time()),
    )
    ctx.set("ticket", ticket.model_dump(mode="json"))
    return ticket


@tickets.handler("Void")
async def void(ctx: ObjectContext) -> None:
    raw = await ctx.get("ticket", type_hint=dict)
    ticket = Ticket(ticket_id=ctx.key(), status="void") if raw is None else Ticket.model_validate(raw)
    if raw is None or ticket.status != "void":
        ctx.set("ticket", ticket.model_copy(update={"status": "void"}).model_dump(mode="json"))


@tickets.handler("Get", kind="shared", public="read")
async def get_ticket(ctx: ObjectSharedContext) -> Ticket:
    raw = await ctx.get("ticket", type_hint=dict)
    if raw is None:
        raise TerminalError(f"no ticket {ctx.key()}", 404)
    return Ticket.model_validate(raw)
